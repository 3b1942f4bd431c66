//! The bounds on HTTP requests in progress and on open connections.
//!
//! A flash sale's rush is far more requests than the core needs to sell
//! the stock, so past the bound a request is refused at once with
//! 503 `{"outcome":"busy"}` and `Retry-After: 1`, instead of waiting in a
//! queue that only grows: a permit is taken with `try_acquire`, never
//! awaited. The permit is held until the handler has produced its answer.
//!
//! Connections are bounded the same way: past `--http-max-connections`, a
//! new connection is answered that same 503 (written before its request is
//! read) and closed. One client may hold at most
//! `--http-max-connections-per-ip` of them (an IPv4 address, or an IPv6 /64,
//! which one client usually has whole); past that, its new connection is
//! answered 429 `too_many_connections` and closed, so one client cannot
//! take the connections buyers need. Refusing costs a task for at most
//! about a second, so refusals in progress are bounded too; past
//! [`MAX_REFUSING`], a connection is closed at once, unanswered.
//!
//! Why a semaphore here rather than tower's `ConcurrencyLimit` and
//! `LoadShed` layers: the bound is one `try_acquire` that must, on failure,
//! answer the same 503 body as a core that sheds, count the shed request,
//! and keep the in-flight gauge; the tower pair would express the first
//! part and turn the refusal into an error to be mapped back into that
//! answer by yet another layer.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use flashsale_protocol::json::{ApiError, ErrorBody};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::api::busy;
use super::client_ip::client_of;
use flashsale_metrics::{self as metrics, Protocol, ShedReason};

/// Permits for requests in progress.
#[derive(Clone)]
pub struct Limiter {
    permits: Arc<Semaphore>,
}

impl Limiter {
    /// At most `max` requests in progress.
    pub fn new(max: usize) -> Self {
        Limiter {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }
}

impl Limiter {
    /// Awaits `answer` if a permit is free, else answers busy at once
    /// without polling it. The routes' middleware ([`limit`]) and the
    /// reservation's fast path (`api::Hot`) both come here.
    pub async fn run(&self, answer: impl Future<Output = Response>) -> Response {
        let Ok(_permit) = self.permits.try_acquire() else {
            metrics::shed(Protocol::Http, ShedReason::InFlight);
            return busy(1000);
        };
        metrics::add_in_flight(Protocol::Http, 1.0);
        let _gauge = InFlight;
        answer.await
    }
}

/// Runs the request if a permit is free, else answers busy at once.
pub async fn limit(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    limiter.run(next.run(request)).await
}

/// Takes a request off the in-flight gauge when it ends, however it ends
/// (a client that disconnects drops the handler's future).
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::add_in_flight(Protocol::Http, -1.0);
    }
}

/// Refusals in progress past which a connection over the bound is closed
/// at once, unanswered.
pub const MAX_REFUSING: usize = 1024;

/// The body of a shed request.
const BUSY_BODY: &str = r#"{"outcome":"busy"}"#;

/// A whole answer written to a connection refused before its request is
/// read: `status_line` (such as `503 Service Unavailable`), a JSON `body`,
/// `Retry-After: 1`, and a close.
fn canned(status_line: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status_line}\r\n\
         content-type: application/json\r\n\
         retry-after: 1\r\n\
         cache-control: no-store\r\n\
         x-content-type-options: nosniff\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Permits for open connections, overall and per client.
pub struct Admission {
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    max: usize,
    clients: Arc<Clients>,
    /// The answer past the overall bound.
    busy: Bytes,
    /// The answer past a client's own bound.
    too_many: Bytes,
}

/// Open connections per client.
///
/// A std `Mutex`: it is held only to bump a count, never across an await,
/// once when a connection is accepted and once when it closes. A client
/// with no connection open has no entry, so the map is no larger than the
/// connection bound.
struct Clients {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Clients {
    /// Counts a connection from `client` if it is under its bound.
    fn enter(&self, client: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    fn leave(&self, client: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&client);
            }
        }
    }
}

/// What to do with a new connection.
pub enum Admitted {
    /// Serve it; the permit is its place under the bounds.
    Serve(ConnPermit),
    /// Write this answer and close it.
    Refuse(Bytes, OwnedSemaphorePermit),
    /// Close it at once: too many refusals in progress already.
    Drop,
}

impl Admission {
    /// At most `max` connections served at once, and at most `per_client`
    /// from one client.
    pub fn new(max: usize, per_client: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        metrics::set_connections(Protocol::Http, 0);
        let too_many = serde_json::to_string(&ErrorBody {
            error: ApiError::TooManyConnections,
            message: "too many connections from one address; close one and retry".into(),
        })
        .unwrap_or_default();
        Admission {
            open: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            max,
            clients: Arc::new(Clients {
                max: per_client.max(1),
                open: Mutex::default(),
            }),
            busy: canned("503 Service Unavailable", BUSY_BODY),
            too_many: canned("429 Too Many Requests", &too_many),
        }
    }

