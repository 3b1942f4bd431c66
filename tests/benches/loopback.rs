//! The server over loopback, driven by the native client with pipelining.
//!
//! Run: `cargo bench -p flashsale-tests --bench loopback` (one workload:
//! `... --bench loopback -- loopback/rush`).
//!
//! Each workload starts the release `flashsale-server` (2 worker threads,
//! fsync durability) and, from this process, keeps a window of requests in
//! flight on each of several connections. Client and server share the
//! machine, so on 2 cores this measures both together. One iteration is
//! 1,000,000 requests:
//!
//! - `rush`: a fresh sale of 200 tickets, distinct users: the opening
//!   second (exactly 200 wins);
//! - `sold-out`: distinct users on a sold-out sale;
//! - `ping`: the protocol's floor, no core work at all.
//!
//! Criterion reports the time per iteration and answers per second. After
//! each workload a line gives, over every request it sent (warm-up
//! included), the latency percentiles and the server's CPU time per answer.
//! Any failed request fails the bench.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use common::{CpuPerAnswer, FreshSales, Server, CAPACITY, SALE};
use criterion::{criterion_group, criterion_main, Criterion};
use flashsale_client::{Client, ClientConfig, ReserveOutcome};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

const CONNECTIONS: usize = 8;
const WINDOW: usize = 256;
/// Requests per iteration.
const REQUESTS: u64 = 1_000_000;

#[derive(Clone, Copy)]
enum Op {
    /// A reservation in this sale.
    Reserve(&'static str),
    Ping,
}

/// What one run of requests got back.
struct Outcome {
    errors: u64,
    wins: u64,
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// Sends `total` requests over `clients`, `WINDOW` in flight per connection.
async fn drive(clients: &[Client], op: Op, first_user: u64, total: u64) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
            let (mut wins, mut errors) = (0, 0);
            let mut inflight = FuturesUnordered::new();
            loop {
                while inflight.len() < WINDOW {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let client = client.clone();
                    inflight.push(async move {
                        let sent = Instant::now();
                        let (won, failed) = match op {
                            Op::Reserve(sale) => match client.reserve(sale, first_user + i).await {
                                Ok(outcome) => {
                                    (matches!(outcome, ReserveOutcome::Won { .. }), false)
                                }
                                Err(_) => (false, true),
                            },
                            Op::Ping => (false, client.ping().await.is_err()),
                        };
                        (won, failed, sent.elapsed())
                    });
                }
                let Some((won, failed, took)) = inflight.next().await else {
                    break;
                };
                errors += u64::from(failed);
                wins += u64::from(won);
                let _ = latency.record(took.as_micros() as u64);
            }
            (errors, wins, latency)
        });
    }
    let mut out = Outcome {
        errors: 0,
        wins: 0,
        latency: Histogram::new(3).expect("histogram"),
        elapsed: Duration::ZERO,
    };
    while let Some(Ok((errors, wins, latency))) = tasks.join_next().await {
        out.errors += errors;
        out.wins += wins;
        let _ = out.latency.add(latency);
    }
    out.elapsed = start.elapsed();
    out
}

/// A server, the connections to it, and what the runs measured so far.
struct Loopback {
    server: Server,
    runtime: Runtime,
    clients: Vec<Client>,
    latency: Histogram<u64>,
    cpu: CpuPerAnswer,
    /// The first user of the next run; no user is sent twice.
    next_user: u64,
}

impl Loopback {
    fn start(sales: &str) -> anyhow::Result<Loopback> {
        let server = Server::start(sales)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let clients = runtime.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..CONNECTIONS {
                clients.push(
                    ClientConfig::new(server.addr().to_string())
                        .connect()
                        .await?,
                );
            }
            anyhow::Ok(clients)
        })?;
        Ok(Loopback {
            cpu: CpuPerAnswer::start(&server)?,
            server,
            runtime,
            clients,
            latency: Histogram::new(3)?,
            next_user: 1,
        })
    }

    /// Forgets what the runs so far measured.
    fn reset(&mut self) -> anyhow::Result<()> {
        self.latency.reset();
        self.cpu = CpuPerAnswer::start(&self.server)?;
        Ok(())
    }

    /// Sends `total` requests and checks none failed; returns the wins and
    /// the time taken.
    fn run(&mut self, op: Op, total: u64) -> anyhow::Result<(u64, Duration)> {
        let out = self
            .runtime
            .block_on(drive(&self.clients, op, self.next_user, total));
        self.next_user += total;
        ensure!(out.errors == 0, "{} requests failed", out.errors);
        self.latency.add(&out.latency)?;
        self.cpu.add(total);
        Ok((out.wins, out.elapsed))
    }

    /// Prints what the runs of `name` measured, and stops the server.
    fn finish(self, name: &str) -> anyhow::Result<()> {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "{name}: latency ms p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}; {}\n",
            q(0.5),
            q(0.99),
            q(0.999),
            self.latency.max() as f64 / 1000.0,
            self.cpu.report(&self.server)?,
        );
        self.server.stop()
    }
}

/// Runs one workload and reports its latencies.
fn workload(
    c: &mut Criterion,
    name: &str,
    setup: impl FnOnce() -> anyhow::Result<Loopback>,
    iteration: impl FnMut(&mut Loopback) -> anyhow::Result<Duration>,
) {
    let ran = common::workload(c, "loopback", name, REQUESTS, setup, iteration);
    if let Some(loopback) = ran {
        loopback.finish(name).expect("the server stops cleanly");
    }
}

fn rush(c: &mut Criterion) {
    let mut sales = FreshSales::default();
    workload(
        c,
        "rush",
        || Loopback::start(&common::rush_sales()),
        |loopback| {
            // The requests' futures outlive any borrow: the id lives as long
            // as the bench, like the other workloads' sale.
            let sale: &'static str = sales.take().leak();
            let (wins, elapsed) = loopback.run(Op::Reserve(sale), REQUESTS)?;
            ensure!(wins == CAPACITY, "expected {CAPACITY} wins, got {wins}");
            Ok(elapsed)
        },
    );
}

fn sold_out(c: &mut Criterion) {
    workload(
        c,
        "sold-out",
        || {
            let mut loopback = Loopback::start(&common::one_sale())?;
            let (wins, _) = loopback.run(Op::Reserve(SALE), 10 * CAPACITY)?;
            ensure!(wins == CAPACITY, "the sale sold {wins} tickets");
            loopback.reset()?;
            Ok(loopback)
        },
        |loopback| {
            let (wins, elapsed) = loopback.run(Op::Reserve(SALE), REQUESTS)?;
            ensure!(wins == 0, "{wins} wins on a sold-out sale");
            Ok(elapsed)
        },
    );
}

fn ping(c: &mut Criterion) {
    workload(
        c,
        "ping",
        || Loopback::start(&common::one_sale()),
        |loopback| Ok(loopback.run(Op::Ping, REQUESTS)?.1),
    );
}

criterion_group!(benches, rush, sold_out, ping);
criterion_main!(benches);
