//! A flashsale HTTP front as a [`Transport`]: signed-in users over
//! keep-alive HTTP/1.1 connections.
//!
//! Every request carries `Authorization: Bearer <token>` for its own user,
//! minted here with the front's HS256 secret, exactly as an identity
//! provider would. HTTP/1.1 answers one request at a time per connection,
//! so this transport asks for a window of one and a run opens as many
//! connections as it wants requests in flight.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{EncodingKey, Header};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::check::Answer;
use crate::config::Target;
use crate::transport::{ConnectError, SaleSnapshot, Transport};

/// How long the tokens minted for users stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

type InFlight = Pin<Box<dyn Future<Output = io::Result<(u64, Answer)>>>>;

/// One keep-alive connection to an HTTP front.
pub struct HttpTransport {
    sender: SendRequest<Empty<Bytes>>,
    key: EncodingKey,
    path: String,
    host: String,
    queue: VecDeque<(u64, u64)>,
    in_flight: Option<InFlight>,
}

#[derive(serde::Serialize)]
struct Claims {
    sub: String,
    exp: u64,
}

#[derive(Deserialize)]
struct ReserveBody {
    ticket: Option<u32>,
}

#[derive(Deserialize)]
struct StatusBody {
    capacity: u32,
    remaining: u32,
}

/// A token for `user`, as the identity provider would issue it.
pub fn token_for(key: &EncodingKey, user: u64) -> io::Result<String> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + TOKEN_TTL.as_secs();
    jsonwebtoken::encode(
        &Header::default(),
        &Claims {
            sub: user.to_string(),
            exp,
        },
        key,
    )
    .map_err(io::Error::other)
}

async fn open(addr: &str) -> io::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn sale_path(sale: &str) -> String {
    format!("/api/sales/{sale}")
}

impl Transport for HttpTransport {
    async fn connect(
        target: &Target,
        sale: &str,
        timeout: Duration,
    ) -> Result<(Self, usize), ConnectError> {
        let Target::Http { addr, secret } = target else {
            return Err(ConnectError::Refused("not an HTTP target".into()));
        };
        let sender = tokio::time::timeout(timeout, open(addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let transport = HttpTransport {
            sender,
            key: EncodingKey::from_secret(secret),
            path: format!("{}/reserve", sale_path(sale)),
            host: addr.clone(),
            queue: VecDeque::new(),
            in_flight: None,
        };
        Ok((transport, 1))
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
    fn start(&mut self, id: u64, user: u64) -> io::Result<InFlight> {
        let token = token_for(&self.key, user)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())
            .map_err(io::Error::other)?;
        let response = self.sender.send_request(request);
        Ok(Box::pin(async move {
            let response = response.await.map_err(io::Error::other)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            Ok((id, answer_of(status, &body)))
        }))
    }
}

/// What an HTTP answer means, per the front's API.
fn answer_of(status: StatusCode, body: &[u8]) -> Answer {
    let ticket = || {
        serde_json::from_slice::<ReserveBody>(body)
            .ok()
            .and_then(|b| b.ticket)
    };
    match status {
        StatusCode::CREATED => ticket().map_or(Answer::Error, Answer::Won),
        StatusCode::OK => ticket().map_or(Answer::Error, Answer::AlreadyOwned),
        StatusCode::GONE => Answer::SoldOut,
        StatusCode::TOO_EARLY => Answer::NotOpen,
        StatusCode::NOT_FOUND => Answer::UnknownSale,
        StatusCode::SERVICE_UNAVAILABLE if body.windows(4).any(|w| w == b"busy") => Answer::Busy,
        _ => Answer::Error,
    }
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
            .header(hyper::header::HOST, addr.as_str())
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
        let s: StatusBody = serde_json::from_slice(&body)?;
        Ok(SaleSnapshot {
            capacity: s.capacity,
            remaining: s.remaining,
        })
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("status request timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_the_api() {
        assert_eq!(
            answer_of(StatusCode::CREATED, br#"{"outcome":"won","ticket":7}"#),
            Answer::Won(7)
        );
        assert_eq!(
            answer_of(StatusCode::OK, br#"{"outcome":"already_owned","ticket":7}"#),
            Answer::AlreadyOwned(7)
        );
        assert_eq!(
            answer_of(StatusCode::GONE, br#"{"outcome":"sold_out"}"#),
            Answer::SoldOut
        );
        assert_eq!(answer_of(StatusCode::TOO_EARLY, b"{}"), Answer::NotOpen);
        assert_eq!(answer_of(StatusCode::NOT_FOUND, b"{}"), Answer::UnknownSale);
        assert_eq!(
            answer_of(StatusCode::SERVICE_UNAVAILABLE, br#"{"outcome":"busy"}"#),
            Answer::Busy
        );
        assert_eq!(
            answer_of(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"error":"log_unavailable"}"#
            ),
            Answer::Error
        );
        assert_eq!(answer_of(StatusCode::UNAUTHORIZED, b"{}"), Answer::Error);
        assert_eq!(answer_of(StatusCode::CREATED, b"not json"), Answer::Error);
    }

    #[test]
    fn tokens_name_the_user_and_expire() {
        let token = token_for(&EncodingKey::from_secret(b"s"), 42).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "42");
    }
}
