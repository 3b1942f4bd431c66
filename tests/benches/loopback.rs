//! The server over loopback, driven by the native client with pipelining.
//!
//! Run: `cargo bench -p flashsale-tests --bench loopback`
//!
//! Starts the release `flashsale-server` (2 worker threads, fsync
//! durability) and, from this process, keeps a window of requests in flight
//! on each of several connections. Client and server share the machine, so
//! on 2 cores this measures both together. Workloads:
//!
//! - `rush`: 200 tickets, 1,000,000 distinct users: the opening second;
//! - `sold-out`: 1,000,000 more reservations on the sold-out sale;
//! - `ping`: the protocol's floor, no core work at all.
//!
//! Prints answers per second and latency percentiles per workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale_client::{Client, ClientConfig, ReserveOutcome};
use flashsale_tests::ServerProcess;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;

const CONNECTIONS: usize = 8;
const WINDOW: usize = 256;

#[derive(Clone, Copy)]
enum Op {
    Reserve,
    Ping,
}

struct Outcome {
    answers: u64,
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
            let mut wins = 0;
            let mut answers = 0;
            let mut errors = 0;
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
                            Op::Reserve => match client.reserve("bench", first_user + i).await {
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
                answers += u64::from(!failed);
                errors += u64::from(failed);
                wins += u64::from(won);
                let _ = latency.record(took.as_micros() as u64);
            }
            (answers, errors, wins, latency)
        });
    }
    let mut out = Outcome {
        answers: 0,
        errors: 0,
        wins: 0,
        latency: Histogram::new(3).expect("histogram"),
        elapsed: Duration::ZERO,
    };
    while let Some(Ok((answers, errors, wins, latency))) = tasks.join_next().await {
        out.answers += answers;
        out.errors += errors;
        out.wins += wins;
        let _ = out.latency.add(latency);
    }
    out.elapsed = start.elapsed();
    out
}

fn report(name: &str, o: &Outcome) {
    let q = |p: f64| o.latency.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{name:<9} {:>9} answers in {:>6.3} s = {:>10.0}/s   latency ms p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}   wins {}  errors {}",
        o.answers,
        o.elapsed.as_secs_f64(),
        o.answers as f64 / o.elapsed.as_secs_f64(),
        q(0.5),
        q(0.99),
        q(0.999),
        o.latency.max() as f64 / 1000.0,
        o.wins,
        o.errors,
    );
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "bench:200"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(
                ClientConfig::new(server.addr().to_string())
                    .connect()
                    .await?,
            );
        }
        println!("{CONNECTIONS} connections, {WINDOW} requests in flight on each");
        let rush = drive(&clients, Op::Reserve, 1, 1_000_000).await;
        report("rush", &rush);
        anyhow::ensure!(rush.wins == 200, "expected 200 wins, got {}", rush.wins);
        report(
            "sold-out",
            &drive(&clients, Op::Reserve, 2_000_000, 1_000_000).await,
        );
        report("ping", &drive(&clients, Op::Ping, 0, 1_000_000).await);
        anyhow::Ok(())
    })?;
    server.stop()
}
