//! A sale with holds through its public API: the journal sees every decision
//! in order, answers wait for durability, and under concurrent buyers,
//! payments, cancels and expiries no ticket is ever held or confirmed twice
//! and the journal replays to the sale's state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use flashsale_core::draw::DrawEvent;
use flashsale_core::holds::{Change, Confirm, Hold, HoldStatus, Release};
use flashsale_core::{Journal, Reservation, Sale, SaleSpec, SaleState};
use flashsale_protocol::{ReleaseReason, SaleAction};

/// A journal that keeps every change in order, like the log's queue.
#[derive(Default)]
struct Queue(Mutex<Vec<Change>>);

impl Journal for Queue {
    fn write(&self, sale: &str, change: &Change, _at_ms: u64) {
        assert_eq!(sale, "gig");
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(change.clone());
    }

    fn draw(&self, _sale: &str, event: &DrawEvent, _at_ms: u64) {
        panic!("a sale without a draw journalled {event:?}")
    }
}

impl Queue {
    /// Everything queued so far, as a log writer takes it.
    fn take(&self) -> Vec<Change> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

const HOLD_MS: u64 = 1_000;

fn spec(capacity: u32) -> SaleSpec {
    SaleSpec {
        hold_ms: Some(HOLD_MS),
        ..SaleSpec::instant("gig", capacity, 0)
    }
}

fn sale(capacity: u32) -> (Sale, Arc<Queue>) {
    let queue = Arc::new(Queue::default());
    let sale = Sale::with_holds(spec(capacity), &[], queue.clone()).unwrap();
    (sale, queue)
}

/// Syncs the "log": every queued change becomes durable, in order.
fn sync(sale: &Sale, queue: &Queue) -> Vec<Change> {
    let changes = queue.take();
    for change in &changes {
        sale.change_durable(change);
    }
    changes
}

#[test]
fn holds_need_a_journal_and_instant_sales_refuse_hold_calls() {
    assert!(Sale::new(spec(1)).is_err());
    let instant = Sale::new(SaleSpec::instant("i", 1, 0)).unwrap();
    assert!(instant.confirm(1, "p", 0).is_err());
    assert!(instant.cancel(1, 0).is_err());
    assert_eq!(instant.expire_due(0), None);
    let bad_hold = SaleSpec {
        hold_ms: Some(0),
        ..spec(1)
    };
    assert!(Sale::with_holds(bad_hold, &[], Arc::new(Queue::default())).is_err());
}

#[test]
fn a_hold_expires_and_its_ticket_sells_again_once_the_expiry_is_durable() {
    let (sale, queue) = sale(1);
    assert_eq!(
        sale.reserve(1, 10),
        Reservation::Held {
            ticket: 1,
            expires_at_ms: 10 + HOLD_MS
        }
    );
    assert_eq!(sync(&sale, &queue).len(), 1);
    assert_eq!(sale.status(10).state, SaleState::SoldOut);
    assert_eq!(sale.reserve(2, 20), Reservation::SoldOut);

    assert_eq!(sale.expire_due(10 + HOLD_MS), None, "no hold left");
    assert_eq!(
        sale.reserve(2, 10 + HOLD_MS),
        Reservation::SoldOut,
        "not on sale until the expiry is on disk"
    );
    assert_eq!(
        sync(&sale, &queue),
        [Change::Released {
            ticket: 1,
            user: 1,
            reason: ReleaseReason::Expired
        }]
    );
    assert_eq!(sale.status(10 + HOLD_MS).state, SaleState::Open);
    assert!(matches!(
        sale.reserve(2, 10 + HOLD_MS),
        Reservation::Held { ticket: 1, .. }
    ));
    assert_eq!(sale.confirm(1, "late", 10 + HOLD_MS), Ok(Confirm::Expired));
}

#[test]
fn pay_cancel_and_the_gate() {
    let (sale, queue) = sale(3);
    let _ = sale.reserve(1, 0);
    let _ = sale.reserve(2, 0);
    sync(&sale, &queue);
    assert_eq!(
        sale.confirm(1, "pi_1", 5),
        Ok(Confirm::Confirmed {
            ticket: 1,
            durable: false
        })
    );
    sync(&sale, &queue);
    assert_eq!(
        sale.reserve(1, 6),
        Reservation::AlreadyHeld(Hold {
            ticket: 1,
            status: HoldStatus::Confirmed,
            durable: true
        })
    );
    assert_eq!(sale.cancel(2, 7), Ok(Release::Released { ticket: 2 }));

    assert!(sale.apply(SaleAction::Pause));
    assert_eq!(sale.reserve(3, 8), Reservation::Paused);
    assert_eq!(
        sale.reserve(1, 8),
        Reservation::AlreadyHeld(Hold {
            ticket: 1,
            status: HoldStatus::Confirmed,
            durable: true
        }),
        "a holder still learns their ticket while paused"
    );
    assert_eq!(sale.status(8).state, SaleState::Paused);
    assert!(sale.apply(SaleAction::Resume));
    sync(&sale, &queue);
    let status = sale.status(9);
    assert_eq!((status.remaining, status.held, status.confirmed), (2, 0, 1));
    assert!(sale.apply(SaleAction::Close));
    assert!(!sale.apply(SaleAction::Resume), "closed is final");
    assert_eq!(sale.reserve(3, 9), Reservation::Closed);
    assert_eq!(sale.status(9).state, SaleState::Closed);
}

#[test]
fn the_gate_of_a_sale_without_holds() {
    let sale = Sale::new(SaleSpec::instant("i", 2, 0)).unwrap();
    assert!(matches!(sale.reserve(1, 0), Reservation::Won { ticket: 1 }));
    assert!(sale.apply(SaleAction::Pause));
    assert_eq!(sale.reserve(2, 0), Reservation::Paused);
    assert!(
        matches!(
            sale.reserve(1, 0),
            Reservation::AlreadyOwned { ticket: 1, .. }
        ),
        "a winner still learns their ticket"
    );
    assert_eq!(sale.buyer_entries(), 1, "a paused answer claims nothing");
    assert!(sale.apply(SaleAction::Resume));
    assert!(matches!(sale.reserve(2, 0), Reservation::Won { ticket: 2 }));
    assert!(sale.apply(SaleAction::Close));
    assert_eq!(sale.reserve(3, 0), Reservation::Closed);
}

#[test]
fn concurrent_buyers_payers_and_cancellers_never_share_a_ticket() {
    const CAPACITY: u32 = 8;
    const THREADS: u64 = 4;
    const USERS_PER_THREAD: u64 = 50;
    let (sale, queue) = sale(CAPACITY);
    let sale = Arc::new(sale);
    let queue_for_writer = queue.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The "log writer": makes queued changes durable, in order, until done.
    let writer = {
        let (sale, done) = (sale.clone(), done.clone());
        thread::spawn(move || {
            let mut log = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                log.extend(sync(&sale, &queue_for_writer));
                if finished {
                    return log;
                }
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let sale = sale.clone();
            thread::spawn(move || {
                // Time is logical: each thread steps it on its own, so holds
                // expire in the middle of the others' payments.
                let mut now = 0;
                let mut confirmed = Vec::new();
                for i in 0..USERS_PER_THREAD {
                    let user = t * 1_000 + i;
                    now += 37;
                    if let Reservation::Held { ticket, .. } = sale.reserve(user, now) {
                        match i % 3 {
                            0 => {
                                if let Ok(Confirm::Confirmed { .. }) =
                                    sale.confirm(user, &format!("pay-{user}"), now + 5)
                                {
                                    confirmed.push((user, ticket));
                                }
                            }
                            1 => {
                                let _ = sale.cancel(user, now + 1);
                            }
                            _ => {} // abandons: expires
                        }
                    }
                    let _ = sale.expire_due(now);
                }
                confirmed
            })
        })
        .collect();
    let mut confirmed: Vec<(u64, u32)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    let log = writer.join().unwrap();

    // No ticket confirmed twice, no user twice.
    confirmed.sort_unstable_by_key(|&(_, t)| t);
    let by_ticket: BTreeMap<u32, u64> = confirmed.iter().map(|&(u, t)| (t, u)).collect();
    assert_eq!(by_ticket.len(), confirmed.len(), "{confirmed:?}");
    let by_user: HashMap<u64, u32> = confirmed.iter().copied().collect();
    assert_eq!(by_user.len(), confirmed.len());
    assert!(confirmed.len() <= CAPACITY as usize);

    // The log replays to the sale's state.
    let replayed = Sale::with_holds(spec(CAPACITY), &log, Arc::new(Queue::default())).unwrap();
    let (now, a, b) = (0, sale.status(0), replayed.status(0));
    assert_eq!(
        (a.remaining, a.held, a.confirmed),
        (b.remaining, b.held, b.confirmed)
    );
    for &(user, ticket) in &confirmed {
        assert_eq!(
            replayed.hold_of(user, now).unwrap(),
            Some(Hold {
                ticket,
                status: HoldStatus::Confirmed,
                durable: true
            })
        );
    }
    assert_eq!(a.confirmed as usize, confirmed.len());
}
