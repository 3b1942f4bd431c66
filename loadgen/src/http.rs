//! A flashsale HTTP front as a [`Transport`]: signed-in users over
//! keep-alive HTTP/1.1 connections.
//!
//! Every request carries `Authorization: Bearer <token>` for its own user,
//! minted here with the front's HS256 secret, exactly as an identity
//! provider would. HTTP/1.1 answers one request at a time per connection,
//! so this transport asks for a window of one and a run opens as many
//! connections as it wants requests in flight. Bodies are read with the
//! front's own types ([`flashsale_protocol::json`]).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use flashsale_protocol::json::ReserveBody;
use flashsale_protocol::SaleStatus;
use flashsale_token::{Minter, Rules};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, AUTHORIZATION, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::check::Answer;
use crate::config::Target;
use crate::transport::{
    connect_from, connect_within, within, ConnectError, SaleSnapshot, Transport,
};

/// How long the tokens minted for users stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

type InFlight = Pin<Box<dyn Future<Output = io::Result<(u64, Answer)>>>>;

/// What every connection to one HTTP front shares.
pub struct HttpShared {
    addr: String,
    path: String,
    /// The signing key, built once for the run.
    minter: Minter,
}

/// One keep-alive connection to an HTTP front.
pub struct HttpTransport {
    sender: SendRequest<Empty<Bytes>>,
    shared: Rc<HttpShared>,
    queue: VecDeque<(u64, u64)>,
    in_flight: Option<InFlight>,
}

pub(crate) async fn open(addr: &str) -> io::Result<SendRequest<Empty<Bytes>>> {
    open_from(addr, None).await
}

