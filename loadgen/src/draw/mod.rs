//! A draw run (`--draw`): every user enters a sale's draw window, and once
//! the window closes the published draw is audited and every user's own
//! result is checked against it.
//!
//! The timeline, all of it bounded:
//!
//! 1. Before the window opens, the sale's draw is read ([`facts`]): its
//!    commitment (the one the audit will hold the seed to), `opens_at`,
//!    `draws_at` and capacity. A draw already made, or a window already
//!    closed, refuses the run.
//! 2. Entrants arrive over the window: evenly from `opens_at` to
//!    `draws_at`, less a [`guard`] at each end so that two clocks a few
//!    milliseconds apart and an entry's own latency keep every entry inside
//!    (or by `--arrival` from the opening). They go over the same pipelined
//!    lanes as a rush, with `busy` answers asked again; every answer must
//!    be `entered` with the sale's `draws_at` ([`crate::check::Tally::for_draw`]).
//! 3. From `draws_at` on, the draw's status is asked every [`POLL_EVERY`]
//!    until its seed is published: that moment, less `draws_at`, is the
//!    time to publication (to within the poll's period).
//! 4. The published document is fetched while every user asks for their
//!    own result ([`results`]); the later of the two, less `draws_at`, is
//!    the time until every result was available and checked.
//! 5. [`verdict::check`] audits the document against the commitment of
//!    step 1 and holds each user's result to it.

pub mod facts;
pub mod results;
pub mod verdict;

use std::time::Duration;

use anyhow::Context;

use self::facts::{await_published, Control, DrawSale};
use self::verdict::{DrawReport, Results};
use crate::check::Kind;
use crate::config::{Arrival, Config, Connections};
use crate::report::Report;
use crate::worker::{instant_of, unix_ns, Assignment};
use crate::{merge, plan, run_jobs, CONTROL_TIMEOUT};

/// How often the draw's status is asked after the window closes.
pub const POLL_EVERY: Duration = Duration::from_millis(2);
/// The most a [`guard`] is.
const MAX_GUARD: Duration = Duration::from_millis(100);
/// How long after the window closes the draw may take to be published
/// before the run says it never was.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);
/// How long every user's result may take to be asked once the draw is
/// published; what has no answer by then counts against its user.
const RESULTS_PATIENCE: Duration = Duration::from_secs(30);

/// The margin kept clear at each end of a draw window of `window`: a
/// twentieth of it, at most [`MAX_GUARD`].
pub fn guard(window: Duration) -> Duration {
    (window / 20).min(MAX_GUARD)
}

/// When the entrants start (Unix ns) and how they arrive, for a sale whose
/// draw is `sale`, at `now_ns`. The first entrant never starts before
/// `earliest_ns`.
pub fn schedule(
    sale: &DrawSale,
    spread: bool,
    arrival: Arrival,
    earliest_ns: u128,
) -> (u128, Arrival) {
    let ms = |at: u64| u128::from(at) * 1_000_000;
    let window = Duration::from_millis(sale.draws_at.saturating_sub(sale.opens_at));
    let margin = guard(window).as_nanos();
    let t0 = (ms(sale.opens_at) + margin).max(earliest_ns);
    let end = ms(sale.draws_at).saturating_sub(margin);
    if !spread {
        return (t0, arrival);
    }
    let over = u64::try_from(end.saturating_sub(t0)).unwrap_or(u64::MAX);
    (t0, Arrival::Ramp(Duration::from_nanos(over)))
}

