//! Multi-threaded stress of `Sale::reserve` with a linearizability check, and
//! a property test of sequential histories against a reference model.
#![cfg(not(feature = "loom"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use flashsale_core::{Holding, Reservation, Sale, SaleSpec, SaleState};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};

const THREADS: usize = 4;
const NOW: u64 = 1;

fn sale(capacity: u32) -> Sale {
    Sale::new(SaleSpec::instant("stress", capacity, 0)).unwrap()
}

/// One completed call, bracketed by global sequence numbers.
#[derive(Debug, Clone, Copy)]
struct Op {
    start: u64,
    end: u64,
    user: u64,
    kind: OpKind,
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    Reserve(Reservation),
    MarkDurable,
}

/// Runs `attempts` random requests on each thread against a fresh sale and
/// returns every thread's history.
fn run_round(sale: &Sale, pool: &[u64], attempts: usize, seed: u64) -> Vec<Op> {
    let seq = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS);
    let histories: Vec<Vec<Op>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (seq, barrier) = (&seq, &barrier);
                scope.spawn(move || {
                    // One generator per thread, each from its own seed.
                    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(t as u64));
                    let mut ops = Vec::with_capacity(attempts * 2);
                    barrier.wait();
                    for _ in 0..attempts {
                        let user = pool[rng.random_range(0..pool.len())];
                        let start = seq.fetch_add(1, Ordering::SeqCst);
                        let answer = sale.reserve(user, NOW);
                        let end = seq.fetch_add(1, Ordering::SeqCst);
                        ops.push(Op {
                            start,
                            end,
                            user,
                            kind: OpKind::Reserve(answer),
                        });
                        if matches!(answer, Reservation::Won { .. }) && rng.random_bool(0.5) {
                            let start = seq.fetch_add(1, Ordering::SeqCst);
                            assert!(sale.mark_durable(user));
                            let end = seq.fetch_add(1, Ordering::SeqCst);
                            ops.push(Op {
                                start,
                                end,
                                user,
                                kind: OpKind::MarkDurable,
                            });
                        }
                    }
                    ops
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    histories.concat()
}