    /// A place for a new connection from `peer`, or why there is none.
    pub fn admit(&self, peer: IpAddr) -> Admitted {
        let client = client_of(peer);
        let (answer, reason) = if self.clients.enter(client) {
            if let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() {
                let permit = ConnPermit {
                    permit: Some(permit),
                    open: Arc::clone(&self.open),
                    max: self.max,
                    client,
                    clients: Arc::clone(&self.clients),
                };
                permit.report();
                return Admitted::Serve(permit);
            }
            self.clients.leave(client);
            (&self.busy, ShedReason::Connections)
        } else {
            (&self.too_many, ShedReason::PerIp)
        };
        metrics::shed(Protocol::Http, reason);
        match Arc::clone(&self.refusing).try_acquire_owned() {
            Ok(permit) => Admitted::Refuse(answer.clone(), permit),
            Err(_) => Admitted::Drop,
        }
    }
}

/// A served connection's place under the bounds; frees it when dropped.
pub struct ConnPermit {
    permit: Option<OwnedSemaphorePermit>,
    open: Arc<Semaphore>,
    max: usize,
    client: IpAddr,
    clients: Arc<Clients>,
}

impl ConnPermit {
    fn report(&self) {
        let open = self.max.saturating_sub(self.open.available_permits());
        metrics::set_connections(Protocol::Http, open);
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.clients.leave(self.client);
        self.report();
    }
}

/// Tells a connection refused before its request was read why, and closes
/// it.
pub async fn refuse_connection(mut stream: TcpStream, answer: Bytes) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
    flashsale_net::linger(&mut stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    #[tokio::test]
    async fn sheds_past_the_bound_without_queueing() {
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = Arc::new(std::sync::Mutex::new(Some(release_rx)));
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let router = Router::new()
            .route(
                "/",
                get(move || {
                    let release = release.lock().ok().and_then(|mut r| r.take());
                    let entered = entered.lock().ok().and_then(|mut e| e.take());
                    async move {
                        if let Some(entered) = entered {
                            let _ = entered.send(());
                        }
                        if let Some(release) = release {
                            let _ = release.await;
                        }
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(Limiter::new(1), limit));
        let first = tokio::spawn(router.clone().oneshot(Request::new(Body::empty())));
        entered_rx.await.unwrap();
        let shed = router
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()["retry-after"], "1");
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        let after = router.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn refused_with(admitted: &Admitted) -> Option<&str> {
        match admitted {
            Admitted::Refuse(answer, _) => std::str::from_utf8(answer).ok(),
            _ => None,
        }
    }

    #[test]
    fn admission_is_bounded() {
        let admission = Admission::new(2, 2);
        let first = admission.admit(PEER);
        let second = admission.admit("10.0.0.1".parse().unwrap());
        assert!(matches!(first, Admitted::Serve(_)));
        assert!(matches!(second, Admitted::Serve(_)));
        let refused: Vec<Admitted> = (0..MAX_REFUSING)
            .map(|_| admission.admit("10.0.0.2".parse().unwrap()))
            .collect();
        assert!(refused
            .iter()
            .all(|a| refused_with(a).is_some_and(|r| r.starts_with("HTTP/1.1 503 "))));
        assert!(matches!(admission.admit(PEER), Admitted::Drop));
        drop(refused);
        drop(first);
        let again = admission.admit(PEER);
        assert!(matches!(again, Admitted::Serve(_)));
        // Refused connections kept no count: only the two served clients
        // are known.
        assert_eq!(admission.clients.open.lock().unwrap().len(), 2);
        drop((again, second));
        assert!(admission.clients.open.lock().unwrap().is_empty());
    }

    #[test]
    fn one_client_gets_its_own_bound() {
        let admission = Admission::new(10, 2);
        let held: Vec<Admitted> = (0..2).map(|_| admission.admit(PEER)).collect();
        assert!(held.iter().all(|a| matches!(a, Admitted::Serve(_))));
        let refused = admission.admit(PEER);
        let answer = refused_with(&refused).unwrap();
        assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
        assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
        // Another client is served meanwhile.
        assert!(matches!(
            admission.admit("192.0.2.7".parse().unwrap()),
            Admitted::Serve(_)
        ));
        drop(held);
        assert!(matches!(admission.admit(PEER), Admitted::Serve(_)));
    }

    #[test]
    fn the_refusals_are_whole_answers() {
        let admission = Admission::new(1, 1);
        for (answer, status, code) in [
            (&admission.busy, "503", None),
            (&admission.too_many, "429", Some("too_many_connections")),
        ] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            match code {
                None => assert_eq!(body, serde_json::json!({ "outcome": "busy" })),
                Some(code) => assert_eq!(body["error"], code),
            }
        }
    }
}