/// An HTTP/1.1 connection to `addr`, its client side bound to `source`
/// (any port) if given, so that a crowd's connections spread over several
/// addresses' ports.
pub(crate) async fn open_from(
    addr: &str,
    source: Option<IpAddr>,
) -> io::Result<SendRequest<Empty<Bytes>>> {
    let stream = connect_from(addr, source).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

pub(crate) fn sale_path(sale: &str) -> String {
    format!("/api/sales/{sale}")
}

impl Transport for HttpTransport {
    type Shared = HttpShared;

    fn prepare(target: &Target, sale: &str) -> Result<HttpShared, ConnectError> {
        let Target::Http {
            addr,
            secret,
            issuer,
            audience,
        } = target
        else {
            return Err(ConnectError::Refused("not an HTTP target".into()));
        };
        let rules = Rules::new()
            .issuer(issuer.clone())
            .audience(audience.clone());
        Ok(HttpShared {
            addr: addr.clone(),
            path: format!("{}/reserve", sale_path(sale)),
            minter: Minter::new(secret).for_rules(&rules),
        })
    }

    async fn connect(
        shared: &Rc<HttpShared>,
        timeout: Duration,
    ) -> Result<(Self, usize), ConnectError> {
        let sender = connect_within(timeout, open(&shared.addr)).await?;
        Ok((HttpTransport::over(sender, shared), 1))
    }

    async fn connect_sending(
        shared: &Rc<HttpShared>,
        timeout: Duration,
        source: Option<IpAddr>,
        user: u64,
        ids: std::ops::Range<u64>,
    ) -> Result<Self, ConnectError> {
        let sender = connect_within(timeout, open_from(&shared.addr, source)).await?;
        let mut transport = HttpTransport::over(sender, shared);
        for id in ids {
            transport.send(id, user);
        }
        Ok(transport)
    }

    fn send(&mut self, id: u64, user: u64) {
        self.queue.push_back((id, user));
    }

    async fn poll(&mut self, until: Instant, answers: &mut Vec<(u64, Answer)>) -> io::Result<()> {
        loop {
            if self.in_flight.is_none() {
                let Some((id, user)) = self.queue.pop_front() else {
                    tokio::time::sleep_until(until).await;
                    return Ok(());
                };
                self.in_flight = Some(self.start(id, user)?);
            }
            let Some(request) = self.in_flight.as_mut() else {
                continue;
            };
            tokio::select! {
                done = request => {
                    self.in_flight = None;
                    answers.push(done?);
                    return Ok(());
                }
                () = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }
}

impl HttpTransport {
    fn over(sender: SendRequest<Empty<Bytes>>, shared: &Rc<HttpShared>) -> HttpTransport {
        HttpTransport {
            sender,
            shared: Rc::clone(shared),
            queue: VecDeque::new(),
            in_flight: None,
        }
    }

    fn start(&mut self, id: u64, user: u64) -> io::Result<InFlight> {
        let request = self.shared.reserve_request(user)?;
        let response = self.sender.send_request(request);
        Ok(Box::pin(async move {
            let response = response.await.map_err(io::Error::other)?;
            Ok((id, read_answer(response).await?))
        }))
    }
}

impl HttpShared {
    /// The front's `host:port`.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// `user`'s reservation, signed in.
    pub(crate) fn reserve_request(&self, user: u64) -> io::Result<Request<Empty<Bytes>>> {
        self.signed(Method::POST, &self.path, user)
    }

    /// `method path` as `user`, signed in.
    pub(crate) fn signed(
        &self,
        method: Method,
        path: &str,
        user: u64,
    ) -> io::Result<Request<Empty<Bytes>>> {
        let (token, _) = self
            .minter
            .mint(user, TOKEN_TTL.as_secs())
            .map_err(io::Error::other)?;
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.addr)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(io::Error::other)
    }
}

/// The answer a reservation's response carries, once its body is read.
pub(crate) async fn read_answer(response: Response<Incoming>) -> io::Result<Answer> {
    Ok(read_answer_and_body(response).await?.0)
}

/// [`read_answer`], with what the answer said when it is no outcome:
/// its status and the start of its body.
pub(crate) async fn read_answer_and_body(
    response: Response<Incoming>,
) -> io::Result<(Answer, Option<String>)> {
    let status = response.status();
    let retry_after_ms = retry_after_ms(response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    let answer = answer_of(status, retry_after_ms, &body);
    let said = (answer == Answer::Error).then(|| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        format!("{status} {text}")
    });
    Ok((answer, said))
}

/// What an HTTP answer means: a [`ReserveBody`] under the status its
/// outcome is answered with is that outcome; anything else (an error
/// body, a status that disagrees with the body) is an error answer.
fn answer_of(status: StatusCode, retry_after_ms: u32, body: &[u8]) -> Answer {
    serde_json::from_slice::<ReserveBody>(body)
        .ok()
        .filter(|b| b.outcome.http_status() == status.as_u16())
        .and_then(|b| b.outcome(retry_after_ms))
        .map_or(Answer::Error, Answer::Reserve)
}

/// The `Retry-After` header (whole seconds) in milliseconds; 0 if absent.
fn retry_after_ms(headers: &HeaderMap) -> u32 {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(0, |s| s.saturating_mul(1000))
}

/// The sale's capacity and remaining stock, by `GET /api/sales/{sale}`.
pub async fn snapshot(
    target: &Target,
    sale: &str,
    timeout: Duration,
) -> anyhow::Result<SaleSnapshot> {
    let Target::Http { addr, .. } = target else {
        anyhow::bail!("not an HTTP target");
    };
    let ask = async {
        let mut sender = open(addr).await?;
        let request = Request::builder()
            .uri(sale_path(sale))
            .header(HOST, addr.as_str())
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET {}: {status}: {}",
            sale_path(sale),
            String::from_utf8_lossy(&body)
        );
        let status: SaleStatus = serde_json::from_slice(&body)?;
        Ok(SaleSnapshot::from(&status))
    };
    within(timeout, "the status request", ask).await
}

#[cfg(test)]
mod tests {
    use flashsale_protocol::ReserveOutcome;

    use super::*;

    #[test]
    fn answers_follow_the_api() {
        let reserved = |status, body: &[u8]| match answer_of(status, 1000, body) {
            Answer::Reserve(outcome) => Some(outcome),
            _ => None,
        };
        assert_eq!(
            reserved(StatusCode::CREATED, br#"{"outcome":"won","ticket":7}"#),
            Some(ReserveOutcome::Won { ticket: 7 })
        );
        assert_eq!(
            reserved(StatusCode::OK, br#"{"outcome":"already_owned","ticket":7}"#),
            Some(ReserveOutcome::AlreadyOwned { ticket: 7 })
        );
        assert_eq!(
            reserved(StatusCode::GONE, br#"{"outcome":"sold_out"}"#),
            Some(ReserveOutcome::SoldOut)
        );
        assert_eq!(
            reserved(
                StatusCode::TOO_EARLY,
                br#"{"outcome":"not_open","opens_at":5}"#
            ),
            Some(ReserveOutcome::NotOpen { opens_at: 5 })
        );
        assert_eq!(
            reserved(StatusCode::NOT_FOUND, br#"{"outcome":"unknown_sale"}"#),
            Some(ReserveOutcome::UnknownSale)
        );
        assert_eq!(
            reserved(StatusCode::SERVICE_UNAVAILABLE, br#"{"outcome":"busy"}"#),
            Some(ReserveOutcome::Busy {
                retry_after_ms: 1000
            })
        );
        for (status, body) in [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                &br#"{"error":"log_unavailable","message":"disk"}"#[..],
            ),
            (
                StatusCode::NOT_FOUND,
                br#"{"error":"not_found","message":"no"}"#,
            ),
            (StatusCode::UNAUTHORIZED, b"{}"),
            (StatusCode::CREATED, b"not json"),
            (StatusCode::CREATED, br#"{"outcome":"won"}"#),
            (StatusCode::OK, br#"{"outcome":"won","ticket":7}"#),
        ] {
            assert_eq!(
                answer_of(status, 0, body),
                Answer::Error,
                "{status} {body:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_ms(&headers), 0);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after_ms(&headers), 2000);
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after_ms(&headers), 0);
    }
}
