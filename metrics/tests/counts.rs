//! The metrics' own logic, read back from `render()`: answers counted
//! locally and flushed in batches, the outcomes derived from the answers,
//! and every label spelled from its type.
//!
//! Every test installs the one process-wide recorder and compares values
//! before and after, so the tests share a lock: each sees only its own
//! changes.

use std::sync::{Mutex, MutexGuard, PoisonError};

use flashsale_metrics::readback::{rate_limited, requests, shed};
use flashsale_metrics::{
    self as metrics, Op, Outcome, OutcomeCounts, Protocol, RateLimit, ShedReason,
};
use flashsale_protocol::json::{ApiError, ReserveBody};
use flashsale_protocol::{ErrorCode, ErrorFrame, OutcomeKind, Response};

static SERIAL: Mutex<()> = Mutex::new(());

/// Installs the recorder and keeps the other tests out until dropped.
fn exclusive() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    metrics::install().expect("the recorder installs");
    guard
}

/// A snapshot of every `flashsale_requests_total` series, to diff.
fn all_requests() -> Vec<(String, f64)> {
    let mut series: Vec<(String, f64)> = metrics::render()
        .lines()
        .filter(|line| line.starts_with(metrics::REQUESTS))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, v)| (series.to_owned(), v.parse().expect("a number")))
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

/// One counter series, named by its typed labels.
#[derive(Clone, Copy, Debug)]
enum Series {
    Requests(Protocol, Op, Outcome),
    Shed(Protocol, ShedReason),
    RateLimited(RateLimit),
}

impl Series {
    fn read(self) -> f64 {
        match self {
            Series::Requests(protocol, op, outcome) => requests(protocol, op, outcome),
            Series::Shed(protocol, reason) => shed(protocol, reason),
            Series::RateLimited(limit) => rate_limited(limit),
        }
    }
}

/// The values of some series at one moment, to measure what a test added.
struct Baseline(Vec<(Series, f64)>);

impl Baseline {
    fn take(series: &[Series]) -> Self {
        Baseline(series.iter().map(|s| (*s, s.read())).collect())
    }

    /// How much each series grew since the baseline, in the order given.
    fn growth(&self) -> Vec<f64> {
        self.0.iter().map(|(s, before)| s.read() - before).collect()
    }
}

#[test]
fn counts_are_local_until_flushed() {
    let _serial = exclusive();
    let sold_out = Outcome::Sale(OutcomeKind::SoldOut);
    let baseline = Baseline::take(&[
        Series::Requests(Protocol::Http, Op::Reserve, sold_out),
        Series::Requests(Protocol::Http, Op::Reserve, OutcomeKind::Busy.into()),
        Series::Requests(Protocol::Http, Op::Ping, Outcome::Ok),
        Series::Shed(Protocol::Http, ShedReason::Busy),
    ]);
    let mut counts = OutcomeCounts::new();
    for _ in 0..3 {
        counts.record(Op::Reserve, sold_out);
    }
    counts.record(Op::Reserve, Outcome::Sale(OutcomeKind::Busy));
    counts.record(Op::Ping, Outcome::Ok);
    assert_eq!(counts.get(Op::Reserve, sold_out), 3);
    assert_eq!(
        baseline.growth(),
        [0.0; 4],
        "nothing reaches the metrics before the flush"
    );

    counts.flush(Protocol::Http);
    assert_eq!(counts.get(Op::Reserve, sold_out), 0);
    assert_eq!(
        baseline.growth(),
        [3.0, 1.0, 1.0, 1.0],
        "sold out, busy, ping, and the busy answer again as shed load"
    );

    let snapshot = all_requests();
    counts.flush(Protocol::Http);
    assert_eq!(all_requests(), snapshot, "a second flush adds nothing");
}

