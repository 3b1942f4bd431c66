//! Latency and timing, per outcome: HDR histograms (never stored samples,
//! so a million users cost the same few kilobytes as a thousand), and the
//! moments that matter in a sale: the last win (sell-out) and the last
//! answer. The same answers are kept over time as well, in a
//! [`Timeline`], for the report page's charts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use flashsale_protocol::OutcomeKind;

use crate::check::Kind;
use crate::timeline::{Timeline, TimelineWire};

/// Histogram bounds: 1 µs to 1 hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one worker measured.
#[derive(Debug, Clone)]
pub struct Stats {
    latency: Vec<Histogram<u64>>,
    /// From each request's send to its answer, for answers the target
    /// served (not shed, not lost): how long the target itself took.
    service: Histogram<u64>,
    /// Requests sent.
    pub sent: u64,
    /// When the last answer arrived, after t0.
    pub last_answer: Duration,
    /// When the last `Won` (or, in a sale with holds, `Held`) arrived,
    /// after t0: the sell-out moment.
    pub last_win: Option<Duration>,
    /// The same answers over time.
    pub timeline: Timeline,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: Kind::ALL.iter().map(|_| histogram()).collect(),
            service: histogram(),
            sent: 0,
            last_answer: Duration::ZERO,
            last_win: None,
            timeline: Timeline::default(),
        }
    }
}

/// Latency percentiles of one outcome, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Answers of this kind.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Records an answer of `kind` that took `latency` from its intended
    /// start, arriving `since_t0` after t0.
    pub fn record(&mut self, kind: Kind, latency: Duration, since_t0: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency[kind.index()].saturating_record(micros);
        self.timeline.record(kind, micros, since_t0);
        self.last_answer = self.last_answer.max(since_t0);
        if matches!(kind, Kind::Outcome(OutcomeKind::Won | OutcomeKind::Held)) {
            self.last_win = Some(self.last_win.map_or(since_t0, |w| w.max(since_t0)));
        }
    }

    /// Records the service time of an answer of `kind`; shed and lost
    /// requests are not served, so they are left out.
    pub fn record_service(&mut self, kind: Kind, took: Duration) {
        if !matches!(
            kind,
            Kind::Outcome(OutcomeKind::Busy) | Kind::Timeout | Kind::ConnectionError
        ) {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            self.service.saturating_record(micros);
        }
    }

    /// Service-time percentiles over every served answer.
    pub fn service(&self) -> Option<Percentiles> {
        percentiles_of(&self.service)
    }

    /// Percentiles for `kind`, or `None` if it never happened.
    pub fn percentiles(&self, kind: Kind) -> Option<Percentiles> {
        percentiles_of(&self.latency[kind.index()])
    }

    /// Percentiles over every answer, whatever its kind.
    pub fn overall(&self) -> Option<Percentiles> {
        let mut all = histogram();
        for h in &self.latency {
            let _ = all.add(h);
        }
        percentiles_of(&all)
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(theirs);
        }
        let _ = self.service.add(&other.service);
        self.sent += other.sent;
        self.last_answer = self.last_answer.max(other.last_answer);
        self.last_win = match (self.last_win, other.last_win) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.timeline.merge(&other.timeline);
    }

    /// A compact, serializable form, to send from a worker process.
    pub fn to_wire(&self) -> StatsWire {
        StatsWire {
            latency: self.latency.iter().map(pairs).collect(),
            service: pairs(&self.service),
            sent: self.sent,
            last_answer_us: self.last_answer.as_micros() as u64,
            last_win_us: self.last_win.map(|d| d.as_micros() as u64),
            timeline: self.timeline.to_wire(),
        }
    }

    /// Rebuilds from [`Stats::to_wire`].
    pub fn from_wire(wire: &StatsWire) -> Stats {
        let mut stats = Stats {
            sent: wire.sent,
            ..Stats::default()
        };
        for (h, values) in stats.latency.iter_mut().zip(&wire.latency) {
            refill(h, values);
        }
        refill(&mut stats.service, &wire.service);
        stats.last_answer = Duration::from_micros(wire.last_answer_us);
        stats.last_win = wire.last_win_us.map(Duration::from_micros);
        stats.timeline = Timeline::from_wire(&wire.timeline);
        stats
    }
}

fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn refill(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = h.record_n(value, count);
    }
}

fn percentiles_of(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Some(Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    })
}

/// [`Stats`] as `(value, count)` pairs per outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsWire {
    latency: Vec<Vec<(u64, u64)>>,
    service: Vec<(u64, u64)>,
    sent: u64,
    last_answer_us: u64,
    last_win_us: Option<u64>,
    timeline: TimelineWire,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_survives_the_wire() {
        let mut a = Stats::default();
        for ms in 1..=100 {
            a.record(
                Kind::Outcome(OutcomeKind::SoldOut),
                Duration::from_millis(ms),
                Duration::from_millis(ms),
            );
        }
        a.record(
            Kind::Outcome(OutcomeKind::Won),
            Duration::from_millis(3),
            Duration::from_millis(40),
        );
        let mut b = Stats::default();
        b.record(
            Kind::Outcome(OutcomeKind::Won),
            Duration::from_millis(5),
            Duration::from_millis(70),
        );
        b.sent = 2;
        a.merge(&Stats::from_wire(&b.to_wire()));
        let won = a.percentiles(Kind::Outcome(OutcomeKind::Won)).unwrap();
        assert_eq!(won.count, 2);
        assert!((4.9..5.1).contains(&won.max));
        let sold_out = a.percentiles(Kind::Outcome(OutcomeKind::SoldOut)).unwrap();
        assert!((49.0..51.0).contains(&sold_out.p50), "{sold_out:?}");
        assert_eq!(a.last_win, Some(Duration::from_millis(70)));
        assert_eq!(a.last_answer, Duration::from_millis(100));
        assert_eq!(a.sent, 2);
        assert!(a.percentiles(Kind::Outcome(OutcomeKind::Busy)).is_none());
        let series = a.timeline.series();
        assert_eq!(series.per_kind[&Kind::Outcome(OutcomeKind::Won)].total(), 2);
        assert_eq!(series.all.total(), 102);
    }
}
