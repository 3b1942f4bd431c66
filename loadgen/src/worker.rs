//! Worker processes: each runs its slice of users on a single-threaded
//! runtime, and the parent merges what they saw.
//!
//! One process may hold at most so many open files, so a run with more
//! connections than that (a connection storm of 20,000 users, say) is
//! spread over several. The parent passes each worker its slice and the
//! shared start time through an environment variable, reads progress lines
//! from the worker's stderr and the result from its stdout.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::time::Instant;

use crate::check::{Answer, Summary, Tally};
use crate::config::{Config, Connections, Target};
use crate::crowd::verdict::StreamTally;
use crate::drive::{fail_rest, run_lane, run_per_user, Ctx};
use crate::http::HttpTransport;
use crate::native::NativeTransport;
use crate::plan::{Lane, Slice};
use crate::redis::RedisTransport;
use crate::shop::Shop;
use crate::stats::{Stats, StatsWire};
use crate::transport::Transport;

/// The environment variable that makes the binary a worker.
pub const WORKER_ENV: &str = "FLASHSALE_LOADGEN_WORKER";
const PROGRESS_PREFIX: &str = "@progress ";

/// What a worker is told to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    /// The run.
    pub config: Config,
    /// This worker's users.
    pub slice: Slice,
    /// Tickets in the sale (for the checker).
    pub capacity: u32,
    /// The shared start, Unix nanoseconds.
    pub t0_unix_ns: u128,
    /// In a draw run: the `draws_at` every entry must be answered with.
    #[serde(default)]
    pub draws_at: Option<u64>,
}

/// What a worker saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// The checker's findings.
    pub summary: Summary,
    /// Latencies and timings.
    pub stats: StatsWire,
    /// In a crowd run, what the streams were told.
    #[serde(default)]
    pub streams: Option<StreamTally>,
}

/// Unix time in nanoseconds.
pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The local instant of a Unix time.
pub(crate) fn instant_of(unix_ns_at: u128) -> Instant {
    let now_unix = unix_ns();
    let now = Instant::now();
    if unix_ns_at >= now_unix {
        now + Duration::from_nanos(u64::try_from(unix_ns_at - now_unix).unwrap_or(u64::MAX))
    } else {
        now.checked_sub(Duration::from_nanos(
            u64::try_from(now_unix - unix_ns_at).unwrap_or(0),
        ))
        .unwrap_or(now)
    }
}

/// Runs one slice on the current (single-threaded) runtime, inside a
/// `LocalSet`. `answered` is shared with whoever reports progress.
///
/// # Errors
///
/// In a run with payments, when the shop cannot connect.
pub async fn run_slice(job: &Assignment, answered: Rc<Cell<u64>>) -> anyhow::Result<WorkerResult> {
    let cfg = job.config.clone();
    let t0 = instant_of(job.t0_unix_ns);
    let (first, users) = (job.slice.first_user, job.slice.users);
    let (tally, shop) = match cfg.payment {
        Some(payment) => (
            Tally::with_payments(job.capacity, first, users),
            Some(Rc::new(Shop::open(&cfg, payment).await?)),
        ),
        None => match job.draws_at {
            Some(draws_at) => (Tally::for_draw(job.capacity, first, users, draws_at), None),
            None => (Tally::new(job.capacity, first, users), None),
        },
    };
    let ctx = Rc::new(Ctx {
        t0,
        stop_sending: cfg.duration.map(|d| t0 + d),
        deadline: t0 + cfg.deadline,
        tally: RefCell::new(tally),
        stats: RefCell::new(Stats::default()),
        answered: Cell::new(0),
        shop: shop.clone(),
        config: cfg,
    });
    let shop_run = shop
        .as_ref()
        .map(|shop| tokio::task::spawn_local(Rc::clone(shop).run(Rc::clone(&ctx))));
    let progress = {
        let ctx = Rc::clone(&ctx);
        tokio::task::spawn_local(async move {
            loop {
                answered.set(ctx.answered.get());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let crowd = ctx.config.crowd.clone().map(|crowd| {
        tokio::task::spawn_local(crate::crowd::run(Rc::clone(&ctx), job.slice, crowd))
    });
    match &ctx.config.target {
        _ if crowd.is_some() => {}
        Target::Native { .. } => spawn_lanes::<NativeTransport>(&mut tasks, &ctx, job.slice),
        Target::Redis { .. } => spawn_lanes::<RedisTransport>(&mut tasks, &ctx, job.slice),
        Target::Http { .. } => spawn_lanes::<HttpTransport>(&mut tasks, &ctx, job.slice),
    }
    while tasks.join_next().await.is_some() {}
    let streams = match crowd {
        Some(run) => Some(run.await.context("the crowd's task failed")?),
        None => None,
    };
    if let (Some(shop), Some(run)) = (shop, shop_run) {
        shop.close();
        // The shop ends by itself by the run's deadline.
        let _ = run.await;
    }
    progress.abort();
    let stats = ctx.stats.borrow().to_wire();
    let summary = ctx.tally.replace(Tally::new(0, 0, 0)).into_summary();
    Ok(WorkerResult {
        summary,
        stats,
        streams,
    })
}

/// Starts this worker's connections (or its connection-per-user loop) over
/// transport `T`.
fn spawn_lanes<T: Transport + 'static>(
    tasks: &mut tokio::task::JoinSet<()>,
    ctx: &Rc<Ctx>,
    slice: Slice,
) {
    let c = &ctx.config;
    // With payments, tickets come back: users keep trying, like buyers
    // waiting for a ticket to be released.
    let cycle = c.duration.is_some() || c.payment.is_some();
    let lane = |i, n| Lane::new(slice, i, n, c.users, c.arrival, c.retry_fraction, cycle);
    let lanes = match c.connections {
        Connections::Pipelined(total) => per_worker(total, slice.worker, slice.workers).max(1),
        Connections::PerUser { .. } => 1,
    };
    let shared = match T::prepare(&c.target, &c.sale) {
        Ok(shared) => Rc::new(shared),
        Err(e) => {
            eprintln!("flashsale-loadgen: {e}");
            for i in 0..lanes {
                fail_rest(ctx, &mut lane(i, lanes), Answer::ConnectionError);
            }
            return;
        }
    };
    match c.connections {
        Connections::Pipelined(_) => {
            for i in 0..lanes {
                let run = run_lane::<T>(Rc::clone(ctx), Rc::clone(&shared), lane(i, lanes));
                tasks.spawn_local(run);
            }
        }
        Connections::PerUser { concurrency } => {
            let run = run_per_user::<T>(
                Rc::clone(ctx),
                shared,
                lane(0, 1),
                (concurrency, slice.worker),
            );
            tasks.spawn_local(run);
        }
    }
}

/// `total` split over `workers`, the share of `worker`.
fn per_worker(total: usize, worker: usize, workers: usize) -> usize {
    total / workers + usize::from(worker < total % workers)
}

/// The body of a worker process: reads its assignment from the
/// environment, runs it, writes the result to stdout and progress to
/// stderr.
pub fn worker_main(assignment: &str) -> anyhow::Result<()> {
    let job: Assignment = serde_json::from_str(assignment).context("bad worker assignment")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async {
        let answered = Rc::new(Cell::new(0));
        let reporter = {
            let answered = Rc::clone(&answered);
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    eprintln!("{PROGRESS_PREFIX}{}", answered.get());
                }
            })
        };
        let result = run_slice(&job, answered).await;
        reporter.abort();
        result
    })?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &result)?;
    out.flush()?;
    Ok(())
}

