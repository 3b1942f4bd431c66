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
//! read) and closed. Refusing costs a task for at most about a second, so
//! refusals in progress are bounded too; past [`MAX_REFUSING`], a
//! connection is closed at once, unanswered.
//!
//! Why a semaphore here rather than tower's `ConcurrencyLimit` and
//! `LoadShed` layers: the bound is one `try_acquire` that must, on failure,
//! answer the same 503 body as a core that sheds, count the shed request,
//! and keep the in-flight gauge; the tower pair would express the first
//! part and turn the refusal into an error to be mapped back into that
//! answer by yet another layer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::api::busy;
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

/// Runs the request if a permit is free, else answers busy at once.
pub async fn limit(State(limiter): State<Limiter>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limiter.permits.try_acquire() else {
        metrics::shed(Protocol::Http, ShedReason::InFlight);
        return busy(1000);
    };
    metrics::add_in_flight(Protocol::Http, 1.0);
    let _gauge = InFlight;
    next.run(request).await
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

/// The answer to a connection over the bound: the body of a shed request.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
content-length: 18\r\n\
\r\n\
{\"outcome\":\"busy\"}";

/// Permits for open connections.
pub struct Admission {
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    max: usize,
}

/// What to do with a new connection.
pub enum Admitted {
    /// Serve it; the permit is its place under the bound.
    Serve(ConnPermit),
    /// Answer 503 and close it.
    Refuse(OwnedSemaphorePermit),
    /// Close it at once: too many refusals in progress already.
    Drop,
}

impl Admission {
    /// At most `max` connections served at once.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        metrics::set_connections(Protocol::Http, 0);
        Admission {
            open: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            max,
        }
    }

    /// A place for a new connection, or why there is none.
    pub fn admit(&self) -> Admitted {
        if let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() {
            let permit = ConnPermit {
                permit: Some(permit),
                open: Arc::clone(&self.open),
                max: self.max,
            };
            permit.report();
            return Admitted::Serve(permit);
        }
        metrics::shed(Protocol::Http, ShedReason::Connections);
        match Arc::clone(&self.refusing).try_acquire_owned() {
            Ok(permit) => Admitted::Refuse(permit),
            Err(_) => Admitted::Drop,
        }
    }
}

/// A served connection's place under the bound; frees it when dropped.
pub struct ConnPermit {
    permit: Option<OwnedSemaphorePermit>,
    open: Arc<Semaphore>,
    max: usize,
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
        self.report();
    }
}

/// Tells a connection over the bound to come back later, and closes it.
pub async fn refuse_connection(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
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

    #[test]
    fn admission_is_bounded() {
        let admission = Admission::new(2);
        let first = admission.admit();
        let second = admission.admit();
        assert!(matches!(first, Admitted::Serve(_)));
        assert!(matches!(second, Admitted::Serve(_)));
        let refused: Vec<Admitted> = (0..MAX_REFUSING).map(|_| admission.admit()).collect();
        assert!(refused.iter().all(|a| matches!(a, Admitted::Refuse(_))));
        assert!(matches!(admission.admit(), Admitted::Drop));
        drop(refused);
        drop(first);
        assert!(matches!(admission.admit(), Admitted::Serve(_)));
    }

    #[test]
    fn the_refusal_is_a_whole_answer() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(body, r#"{"outcome":"busy"}"#);
    }
}
