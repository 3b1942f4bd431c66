//! The report: counts, rates, latency per outcome, the sale's timings, and
//! the invariants' verdicts; as text for people and JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Ending, HoldCounts, Kind, Summary, Verdict};
use crate::config::{Config, Connections, Target};
use crate::crowd::verdict::StreamsReport;
use crate::draw::verdict::DrawReport;
use crate::stats::{Percentiles, Stats};
use crate::timeline::Series;

/// What the holds of a run with payments came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payments {
    /// Holds granted, confirmations and cancels sent and how they were
    /// answered.
    #[serde(flatten)]
    pub counts: HoldCounts,
    /// Distinct tickets this run was told are paid for.
    pub paid_tickets: u64,
    /// Tickets the server reports confirmed at the end.
    pub confirmed_at_end: Option<u32>,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The run's configuration.
    pub config: Config,
    /// Tickets left when the run started.
    pub available_before: u32,
    /// Tickets in the sale.
    pub capacity: u32,
    /// Tickets left at the end, if the target could be asked.
    pub remaining_after: Option<u32>,
    /// Requests sent.
    pub sent: u64,
    /// Answers received (every kind, timeouts and connection errors
    /// included).
    pub answers: u64,
    /// Answers per second, from t0 to the last answer.
    pub answers_per_sec: f64,
    /// From t0 to the last `Won`.
    pub time_to_sell_out_ms: Option<f64>,
    /// From t0 to the last answer.
    pub time_to_last_answer_ms: f64,
    /// Answers per outcome.
    pub counts: BTreeMap<Kind, u64>,
    /// Latency per outcome, from each request's intended start.
    pub latency_ms: BTreeMap<Kind, Percentiles>,
    /// Latency over every answer.
    pub latency_all_ms: Option<Percentiles>,
    /// Service time (from send to answer) of the answers the target served,
    /// leaving out the ones it shed and the ones lost.
    pub service_ms: Option<Percentiles>,
    /// t0, the moment the users were told to start (RFC 3339, UTC).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Answers and latency over time since t0, per outcome.
    #[serde(default)]
    pub timeline: Series,
    /// In a run with payments: the holds, confirmations and cancels.
    pub payments: Option<Payments>,
    /// Each invariant's verdict.
    pub invariants: Vec<Verdict>,
    /// Violations seen (more than are listed in `invariants`, if many).
    pub violations_total: u64,
    /// Whether every invariant held.
    pub ok: bool,
    /// In a crowd run (`--hold-streams`): the streams and their verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsReport>,
    /// In a draw run (`--draw`): the entries, the published draw, its
    /// audit and the users' results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<DrawReport>,
}

impl Report {
    /// This report without the run's secrets ([`Target::redacted`]): what
    /// `--json` and `--report` write.
    #[must_use]
    pub fn redacted(&self) -> Report {
        let mut report = self.clone();
        report.config.target = report.config.target.redacted();
        report
    }

