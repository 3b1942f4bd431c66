//! The run over time: per time bucket since t0 and per outcome, how many
//! answers arrived and how long they took.
//!
//! A rehearsal's totals hide its shape: the burst at t0, the moment the
//! sale sold out, a stall while the server was busy. The timeline keeps
//! that shape at a bounded cost whatever the run's length: buckets start
//! [`FIRST_BUCKET`] wide, and when an answer would need more than
//! [`MAX_BUCKETS`] of them, neighbouring buckets are merged pairwise and
//! the width doubles. Widths are therefore always `FIRST_BUCKET * 2^k`, so
//! two timelines (one per worker process) merge exactly: the finer one is
//! folded to the coarser width first, bucket boundaries line up, and the
//! latency histograms add.
//!
//! Each bucket keeps an HDR histogram per outcome that happened in it
//! (created on first use), at two significant digits: enough for a chart,
//! and a tenth of the memory of the report's three-digit ones.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::Kind;

/// The width of a bucket until the run outgrows [`MAX_BUCKETS`] of them.
pub const FIRST_BUCKET: Duration = Duration::from_millis(10);

/// The most buckets a timeline holds; past it, buckets merge pairwise.
pub const MAX_BUCKETS: usize = 240;

/// Latency histogram of one outcome in one bucket: 1 µs to 1 hour.
fn histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// One time bucket: a latency histogram per outcome that happened in it.
#[derive(Debug, Clone)]
struct Bucket([Option<Histogram<u32>>; Kind::COUNT]);

impl Default for Bucket {
    fn default() -> Self {
        Bucket(std::array::from_fn(|_| None))
    }
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            if let Some(theirs) = theirs {
                // Same bounds on both sides: adding cannot fail.
                let _ = mine.get_or_insert_with(histogram).add(theirs);
            }
        }
    }
}

/// Answers per time bucket and outcome, with their latencies.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Bucket width in microseconds: `FIRST_BUCKET * 2^k`.
    width_us: u64,
    /// Bucket `i` covers `[i * width, (i + 1) * width)` after t0; never
    /// more than [`MAX_BUCKETS`].
    buckets: Vec<Bucket>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            width_us: FIRST_BUCKET.as_micros() as u64,
            buckets: Vec::new(),
        }
    }
}

impl Timeline {
    /// Records an answer of `kind` that took `latency_us` microseconds and
    /// arrived `since_t0` after t0.
    pub fn record(&mut self, kind: Kind, latency_us: u64, since_t0: Duration) {
        let at = u64::try_from(since_t0.as_micros()).unwrap_or(u64::MAX);
        while at / self.width_us >= MAX_BUCKETS as u64 {
            self.coarsen();
        }
        let i = (at / self.width_us) as usize;
        if self.buckets.len() <= i {
            self.buckets.resize_with(i + 1, Bucket::default);
        }
        self.buckets[i].0[kind.index()]
            .get_or_insert_with(histogram)
            .saturating_record(latency_us.max(1));
    }

    /// The bucket width.
    pub fn width(&self) -> Duration {
        Duration::from_micros(self.width_us)
    }

    /// Doubles the bucket width, merging buckets pairwise.
    fn coarsen(&mut self) {
        let old = std::mem::take(&mut self.buckets);
        for (i, bucket) in old.into_iter().enumerate() {
            if i % 2 == 0 {
                self.buckets.push(bucket);
            } else if let Some(last) = self.buckets.last_mut() {
                last.add(&bucket);
            }
        }
        self.width_us = self.width_us.saturating_mul(2);
    }

    /// Adds another worker's timeline; the result has the coarser width.
    pub fn merge(&mut self, other: &Timeline) {
        while self.width_us < other.width_us {
            self.coarsen();
        }
        let ratio = (self.width_us / other.width_us.max(1)).max(1);
        for (j, bucket) in other.buckets.iter().enumerate() {
            let i = (j as u64 / ratio) as usize;
            if self.buckets.len() <= i {
                self.buckets.resize_with(i + 1, Bucket::default);
            }
            self.buckets[i].add(bucket);
        }
        while self.buckets.len() > MAX_BUCKETS {
            self.coarsen();
        }
    }

