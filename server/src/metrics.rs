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
//! connections count outcomes locally in an [`OutcomeCounts`] and add them in
//! batches, once per pass of their loop. Those batches go to handles resolved
//! once per process (one atomic add each, no registry lookup), which is why
//! they are recorded only once [`install`] has run: a handle resolved before
//! would stay a no-op for good, and resolving one per batch would cost a
//! server without metrics a tenth of its sold-out throughput.

use std::sync::OnceLock;

use flashsale_protocol::{RequestRef, ReserveOutcome, Response};
use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::Sales;

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

/// Sold tickets in the log, durable, not yet committed to PostgreSQL.
pub const SINK_LAG_RECORDS: &str = "flashsale_sink_lag_records";
/// Age of the oldest of them, in seconds (0 when caught up).
pub const SINK_LAG_SECONDS: &str = "flashsale_sink_lag_seconds";
/// SQL statements the drain has sent (BEGIN and COMMIT included).
pub const SINK_STATEMENTS: &str = "flashsale_sink_statements_total";
/// Rows the drain has committed.
pub const SINK_ROWS: &str = "flashsale_sink_rows_total";
/// Failed drain attempts (each is retried, except a final stop).
pub const SINK_ERRORS: &str = "flashsale_sink_errors_total";
/// 1 while the drain runs, 0 once it has stopped.
pub const SINK_RUNNING: &str = "flashsale_sink_running";

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
    metrics::describe_gauge!(
        SINK_LAG_RECORDS,
        "Sold tickets durable in the log and not yet committed to PostgreSQL."
    );
    metrics::describe_gauge!(
        SINK_LAG_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest ticket not yet committed to PostgreSQL."
    );
    metrics::describe_counter!(
        SINK_STATEMENTS,
        "SQL statements sent by the PostgreSQL drain."
    );
    metrics::describe_counter!(SINK_ROWS, "Rows committed to PostgreSQL.");
    metrics::describe_counter!(SINK_ERRORS, "Failed attempts of the PostgreSQL drain.");
    metrics::describe_gauge!(SINK_RUNNING, "1 while the PostgreSQL drain runs.");
}

/// The Prometheus text exposition of every metric, or an empty string when
/// no recorder is installed.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Sets the stock gauges of every sale in `sales` to what they are now.
///
/// Stock changes on the reserve path, which must not touch a gauge, so the
/// gauges are refreshed when they are read instead: [`render_with`].
pub fn refresh_stock(sales: &Sales) {
    let now = crate::service::now_ms();
    for sale in sales.iter() {
        let status = sale.status(now);
        set_stock(&sale.spec().id, status.remaining, status.sold);
    }
}

/// [`refresh_stock`], then [`render`]: what `GET /metrics` serves.
pub fn render_with(sales: &Sales) -> String {
    refresh_stock(sales);
    render()
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
    const COUNT: usize = 2;

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Http => "http",
        }
    }
}

/// What a request asked for: the `op` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Buy a ticket.
    Reserve,
    /// A sale's status.
    Status,
    /// A user's ticket.
    Lookup,
    /// Liveness.
    Ping,
}

impl Op {
    const COUNT: usize = 4;
    const ALL: [Op; Op::COUNT] = [Op::Reserve, Op::Status, Op::Lookup, Op::Ping];

    /// The operation `request` asks for.
    pub fn of(request: &RequestRef<'_>) -> Op {
        match request {
            RequestRef::Reserve { .. } => Op::Reserve,
            RequestRef::Status { .. } => Op::Status,
            RequestRef::Lookup { .. } => Op::Lookup,
            RequestRef::Ping => Op::Ping,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Op::Reserve => "reserve",
            Op::Status => "status",
            Op::Lookup => "lookup",
            Op::Ping => "ping",
        }
    }
}

/// How a request was answered: the `outcome` label. A reservation has one
/// of the first six or `Error`; any other request `Ok` or `Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A ticket was sold, durably.
    Won,
    /// The user already held a ticket.
    AlreadyOwned,
    /// No ticket left.
    SoldOut,
    /// The sale has not opened yet.
    NotOpen,
    /// No such sale.
    UnknownSale,
    /// Refused to shed load; retry later.
    Busy,
    /// Answered (requests other than reservations).
    Ok,
    /// An error answer.
    Error,
}

