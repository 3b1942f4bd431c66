//! loom models of `Sale::reserve`: every interleaving of a few requests.
//!
//! Run with `cargo test --release -p flashsale-core --features loom --test loom_reserve`.
//! Sales are built inside each model, since loom's atomics belong to one run.
//!
//! Two of these models fail if `reserve` reads the buyer set before the stock,
//! or reads the stock without Acquire: a request then misses its concurrent
//! twin's claim and answers `SoldOut` to a user who holds the ticket.
#![cfg(feature = "loom")]

use flashsale_core::draw::DrawEvent;
use flashsale_core::holds::{Change, Confirm};
use flashsale_core::{Holding, Journal, Reservation, Sale, SaleSpec, SaleState};
use flashsale_protocol::SaleAction;
use loom::sync::Arc;
use loom::thread;

const NOW: u64 = 10;

fn sale(capacity: u32) -> Arc<Sale> {
    Arc::new(Sale::new(SaleSpec::instant("loom", capacity, 0)).unwrap())
}

/// Runs `f` under loom. The models are small enough to explore exhaustively
/// (no preemption bound, a few seconds in release); `LOOM_MAX_PREEMPTIONS`
/// still bounds them if set.
fn check(f: impl Fn() + Sync + Send + 'static) {
    loom::model::Builder::new().check(f);
}

/// `reserve` for each user, all on their own thread but the last, which runs
/// on the model's main thread. Answers come back in `users` order.
fn race(sale: &Arc<Sale>, users: &[u64]) -> Vec<Reservation> {
    let (last, others) = users.split_last().unwrap();
    let handles: Vec<_> = others
        .iter()
        .map(|&user| {
            let sale = Arc::clone(sale);
            thread::spawn(move || sale.reserve(user, NOW))
        })
        .collect();
    let mine = sale.reserve(*last, NOW);
    let mut answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    answers.push(mine);
    answers
}

/// Invariant 3: any `SoldOut` answer means every ticket is gone.
fn assert_sold_out_is_real(sale: &Sale, answers: &[Reservation]) {
    if answers.contains(&Reservation::SoldOut) {
        let status = sale.status(NOW);
        assert_eq!(status.remaining, 0, "{answers:?}");
        assert_eq!(status.state, SaleState::SoldOut);
    }
}

#[test]
fn same_user_twice_one_ticket() {
    check(|| {
        let sale = sale(1);
        let answers = race(&sale, &[7, 7]);
        let wins = answers
            .iter()
            .filter(|a| **a == Reservation::Won { ticket: 1 })
            .count();
        assert_eq!(wins, 1, "{answers:?}");
        assert!(
            answers.contains(&Reservation::AlreadyOwned {
                ticket: 1,
                durable: false
            }),
            "{answers:?}"
        );
        assert_eq!(sale.lookup(7), Holding::Pending { ticket: 1 });
        assert_eq!(sale.status(NOW).sold, 1);
    });
}

#[test]
fn three_users_two_tickets() {
    check(|| {
        let sale = sale(2);
        let answers = race(&sale, &[1, 2, 3]);
        let mut tickets: Vec<u32> = answers
            .iter()
            .filter_map(|a| match a {
                Reservation::Won { ticket } => Some(*ticket),
                _ => None,
            })
            .collect();
        tickets.sort_unstable();
        assert_eq!(tickets, [1, 2], "{answers:?}");
        let sold_out = answers
            .iter()
            .filter(|a| **a == Reservation::SoldOut)
            .count();
        assert_eq!(sold_out, 1, "{answers:?}");
        assert_sold_out_is_real(&sale, &answers);
    });
}

#[test]
fn duplicate_user_races_for_the_last_ticket() {
    check(|| {
        const A: u64 = 0;
        const B: u64 = u64::MAX;
        let sale = sale(1);
        let answers = race(&sale, &[A, A, B]);
        let won = Reservation::Won { ticket: 1 };
        let owned = Reservation::AlreadyOwned {
            ticket: 1,
            durable: false,
        };
        let sold_out = Reservation::SoldOut;
        let a_won = answers[..2].contains(&won);
        if a_won {
            assert!(
                answers[..2].contains(&owned) && answers[2] == sold_out,
                "{answers:?}"
            );
            assert_eq!(sale.lookup(A), Holding::Pending { ticket: 1 });
        } else {
            assert_eq!(answers, [sold_out, sold_out, won]);
            assert_eq!(sale.lookup(B), Holding::Pending { ticket: 1 });
            assert_eq!(sale.lookup(A), Holding::None);
        }
        assert_sold_out_is_real(&sale, &answers);
    });
}

