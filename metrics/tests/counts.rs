//! The metrics' own logic, read back from `render()`: answers counted
//! locally and flushed in batches, the outcomes derived from the answers,
//! and every label spelled from its type.
//!
//! Every test installs the one process-wide recorder and compares values
//! before and after, so the tests share a lock: each sees only its own
//! changes.

use std::sync::{Mutex, MutexGuard, PoisonError};

use flashsale_metrics::{self as metrics, Op, Outcome, OutcomeCounts, Protocol, ShedReason};
use flashsale_protocol::json::ApiError;
use flashsale_protocol::{ErrorCode, ErrorFrame, OutcomeKind, ReserveOutcome, Response};

static SERIAL: Mutex<()> = Mutex::new(());

/// Installs the recorder and keeps the other tests out until dropped.
fn exclusive() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    metrics::install().expect("the recorder installs");
    guard
}

/// The value of the series `name` whose labels include `labels`, or 0 when
/// it has not been recorded yet.
fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics::render();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map_or(0.0, |(_, v)| v.parse().expect("a number"))
}

fn requests(protocol: &str, op: &str, outcome: &str) -> f64 {
    value(
        metrics::REQUESTS,
        &[("protocol", protocol), ("op", op), ("outcome", outcome)],
    )
}

fn shed(protocol: &str, reason: &str) -> f64 {
    value(metrics::SHED, &[("protocol", protocol), ("reason", reason)])
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

#[test]
fn counts_are_local_until_flushed() {
    let _serial = exclusive();
    let before = (
        requests("http", "reserve", "sold_out"),
        requests("http", "reserve", "busy"),
        requests("http", "ping", "ok"),
        shed("http", "busy"),
    );
    let sold_out = Outcome::Sale(OutcomeKind::SoldOut);
    let mut counts = OutcomeCounts::new();
    for _ in 0..3 {
        counts.record(Op::Reserve, sold_out);
    }
    counts.record(Op::Reserve, Outcome::Sale(OutcomeKind::Busy));
    counts.record(Op::Ping, Outcome::Ok);
    assert_eq!(counts.get(Op::Reserve, sold_out), 3);
    assert_eq!(
        requests("http", "reserve", "sold_out"),
        before.0,
        "nothing reaches the metrics before the flush"
    );

    counts.flush(Protocol::Http);
    assert_eq!(counts.get(Op::Reserve, sold_out), 0);
    assert_eq!(requests("http", "reserve", "sold_out"), before.0 + 3.0);
    assert_eq!(requests("http", "reserve", "busy"), before.1 + 1.0);
    assert_eq!(requests("http", "ping", "ok"), before.2 + 1.0);
    assert_eq!(
        shed("http", "busy"),
        before.3 + 1.0,
        "a Busy answer is shed load"
    );

    let snapshot = all_requests();
    counts.flush(Protocol::Http);
    assert_eq!(all_requests(), snapshot, "a second flush adds nothing");
}

#[test]
fn every_reservation_outcome_has_its_own_count() {
    let _serial = exclusive();
    let before: Vec<f64> = OutcomeKind::ALL
        .iter()
        .map(|k| requests("native", "reserve", k.label()))
        .collect();
    let mut counts = OutcomeCounts::new();
    for (n, kind) in OutcomeKind::ALL.into_iter().enumerate() {
        for _ in 0..=n {
            counts.record(Op::Reserve, kind.into());
        }
    }
    counts.flush(Protocol::Native);
    for (n, kind) in OutcomeKind::ALL.into_iter().enumerate() {
        assert_eq!(
            requests("native", "reserve", kind.label()) - before[n],
            (n + 1) as f64,
            "{kind:?}"
        );
    }
}

#[test]
fn single_counts_and_shedding_use_typed_labels() {
    let _serial = exclusive();
    let before = (
        requests("http", "auth", "invalid_token"),
        requests("http", "lookup", "found"),
        shed("http", "in_flight"),
        shed("native", "connections"),
    );
    metrics::count(Protocol::Http, Op::Auth, ApiError::InvalidToken);
    metrics::count(Protocol::Http, Op::Lookup, Outcome::Found);
    metrics::shed(Protocol::Http, ShedReason::InFlight);
    metrics::shed(Protocol::Native, ShedReason::Connections);
    assert_eq!(requests("http", "auth", "invalid_token"), before.0 + 1.0);
    assert_eq!(requests("http", "lookup", "found"), before.1 + 1.0);
    assert_eq!(shed("http", "in_flight"), before.2 + 1.0);
    assert_eq!(shed("native", "connections"), before.3 + 1.0);
}

#[test]
fn outcomes_follow_the_answers() {
    let reserve = |o| Outcome::of(Op::Reserve, &Response::Reserve(o));
    for outcome in [
        ReserveOutcome::Won { ticket: 1 },
        ReserveOutcome::AlreadyOwned { ticket: 1 },
        ReserveOutcome::SoldOut,
        ReserveOutcome::NotOpen { opens_at: 9 },
        ReserveOutcome::UnknownSale,
        ReserveOutcome::Busy { retry_after_ms: 5 },
    ] {
        assert_eq!(reserve(outcome), Outcome::Sale(outcome.kind()));
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
fn labels_come_from_the_types() {
    for kind in OutcomeKind::ALL {
        assert_eq!(Outcome::from(kind).label(), kind.label());
    }
    for e in ApiError::ALL {
        assert_eq!(Outcome::from(e).label(), e.code());
    }
    assert_eq!(Op::Auth.label(), "auth");
    assert_eq!(ShedReason::InFlight.label(), "in_flight");
}