    /// A compact, serializable form, to send from a worker process.
    pub fn to_wire(&self) -> TimelineWire {
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                b.0.iter()
                    .enumerate()
                    .filter_map(|(k, h)| h.as_ref().map(|h| (k, pairs(h))))
                    .collect()
            })
            .collect();
        TimelineWire {
            width_us: self.width_us,
            buckets,
        }
    }

    /// Rebuilds from [`Timeline::to_wire`]; outcomes it does not know are
    /// left out.
    pub fn from_wire(wire: &TimelineWire) -> Timeline {
        let mut timeline = Timeline {
            width_us: wire.width_us.max(1),
            buckets: Vec::with_capacity(wire.buckets.len().min(MAX_BUCKETS)),
        };
        for kinds in &wire.buckets {
            let mut bucket = Bucket::default();
            for (k, values) in kinds {
                if let Some(slot) = bucket.0.get_mut(*k) {
                    let h = slot.get_or_insert_with(histogram);
                    for &(value, count) in values {
                        let _ = h.record_n(value, u32::try_from(count).unwrap_or(u32::MAX));
                    }
                }
            }
            timeline.buckets.push(bucket);
        }
        while timeline.buckets.len() > MAX_BUCKETS {
            timeline.coarsen();
        }
        timeline
    }

    /// The timeline as the report shows it: columns per outcome, and the
    /// latency over every answer.
    pub fn series(&self) -> Series {
        let n = self.buckets.len();
        let mut per_kind = BTreeMap::new();
        for kind in Kind::ALL {
            if self.buckets.iter().all(|b| b.0[kind.index()].is_none()) {
                continue;
            }
            let mut column = Column::with_capacity(n);
            for b in &self.buckets {
                column.push(b.0[kind.index()].as_ref());
            }
            per_kind.insert(kind, column);
        }
        let mut all = Column::with_capacity(n);
        for b in &self.buckets {
            let mut merged: Option<Histogram<u32>> = None;
            for h in b.0.iter().flatten() {
                let _ = merged.get_or_insert_with(histogram).add(h);
            }
            all.push(merged.as_ref());
        }
        Series {
            bucket_ms: self.width_us as f64 / 1000.0,
            buckets: n,
            per_kind,
            all,
        }
    }
}

fn pairs(h: &Histogram<u32>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), u64::from(v.count_at_value())))
        .collect()
}

/// [`Timeline`] as `(outcome index, (value, count) pairs)` per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineWire {
    width_us: u64,
    buckets: Vec<WireBucket>,
}

/// One bucket on the wire: each outcome's index and its histogram's
/// `(value, count)` pairs.
type WireBucket = Vec<(usize, Vec<(u64, u64)>)>;

/// The run over time, in the report: bucket `i` covers
/// `[i * bucket_ms, (i + 1) * bucket_ms)` after t0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Width of a bucket, in milliseconds.
    pub bucket_ms: f64,
    /// Number of buckets (the length of every column).
    pub buckets: usize,
    /// Per outcome that happened in the run.
    pub per_kind: BTreeMap<Kind, Column>,
    /// Over every answer, whatever its outcome.
    pub all: Column,
}

/// One outcome's answers per bucket, and their latency percentiles from
/// each request's intended start, in milliseconds (`null` where the bucket
/// had none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Answers.
    pub count: Vec<u64>,
    /// Median latency.
    pub p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency.
    pub p99_ms: Vec<Option<f64>>,
    /// Slowest answer.
    pub max_ms: Vec<Option<f64>>,
}