/// Runs a draw run to the end and reports. `progress` is called with the
/// number of entries answered so far.
///
/// # Errors
///
/// When the target cannot be reached, the sale has no draw, or its window
/// has closed; broken invariants are a report with `ok: false`.
pub fn run(mut config: Config, progress: impl Fn(u64)) -> anyhow::Result<Report> {
    let Some(draw) = config.draw else {
        anyhow::bail!("not a draw run");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let connections = match config.connections {
            Connections::Pipelined(n) => n,
            Connections::PerUser { .. } => 1,
        };
        let mut control = Control::connect(&config.target, connections, CONTROL_TIMEOUT).await?;
        let before = control
            .sale(&config.sale)
            .await
            .with_context(|| format!("cannot read sale {:?} before the run", config.sale))?;
        anyhow::ensure!(
            !before.published,
            "the draw of sale {:?} is already made",
            config.sale
        );
        let (t0_ns, arrival) = schedule(
            &before,
            draw.spread,
            config.arrival,
            unix_ns() + config.start_in.as_nanos(),
        );
        anyhow::ensure!(
            t0_ns < u128::from(before.draws_at) * 1_000_000,
            "the draw window of sale {:?} closes at {} (Unix ms): too soon to enter it",
            config.sale,
            before.draws_at
        );
        config.arrival = arrival;
        // Connect only just before the window: an idle connection may be
        // closed by the front while it waits.
        let connect_at = t0_ns.saturating_sub(config.start_in.as_nanos());
        tokio::time::sleep_until(instant_of(connect_at)).await;
        let jobs: Vec<Assignment> = plan::slices(config.user_base, config.users, config.processes)
            .into_iter()
            .map(|slice| Assignment {
                config: config.clone(),
                slice,
                capacity: before.capacity,
                t0_unix_ns: t0_ns,
                draws_at: Some(before.draws_at),
            })
            .collect();
        let closes = instant_of(u128::from(before.draws_at) * 1_000_000);
        let users = (config.user_base, config.users);
        let watch = async {
            tokio::time::sleep_until(closes).await;
            let published =
                await_published(&mut control, &config.sale, POLL_EVERY, PUBLISH_PATIENCE).await?;
            let seen_ns = unix_ns();
            // The document and every user's own result at once: a user
            // learns theirs without waiting for the whole list.
            let deadline = tokio::time::Instant::now() + RESULTS_PATIENCE;
            let asking =
                results::ask_all(&config.target, &config.sale, users, connections, deadline);
            let (document, told) = if published {
                let (document, told) = tokio::join!(control.document(&config.sale), asking);
                let document = document.context("cannot read the published draw")?;
                (Some(document), told?)
            } else {
                (None, asking.await?)
            };
            anyhow::Ok((published, seen_ns, document, told, unix_ns()))
        };
        let (results, watched) = tokio::join!(run_jobs(jobs, progress), watch);
        let (summary, stats, _) = merge(results?);
        let (published, seen_ns, document, told, checked_ns) =
            watched.context("cannot ask for the draw after the window")?;
        let since_close = |at_ns: u128| (at_ns as f64 - before.draws_at as f64 * 1e6) / 1e6;
        let (verdicts, counted) = verdict::check(
            &summary,
            document.as_ref(),
            &before.commitment,
            Results {
                first_user: config.user_base,
                told: &told,
            },
        );
        let audit = match &document {
            Some(doc) => match flashsale_draw::audit(doc, Some(&before.commitment)) {
                Ok(_) => "passed".to_owned(),
                Err(e) => format!("failed: {e}"),
            },
            None => "not made: no published draw".to_owned(),
        };
        let section = DrawReport {
            commitment: before.commitment.clone(),
            opens_at: before.opens_at,
            draws_at: before.draws_at,
            capacity: before.capacity,
            users: config.users,
            entries_answered: config.users - summary.unentered.len() as u64,
            entry_latency_ms: stats
                .percentiles(Kind::Outcome(flashsale_protocol::OutcomeKind::Entered)),
            published_after_close_ms: published.then(|| since_close(seen_ns)),
            results_checked_after_close_ms: published.then(|| since_close(checked_ns)),
            entrants_published: document.as_ref().map(|d| d.entrants.len() as u64),
            winners_published: document.as_ref().map(|d| d.winners.len() as u64),
            results_checked: told.len() as u64,
            audit,
            counted,
        };
        let remaining = control.sale(&config.sale).await.ok().map(|s| s.remaining);
        let mut report = Report::new(config, before.remaining, remaining, &summary, &stats, None);
        let t0 = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(t0_ns).unwrap_or(0));
        report.started_at = Some(humantime::format_rfc3339_seconds(t0).to_string());
        report.add_draw(section, verdicts);
        Ok(report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(opens_at: u64, draws_at: u64) -> DrawSale {
        DrawSale {
            capacity: 200,
            remaining: 200,
            opens_at,
            draws_at,
            commitment: String::new(),
            entrants: 0,
            published: false,
        }
    }

    #[test]
    fn entrants_are_spread_inside_the_window() {
        let ms = |t: u64| u128::from(t) * 1_000_000;
        // A 2 s window: 100 ms clear at each end.
        let (t0, arrival) = schedule(&sale(10_000, 12_000), true, Arrival::Burst, 0);
        assert_eq!(t0, ms(10_100));
        assert_eq!(arrival, Arrival::Ramp(Duration::from_millis(1_800)));
        // A short window: a twentieth of it.
        let (t0, arrival) = schedule(&sale(10_000, 10_200), true, Arrival::Burst, 0);
        assert_eq!(t0, ms(10_010));
        assert_eq!(arrival, Arrival::Ramp(Duration::from_millis(180)));
        // Already open: what is left of it.
        let (t0, arrival) = schedule(&sale(10_000, 12_000), true, Arrival::Burst, ms(11_000));
        assert_eq!(t0, ms(11_000));
        assert_eq!(arrival, Arrival::Ramp(Duration::from_millis(900)));
        // A profile of the user's own, from the opening.
        let rate = Arrival::Rate(500.0);
        assert_eq!(
            schedule(&sale(10_000, 12_000), false, rate, 0),
            (ms(10_100), rate)
        );
        assert_eq!(guard(Duration::from_secs(60)), MAX_GUARD);
    }
}