#[test]
fn retry_races_with_mark_durable() {
    check(|| {
        let sale = sale(1);
        assert_eq!(sale.reserve(5, NOW), Reservation::Won { ticket: 1 });
        let writer = {
            let sale = Arc::clone(&sale);
            thread::spawn(move || assert!(sale.mark_durable(5)))
        };
        let retry = sale.reserve(5, NOW);
        assert!(
            matches!(retry, Reservation::AlreadyOwned { ticket: 1, .. }),
            "{retry:?}"
        );
        writer.join().unwrap();
        assert_eq!(sale.lookup(5), Holding::Durable { ticket: 1 });
    });
}

#[test]
fn restored_sale_races_for_the_gap() {
    check(|| {
        let spec = SaleSpec::instant("loom", 3, 0);
        let sale = Arc::new(Sale::restore(spec, &[(1, 2), (2, 3)]).unwrap());
        let answers = race(&sale, &[2, 3, 4]);
        assert_eq!(
            answers[0],
            Reservation::AlreadyOwned {
                ticket: 3,
                durable: true
            }
        );
        let mut rest = [answers[1], answers[2]];
        rest.sort_by_key(|a| matches!(a, Reservation::SoldOut));
        assert_eq!(rest, [Reservation::Won { ticket: 1 }, Reservation::SoldOut]);
        assert_sold_out_is_real(&sale, &answers);
    });
}

/// A pause that a request has seen (through any synchronising path) stops it:
/// the request answers `Paused` and claims nothing, while a request racing
/// the pause either wins or is paused, never anything else.
#[test]
fn pause_stops_every_request_that_sees_it() {
    check(|| {
        use loom::sync::atomic::{AtomicBool, Ordering};
        let sale = sale(2);
        let seen = Arc::new(AtomicBool::new(false));
        let operator = {
            let (sale, seen) = (Arc::clone(&sale), Arc::clone(&seen));
            thread::spawn(move || {
                assert!(sale.apply(SaleAction::Pause));
                seen.store(true, Ordering::Release);
            })
        };
        let racing = sale.reserve(1, NOW);
        assert!(
            matches!(racing, Reservation::Won { .. } | Reservation::Paused),
            "{racing:?}"
        );
        operator.join().unwrap();
        assert!(seen.load(Ordering::Acquire));
        assert_eq!(sale.reserve(2, NOW), Reservation::Paused);
        assert_eq!(sale.lookup(2), Holding::None);
    });
}

/// A journal that drops its changes: the models below look at the answers.
struct Discard;

impl Journal for Discard {
    fn write(&self, _: &str, _: &Change, _: u64) {}
    fn draw(&self, _: &str, _: &DrawEvent, _: u64) {}
}

/// In a sale with holds, a payment racing the deadline's sweep is decided
/// once: either it is confirmed and the sweep finds nothing to expire, or the
/// sweep expires the hold and the payment is told `Expired`.
#[test]
fn confirm_races_with_expiry() {
    check(|| {
        let spec = SaleSpec {
            hold_ms: Some(10),
            ..SaleSpec::instant("loom", 1, 0)
        };
        let sale = Arc::new(Sale::with_holds(spec, &[], std::sync::Arc::new(Discard)).unwrap());
        assert!(matches!(sale.reserve(1, 0), Reservation::Held { .. }));
        let sweeper = {
            let sale = Arc::clone(&sale);
            thread::spawn(move || sale.expire_due(10))
        };
        // The payment arrives one millisecond before the deadline, but may be
        // processed after the sweep of the deadline itself.
        let paid = sale.confirm(1, "p", 9).unwrap();
        sweeper.join().unwrap();
        let status = sale.status(10);
        match paid {
            Confirm::Confirmed { ticket: 1, .. } => {
                assert_eq!((status.confirmed, status.held), (1, 0));
            }
            Confirm::Expired => assert_eq!((status.confirmed, status.held), (0, 0)),
            other => panic!("{other:?}"),
        }
    });
}
