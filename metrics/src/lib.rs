//! flashsale-metrics: what is counted, under which names and labels, and the
//! text `/metrics` serves.
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

pub mod readback;

use std::sync::OnceLock;

use std::collections::BTreeMap;
use std::time::Duration;

use flashsale_protocol::json::ApiError;
use flashsale_protocol::{OutcomeKind, RequestRef, Response};
use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Answers by protocol, operation and outcome.
pub const REQUESTS: &str = "flashsale_requests_total";
/// Requests refused to shed load, by protocol and reason.
pub const SHED: &str = "flashsale_shed_total";
/// Requests refused with 429 `rate_limited`, by which limit refused them.
pub const RATE_LIMITED: &str = "flashsale_rate_limited_total";
/// Keys (users or addresses) a rate limit keeps a bucket for, as of its
/// last look at its table.
pub const RATE_LIMIT_KEYS: &str = "flashsale_rate_limit_keys";
/// Times a rate limit's table was full of keys in use and started over.
pub const RATE_LIMIT_RESETS: &str = "flashsale_rate_limit_resets_total";
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
/// A cluster node's role (label `role`).
pub const CLUSTER_ROLE: &str = "flashsale_cluster_role";
/// A cluster node's Raft term.
pub const CLUSTER_TERM: &str = "flashsale_cluster_term";
/// A cluster node's last applied log index.
pub const CLUSTER_APPLIED: &str = "flashsale_cluster_applied_index";
/// A cluster node's last committed log index.
pub const CLUSTER_COMMITTED: &str = "flashsale_cluster_commit_index";
/// Each follower's lag behind the leader (label `node`).
pub const CLUSTER_LAG: &str = "flashsale_cluster_replication_lag_entries";

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
    metrics::describe_counter!(
        RATE_LIMITED,
        "HTTP requests refused with 429 rate_limited, by which limit refused them."
    );
    metrics::describe_gauge!(
        RATE_LIMIT_KEYS,
        "Users or addresses a rate limit keeps a bucket for, as of its last sweep."
    );
    metrics::describe_counter!(
        RATE_LIMIT_RESETS,
        "Times a rate limit's table was full of keys in use and started over empty."
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
    metrics::describe_gauge!(
        CLUSTER_ROLE,
        "1 for this node's role in its cluster (leader, follower, candidate), 0 for the others."
    );
    metrics::describe_gauge!(CLUSTER_TERM, "The Raft term this node is in.");
    metrics::describe_gauge!(
        CLUSTER_APPLIED,
        "Index of the last cluster log entry this node applied (committed before)."
    );
    metrics::describe_gauge!(
        CLUSTER_COMMITTED,
        "Index of the last cluster log entry known committed (on the leader: held by a majority)."
    );
    metrics::describe_gauge!(
        CLUSTER_LAG,
        "On the leader: entries each follower is behind the leader's log."
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
    /// A payment confirmation of a hold.
    Confirm,
    /// A buyer giving up a hold.
    Cancel,
    /// The operator releasing a held or confirmed ticket.
    Release,
    /// The list of sales.
    Sales,
    /// A sale's draw: its facts, or a page of the published draw.
    Draw,
    /// The bearer token of an HTTP request, checked before its handler.
    Auth,
    /// The operator's changes to sales on the admin API.
    Admin,
}

impl Op {
    /// Operations of the binary protocol, the first in this enum.
    const NATIVE: usize = 9;
    const ALL_NATIVE: [Op; Op::NATIVE] = [
        Op::Reserve,
        Op::Status,
        Op::Lookup,
        Op::Ping,
        Op::Confirm,
        Op::Cancel,
        Op::Release,
        Op::Sales,
        Op::Draw,
    ];

    /// The operation `request` asks for.
    pub fn of(request: &RequestRef<'_>) -> Op {
        match request {
            RequestRef::Reserve { .. } => Op::Reserve,
            RequestRef::Status { .. } => Op::Status,
            RequestRef::Lookup { .. } => Op::Lookup,
            RequestRef::Ping => Op::Ping,
            RequestRef::Confirm { .. } => Op::Confirm,
            RequestRef::Cancel { .. } => Op::Cancel,
            RequestRef::Release { .. } => Op::Release,
            RequestRef::ListSales => Op::Sales,
            RequestRef::Draw { .. } | RequestRef::DrawPage { .. } => Op::Draw,
        }
    }

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Op::Reserve => "reserve",
            Op::Status => "status",
            Op::Lookup => "lookup",
            Op::Ping => "ping",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
            Op::Release => "release",
            Op::Sales => "sales",
            Op::Draw => "draw",
            Op::Auth => "auth",
            Op::Admin => "admin",
        }
    }
}

