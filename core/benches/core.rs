//! Reservations per second of the core alone (no network, no log), on 1 and
//! 2 threads.
//!
//! Run: `cargo bench -p flashsale-core --bench core` (one workload:
//! `... --bench core -- rush`; a quick look: `-- --warm-up-time 1
//! --measurement-time 3`).
//!
//! Three workloads, one criterion group each, measured on 1 and 2 threads:
//! - `wins`: every request a distinct user of a fresh sale of 2,000,000
//!   tickets, so every request claims a buyer slot and takes a ticket by CAS
//!   (the contended write path);
//! - `rush`: a fresh sale of 200 tickets meets 1,000,000 distinct users: the
//!   opening second, where almost every request meets a sold-out sale;
//! - `sold-out`: a sold-out sale hammered by 10,000,000 requests, half of
//!   them from its winners (reads only).
//!
//! One iteration is one such run, split evenly over the threads and timed
//! from their spawn to their join; a fresh sale is built (and the old one
//! dropped) outside the timing. Criterion reports the time per iteration and,
//! from the run's size, reservations per second (`elem/s`). Each iteration
//! checks its number of wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flashsale_core::{Reservation, Sale, SaleSpec};

/// The thread counts every workload runs on.
const THREADS: [u64; 2] = [1, 2];
/// A time every sale is open at.
const NOW_MS: u64 = 1;

fn sale(capacity: u32) -> Sale {
    Sale::new(SaleSpec::instant("bench", capacity, 0)).expect("valid sale")
}

/// A user id unique to thread `t` and request `i`.
fn distinct(t: u64, i: u64) -> u64 {
    t << 40 | i
}

/// One workload: its run, and the sale it runs on.
struct Workload {
    name: &'static str,
    /// Reservations per iteration, over all threads.
    requests: u64,
    /// The user of request `i` on thread `t`.
    user: fn(u64, u64) -> u64,
    /// The sale each iteration runs on.
    sale: Setup,
    /// The wins an iteration must count.
    wins: u64,
}

enum Setup {
    /// A fresh sale of this many tickets for each iteration.
    Fresh(u32),
    /// One sold-out sale for every iteration (see [`sold_out`]).
    SoldOut,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "wins",
        requests: 2_000_000,
        user: distinct,
        sale: Setup::Fresh(2_000_000),
        wins: 2_000_000,
    },
    Workload {
        name: "rush",
        requests: 1_000_000,
        user: distinct,
        sale: Setup::Fresh(200),
        wins: 200,
    },
    // 200 users per thread, the first 100 of them winners.
    Workload {
        name: "sold-out",
        requests: 10_000_000,
        user: |t, i| distinct(t, i % 200),
        sale: Setup::SoldOut,
        wins: 0,
    },
];

/// A sale of 200 tickets won by users `distinct(t, i)`, `t < 2`, `i < 100`.
fn sold_out() -> Sale {
    let sale = sale(200);
    let (wins, _) = run(&sale, 2, 100, distinct);
    assert_eq!(wins, 200, "the rush that sells the sale out");
    sale
}

/// Runs `per_thread` reservations on each of `threads` threads; user ids
/// come from `user(thread, i)`. Returns the wins and the time taken.
fn run(sale: &Sale, threads: u64, per_thread: u64, user: fn(u64, u64) -> u64) -> (u64, Duration) {
    let wins = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let wins = &wins;
            s.spawn(move || {
                let mut won = 0;
                for i in 0..per_thread {
                    if let Reservation::Won { .. } = sale.reserve(user(t, i), NOW_MS) {
                        won += 1;
                    }
                }
                wins.fetch_add(won, Ordering::Relaxed);
            });
        }
    });
    (wins.into_inner(), start.elapsed())
}

fn bench(c: &mut Criterion) {
    for workload in &WORKLOADS {
        let mut group = c.benchmark_group(workload.name);
        group
            .sample_size(20)
            .throughput(Throughput::Elements(workload.requests));
        for threads in THREADS {
            let id = BenchmarkId::new("threads", threads);
            group.bench_with_input(id, &threads, |b, &threads| {
                let mut sold = None;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fresh;
                        let sale = match workload.sale {
                            Setup::Fresh(capacity) => {
                                fresh = sale(capacity);
                                &fresh
                            }
                            Setup::SoldOut => sold.get_or_insert_with(sold_out),
                        };
                        let per_thread = workload.requests / threads;
                        let (wins, took) = run(sale, threads, per_thread, workload.user);
                        assert_eq!(wins, workload.wins, "{} wins", workload.name);
                        total += took;
                    }
                    total
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
