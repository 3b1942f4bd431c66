//! Reservations per second of the core alone (no network, no log), on 1 and
//! 2 threads.
//!
//! Run: `cargo bench -p flashsale-core --bench core`
//!
//! Three workloads:
//! - `wins`: every request a distinct user of a huge sale, so every request
//!   claims a buyer slot and takes a ticket by CAS (the contended write path);
//! - `rush`: 200 tickets, a million distinct users: the opening second, where
//!   almost every request meets a sold-out sale;
//! - `sold-out`: a sold-out sale hammered by winners and non-winners (reads
//!   only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use flashsale_core::{Reservation, Sale, SaleSpec};

fn spec(capacity: u32) -> SaleSpec {
    SaleSpec::instant("bench", capacity, 0)
}

/// Runs `per_thread` reservations on each of `threads` threads; user ids come
/// from `user(thread, i)`. Returns reservations per second.
fn run(sale: &Arc<Sale>, threads: u64, per_thread: u64, user: fn(u64, u64) -> u64) -> (f64, u64) {
    let wins = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (sale, wins) = (Arc::clone(sale), Arc::clone(&wins));
            s.spawn(move || {
                let mut won = 0;
                for i in 0..per_thread {
                    if let Reservation::Won { .. } = sale.reserve(user(t, i), 1) {
                        won += 1;
                    }
                }
                wins.fetch_add(won, Ordering::Relaxed);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    (
        (threads * per_thread) as f64 / secs,
        wins.load(Ordering::Relaxed),
    )
}

fn distinct(t: u64, i: u64) -> u64 {
    t << 40 | i
}

fn report(name: &str, threads: u64, rate: f64, wins: u64) {
    println!(
        "{name:<9} threads={threads}  {:>12.0} reservations/s  ({wins} wins)",
        rate
    );
}

fn main() {
    const N: u64 = 2_000_000;
    for threads in [1, 2] {
        let per = N / threads;
        let sale = Arc::new(Sale::new(spec(N as u32)).expect("valid sale"));
        let (rate, wins) = run(&sale, threads, per, distinct);
        report("wins", threads, rate, wins);

        let sale = Arc::new(Sale::new(spec(200)).expect("valid sale"));
        let (rate, wins) = run(&sale, threads, 1_000_000 / threads, distinct);
        report("rush", threads, rate, wins);

        // Sold out: the same sale again, half the users are past winners.
        let (rate, wins) = run(&sale, threads, 10_000_000 / threads, |t, i| {
            distinct(t, i % 400)
        });
        report("sold-out", threads, rate, wins);
    }
}