/// How a request was answered: the `outcome` label.
///
/// A reservation's outcome is its [`OutcomeKind`], labelled as the HTTP
/// body spells it; an HTTP error is its [`ApiError`] code. Nothing here
/// spells a label of its own but `ok`, `found`, `none` and `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reservation's answer (or a `Busy` answer to any request).
    Sale(OutcomeKind),
    /// Answered (requests other than reservations and HTTP lookups).
    Ok,
    /// An HTTP lookup that found the user's ticket.
    Found,
    /// An HTTP lookup that found none.
    None,
    /// An HTTP error answer.
    Refused(ApiError),
    /// An error answer of the binary protocol.
    Error,
}

impl From<OutcomeKind> for Outcome {
    fn from(kind: OutcomeKind) -> Self {
        Outcome::Sale(kind)
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        Outcome::Refused(e)
    }
}

impl Outcome {
    /// Outcomes a native connection counts in its [`OutcomeCounts`]: the
    /// reservation kinds, then `Ok`, then `Error`.
    const NATIVE: usize = OutcomeKind::COUNT + 2;

    /// The outcome of answering an `op` request with `response` over the
    /// binary protocol.
    pub fn of(op: Op, response: &Response) -> Outcome {
        match (op, response) {
            (_, Response::Error(_)) => Outcome::Error,
            (_, Response::Busy { .. }) => Outcome::Sale(OutcomeKind::Busy),
            (Op::Reserve, Response::Reserve(outcome)) => Outcome::Sale(outcome.kind()),
            // An answer of the wrong kind would be a bug; count it, not hide it.
            (Op::Reserve, _) => Outcome::Error,
            _ => Outcome::Ok,
        }
    }

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Sale(kind) => kind.label(),
            Outcome::Ok => "ok",
            Outcome::Found => "found",
            Outcome::None => "none",
            Outcome::Refused(e) => e.code(),
            Outcome::Error => "error",
        }
    }

    /// The slot of a native outcome in [`OutcomeCounts`]; HTTP-only
    /// outcomes never come from a native connection and count as errors.
    const fn native_slot(self) -> usize {
        match self {
            Outcome::Sale(kind) => kind.index(),
            Outcome::Ok => OutcomeKind::COUNT,
            _ => OutcomeKind::COUNT + 1,
        }
    }

    /// The outcome in `slot` (the inverse of `native_slot`).
    const fn from_native_slot(slot: usize) -> Outcome {
        if slot < OutcomeKind::COUNT {
            Outcome::Sale(OutcomeKind::ALL[slot])
        } else if slot == OutcomeKind::COUNT {
            Outcome::Ok
        } else {
            Outcome::Error
        }
    }
}

/// Answers counted locally (per connection, per thread), added to
/// [`REQUESTS`] in one go by [`OutcomeCounts::flush`]. Recording is a plain
/// increment in a fixed array: no allocation, no atomic, nothing shared.
/// `Busy` answers are also counted as shed, with reason `"busy"`.
#[derive(Debug, Clone, Default)]
pub struct OutcomeCounts {
    counts: [[u64; Outcome::NATIVE]; Op::NATIVE],
    any: bool,
}

impl OutcomeCounts {
    /// No answers counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one `op` request of the binary protocol answered with
    /// `outcome`.
    #[inline]
    pub fn record(&mut self, op: Op, outcome: Outcome) {
        debug_assert!((op as usize) < Op::NATIVE, "{op:?} is not a native op");
        if let Some(row) = self.counts.get_mut(op as usize) {
            row[outcome.native_slot()] += 1;
            self.any = true;
        }
    }

