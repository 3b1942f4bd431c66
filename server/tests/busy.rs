//! A question the core cannot settle yet is answered `Busy`, in the
//! request's own terms, and both fronts say the same; and one it can settle
//! by waiting a moment is not.
//!
//! In the first test the log runs without the server's hook, so a won
//! ticket is never marked durable: a `Lookup` of it waits as long as the
//! service allows (`PENDING_WAIT`), then gives up. Over the native protocol that is
//! `Response::Busy`; through the HTTP front, 503 `{"outcome":"busy"}` with
//! `Retry-After` (the gateway's test, `gateway/tests/busy.rs`, checks that
//! it answers the same).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode};
use common::{runtime, Conn, Harness, Marking};
use flashsale_core::Reservation;
use flashsale_http::Backend;
use flashsale_protocol::{Request, RequestRef, ReserveOutcome, Response};
use flashsale_server::backend::LocalBackend;
use flashsale_server::service::Answer;
use flashsale_wal::Record;
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
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(
            flashsale_server::serving::Serving::single(service),
        ));
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

/// A user's second reservation (or a `Lookup`) sent while their first is
/// still on its way to the log, even before its record is queued, waits for
/// it and answers `AlreadyOwned`, never `Busy`: GUARANTEES §2 promises
/// that for two requests at once.
///
/// The first request is played by hand: the core hands out its ticket, and
/// its record reaches the log only a while later, as when the thread that
/// won is preempted between the two. Rounds of an idle log take
/// microseconds, so a wait counted in rounds ran out in that gap.
#[test]
fn a_retry_waits_for_a_win_on_its_way_to_the_log() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = common::service(dir.path(), 5, Marking::Server);
    runtime().block_on(async move {
        let now = flashsale_core::clock::now_ms();
        let sale = Arc::clone(service.sales().load().get("gig").expect("the sale"));
        let Reservation::Won { ticket } = sale.reserve(7, now) else {
            panic!("the first request wins");
        };
        let pending = |request| match service.handle(request, now) {
            Answer::Later(answer) => answer,
            Answer::Now(answer) => panic!("answered before the win is durable: {answer:?}"),
        };
        let retry = pending(RequestRef::Reserve {
            sale: "gig",
            user: 7,
        });
        let lookup = pending(RequestRef::Lookup {
            sale: "gig",
            user: 7,
        });
        let wal = service.wal().clone();
        let late_win = async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (done, durable) = tokio::sync::oneshot::channel();
            let record = Record::TicketSold {
                sale: "gig".into(),
                ticket,
                user: 7,
                at_ms: now,
            };
            wal.append(record, Some(done));
            durable.await.expect("answered").expect("durable");
        };
        let (retry, lookup, ()) = tokio::join!(retry, lookup, late_win);
        assert_eq!(
            retry,
            Response::Reserve(ReserveOutcome::AlreadyOwned { ticket })
        );
        assert_eq!(
            lookup,
            Response::Lookup {
                ticket: Some(ticket)
            }
        );
    });
}