/// Runs `jobs` as child processes of this binary; `on_progress` receives
/// the total answers so far. Returns each worker's result.
pub async fn run_processes(
    jobs: Vec<Assignment>,
    on_progress: impl Fn(u64),
) -> anyhow::Result<Vec<WorkerResult>> {
    let exe = std::env::current_exe().context("cannot find this program to start workers")?;
    let mut children = Vec::new();
    for job in &jobs {
        let child = tokio::process::Command::new(&exe)
            .env(WORKER_ENV, serde_json::to_string(job)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a worker process")?;
        children.push(child);
    }
    let progress: Rc<Vec<Cell<u64>>> = Rc::new(children.iter().map(|_| Cell::new(0)).collect());
    let mut readers = Vec::new();
    for (i, child) in children.iter_mut().enumerate() {
        let stderr = child.stderr.take().context("worker stderr")?;
        let progress = Rc::clone(&progress);
        readers.push(tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line
                    .strip_prefix(PROGRESS_PREFIX)
                    .and_then(|n| n.parse().ok())
                {
                    Some(n) => progress[i].set(n),
                    None => eprintln!("[worker {i}] {line}"),
                }
            }
        }));
    }
    let mut outputs = Vec::new();
    for child in &mut children {
        let mut stdout = child.stdout.take().context("worker stdout")?;
        outputs.push(tokio::task::spawn_local(async move {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).await.map(|_| buf)
        }));
    }
    let ticker = {
        let progress = Rc::clone(&progress);
        async move {
            loop {
                on_progress(progress.iter().map(Cell::get).sum());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let collect = async {
        let mut results = Vec::new();
        for (i, (child, output)) in children.iter_mut().zip(outputs).enumerate() {
            let status = child.wait().await?;
            let bytes = output.await??;
            anyhow::ensure!(status.success(), "worker {i} failed ({status})");
            results.push(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("worker {i} sent no result"))?,
            );
        }
        for reader in readers {
            let _ = reader.await;
        }
        anyhow::Ok(results)
    };
    tokio::select! {
        results = collect => results,
        () = ticker => unreachable!("the progress ticker never ends"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_split_over_workers() {
        assert_eq!(
            (0..3).map(|w| per_worker(16, w, 3)).collect::<Vec<_>>(),
            vec![6, 5, 5]
        );
        assert_eq!((0..2).map(|w| per_worker(1, w, 2)).sum::<usize>(), 1);
    }

    #[test]
    fn unix_times_map_to_instants() {
        let hour = Duration::from_secs(3600);
        let ahead =
            instant_of(unix_ns() + hour.as_nanos()).saturating_duration_since(Instant::now());
        assert!(
            ahead > hour - Duration::from_secs(60) && ahead <= hour,
            "{ahead:?}"
        );
        assert!(instant_of(unix_ns() - hour.as_nanos()) <= Instant::now());
    }
}