    /// How many `op` requests were answered with `outcome` since the last
    /// flush.
    pub fn get(&self, op: Op, outcome: Outcome) -> u64 {
        self.counts
            .get(op as usize)
            .map_or(0, |row| row[outcome.native_slot()])
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
        for op in Op::ALL_NATIVE {
            for slot in 0..Outcome::NATIVE {
                let n = std::mem::take(&mut self.counts[op as usize][slot]);
                if n == 0 {
                    continue;
                }
                let outcome = Outcome::from_native_slot(slot);
                with_cached(
                    &CACHE.requests[protocol as usize][op as usize][slot],
                    || requests_counter(protocol, op, outcome),
                    |c| c.increment(n),
                );
                if outcome == Outcome::Sale(OutcomeKind::Busy) {
                    with_cached(
                        &CACHE.shed_busy[protocol as usize],
                        || shed_counter(protocol, ShedReason::Busy),
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
    requests: [[[OnceLock<Counter>; Outcome::NATIVE]; Op::NATIVE]; Protocol::COUNT],
    shed_busy: [OnceLock<Counter>; Protocol::COUNT],
    in_flight: [OnceLock<Gauge>; Protocol::COUNT],
}

static CACHE: Cache = Cache {
    requests: [const { [const { [const { OnceLock::new() }; Outcome::NATIVE] }; Op::NATIVE] };
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

fn shed_counter(protocol: Protocol, reason: ShedReason) -> Counter {
    metrics::counter!(SHED, "protocol" => protocol.label(), "reason" => reason.label())
}

/// Runs `f` on the handle in `slot`, resolving it with `make` the first
/// time, if [`install`] has run; otherwise does nothing.
fn with_cached<T>(slot: &'static OnceLock<T>, make: impl FnOnce() -> T, f: impl FnOnce(&T)) {
    if HANDLE.get().is_some() {
        f(slot.get_or_init(make));
    }
}

/// Counts one answer of `op` with `outcome`, at once (the HTTP front, whose
/// requests cost far more than this counter; native connections batch theirs
/// in an [`OutcomeCounts`]).
pub fn count(protocol: Protocol, op: Op, outcome: impl Into<Outcome>) {
    requests_counter(protocol, op, outcome.into()).increment(1);
}

/// Why a request or a connection was refused to shed load: the `reason`
/// label of [`SHED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The core answered `Busy`.
    Busy,
    /// The front was at its connection limit.
    Connections,
    /// The front was at its bound on requests in progress.
    InFlight,
    /// The HTTP front was at its bound on open event streams.
    Streams,
    /// The client's address was at its own connection bound.
    PerIp,
}

impl ShedReason {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            ShedReason::Busy => "busy",
            ShedReason::Connections => "connections",
            ShedReason::InFlight => "in_flight",
            ShedReason::Streams => "streams",
            ShedReason::PerIp => "per_ip",
        }
    }
}

/// Counts a request (or connection) refused for `reason`.
pub fn shed(protocol: Protocol, reason: ShedReason) {
    shed_counter(protocol, reason).increment(1);
}

/// Which token bucket refused a request: the `limit` label of
/// [`RATE_LIMITED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// The bucket of the user a verified token names (`--rate-limit-user`).
    User,
    /// The bucket of the client's address (`--rate-limit-ip`).
    Ip,
}

impl RateLimit {
    /// Every limit.
    pub const ALL: [RateLimit; 2] = [RateLimit::User, RateLimit::Ip];

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            RateLimit::User => "user",
            RateLimit::Ip => "ip",
        }
    }
}

/// Counts a request refused by the `limit` bucket.
pub fn rate_limited(limit: RateLimit) {
    metrics::counter!(RATE_LIMITED, "limit" => limit.label()).increment(1);
}

/// Sets the number of keys the `limit` table holds.
pub fn rate_limit_keys(limit: RateLimit, keys: usize) {
    metrics::gauge!(RATE_LIMIT_KEYS, "limit" => limit.label()).set(keys as f64);
}

/// Counts a start-over of the `limit` table.
pub fn rate_limit_reset(limit: RateLimit) {
    metrics::counter!(RATE_LIMIT_RESETS, "limit" => limit.label()).increment(1);
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

/// Records one group commit of the log: `records` records, synced in
/// `fsync` (`None` without a sync).
pub fn wal_batch(records: usize, fsync: Option<Duration>) {
    metrics::histogram!(WAL_BATCH_RECORDS).record(records as f64);
    if let Some(d) = fsync {
        metrics::histogram!(WAL_FSYNC_SECONDS).record(d.as_secs_f64());
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

/// Records a cluster node's place: its role (one of `leader`, `follower`,
/// `candidate`, `shutdown`), term, last applied and committed indexes, and
/// on the leader each follower's lag in entries.
pub fn cluster(role: &str, term: u64, applied: u64, committed: u64, lag: &BTreeMap<u64, u64>) {
    for known in ["leader", "follower", "candidate", "shutdown"] {
        let on = if known == role { 1.0 } else { 0.0 };
        metrics::gauge!(CLUSTER_ROLE, "role" => known).set(on);
    }
    metrics::gauge!(CLUSTER_TERM).set(term as f64);
    metrics::gauge!(CLUSTER_APPLIED).set(applied as f64);
    metrics::gauge!(CLUSTER_COMMITTED).set(committed as f64);
    for (node, behind) in lag {
        metrics::gauge!(CLUSTER_LAG, "node" => node.to_string()).set(*behind as f64);
    }
}

/// Records whether the drain runs.
pub fn sink_running(running: bool) {
    metrics::gauge!(SINK_RUNNING).set(if running { 1.0 } else { 0.0 });
}