impl Column {
    fn with_capacity(n: usize) -> Column {
        Column {
            count: Vec::with_capacity(n),
            p50_ms: Vec::with_capacity(n),
            p99_ms: Vec::with_capacity(n),
            max_ms: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, h: Option<&Histogram<u32>>) {
        let h = h.filter(|h| !h.is_empty());
        let ms = |v: u64| v as f64 / 1000.0;
        self.count.push(h.map_or(0, |h| h.len()));
        self.p50_ms.push(h.map(|h| ms(h.value_at_quantile(0.5))));
        self.p99_ms.push(h.map(|h| ms(h.value_at_quantile(0.99))));
        self.max_ms.push(h.map(|h| ms(h.max())));
    }

    /// Answers over every bucket.
    pub fn total(&self) -> u64 {
        self.count.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use flashsale_protocol::OutcomeKind;

    use super::*;

    const WON: Kind = Kind::Outcome(OutcomeKind::Won);
    const SOLD_OUT: Kind = Kind::Outcome(OutcomeKind::SoldOut);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn answers_land_in_the_bucket_of_their_arrival() {
        let mut t = Timeline::default();
        t.record(WON, 2_000, ms(0));
        t.record(WON, 4_000, ms(9));
        t.record(SOLD_OUT, 30_000, ms(10));
        t.record(SOLD_OUT, 50_000, ms(35));
        let s = t.series();
        assert_eq!((s.bucket_ms, s.buckets), (10.0, 4));
        assert_eq!(s.per_kind[&WON].count, [2, 0, 0, 0]);
        assert_eq!(s.per_kind[&SOLD_OUT].count, [0, 1, 0, 1]);
        assert_eq!(s.all.count, [2, 1, 0, 1]);
        let won = &s.per_kind[&WON];
        assert_eq!(won.p50_ms[1], None);
        let max = won.max_ms[0].unwrap();
        assert!((3.95..4.05).contains(&max), "{max}");
        let p50 = won.p50_ms[0].unwrap();
        assert!((1.95..2.05).contains(&p50), "{p50}");
        assert!(!s.per_kind.contains_key(&Kind::Timeout));
    }

    #[test]
    fn a_long_run_doubles_the_width_and_keeps_every_answer() {
        let mut t = Timeline::default();
        // One answer every 7 ms for 10 s: far more than MAX_BUCKETS of 10 ms.
        let mut expected = 0;
        for i in 0..=10_000 / 7 {
            t.record(WON, 1_000 + i, ms(i * 7));
            expected += 1;
        }
        let s = t.series();
        assert!(s.buckets <= MAX_BUCKETS && s.buckets > MAX_BUCKETS / 2);
        // 10 s over at most 240 buckets: 10 ms doubled twice is too small.
        assert_eq!(s.bucket_ms, 80.0);
        assert_eq!(s.all.total(), expected);
        // A full 80 ms bucket holds the answers of 80 / 7 arrivals.
        assert!(s.all.count[1..s.buckets - 1]
            .iter()
            .all(|&c| (11..=12).contains(&c)));
    }

    #[test]
    fn timelines_of_different_widths_merge_exactly() {
        let mut short = Timeline::default();
        let mut long = Timeline::default();
        for i in 0..100 {
            short.record(WON, 1_000, ms(i));
        }
        for i in 0..100 {
            long.record(SOLD_OUT, 9_000, ms(i * 50));
        }
        assert_eq!(long.width(), ms(40));
        let mut a = short.clone();
        a.merge(&long);
        let mut b = long.clone();
        b.merge(&short);
        let (sa, sb) = (a.series(), b.series());
        assert_eq!(sa, sb, "merging is order-free");
        assert_eq!(sa.bucket_ms, 40.0);
        // The short run's 100 answers in its first 100 ms: buckets 0..=2.
        assert_eq!(sa.per_kind[&WON].count[..4], [40, 40, 20, 0]);
        assert_eq!(sa.per_kind[&SOLD_OUT].total(), 100);
        assert_eq!(sa.all.total(), 200);
        assert!(sa.buckets <= MAX_BUCKETS);
    }

    #[test]
    fn the_wire_form_round_trips_and_ignores_unknown_outcomes() {
        let mut t = Timeline::default();
        for i in 0..500 {
            t.record(
                if i % 3 == 0 { WON } else { Kind::Timeout },
                100 + i,
                ms(i * 11),
            );
        }
        let wire = t.to_wire();
        let json = serde_json::to_string(&wire).unwrap();
        let back = Timeline::from_wire(&serde_json::from_str(&json).unwrap());
        assert_eq!(back.series(), t.series());

        let strange = TimelineWire {
            width_us: 10_000,
            buckets: vec![vec![(Kind::COUNT + 5, vec![(10, 1)]), (0, vec![(10, 2)])]],
        };
        let s = Timeline::from_wire(&strange).series();
        assert_eq!(s.all.count, [2]);
    }

    #[test]
    fn an_empty_timeline_has_no_buckets() {
        let s = Timeline::default().series();
        assert_eq!((s.buckets, s.all.total()), (0, 0));
        assert!(s.per_kind.is_empty());
    }
}