/// Checks invariants 1 to 4 on one round's history.
fn check_round(sale: &Sale, capacity: u32, ops: &[Op]) {
    let reserves = ops.iter().filter_map(|op| match op.kind {
        OpKind::Reserve(answer) => Some((op, answer)),
        OpKind::MarkDurable => None,
    });
    // (1) and (2): at most `capacity` wins, unique tickets in range, one per user.
    let mut wins: HashMap<u64, (u32, &Op)> = HashMap::new();
    let mut tickets = vec![false; capacity as usize + 1];
    for (op, answer) in reserves.clone() {
        if let Reservation::Won { ticket } = answer {
            assert!(
                (1..=capacity).contains(&ticket),
                "ticket {ticket} out of range"
            );
            assert!(
                !std::mem::replace(&mut tickets[ticket as usize], true),
                "ticket {ticket} sold twice"
            );
            assert!(
                wins.insert(op.user, (ticket, op)).is_none(),
                "user {} won twice",
                op.user
            );
        }
    }
    let win_starts: Vec<u64> = {
        let mut v: Vec<u64> = wins.values().map(|(_, op)| op.start).collect();
        v.sort_unstable();
        v
    };
    let durable_marks: HashMap<u64, u64> = ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::MarkDurable))
        .map(|op| (op.user, op.start))
        .collect();
    for (op, answer) in reserves {
        match answer {
            Reservation::Won { .. } => {}
            Reservation::AlreadyOwned { ticket, durable } => {
                let (won, win) = wins.get(&op.user).copied().expect("owned without a win");
                assert_eq!(ticket, won, "user {} owns {ticket}, won {won}", op.user);
                assert!(win.start < op.end, "owned before the win started");
                if durable {
                    let marked = durable_marks.get(&op.user).expect("durable without a mark");
                    assert!(*marked < op.end, "durable before it was marked");
                }
            }
            Reservation::SoldOut => {
                // (3)/(4): some serial order puts `capacity` wins before it.
                let before = win_starts.partition_point(|&s| s < op.end);
                assert_eq!(
                    before, capacity as usize,
                    "sold out with {before} wins possible before it"
                );
                // A winner is never told sold out: its win can be ordered
                // neither before this answer (then it owns a ticket) nor after
                // it (then a ticket was left).
                assert!(
                    !wins.contains_key(&op.user),
                    "sold out to winner {}",
                    op.user
                );
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let status = sale.status(NOW);
    assert_eq!(
        status.sold as usize,
        wins.len(),
        "a claimed ticket was never answered"
    );
    for (&user, &(ticket, _)) in &wins {
        let holding = sale.lookup(user);
        assert!(
            holding == Holding::Pending { ticket } || holding == Holding::Durable { ticket },
            "user {user}: {holding:?}"
        );
    }
}

#[test]
fn concurrent_rounds_are_linearizable() {
    // Millions of attempts in release; fewer in debug to stay within seconds.
    let rounds = if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    };
    let attempts = 500;
    let mut rng = SmallRng::seed_from_u64(0x0123_4567_89ab_cdef);
    for round in 0..rounds {
        let capacity = rng.random_range(1..=50);
        let pool_len = rng.random_range(1..=u64::from(capacity) * 3);
        let mut pool: Vec<u64> = (0..pool_len).map(|_| rng.random()).collect();
        pool[0] = if round % 2 == 0 { 0 } else { u64::MAX };
        pool.sort_unstable();
        pool.dedup();
        let sale = sale(capacity);
        let ops = run_round(&sale, &pool, attempts, rng.random());
        check_round(&sale, capacity, &ops);
    }
}

#[test]
fn many_distinct_users_fill_exactly_the_stock() {
    let sale = sale(200);
    let per_thread: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let barrier = Barrier::new(THREADS);
    let wins: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let (sale, barrier) = (&sale, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    (t * per_thread..(t + 1) * per_thread)
                        .filter(|&user| match sale.reserve(user, NOW) {
                            Reservation::Won { .. } => true,
                            Reservation::SoldOut => false,
                            other => panic!("unexpected {other:?}"),
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 200);
    assert_eq!(sale.status(NOW).state, SaleState::SoldOut);
    // Only claims in flight at the sell-out may have lost: at most one per thread.
    assert!(
        sale.buyer_entries() <= 200 + THREADS,
        "{} entries",
        sale.buyer_entries()
    );
}

/// Invariant 5: once sold out, requests write nothing to the buyer set or stock.
#[test]
fn sold_out_path_writes_nothing() {
    let capacity = 50;
    let sale = sale(capacity);
    for user in 0..u64::from(capacity) {
        assert!(matches!(sale.reserve(user, NOW), Reservation::Won { .. }));
    }
    let entries = sale.buyer_entries();
    let status = sale.status(NOW);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS as u64 {
            let (sale, barrier) = (&sale, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..20_000u64 {
                    let user = if i % 4 == 0 {
                        i % 50
                    } else {
                        1_000 + t * 1_000_000 + i
                    };
                    match sale.reserve(user, NOW) {
                        Reservation::SoldOut => assert!(user >= 50),
                        Reservation::AlreadyOwned { ticket, .. } => {
                            assert!(user < 50 && ticket == user as u32 + 1);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            });
        }
    });
    assert_eq!(sale.buyer_entries(), entries);
    assert_eq!(sale.status(NOW), status);
}

/// The sequential specification: a map of owners and the free tickets in order.
struct Model {
    opens_at_ms: u64,
    owned: HashMap<u64, (u32, bool)>,
    free: Vec<u32>,
    next: usize,
}

impl Model {
    fn reserve(&mut self, user: u64, now_ms: u64) -> Reservation {
        if now_ms < self.opens_at_ms {
            return Reservation::NotOpen {
                opens_at_ms: self.opens_at_ms,
            };
        }
        if let Some(&(ticket, durable)) = self.owned.get(&user) {
            return Reservation::AlreadyOwned { ticket, durable };
        }
        let Some(&ticket) = self.free.get(self.next) else {
            return Reservation::SoldOut;
        };
        self.next += 1;
        self.owned.insert(user, (ticket, false));
        Reservation::Won { ticket }
    }

    fn lookup(&self, user: u64) -> Holding {
        match self.owned.get(&user) {
            Some(&(ticket, true)) => Holding::Durable { ticket },
            Some(&(ticket, false)) => Holding::Pending { ticket },
            None => Holding::None,
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Reserve { user: usize, now_ms: u64 },
    MarkDurable { user: usize },
    Lookup { user: usize },
}

const USERS: [u64; 16] = [
    0,
    1,
    2,
    3,
    5,
    8,
    13,
    21,
    1 << 32,
    1 << 63,
    42,
    77,
    1_000_003,
    99,
    u64::MAX - 1,
    u64::MAX,
];

fn step() -> impl Strategy<Value = Step> {
    let user = 0..USERS.len();
    prop_oneof![
        4 => (user.clone(), 0..2_000u64).prop_map(|(user, now_ms)| Step::Reserve { user, now_ms }),
        1 => user.clone().prop_map(|user| Step::MarkDurable { user }),
        1 => user.prop_map(|user| Step::Lookup { user }),
    ]
}

fn history() -> impl Strategy<Value = (u32, Vec<bool>, u64, Vec<Step>)> {
    (1..=12u32).prop_flat_map(|capacity| {
        (
            Just(capacity),
            prop::collection::vec(any::<bool>(), capacity as usize),
            prop_oneof![Just(0u64), Just(1_000u64)],
            prop::collection::vec(step(), 0..80),
        )
    })
}

proptest! {
    #[test]
    fn sequential_histories_match_the_model((capacity, sold_mask, opens_at_ms, steps) in history()) {
        // Tickets marked sold are restored to distinct users, in reverse order.
        let mut sold: Vec<(u64, u32)> = (1..=capacity)
            .filter(|t| sold_mask[*t as usize - 1])
            .enumerate()
            .map(|(i, ticket)| (USERS[i], ticket))
            .collect();
        sold.reverse();
        let spec = SaleSpec::instant("prop", capacity, opens_at_ms);
        let sale = Sale::restore(spec, &sold).unwrap();
        let mut model = Model {
            opens_at_ms,
            owned: sold.iter().map(|&(user, ticket)| (user, (ticket, true))).collect(),
            free: (1..=capacity).filter(|t| !sold_mask[*t as usize - 1]).collect(),
            next: 0,
        };
        for step in steps {
            match step {
                Step::Reserve { user, now_ms } => {
                    let user = USERS[user];
                    prop_assert_eq!(sale.reserve(user, now_ms), model.reserve(user, now_ms));
                }
                Step::MarkDurable { user } => {
                    let user = USERS[user];
                    let owned = model.owned.get_mut(&user);
                    prop_assert_eq!(sale.mark_durable(user), owned.is_some());
                    if let Some(entry) = owned {
                        entry.1 = true;
                    }
                }
                Step::Lookup { user } => {
                    prop_assert_eq!(sale.lookup(USERS[user]), model.lookup(USERS[user]));
                }
            }
            let status = sale.status(NOW);
            prop_assert_eq!(status.sold as usize, model.owned.len());
        }
    }
}
