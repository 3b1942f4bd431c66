//! Prometheus metrics: what is counted, under which names, and the text
//! `/metrics` serves.
//!
//! Every metric the server exports is named here, once, with a function to
//! record it, so call sites cannot drift apart in spelling. Recording goes
//! through the `metrics` facade to the Prometheus exporter's recorder,
//! installed once per process by [`install`]; without it (unit tests,
//! embedding) recording is a no-op.
//!
//! The reservation hot path must not pay a shared atomic per request, so
//! connections count outcomes locally and add them in batches
//! ([`add_outcomes`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Answers by protocol, operation and outcome.
pub const REQUESTS: &str = "flashsale_requests_total";
/// Requests refused to shed load, by protocol and reason.
pub const SHED: &str = "flashsale_shed_total";
/// Tickets left, per sale.
pub const REMAINING: &str = "flashsale_remaining_tickets";
/// Tickets sold, per sale.
pub const SOLD: &str = "flashsale_sold_tickets";
/// Open connections, by protocol.
pub const CONNECTIONS: &str = "flashsale_open_connections";
/// Requests being worked on, by protocol.
pub const IN_FLIGHT: &str = "flashsale_in_flight_requests";
/// Records per group commit.
pub const WAL_BATCH_RECORDS: &str = "flashsale_wal_batch_records";
/// Duration of each fdatasync, in seconds.
pub const WAL_FSYNC_SECONDS: &str = "flashsale_wal_fsync_seconds";
/// 1 while the log can make records durable, 0 once it has failed.
pub const WAL_HEALTHY: &str = "flashsale_wal_healthy";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (idempotent).
///
/// # Errors
///
/// When another recorder was installed first.
pub fn install() -> anyhow::Result<()> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(WAL_BATCH_RECORDS.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(WAL_FSYNC_SECONDS.into()),
            &[
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                1.0,
            ],
        )?
        .install_recorder()?;
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Answers by protocol, operation and outcome.");
    metrics::describe_counter!(
        SHED,
        "Requests refused to shed load, by protocol and reason."
    );
    metrics::describe_gauge!(REMAINING, "Tickets left, per sale.");
    metrics::describe_gauge!(SOLD, "Tickets sold, per sale.");
    metrics::describe_gauge!(CONNECTIONS, "Open connections, by protocol.");
    metrics::describe_gauge!(IN_FLIGHT, "Requests being worked on, by protocol.");
    metrics::describe_histogram!(WAL_BATCH_RECORDS, "Records written per group commit.");
    metrics::describe_histogram!(
        WAL_FSYNC_SECONDS,
        metrics::Unit::Seconds,
        "Duration of each fdatasync."
    );
    metrics::describe_gauge!(
        WAL_HEALTHY,
        "1 while the write-ahead log can make records durable."
    );
}

/// The Prometheus text exposition of every metric, or an empty string when
/// no recorder is installed.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Which front a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The binary protocol.
    Native,
    /// The HTTP front.
    Http,
}

impl Protocol {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Http => "http",
        }
    }
}

/// Adds `n` answers of `op` with `outcome` (label values such as
/// `"reserve"` and `"sold_out"`).
pub fn add_outcomes(protocol: Protocol, op: &'static str, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(REQUESTS, "protocol" => protocol.label(), "op" => op, "outcome" => outcome).increment(n);
    }
}

/// Counts a request refused for `reason` (e.g. `"connections"`,
/// `"in_flight"`).
pub fn shed(protocol: Protocol, reason: &'static str) {
    metrics::counter!(SHED, "protocol" => protocol.label(), "reason" => reason).increment(1);
}

/// Sets the open-connection gauge.
pub fn set_connections(protocol: Protocol, open: usize) {
    metrics::gauge!(CONNECTIONS, "protocol" => protocol.label()).set(open as f64);
}

/// Moves the in-flight gauge by `delta`.
pub fn add_in_flight(protocol: Protocol, delta: f64) {
    metrics::gauge!(IN_FLIGHT, "protocol" => protocol.label()).increment(delta);
}

/// Sets a sale's stock gauges.
pub fn set_stock(sale: &str, remaining: u32, sold: u32) {
    metrics::gauge!(REMAINING, "sale" => sale.to_owned()).set(f64::from(remaining));
    metrics::gauge!(SOLD, "sale" => sale.to_owned()).set(f64::from(sold));
}

/// Records one group commit.
pub fn wal_batch(records: usize, fsync_seconds: Option<f64>) {
    metrics::histogram!(WAL_BATCH_RECORDS).record(records as f64);
    if let Some(s) = fsync_seconds {
        metrics::histogram!(WAL_FSYNC_SECONDS).record(s);
    }
}

/// Records whether the log is healthy.
pub fn wal_healthy(healthy: bool) {
    metrics::gauge!(WAL_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
}
