//! flashsale-loadgen: rehearses a flash sale's opening second, and proves
//! what the target did from what its clients were told.
//!
//! # Layout
//!
//! - [`config`]: the run (target, users, arrival and connection models,
//!   bounds).
//! - [`plan`]: who sends when; pure and lazy.
//! - [`transport`]: the only part that differs per target; [`native`] for a
//!   flashsale server, [`http`] for its HTTP front with signed-in users,
//!   [`redis`] for Redis with the reservation Lua script.
//! - [`drive`]: pipelined lanes and connection-per-user runs over any
//!   transport, with intended-time latency (no coordinated omission).
//! - [`check`]: the sale's invariants, folded answer by answer.
//! - [`stats`]: HDR latency histograms per outcome, and the sale's timings.
//! - [`worker`]: worker processes and the merge of their results.
//! - [`report`]: text and JSON.

pub mod check;
pub mod config;
pub mod drive;
pub mod http;
pub mod native;
pub mod plan;
pub mod redis;
pub mod report;
pub mod stats;
pub mod transport;
pub mod worker;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;

use crate::check::Summary;
use crate::config::Config;
use crate::report::Report;
use crate::stats::Stats;
use crate::worker::{run_processes, run_slice, unix_ns, Assignment, WorkerResult};

/// How long the control-plane questions (status before and after) may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `config` to the end and reports. `progress` is called with the
/// number of answers so far, about ten times a second.
///
/// # Errors
///
/// When the target cannot be reached or the sale does not exist; a run
/// that breaks invariants is not an error, it is a report with `ok: false`.
pub fn run(config: Config, progress: impl Fn(u64)) -> anyhow::Result<Report> {
    anyhow::ensure!(config.users > 0, "--users must be at least 1");
    anyhow::ensure!(config.processes > 0, "--processes must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&config.retry_fraction),
        "--retry-fraction must be within 0..=1"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let before = transport::snapshot(&config.target, &config.sale, CONTROL_TIMEOUT)
            .await
            .with_context(|| format!("cannot read sale {:?} before the run", config.sale))?;
        let t0_unix_ns = unix_ns() + config.start_in.as_nanos();
        let jobs: Vec<Assignment> = plan::slices(config.user_base, config.users, config.processes)
            .into_iter()
            .map(|slice| Assignment { config: config.clone(), slice, capacity: before.capacity, t0_unix_ns })
            .collect();
        let results: Vec<WorkerResult> = if jobs.len() == 1 {
            let answered = Rc::new(Cell::new(0));
            let ticker = {
                let answered = Rc::clone(&answered);
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        progress(answered.get());
                    }
                }
            };
            tokio::select! {
                result = run_slice(&jobs[0], answered) => vec![result],
                () = ticker => unreachable!("the progress ticker never ends"),
            }
        } else {
            run_processes(jobs, progress).await?
        };
        let mut summary = Summary::default();
        let mut stats = Stats::default();
        for result in results {
            summary.merge(result.summary);
            stats.merge(&Stats::from_wire(&result.stats));
        }
        let after = transport::snapshot(&config.target, &config.sale, CONTROL_TIMEOUT).await;
        if let Err(e) = &after {
            eprintln!("flashsale-loadgen: cannot read the sale after the run ({e:#}); the sold-out check is skipped");
        }
        Ok(Report::new(config, before.remaining, after.ok().map(|s| s.remaining), &summary, &stats))
    })
}
