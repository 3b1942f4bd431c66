//! Multi-threaded stress of a sale with holds, with a linearizability check
//! of returned stock.
//!
//! In a sale with holds, tickets come back (cancels, operator releases), so
//! the lock-free core's "a stock once zero stays zero" is replaced by the
//! invariants of `flashsale_core::holds`: a ticket has at most one holder at
//! a time, a user holds at most one ticket, "sold out" means no ticket was
//! free, and every answer names what its user could hold at that moment.
//!
//! Threads send random reservations, confirmations, cancels and operator
//! releases for a small pool of users; each call, and the log sync that
//! follows it (a hold is answered, and a released ticket offered again,
//! only once durable), is bracketed by global sequence numbers. The checks
//! only use what the brackets make certain: an answer is explained if *some*
//! order of the calls consistent with them allows it, so a correct sale
//! never fails them, whatever the scheduling.
#![cfg(not(feature = "loom"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};

use flashsale_core::draw::DrawEvent;
use flashsale_core::holds::{Change, Confirm, Release};
use flashsale_core::{Journal, Reservation, Sale, SaleSpec};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};

const THREADS: usize = 4;
/// Time stands still: holds never expire here (the expiry races have their
/// loom model and `holds_sale`'s concurrent test); stock comes back by
/// cancels and releases, which the threads interleave freely.
const NOW: u64 = 1;

/// The log: changes queued in decision order, made durable by whoever
/// syncs. One sync at a time, as one log writer: when a sync returns,
/// everything queued before it is durable.
#[derive(Default)]
struct Log {
    queue: Mutex<Vec<Change>>,
    writer: Mutex<()>,
}

impl Journal for Log {
    fn write(&self, _sale: &str, change: &Change, _at_ms: u64) {
        lock(&self.queue).push(change.clone());
    }

    fn draw(&self, _sale: &str, event: &DrawEvent, _at_ms: u64) {
        panic!("a sale without a draw journalled {event:?}")
    }
}

impl Log {
    fn sync(&self, sale: &Sale, all: &Mutex<Vec<Change>>) {
        let _writer = lock(&self.writer);
        let changes = std::mem::take(&mut *lock(&self.queue));
        for change in &changes {
            sale.change_durable(change);
        }
        lock(all).extend(changes);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One completed call, bracketed by global sequence numbers.
#[derive(Debug, Clone, Copy)]
struct Op {
    start: u64,
    end: u64,
    user: u64,
    call: Call,
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Reserve(Reservation),
    Confirm(Confirm),
    Cancel(Release),
    Release(Release),
}

impl Op {
    /// The ticket this call gave its user.
    fn acquired(&self) -> Option<u32> {
        match self.call {
            Call::Reserve(Reservation::Held { ticket, .. }) => Some(ticket),
            _ => None,
        }
    }

    /// The ticket this call took from its user.
    fn released(&self) -> Option<u32> {
        match self.call {
            Call::Cancel(Release::Released { ticket })
            | Call::Release(Release::Released { ticket }) => Some(ticket),
            _ => None,
        }
    }

    /// Whether it may be ordered before `other`.
    fn may_precede(&self, other: &Op) -> bool {
        self.start < other.end
    }

    /// Whether it is ordered before `other` in every order.
    fn precedes(&self, other: &Op) -> bool {
        self.end < other.start
    }
}

/// Runs `attempts` random calls on each thread; returns every call and the
/// log.
fn run_round(
    sale: &Sale,
    log: &Log,
    users: u64,
    attempts: usize,
    seed: u64,
) -> (Vec<Op>, Vec<Change>) {
    let seq = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS);
    let all = Mutex::new(Vec::new());
    let histories: Vec<Vec<Op>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (seq, barrier, all) = (&seq, &barrier, &all);
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(t as u64));
                    let mut ops = Vec::with_capacity(attempts);
                    barrier.wait();
                    for _ in 0..attempts {
                        let user = rng.random_range(0..users);
                        let dice = rng.random_range(0..100);
                        let start = seq.fetch_add(1, Ordering::SeqCst);
                        let call = match dice {
                            0..60 => Call::Reserve(sale.reserve(user, NOW)),
                            60..75 => Call::Confirm(
                                sale.confirm(user, &format!("pay-{user}"), NOW)
                                    .expect("holds"),
                            ),
                            75..92 => Call::Cancel(sale.cancel(user, NOW).expect("holds")),
                            _ => Call::Release(sale.release(user, NOW).expect("holds")),
                        };
                        log.sync(sale, all);
                        let end = seq.fetch_add(1, Ordering::SeqCst);
                        ops.push(Op {
                            start,
                            end,
                            user,
                            call,
                        });
                    }
                    ops
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let log = all.into_inner().unwrap_or_else(PoisonError::into_inner);
    (histories.concat(), log)
}

