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
//! - [`crowd`]: every user holding the sale's event stream open through
//!   the burst, over several fronts and source addresses.
//! - [`draw`]: a sale's draw window entered by every user, then the
//!   published draw audited and every user's result checked.
//! - [`shop`]: in a sale with holds, the payments and cancels after the
//!   rush.
//! - [`check`]: the sale's invariants, folded answer by answer.
//! - [`stats`]: HDR latency histograms per outcome, and the sale's timings.
//! - [`timeline`]: the same answers over time, in mergeable buckets.
//! - [`worker`]: worker processes and the merge of their results.
//! - [`report`]: text and JSON; [`page`] the self-contained HTML page,
//!   with [`chart`] its SVG charts.

pub mod chart;
pub mod check;
pub mod config;
pub mod crowd;
pub mod draw;
pub mod drive;
pub mod http;
pub mod native;
pub mod page;
pub mod plan;
pub mod redis;
pub mod report;
pub mod shop;
pub mod stats;
pub mod timeline;
pub mod transport;
pub mod worker;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;

use crate::check::{Ending, Summary};
use crate::config::Config;
use crate::crowd::verdict::{StreamTally, StreamsReport};
use crate::plan::{payer_of, Payer};
use crate::report::Report;
use crate::stats::Stats;
use crate::worker::{run_processes, run_slice, unix_ns, Assignment, WorkerResult};

/// How long the control-plane questions (status before and after) may take.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

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
    crowd::preflight(&config)?;
    let config = native::leader::resolve(config, CONTROL_TIMEOUT)?;
    if config.draw.is_some() {
        return draw::run(config, progress);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let before = transport::snapshot(&config.target, &config.sale, CONTROL_TIMEOUT)
            .await
            .with_context(|| format!("cannot read sale {:?} before the run", config.sale))?;
        let holds = match &config.payment {
            Some(_) => Some(HoldSale::ask(&config).await?),
            None => None,
        };
        let t0_unix_ns = unix_ns() + config.start_in.as_nanos();
        let jobs: Vec<Assignment> = plan::slices(config.user_base, config.users, config.processes)
            .into_iter()
            .map(|slice| Assignment { config: config.clone(), slice, capacity: before.capacity, t0_unix_ns, draws_at: None })
            .collect();
        let results = run_jobs(jobs, progress).await?;
        let (summary, stats, streams) = merge(results);
        let after = transport::snapshot(&config.target, &config.sale, CONTROL_TIMEOUT).await;
        if let Err(e) = &after {
            eprintln!("flashsale-loadgen: cannot read the sale after the run ({e:#}); the sold-out check is skipped");
        }
        let ending = match holds {
            Some(holds) => Some(holds.ending(&config).await),
            None => None,
        };
        let remaining = after.ok().map(|s| s.remaining);
        let (users, held) = (config.users, config.crowd.clone());
        let mut report = Report::new(config, before.remaining, remaining, &summary, &stats, ending.as_ref());
        let t0 = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(t0_unix_ns).unwrap_or(0));
        report.started_at = Some(humantime::format_rfc3339_seconds(t0).to_string());
        if let (Some(tally), Some(held)) = (streams, held) {
            let buys = crowd::buys(&report, &held, users, stats.last_win);
            report.add_streams(StreamsReport::new(&tally, buys));
        }
        Ok(report)
    })
}

/// Runs `jobs`: in this process if there is one, else each in a worker
/// process. `progress` is called with the answers so far.
pub(crate) async fn run_jobs(
    jobs: Vec<Assignment>,
    progress: impl Fn(u64),
) -> anyhow::Result<Vec<WorkerResult>> {
    if jobs.len() != 1 {
        return run_processes(jobs, progress).await;
    }
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
        result = run_slice(&jobs[0], answered) => Ok(vec![result?]),
        () = ticker => unreachable!("the progress ticker never ends"),
    }
}

/// The workers' results as one.
pub(crate) fn merge(results: Vec<WorkerResult>) -> (Summary, Stats, Option<StreamTally>) {
    let mut summary = Summary::default();
    let mut stats = Stats::default();
    let mut streams: Option<StreamTally> = None;
    for result in results {
        summary.merge(result.summary);
        stats.merge(&Stats::from_wire(&result.stats));
        if let Some(tally) = result.streams {
            streams
                .get_or_insert_with(StreamTally::default)
                .merge(tally);
        }
    }
    (summary, stats, streams)
}

/// A sale with holds, as it stood before a run with payments.
struct HoldSale {
    /// Length of a hold.
    hold: Duration,
    /// Tickets not yet paid for.
    unpaid: u32,
}

impl HoldSale {
    /// Asks the target about the sale of a run with payments.
    async fn ask(config: &Config) -> anyhow::Result<HoldSale> {
        let info = shop::sale_info(&config.target, &config.sale, CONTROL_TIMEOUT).await?;
        let Some(seconds) = info.hold_seconds else {
            anyhow::bail!(
                "sale {:?} sells final tickets, without holds: --pay-fraction needs a sale with hold_seconds",
                config.sale
            );
        };
        Ok(HoldSale {
            hold: Duration::from_secs(u64::from(seconds)),
            unpaid: info.capacity - info.confirmed.min(info.capacity),
        })
    }

    /// How the run ended: the tickets confirmed, and whether the run could
    /// be expected to confirm them all.
    async fn ending(&self, config: &Config) -> Ending {
        let info = shop::sale_info(&config.target, &config.sale, CONTROL_TIMEOUT).await;
        if let Err(e) = &info {
            eprintln!("flashsale-loadgen: cannot read the sale after the run ({e:#})");
        }
        Ending {
            confirmed: info.ok().map(|i| i.confirmed),
            short: self.short(config),
        }
    }

    /// Why the run could not be expected to end with every ticket paid
    /// for, if it could not.
    fn short(&self, config: &Config) -> Option<String> {
        let payment = config.payment?;
        let users = config.user_base..config.user_base.saturating_add(config.users);
        let payers = users
            .filter(|u| payer_of(*u, &payment) == Payer::Pays)
            .count() as u64;
        if payment.after >= self.hold {
            Some(format!(
                "payments come {} after a hold is granted, and a hold lasts {}",
                humantime::format_duration(payment.after),
                humantime::format_duration(self.hold)
            ))
        } else if payers < u64::from(self.unpaid) {
            Some(format!(
                "{payers} paying users for {} unpaid tickets",
                self.unpaid
            ))
        } else if config.duration.is_some() {
            Some("the run stopped at --duration".to_owned())
        } else {
            None
        }
    }
}
