//! The bound on HTTP requests in progress.
//!
//! A flash sale's rush is far more requests than the core needs to sell
//! the stock, so past the bound a request is refused at once with
//! 503 `{"outcome":"busy"}` and `Retry-After: 1`, instead of waiting in a
//! queue that only grows: a permit is taken with `try_acquire`, never
//! awaited. The permit is held until the handler has produced its answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use super::api::busy;
use crate::metrics::{self, Protocol};

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
        metrics::shed(Protocol::Http, "in_flight");
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
}