/// A round's calls, and what the brackets make certain.
struct History<'a> {
    ops: &'a [Op],
    capacity: u32,
}

impl History<'_> {
    fn acquisitions(&self) -> impl Iterator<Item = (&Op, u32)> + '_ {
        self.ops.iter().filter_map(|op| Some((op, op.acquired()?)))
    }

    /// Whether a release of `user`'s ticket (`ticket`, or any) may lie
    /// after `from` and before `to`.
    fn may_release_between(&self, user: u64, ticket: Option<u32>, from: &Op, to: &Op) -> bool {
        self.ops.iter().any(|r| {
            r.user == user
                && r.released()
                    .is_some_and(|t| ticket.is_none_or(|want| want == t))
                && from.may_precede(r)
                && r.may_precede(to)
        })
    }

    /// Whether `user` may hold `ticket` (held or paid) when `at` happens:
    /// some acquisition of it may precede `at`, and no release certainly
    /// falls between the two.
    fn may_hold(&self, user: u64, ticket: u32, at: &Op) -> bool {
        self.acquisitions().any(|(a, t)| {
            a.user == user
                && t == ticket
                && a.may_precede(at)
                && !self.ops.iter().any(|r| {
                    r.user == user
                        && r.released() == Some(ticket)
                        && a.precedes(r)
                        && r.precedes(at)
                })
        })
    }

    /// Whether `user` certainly holds a ticket throughout `at`.
    fn surely_holds(&self, user: u64, at: &Op) -> bool {
        self.acquisitions().any(|(a, _)| {
            a.user == user && a.precedes(at) && !self.may_release_between(user, None, a, at)
        })
    }

    /// Whether `ticket` is certainly free throughout `at`: nobody may have
    /// taken it by then, or a release of it completed before `at` began
    /// after every acquisition that may precede `at` had ended.
    fn surely_free(&self, ticket: u32, at: &Op) -> bool {
        let taken: Vec<&Op> = self
            .acquisitions()
            .filter(|(a, t)| *t == ticket && a.may_precede(at))
            .map(|(a, _)| a)
            .collect();
        taken.is_empty()
            || self.ops.iter().any(|r| {
                r.released() == Some(ticket)
                    && r.precedes(at)
                    && taken.iter().all(|a| a.precedes(r))
            })
    }

    fn check(&self) {
        let acquisitions: Vec<(&Op, u32)> = self.acquisitions().collect();
        for (i, &(a, t)) in acquisitions.iter().enumerate() {
            assert!((1..=self.capacity).contains(&t), "ticket {t} out of range");
            for &(b, u) in &acquisitions[i + 1..] {
                // One holder per ticket: between two users' holds of it,
                // the first one's release.
                if t == u && a.user != b.user {
                    assert!(
                        self.may_release_between(a.user, Some(t), a, b)
                            || self.may_release_between(b.user, Some(t), b, a),
                        "ticket {t} held by users {} ({a:?}) and {} ({b:?}) with no release between",
                        a.user,
                        b.user
                    );
                }
                // One ticket per user: between two holds, a release.
                if a.user == b.user {
                    assert!(
                        self.may_release_between(a.user, None, a, b)
                            || self.may_release_between(a.user, None, b, a),
                        "user {} held tickets {t} ({a:?}) and {u} ({b:?}) at once",
                        a.user
                    );
                }
            }
        }
        for op in self.ops {
            self.check_answer(op);
        }
    }

    fn check_answer(&self, op: &Op) {
        let user = op.user;
        match op.call {
            Call::Reserve(Reservation::Held { .. }) => {}
            Call::Reserve(Reservation::AlreadyHeld(hold)) => {
                // Not necessarily durable yet: the caller then waits for
                // the log before answering, as for the first answer.
                assert!(self.may_hold(user, hold.ticket, op), "{op:?}: not held");
            }
            Call::Reserve(Reservation::SoldOut) => {
                assert!(!self.surely_holds(user, op), "{op:?}: sold out to a holder");
                for ticket in 1..=self.capacity {
                    assert!(
                        !self.surely_free(ticket, op),
                        "{op:?}: sold out while ticket {ticket} was free"
                    );
                }
            }
            Call::Confirm(Confirm::Confirmed { ticket, .. })
            | Call::Cancel(Release::Confirmed { ticket })
            | Call::Cancel(Release::Released { ticket })
            | Call::Release(Release::Released { ticket }) => {
                assert!(
                    self.may_hold(user, ticket, op),
                    "{op:?}: names a ticket the user cannot hold"
                );
            }
            Call::Confirm(Confirm::Expired | Confirm::NoHold)
            | Call::Cancel(Release::NoHold)
            | Call::Release(Release::NoHold) => {
                assert!(
                    !self.surely_holds(user, op),
                    "{op:?}: the user holds a ticket"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        if let Call::Cancel(Release::Confirmed { ticket }) = op.call {
            let paid = self.ops.iter().any(|c| {
                c.user == user
                    && matches!(c.call, Call::Confirm(Confirm::Confirmed { ticket: t, .. }) if t == ticket)
                    && c.may_precede(op)
            });
            assert!(paid, "{op:?}: paid, but never confirmed");
        }
    }
}

#[test]
fn returned_stock_is_linearizable() {
    let rounds = if cfg!(debug_assertions) { 150 } else { 1_500 };
    let mut rng = SmallRng::seed_from_u64(0x4f1d_5eed);
    for _ in 0..rounds {
        let capacity = rng.random_range(1..=6);
        let users = rng.random_range(1..=u64::from(capacity) * 3);
        let spec = SaleSpec {
            hold_ms: Some(600_000),
            ..SaleSpec::instant("stress", capacity, 0)
        };
        let log = Arc::new(Log::default());
        let sale = Sale::with_holds(spec.clone(), &[], log.clone()).expect("a valid sale");
        let (ops, changes) = run_round(&sale, &log, users, 200, rng.random());
        History {
            ops: &ops,
            capacity,
        }
        .check();

        // The counters add up, and the log replays to the same sale.
        let status = sale.status(NOW);
        assert_eq!(
            status.remaining + status.held + status.confirmed,
            capacity,
            "{status:?}"
        );
        let replayed =
            Sale::with_holds(spec, &changes, Arc::new(Log::default())).expect("the log replays");
        let again = replayed.status(NOW);
        assert_eq!(
            (status.remaining, status.held, status.confirmed),
            (again.remaining, again.held, again.confirmed)
        );
        for user in 0..users {
            assert_eq!(
                sale.hold_of(user, NOW)
                    .expect("holds")
                    .map(|h| (h.ticket, h.status)),
                replayed
                    .hold_of(user, NOW)
                    .expect("holds")
                    .map(|h| (h.ticket, h.status)),
                "user {user}"
            );
        }
    }
}

#[test]
fn the_checker_catches_a_ticket_held_twice_and_a_false_sold_out() {
    let held = |start, user, ticket| Op {
        start,
        end: start + 1,
        user,
        call: Call::Reserve(Reservation::Held {
            ticket,
            expires_at_ms: 600_000,
        }),
    };
    let twice = [held(0, 1, 1), held(2, 2, 1)];
    let caught = std::panic::catch_unwind(|| {
        History {
            ops: &twice,
            capacity: 1,
        }
        .check()
    });
    assert!(caught.is_err(), "a ticket held by two users went unnoticed");

    let sold_out = Op {
        start: 0,
        end: 1,
        user: 3,
        call: Call::Reserve(Reservation::SoldOut),
    };
    let early = [sold_out, held(2, 1, 1)];
    let caught = std::panic::catch_unwind(|| {
        History {
            ops: &early,
            capacity: 1,
        }
        .check()
    });
    assert!(
        caught.is_err(),
        "sold out with a free ticket went unnoticed"
    );

    let released = Op {
        start: 2,
        end: 3,
        user: 1,
        call: Call::Cancel(Release::Released { ticket: 1 }),
    };
    let fine = [held(0, 1, 1), released, held(4, 2, 1)];
    History {
        ops: &fine,
        capacity: 1,
    }
    .check();
}