#[test]
fn every_reservation_outcome_has_its_own_count() {
    let _serial = exclusive();
    let baseline = Baseline::take(
        &OutcomeKind::ALL.map(|kind| Series::Requests(Protocol::Native, Op::Reserve, kind.into())),
    );
    let mut counts = OutcomeCounts::new();
    for (n, kind) in OutcomeKind::ALL.into_iter().enumerate() {
        for _ in 0..=n {
            counts.record(Op::Reserve, kind.into());
        }
    }
    counts.flush(Protocol::Native);
    let expected: Vec<f64> = (1..=OutcomeKind::ALL.len()).map(|n| n as f64).collect();
    assert_eq!(baseline.growth(), expected, "outcome n counted n + 1 times");
}

#[test]
fn single_counts_and_shedding_use_typed_labels() {
    let _serial = exclusive();
    let baseline = Baseline::take(&[
        Series::Requests(Protocol::Http, Op::Auth, ApiError::InvalidToken.into()),
        Series::Requests(Protocol::Http, Op::Lookup, Outcome::Found),
        Series::Shed(Protocol::Http, ShedReason::InFlight),
        Series::Shed(Protocol::Native, ShedReason::Connections),
    ]);
    metrics::count(Protocol::Http, Op::Auth, ApiError::InvalidToken);
    metrics::count(Protocol::Http, Op::Lookup, Outcome::Found);
    metrics::shed(Protocol::Http, ShedReason::InFlight);
    metrics::shed(Protocol::Native, ShedReason::Connections);
    assert_eq!(baseline.growth(), [1.0; 4]);
}

#[test]
fn outcomes_follow_the_answers() {
    for kind in OutcomeKind::ALL {
        let body = ReserveBody {
            outcome: kind,
            ticket: Some(1),
            opens_at: Some(9),
            status: None,
            expires_at: Some(9),
            draws_at: Some(9),
        };
        let outcome = body.outcome(5).expect("every field given");
        assert_eq!(
            Outcome::of(Op::Reserve, &Response::Reserve(outcome)),
            Outcome::Sale(kind)
        );
    }
    let error = Response::Error(ErrorFrame::new(ErrorCode::UNKNOWN_SALE, "no"));
    for op in [Op::Reserve, Op::Status, Op::Lookup, Op::Ping] {
        assert_eq!(Outcome::of(op, &error), Outcome::Error);
    }
    assert_eq!(Outcome::of(Op::Ping, &Response::Pong), Outcome::Ok);
    assert_eq!(
        Outcome::of(Op::Lookup, &Response::Lookup { ticket: None }),
        Outcome::Ok
    );
    assert_eq!(
        Outcome::of(Op::Lookup, &Response::Busy { retry_after_ms: 10 }),
        Outcome::Sale(OutcomeKind::Busy),
        "a busy lookup is counted as busy, and so as shed"
    );
    assert_eq!(Outcome::of(Op::Reserve, &Response::Pong), Outcome::Error);
}

#[test]
fn rate_limited_requests_are_counted_by_limit() {
    let _serial = exclusive();
    let baseline = Baseline::take(&[
        Series::RateLimited(RateLimit::User),
        Series::RateLimited(RateLimit::Ip),
    ]);
    metrics::rate_limited(RateLimit::Ip);
    metrics::rate_limited(RateLimit::Ip);
    metrics::rate_limited(RateLimit::User);
    assert_eq!(baseline.growth(), [1.0, 2.0]);
}

#[test]
fn labels_come_from_the_types() {
    for kind in OutcomeKind::ALL {
        assert_eq!(Outcome::from(kind).label(), kind.label());
    }
    for e in ApiError::ALL {
        assert_eq!(Outcome::from(e).label(), e.code());
    }
    assert_eq!(Op::Auth.label(), "auth");
    assert_eq!(ShedReason::InFlight.label(), "in_flight");
    let limits: Vec<&str> = RateLimit::ALL.iter().map(|l| l.label()).collect();
    assert_eq!(limits, ["user", "ip"]);
}
