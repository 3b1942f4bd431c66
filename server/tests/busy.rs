//! A question the core cannot settle yet is answered `Busy`, in the
//! request's own terms, and both fronts say the same.
//!
//! The log here runs without the server's hook, so a won ticket is never
//! marked durable: a `Lookup` of it waits through every log round the
//! service allows, then gives up. Over the native protocol that is
//! `Response::Busy`; through the HTTP front, 503 `{"outcome":"busy"}` with
//! `Retry-After` (the gateway's test, `gateway/tests/busy.rs`, checks that
//! it answers the same).

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use common::{runtime, Conn, Harness, Marking};
use flashsale_http::Backend;
use flashsale_protocol::{Request, ReserveOutcome, Response};
use flashsale_server::backend::LocalBackend;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const SECRET: &[u8] = b"the busy test's secret, 32 bytes or more";

#[test]
fn a_lookup_of_a_ticket_that_stays_pending_is_busy_over_both_fronts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = Harness::start(common::service(dir.path(), 5, Marking::Never), 4);
    let addr = server.addr;
    let service = Arc::clone(&server.service);
    runtime().block_on(async move {
        let mut conn = Conn::open(addr).await;
        assert_eq!(
            conn.reserve("gig", 7).await,
            ReserveOutcome::Won { ticket: 1 }
        );

        // The native protocol: a Lookup gets a Lookup's busy answer, not a
        // reservation's.
        let lookup = Request::Lookup {
            sale: "gig".into(),
            user: 7,
        };
        assert_eq!(
            conn.ask(lookup).await,
            Response::Busy { retry_after_ms: 10 }
        );
        // A reservation of the same user stays a reservation's answer.
        assert_eq!(
            conn.reserve("gig", 7).await,
            ReserveOutcome::Busy { retry_after_ms: 10 }
        );
        // And the connection goes on.
        assert_eq!(conn.ask(Request::Ping).await, Response::Pong);

        // The HTTP front in the same process.
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(service));
        let router = flashsale_http::router(
            backend,
            flashsale_http::auth::Auth::new(SECRET),
            false,
            vec!["gig".into()],
            8,
            CancellationToken::new(),
        );
        let (token, _) = flashsale_token::Minter::new(SECRET)
            .mint(7, 60)
            .expect("a token");
        let request = HttpRequest::get("/api/sales/gig/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("a body");
        assert_eq!(&body[..], br#"{"outcome":"busy"}"#);
    });
    server.stop();
}