    /// Builds the report from the merged results.
    pub fn new(
        config: Config,
        available_before: u32,
        remaining_after: Option<u32>,
        summary: &Summary,
        stats: &Stats,
        ending: Option<&Ending>,
    ) -> Report {
        let invariants = match (ending, &summary.holds) {
            (Some(ending), Some(_)) => summary.hold_verdicts(ending),
            _ => summary.verdicts(available_before, remaining_after),
        };
        let payments = summary.holds.as_ref().map(|h| Payments {
            counts: h.counts,
            paid_tickets: h.paid.len() as u64,
            confirmed_at_end: ending.and_then(|e| e.confirmed),
        });
        let answers: u64 = summary.counts.iter().sum();
        let last = stats.last_answer.max(Duration::from_micros(1));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Report {
            ok: invariants.iter().all(|v| v.held),
            capacity: summary.capacity,
            available_before,
            remaining_after,
            sent: stats.sent,
            answers,
            answers_per_sec: answers as f64 / last.as_secs_f64(),
            time_to_sell_out_ms: stats.last_win.map(ms),
            time_to_last_answer_ms: ms(stats.last_answer),
            counts: Kind::ALL
                .iter()
                .map(|k| (*k, summary.counts[k.index()]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            latency_ms: Kind::ALL
                .iter()
                .filter_map(|k| stats.percentiles(*k).map(|p| (*k, p)))
                .collect(),
            latency_all_ms: stats.overall(),
            service_ms: stats.service(),
            started_at: None,
            timeline: stats.timeline.series(),
            payments,
            invariants,
            violations_total: summary.violation_count,
            config,
            streams: None,
            draw: None,
        }
    }

    /// Adds a draw run's section; its `verdicts` are the run's invariants
    /// (a draw sells no ticket during the window, so the rush's do not
    /// apply).
    pub fn add_draw(&mut self, draw: DrawReport, verdicts: Vec<Verdict>) {
        self.ok = verdicts.iter().all(|v| v.held);
        self.violations_total = draw.counted.violations;
        self.invariants = verdicts;
        self.draw = Some(draw);
    }

    /// Adds a crowd's streams; their violations fail the run.
    pub fn add_streams(&mut self, streams: StreamsReport) {
        self.ok &= streams.ok;
        self.violations_total += streams.violations.len() as u64;
        self.streams = Some(streams);
    }

    /// How many answers of `kind` arrived.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The plain-text summary.
    pub fn text(&self) -> String {
        let c = &self.config;
        let target = match &c.target {
            Target::Native { addr, .. } => format!("flashsale at {addr}"),
            Target::Redis { url } => format!("redis+lua at {url}"),
            Target::Http { addr, .. } => format!("flashsale HTTP at {addr}"),
        };
        let connections = match c.connections {
            Connections::Pipelined(n) => format!("{n} pipelined connections"),
            Connections::PerUser { concurrency } => {
                format!("a connection per user, {concurrency} open at once per process")
            }
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} users against {target}, sale {:?}: {}, {connections}, {} process{}",
            c.users,
            c.sale,
            c.arrival,
            c.processes,
            if c.processes == 1 { "" } else { "es" }
        );
        let _ = writeln!(
            out,
            "{} answers to {} requests in {:.3} s: {:.0} answers/s",
            self.answers,
            self.sent,
            self.time_to_last_answer_ms / 1000.0,
            self.answers_per_sec
        );
        let _ = writeln!(
            out,
            "  {:<17} {:>9}  {:>9} {:>9} {:>9} {:>9} {:>9}  (ms from intended start)",
            "outcome", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (kind, p) in &self.latency_ms {
            let _ = writeln!(
                out,
                "  {:<17} {:>9}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                kind.name(),
                p.count,
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max
            );
        }
        if let Some(p) = &self.service_ms {
            let _ = writeln!(
                out,
                "  {:<17} {:>9}  {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  (ms from send, served answers)",
                "service time", p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        match self.time_to_sell_out_ms {
            Some(t) => {
                let _ = write!(out, "last win {t:.1} ms after t0; ");
            }
            None => {
                let _ = write!(out, "no win; ");
            }
        }
        let _ = writeln!(
            out,
            "last answer {:.1} ms after t0; connection errors {}, timeouts {}",
            self.time_to_last_answer_ms,
            self.count(Kind::ConnectionError),
            self.count(Kind::Timeout)
        );
        let _ = writeln!(
            out,
            "tickets: {} available at the start, {} left at the end",
            self.available_before,
            self.remaining_after
                .map_or_else(|| "unknown".to_owned(), |r| r.to_string())
        );
        if let Some(p) = &self.payments {
            let c = &p.counts;
            let _ = writeln!(
                out,
                "holds: {} granted; confirms: {} sent, {} confirmed, {} expired; cancels: {} sent, {} released; {} unanswered",
                c.holds, c.confirms_sent, c.confirmed, c.confirms_expired, c.cancels_sent, c.cancelled, c.unanswered
            );
            let _ = writeln!(
                out,
                "paid: {} tickets by this run, {} of {} confirmed at the end",
                p.paid_tickets,
                p.confirmed_at_end
                    .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                self.capacity
            );
        }
        if let Some(d) = &self.draw {
            out.push_str(&d.text());
        }
        let _ = writeln!(out, "invariants:");
        for v in &self.invariants {
            let mark = match (v.held, v.inconclusive) {
                (false, _) => "FAIL",
                (true, true) => "n/a ",
                (true, false) => "ok  ",
            };
            let _ = writeln!(out, "  {mark} {}", v.invariant);
            for d in v.details.iter().take(5) {
                let _ = writeln!(out, "         {d}");
            }
            if v.details.len() > 5 {
                let _ = writeln!(out, "         ... and {} more", v.details.len() - 5);
            }
        }
        if let Some(s) = &self.streams {
            out.push_str(&s.text());
        }
        if !self.ok {
            let _ = writeln!(
                out,
                "VIOLATED: {} violation(s) of the sale's invariants",
                self.violations_total.max(1)
            );
        }
        out
    }
}
