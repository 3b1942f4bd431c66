//! What a crowd's streams were told, and the verdict on it.
//!
//! Workers cannot know when the sale's last ticket went: the last winning
//! answer may reach any of them. So each worker keeps the moment (after
//! t0) at which each of its streams was told "sold out", and the verdict
//! is drawn once the results are merged, against the last win over every
//! worker: a stream's lag is its moment less that last win (none below
//! zero: a stream may hear of the sell-out before the last winner hears
//! of its win).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest a stream may wait after the last ticket, by default
/// (`--told-within`).
pub const TOLD_WITHIN: Duration = Duration::from_secs(2);

/// Failures listed by name in a report (the others are only counted).
const LISTED: usize = 5;

/// One worker's streams (and, merged, every worker's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTally {
    /// Streams asked for (one per user).
    pub asked: u64,
    /// Streams that answered 200 and sent their first event before t0.
    pub opened: u64,
    /// Moment of each "sold out" event, in microseconds after t0.
    pub told_us: Vec<u64>,
    /// Why some streams failed to open or ended before they were told, or
    /// a buy was answered with an error (the first few).
    pub failures: Vec<String>,
    /// Streams that ended, or broke, before they were told.
    pub ended_early: u64,
}

impl StreamTally {
    /// Notes a failure (kept by name if among the first few).
    pub fn note(&mut self, why: String) {
        if self.failures.len() < LISTED {
            self.failures.push(why);
        }
    }

    /// Adds another worker's streams.
    pub fn merge(&mut self, other: StreamTally) {
        self.asked += other.asked;
        self.opened += other.opened;
        self.told_us.extend(other.told_us);
        self.ended_early += other.ended_early;
        for why in other.failures {
            self.note(why);
        }
    }
}

/// Lags from the last ticket to streams being told, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lags {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The last stream told.
    pub max: f64,
}

/// The report's section on held streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsReport {
    /// Streams asked for.
    pub asked: u64,
    /// Streams open before t0.
    pub opened: u64,
    /// Streams that could not be opened.
    pub failed: u64,
    /// Streams told "sold out".
    pub told: u64,
    /// Open streams never told (they ended, broke, or the run's deadline
    /// came first).
    pub never_told: u64,
    /// Streams told later than the bound after the last ticket.
    pub told_late: u64,
    /// Users whose buy was answered by the sale (an outcome, not an error,
    /// a timeout or a lost connection).
    pub answered: u64,
    /// Users in the run.
    pub users: u64,
    /// Winning answers.
    pub wins: u64,
    /// Tickets in the sale.
    pub capacity: u32,
    /// From the last winning answer to each stream's "sold out".
    pub lag_ms: Option<Lags>,
    /// The bound on that lag, in milliseconds.
    pub bound_ms: u64,
    /// What went wrong, if anything.
    pub violations: Vec<String>,
    /// Why some streams failed, or buys were answered with an error (the
    /// first few).
    pub failures: Vec<String>,
    /// Whether every stream opened and was told in time, every user was
    /// answered, and the wins equal the capacity.
    pub ok: bool,
}

/// The users' side of a crowd run, for the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buys {
    /// Users in the run.
    pub users: u64,
    /// Users answered with an outcome.
    pub answered: u64,
    /// Winning answers.
    pub wins: u64,
    /// Tickets in the sale.
    pub capacity: u32,
    /// The last winning answer, after t0.
    pub last_win: Option<Duration>,
    /// How soon after the last ticket every stream must be told.
    pub told_within: Duration,
}

impl StreamsReport {
    /// The verdict on `tally` (merged over every worker).
    pub fn new(tally: &StreamTally, buys: Buys) -> StreamsReport {
        let last_win_us = buys.last_win.map_or(0, |d| d.as_micros() as u64);
        let mut lags: Vec<u64> = tally
            .told_us
            .iter()
            .map(|t| t.saturating_sub(last_win_us))
            .collect();
        lags.sort_unstable();
        let bound_us = buys.told_within.as_micros() as u64;
        let told = lags.len() as u64;
        let told_late = lags.iter().filter(|l| **l > bound_us).count() as u64;
        let failed = tally.asked.saturating_sub(tally.opened);
        let never_told = tally.opened.saturating_sub(told);
        let mut violations = Vec::new();
        if failed > 0 {
            violations.push(format!(
                "{failed} of {} streams could not be opened",
                tally.asked
            ));
        }
        if never_told > 0 {
            violations.push(format!(
                "{never_told} open streams were never told the sale is sold out"
            ));
        }
        if told_late > 0 {
            violations.push(format!(
                "{told_late} streams were told later than {} ms after the last ticket",
                buys.told_within.as_millis()
            ));
        }
        if buys.answered != buys.users {
            violations.push(format!(
                "{} of {} users were not answered",
                buys.users - buys.answered.min(buys.users),
                buys.users
            ));
        }
        if buys.wins != u64::from(buys.capacity) {
            violations.push(format!("{} wins for {} tickets", buys.wins, buys.capacity));
        }
        StreamsReport {
            asked: tally.asked,
            opened: tally.opened,
            failed,
            told,
            never_told,
            told_late,
            answered: buys.answered,
            users: buys.users,
            wins: buys.wins,
            capacity: buys.capacity,
            lag_ms: lags_of(&lags),
            bound_ms: buys.told_within.as_millis() as u64,
            ok: violations.is_empty(),
            violations,
            failures: tally.failures.clone(),
        }
    }

