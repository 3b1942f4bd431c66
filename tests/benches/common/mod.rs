//! What the server benches share: the server each workload starts, the
//! fresh sales the rush takes one per iteration, and the criterion group
//! that times a workload.
//!
//! Every workload is a group of one benchmark with its own server, started
//! the first time the benchmark runs (so a workload left out by a filter
//! starts nothing) and stopped after it. One iteration is one run of the
//! workload; criterion times it ([`workload`]) and reports answers per
//! second from the run's size.
//!
//! A rush needs a sale nobody has bought from yet, and a server's sales are
//! fixed at its start: the rush's server gets [`RUSH_SALES`] of them and each
//! iteration takes the next. With that many sales the server finds a sale by
//! hashing its id instead of scanning a short list, a few nanoseconds more
//! per request than the one sale of the other workloads.

use std::time::Duration;

use anyhow::Context;
use criterion::{Criterion, SamplingMode, Throughput};
use flashsale_tests::ServerProcess;
use tempfile::TempDir;

/// The sale the sold-out and ping workloads run on.
pub const SALE: &str = "bench";
/// Tickets in every sale.
pub const CAPACITY: u64 = 200;
/// Sales on the rush's server: one per iteration, warm-up included. Enough
/// for a minute of measurement of the shortest rush.
pub const RUSH_SALES: usize = 1000;

/// The `--sale` argument of the sold-out and ping workloads' server.
pub fn one_sale() -> String {
    format!("{SALE}:{CAPACITY}")
}

/// The `--sale` argument of the rush's server: `r0000` to `r0999`, ids as
/// long as [`SALE`] so that every request frame has the same size.
pub fn rush_sales() -> String {
    let ids: Vec<String> = (0..RUSH_SALES)
        .map(|i| format!("r{i:04}:{CAPACITY}"))
        .collect();
    ids.join(",")
}

/// The fresh sales of the rush's server, in order.
#[derive(Default)]
pub struct FreshSales {
    taken: usize,
}

impl FreshSales {
    /// The id of a sale no iteration has used.
    ///
    /// # Panics
    ///
    /// Once all [`RUSH_SALES`] are used: measure for less time.
    pub fn take(&mut self) -> String {
        assert!(
            self.taken < RUSH_SALES,
            "the rush has used all {RUSH_SALES} sales of its server: shorten --measurement-time"
        );
        self.taken += 1;
        format!("r{:04}", self.taken - 1)
    }
}

/// A release `flashsale-server` (2 worker threads, fsync durability) in a
/// data directory of its own.
pub struct Server {
    process: ServerProcess,
    _dir: TempDir,
}

impl Server {
    /// Starts the server with `--sale sales`.
    pub fn start(sales: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let process = ServerProcess::start(&dir.path().join("data"), &["--sale", sales])?;
        Ok(Server { process, _dir: dir })
    }

    /// Where it listens for the native protocol.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.process.addr()
    }

    /// The CPU time it has used so far, user and system, all threads.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.pid()))?;
        // The command name is in parentheses and may hold spaces; after it
        // come fields 3 (state) onwards, utime and stime being 14 and 15.
        let (_, fields) = stat.rsplit_once(')').context("no command name")?;
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let tick = |i: usize| -> anyhow::Result<u64> {
            let field = fields.get(i - 3).context("short /proc stat")?;
            Ok(field.parse()?)
        };
        // In USER_HZ, 100 on every Linux architecture.
        Ok(Duration::from_millis(10 * (tick(14)? + tick(15)?)))
    }

    /// Stops it, failing unless it exits cleanly.
    pub fn stop(self) -> anyhow::Result<()> {
        self.process.stop()
    }
}

/// The server's CPU time per answer, counted from [`start`](Self::start):
/// what the server spends, apart from the client it shares the cores with.
pub struct CpuPerAnswer {
    since: Duration,
    answers: u64,
}

impl CpuPerAnswer {
    /// Starts counting now.
    pub fn start(server: &Server) -> anyhow::Result<CpuPerAnswer> {
        Ok(CpuPerAnswer {
            since: server.cpu_time()?,
            answers: 0,
        })
    }

    /// Counts `answers` more.
    pub fn add(&mut self, answers: u64) {
        self.answers += answers;
    }

    /// "server CPU per answer: ...", over every answer counted.
    pub fn report(&self, server: &Server) -> anyhow::Result<String> {
        let cpu = server.cpu_time()? - self.since;
        Ok(format!(
            "server CPU per answer: {:.0} ns over {} answers",
            cpu.as_nanos() as f64 / self.answers.max(1) as f64,
            self.answers
        ))
    }
}

/// Runs one workload as the criterion benchmark `group/name` of `answers`
/// answers per iteration.
///
/// `setup` makes what the workload runs on (a server, connections) the first
/// time the benchmark runs; `iteration` runs one iteration on it and returns
/// the time to count. Returns what `setup` made, if the benchmark ran.
///
/// # Panics
///
/// When `setup` or an iteration fails: a benchmark whose answers are wrong
/// measures nothing.
pub fn workload<S>(
    c: &mut Criterion,
    group: &str,
    name: &str,
    answers: u64,
    setup: impl FnOnce() -> anyhow::Result<S>,
    mut iteration: impl FnMut(&mut S) -> anyhow::Result<Duration>,
) -> Option<S> {
    let mut group = c.benchmark_group(group);
    // An iteration lasts from a tenth of a second to seconds.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(answers));
    let mut setup = Some(setup);
    let mut state = None;
    group.bench_function(name, |b| {
        let state = state.get_or_insert_with(|| {
            let setup = setup.take().expect("set up once");
            setup().unwrap_or_else(|e| panic!("{name}: setup: {e:#}"))
        });
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| iteration(state).unwrap_or_else(|e| panic!("{name}: {e:#}")))
                .sum()
        });
    });
    group.finish();
    state
}
