//! In a sale with holds, a refusal rests on a change that may still be on
//! its way to the log: a confirm answered `Expired` on the cancel that
//! ended the hold, a cancel answered `Confirmed` on the payment. Answered
//! before that change is durable, a crash could bring back a hold its payer
//! was told is gone. So refusals, like acceptances, wait for the log.

mod common;

use std::sync::Arc;

use common::runtime;
use flashsale_core::{Registry, Reservation, Sale, SaleSpec, Sales};
use flashsale_protocol::{ConfirmOutcome, ReleaseOutcome, RequestRef, Response};
use flashsale_server::journal::WalJournal;
use flashsale_server::service::{Answer, Service};
use flashsale_wal::{Durability, NoHook, Wal, WalConfig};

/// A service over one sale `drop` of 3 tickets with minute-long holds.
fn service(dir: &std::path::Path) -> Arc<Service> {
    let (wal, _) = Wal::open(WalConfig::default_for(dir), Arc::new(NoHook)).expect("the log opens");
    let spec = SaleSpec {
        hold_ms: Some(60_000),
        ..SaleSpec::instant("drop", 3, 0)
    };
    let journal = Arc::new(WalJournal::new(wal.clone()));
    let sale = Sale::with_holds(spec, &[], journal).expect("a valid sale");
    let sales = Arc::new(Registry::new(Sales::new(vec![sale]).expect("valid sales")));
    Service::new(sales, wal, Durability::Fsync)
}

/// `answer` must wait for the log; returns what it resolves to.
async fn later(answer: Answer) -> Response {
    match answer {
        Answer::Later(answer) => answer.await,
        Answer::Now(answer) => panic!("answered without waiting for the log: {answer:?}"),
    }
}

#[test]
fn a_refused_confirm_or_cancel_waits_for_the_change_it_rests_on() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let service = service(dir.path());
    runtime().block_on(async move {
        let now = flashsale_core::clock::now_ms();
        let sale = Arc::clone(service.sales().load().get("drop").expect("the sale"));
        for user in [1, 2] {
            assert!(matches!(sale.reserve(user, now), Reservation::Held { .. }));
        }
        // User 1 cancels; the shop's payment for them arrives right after.
        let cancel = service.handle(
            RequestRef::Cancel {
                sale: "drop",
                user: 1,
            },
            now,
        );
        let confirm = service.handle(
            RequestRef::Confirm {
                sale: "drop",
                user: 1,
                payment_ref: "pay-1",
            },
            now,
        );
        let (cancel, confirm) = tokio::join!(later(cancel), later(confirm));
        assert!(
            matches!(cancel, Response::Release(ReleaseOutcome::Released { .. })),
            "{cancel:?}"
        );
        assert_eq!(confirm, Response::Confirm(ConfirmOutcome::Expired));

        // User 2 pays; their cancel arrives right after.
        let pay = RequestRef::Confirm {
            sale: "drop",
            user: 2,
            payment_ref: "pay-2",
        };
        let confirm = service.handle(pay, now);
        let cancel = service.handle(
            RequestRef::Cancel {
                sale: "drop",
                user: 2,
            },
            now,
        );
        let (confirm, cancel) = tokio::join!(later(confirm), later(cancel));
        assert!(
            matches!(confirm, Response::Confirm(ConfirmOutcome::Confirmed { .. })),
            "{confirm:?}"
        );
        assert!(
            matches!(cancel, Response::Release(ReleaseOutcome::Confirmed { .. })),
            "{cancel:?}"
        );
        // A payment with another reference is refused after the log too.
        let other = RequestRef::Confirm {
            sale: "drop",
            user: 2,
            payment_ref: "pay-2-again",
        };
        assert!(matches!(
            later(service.handle(other, now)).await,
            Response::Confirm(ConfirmOutcome::OtherReference { .. })
        ));
    });
}