impl Outcome {
    const COUNT: usize = 8;
    const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Won,
        Outcome::AlreadyOwned,
        Outcome::SoldOut,
        Outcome::NotOpen,
        Outcome::UnknownSale,
        Outcome::Busy,
        Outcome::Ok,
        Outcome::Error,
    ];

    /// The outcome of answering an `op` request with `response`.
    pub fn of(op: Op, response: &Response) -> Outcome {
        match (op, response) {
            (_, Response::Error(_)) => Outcome::Error,
            (Op::Reserve, Response::Reserve(outcome)) => match outcome {
                ReserveOutcome::Won { .. } => Outcome::Won,
                ReserveOutcome::AlreadyOwned { .. } => Outcome::AlreadyOwned,
                ReserveOutcome::SoldOut => Outcome::SoldOut,
                ReserveOutcome::NotOpen { .. } => Outcome::NotOpen,
                ReserveOutcome::UnknownSale => Outcome::UnknownSale,
                ReserveOutcome::Busy { .. } => Outcome::Busy,
            },
            // An answer of the wrong kind would be a bug; count it, not hide it.
            (Op::Reserve, _) => Outcome::Error,
            _ => Outcome::Ok,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Won => "won",
            Outcome::AlreadyOwned => "already_owned",
            Outcome::SoldOut => "sold_out",
            Outcome::NotOpen => "not_open",
            Outcome::UnknownSale => "unknown_sale",
            Outcome::Busy => "busy",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

/// Answers counted locally (per connection, per thread), added to
/// [`REQUESTS`] in one go by [`OutcomeCounts::flush`]. Recording is a plain
/// increment in a fixed array: no allocation, no atomic, nothing shared.
/// `Busy` answers are also counted as shed, with reason `"busy"`.
#[derive(Debug, Clone, Default)]
pub struct OutcomeCounts {
    counts: [[u64; Outcome::COUNT]; Op::COUNT],
    any: bool,
}

impl OutcomeCounts {
    /// No answers counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one `op` request answered with `outcome`.
    #[inline]
    pub fn record(&mut self, op: Op, outcome: Outcome) {
        self.counts[op as usize][outcome as usize] += 1;
        self.any = true;
    }

    /// How many `op` requests were answered with `outcome` since the last
    /// flush.
    pub fn get(&self, op: Op, outcome: Outcome) -> u64 {
        self.counts[op as usize][outcome as usize]
    }

    /// Adds every count to the metrics (once [`install`] has run) and starts
    /// again from zero. Costs nothing when nothing was counted.
    pub fn flush(&mut self, protocol: Protocol) {
        if !std::mem::take(&mut self.any) {
            return;
        }
        if HANDLE.get().is_none() {
            self.counts = Default::default();
            return;
        }
        for op in Op::ALL {
            for outcome in Outcome::ALL {
                let n = std::mem::take(&mut self.counts[op as usize][outcome as usize]);
                if n == 0 {
                    continue;
                }
                with_cached(
                    &CACHE.requests[protocol as usize][op as usize][outcome as usize],
                    || requests_counter(protocol, op, outcome),
                    |c| c.increment(n),
                );
                if outcome == Outcome::Busy {
                    with_cached(
                        &CACHE.shed_busy[protocol as usize],
                        || shed_counter(protocol, "busy"),
                        |c| c.increment(n),
                    );
                }
            }
        }
    }
}

/// Handles of the metrics recorded in batches from every connection,
/// resolved on first use once [`install`] has run.
struct Cache {
    requests: [[[OnceLock<Counter>; Outcome::COUNT]; Op::COUNT]; Protocol::COUNT],
    shed_busy: [OnceLock<Counter>; Protocol::COUNT],
    in_flight: [OnceLock<Gauge>; Protocol::COUNT],
}

static CACHE: Cache = Cache {
    requests: [const { [const { [const { OnceLock::new() }; Outcome::COUNT] }; Op::COUNT] };
        Protocol::COUNT],
    shed_busy: [const { OnceLock::new() }; Protocol::COUNT],
    in_flight: [const { OnceLock::new() }; Protocol::COUNT],
};

fn requests_counter(protocol: Protocol, op: Op, outcome: Outcome) -> Counter {
    metrics::counter!(
        REQUESTS,
        "protocol" => protocol.label(),
        "op" => op.label(),
        "outcome" => outcome.label()
    )
}

fn shed_counter(protocol: Protocol, reason: &'static str) -> Counter {
    metrics::counter!(SHED, "protocol" => protocol.label(), "reason" => reason)
}

/// Runs `f` on the handle in `slot`, resolving it with `make` the first
/// time, if [`install`] has run; otherwise does nothing.
fn with_cached<T>(slot: &'static OnceLock<T>, make: impl FnOnce() -> T, f: impl FnOnce(&T)) {
    if HANDLE.get().is_some() {
        f(slot.get_or_init(make));
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
    shed_counter(protocol, reason).increment(1);
}

/// Sets the open-connection gauge.
pub fn set_connections(protocol: Protocol, open: usize) {
    metrics::gauge!(CONNECTIONS, "protocol" => protocol.label()).set(open as f64);
}

/// Moves the in-flight gauge by `delta`. A no-op until [`install`] has run.
pub fn add_in_flight(protocol: Protocol, delta: f64) {
    with_cached(
        &CACHE.in_flight[protocol as usize],
        || metrics::gauge!(IN_FLIGHT, "protocol" => protocol.label()),
        |g| g.increment(delta),
    );
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

/// Shows the drain's counters at 0 and marks it running.
pub fn sink_started() {
    metrics::counter!(SINK_STATEMENTS).increment(0);
    metrics::counter!(SINK_ROWS).increment(0);
    metrics::counter!(SINK_ERRORS).increment(0);
    sink_running(true);
}

/// Counts `n` statements sent by the drain.
pub fn sink_statements(n: u64) {
    metrics::counter!(SINK_STATEMENTS).increment(n);
}

/// Counts `n` rows committed by the drain.
pub fn sink_rows(n: u64) {
    metrics::counter!(SINK_ROWS).increment(n);
}

/// Counts a failed drain attempt.
pub fn sink_error() {
    metrics::counter!(SINK_ERRORS).increment(1);
}

/// Sets the drain's lag: tickets not yet in the database, and the age of
/// the oldest.
pub fn sink_lag(records: usize, seconds: f64) {
    metrics::gauge!(SINK_LAG_RECORDS).set(records as f64);
    metrics::gauge!(SINK_LAG_SECONDS).set(seconds);
}

/// Records whether the drain runs.
pub fn sink_running(running: bool) {
    metrics::gauge!(SINK_RUNNING).set(if running { 1.0 } else { 0.0 });
}
