//! Fairness measured, not assumed: over many draws, users who enter in the
//! first 10 ms of the window and users who enter in its last 10 ms win at
//! rates a chi-square test cannot tell apart, while the same test tells a
//! first-come, first-served sale apart at once.
//!
//! Every draw goes through the core as a server runs it (entries at their
//! times, the draw at the close); seeds and user ids come from a seeded
//! generator, so the test is deterministic and cannot flake.

use std::sync::Arc;

use flashsale_core::draw::DrawEvent;
use flashsale_core::holds::Change;
use flashsale_core::{DrawSpec, History, Journal, Reservation, Sale, SaleSpec};
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng};

const DRAWS: usize = 300;
const EARLY: usize = 100;
const MIDDLE: usize = 300;
const LATE: usize = 100;
const CAPACITY: u32 = 50;
const OPENS: u64 = 1_000_000;
const WINDOW: u64 = 5_000;
/// Chi-square with one degree of freedom beyond which two rates differ at
/// the 0.1% level.
const CRITICAL: f64 = 10.828;

struct Discard;

impl Journal for Discard {
    fn write(&self, _: &str, _: &Change, _: u64) {}
    fn draw(&self, _: &str, _: &DrawEvent, _: u64) {}
}

/// Wins and losses of one group.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    won: u64,
    lost: u64,
}

/// Pearson's chi-square of a 2x2 table: do the two groups win at the same
/// rate?
fn chi_square(a: Tally, b: Tally) -> f64 {
    let table = [[a.won, a.lost], [b.won, b.lost]].map(|row| row.map(|n| n as f64));
    let total: f64 = table.iter().flatten().sum();
    let rows = table.map(|row| row[0] + row[1]);
    let cols = [table[0][0] + table[1][0], table[0][1] + table[1][1]];
    let mut chi = 0.0;
    for (r, row) in table.iter().enumerate() {
        for (c, &observed) in row.iter().enumerate() {
            let expected = rows[r] * cols[c] / total;
            chi += (observed - expected).powi(2) / expected;
        }
    }
    chi
}

/// One draw: early, middle and late entrants at their times; the winners.
fn one_draw(rng: &mut SmallRng) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let spec = SaleSpec {
        draw: Some(DrawSpec {
            window_ms: WINDOW,
            seed: rng.random(),
        }),
        ..SaleSpec::instant("fair", CAPACITY, OPENS)
    };
    let sale = Sale::recover(spec, History::default(), Arc::new(Discard)).expect("valid");
    let mut users = |n: usize| -> Vec<u64> { (0..n).map(|_| rng.random()).collect() };
    let (early, middle, late) = (users(EARLY), users(MIDDLE), users(LATE));
    let enter = |group: &[u64], from: u64, to: u64, rng: &mut SmallRng| {
        for &user in group {
            let at = rng.random_range(from..to);
            assert!(matches!(
                sale.reserve(user, at),
                Reservation::Entered { .. }
            ));
        }
    };
    enter(&early, OPENS, OPENS + 10, rng);
    enter(&middle, OPENS + 10, OPENS + WINDOW - 10, rng);
    enter(&late, OPENS + WINDOW - 10, OPENS + WINDOW, rng);
    let result = sale.run_draw(OPENS + WINDOW).expect("due");
    (early, late, result.winners.clone())
}

fn tally(group: &[u64], winners: &[u64]) -> Tally {
    let won = group.iter().filter(|u| winners.contains(u)).count() as u64;
    Tally {
        won,
        lost: group.len() as u64 - won,
    }
}

#[test]
fn early_and_late_entrants_win_at_the_same_rate() {
    let mut rng = SmallRng::seed_from_u64(0xfa1e);
    let (mut early, mut late) = (Tally::default(), Tally::default());
    let (mut fcfs_early, mut fcfs_late) = (Tally::default(), Tally::default());
    for _ in 0..DRAWS {
        let (e, l, winners) = one_draw(&mut rng);
        let (te, tl) = (tally(&e, &winners), tally(&l, &winners));
        for (sum, t) in [(&mut early, te), (&mut late, tl)] {
            sum.won += t.won;
            sum.lost += t.lost;
        }
        // The same crowd sold first come, first served: the first
        // `CAPACITY` arrivals (all early) win.
        fcfs_early.won += CAPACITY as u64;
        fcfs_early.lost += (EARLY as u64) - CAPACITY as u64;
        fcfs_late.lost += LATE as u64;
    }
    let drawn = chi_square(early, late);
    let rate = |t: Tally| t.won as f64 / (t.won + t.lost) as f64;
    println!(
        "draw: early {:.4}, late {:.4}, chi-square {drawn:.3}",
        rate(early),
        rate(late)
    );
    assert!(
        drawn < CRITICAL,
        "early {early:?} and late {late:?} entrants win at different rates (chi-square {drawn:.2})"
    );
    let expected = f64::from(CAPACITY) / (EARLY + MIDDLE + LATE) as f64;
    for t in [early, late] {
        assert!(
            (rate(t) - expected).abs() < 0.02,
            "win rate {} far from {expected}",
            rate(t)
        );
    }
    let sold_in_order = chi_square(fcfs_early, fcfs_late);
    assert!(
        sold_in_order > CRITICAL,
        "the test cannot tell first come, first served apart ({sold_in_order:.2})"
    );
}