    /// The plain-text section.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "streams: {} asked, {} open before t0, {} failed; {} told sold out, {} never told, {} later than {} ms",
            self.asked, self.opened, self.failed, self.told, self.never_told, self.told_late, self.bound_ms
        );
        let _ = writeln!(
            out,
            "buyers: {} of {} answered, {} wins for {} tickets",
            self.answered, self.users, self.wins, self.capacity
        );
        if let Some(l) = &self.lag_ms {
            let _ = writeln!(
                out,
                "last ticket to sold-out event: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p99, l.max
            );
        }
        for why in &self.failures {
            let _ = writeln!(out, "  failure: {why}");
        }
        for v in &self.violations {
            let _ = writeln!(out, "  FAIL {v}");
        }
        out
    }
}

/// Nearest-rank percentiles of sorted microseconds, in milliseconds.
fn lags_of(sorted_us: &[u64]) -> Option<Lags> {
    let last = sorted_us.len().checked_sub(1)?;
    let at = |q: f64| {
        let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
        sorted_us[rank - 1] as f64 / 1000.0
    };
    Some(Lags {
        p50: at(0.50),
        p99: at(0.99),
        max: sorted_us[last] as f64 / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buys(users: u64) -> Buys {
        Buys {
            users,
            answered: users,
            wins: 2,
            capacity: 2,
            last_win: Some(Duration::from_millis(100)),
            told_within: TOLD_WITHIN,
        }
    }

    fn tally(asked: u64, opened: u64, told_ms: &[u64]) -> StreamTally {
        StreamTally {
            asked,
            opened,
            told_us: told_ms.iter().map(|ms| ms * 1000).collect(),
            ..StreamTally::default()
        }
    }

    #[test]
    fn lags_run_from_the_last_win_over_every_worker() {
        let mut all = tally(2, 2, &[150, 90]);
        all.merge(tally(2, 2, &[400, 2100]));
        let r = StreamsReport::new(&all, buys(4));
        assert!(r.ok, "{:?}", r.violations);
        assert_eq!(
            (r.asked, r.opened, r.told, r.never_told, r.told_late),
            (4, 4, 4, 0, 0)
        );
        // 90 ms is before the last win: no lag. 2,100 - 100 = 2,000 ms: in time.
        let lags = r.lag_ms.unwrap();
        assert_eq!((lags.p50, lags.p99, lags.max), (50.0, 2000.0, 2000.0));
    }

    #[test]
    fn every_shortfall_is_a_violation() {
        let late = StreamsReport::new(&tally(2, 2, &[100, 2101]), buys(2));
        assert!(!late.ok);
        assert_eq!(late.told_late, 1);
        let untold = StreamsReport::new(&tally(3, 3, &[150]), buys(3));
        assert_eq!(untold.never_told, 2);
        assert!(!untold.ok);
        let unopened = StreamsReport::new(&tally(3, 2, &[150, 150]), buys(3));
        assert_eq!(unopened.failed, 1);
        assert!(!unopened.ok);
        let unanswered = StreamsReport::new(
            &tally(2, 2, &[150, 150]),
            Buys {
                answered: 1,
                ..buys(2)
            },
        );
        assert!(!unanswered.ok);
        assert!(unanswered.text().contains("1 of 2 users were not answered"));
        let oversold = StreamsReport::new(&tally(2, 2, &[150, 150]), Buys { wins: 3, ..buys(2) });
        assert!(!oversold.ok);
        let nothing = StreamsReport::new(
            &StreamTally::default(),
            Buys {
                wins: 0,
                capacity: 0,
                ..buys(0)
            },
        );
        assert!(nothing.ok);
        assert_eq!(nothing.lag_ms, None);
    }

    #[test]
    fn failures_are_listed_up_to_a_few() {
        let mut t = StreamTally::default();
        for i in 0..10 {
            let mut one = StreamTally::default();
            one.note(format!("refused {i}"));
            t.merge(one);
        }
        assert_eq!(t.failures.len(), LISTED);
        assert_eq!(t.failures[0], "refused 0");
    }
}
