//! The rehearsal as one self-contained HTML page (`--report FILE.html`):
//! what an operator rehearsing a drop reads and attaches to a ticket.
//!
//! The page stands alone: styles inline, charts as inline SVG
//! ([`crate::chart`]), no script, and a Content-Security-Policy of
//! `default-src 'none'`, so even a mistake here could not make it fetch
//! anything. Everything that came from outside (the sale id, the target's
//! address, the checker's counterexamples, which quote what the target
//! said) is escaped on the way in; the machine-readable copy of the report
//! in `<script type="application/json" id="run-data">` has `<`, `>` and
//! `&` escaped as JSON `\u` sequences, so no text can close that element.
//! Secrets of the configuration (the API key, the JWT secret) are left out:
//! the page is meant to be passed around.

use std::fmt::Write as _;

use crate::chart;
use crate::check::Verdict;
use crate::config::{Config, Connections, Target};
use crate::draw::verdict::DrawReport;
use crate::report::Report;
use crate::stats::Percentiles;

/// At most this many counterexamples are listed per invariant.
const MAX_DETAILS: usize = 20;

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1000px;padding:0 1rem;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.banner{padding:.6rem 1rem;border-radius:4px;font-weight:600}
.ok{background:#e6f4ea;color:#1e6b34}.bad{background:#fde8e8;color:#a11}.undecided{background:#f3f3f3;color:#555}
.verdict{font-weight:600}.verdict.held{color:#1e6b34}.verdict.violated{color:#a11}.verdict.undecided{color:#777}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.4rem;vertical-align:-1px}
ul.details{margin:.2rem 0;padding-left:1.2rem;font-family:ui-monospace,monospace;font-size:.85rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#666;font-size:.85rem}
";

/// The page for `report`.
///
/// # Errors
///
/// Only if a chart cannot be drawn.
pub fn html(report: &Report) -> anyhow::Result<String> {
    let c = &report.config;
    let when = report.started_at.as_deref().unwrap_or("date unknown");
    let title = format!("flashsale rehearsal: sale {:?}, {when}", c.sale);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(
        out,
        "<p class=\"sub\">{} users against {}, t0 at {}</p>",
        c.users,
        escape(&target_text(&c.target)),
        escape(when)
    );
    banner(&mut out, report);
    section_config(&mut out, c);
    section_invariants(&mut out, &report.invariants);
    section_summary(&mut out, report);
    if let Some(draw) = &report.draw {
        section_draw(&mut out, draw);
    }
    section_charts(&mut out, report)?;
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"run-data\">{}</script>\n</body>\n</html>",
        run_data(report)
    );
    Ok(out)
}

/// `text` safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn banner(out: &mut String, report: &Report) {
    let undecided = report.invariants.iter().filter(|v| v.inconclusive).count();
    let (class, text) = if !report.ok {
        let broken = report.invariants.iter().filter(|v| !v.held).count();
        (
            "bad",
            format!(
                "VIOLATED: {broken} of {} invariants broken ({} violation(s) seen)",
                report.invariants.len(),
                report.violations_total.max(1)
            ),
        )
    } else if undecided > 0 {
        (
            "undecided",
            format!(
                "No invariant broken; {undecided} of {} could not be decided",
                report.invariants.len()
            ),
        )
    } else {
        (
            "ok",
            format!("All {} invariants held", report.invariants.len()),
        )
    };
    let _ = writeln!(
        out,
        "<p class=\"banner {class}\" id=\"verdict\" data-ok=\"{}\">{}</p>",
        report.ok,
        escape(&text)
    );
}

fn target_text(target: &Target) -> String {
    match target {
        Target::Native { addr, .. } => format!("flashsale (native protocol) at {addr}"),
        Target::Redis { url } => format!("Redis + Lua at {url}"),
        Target::Http { addr, .. } => format!("flashsale HTTP front at {addr}"),
    }
}

fn section_config(out: &mut String, c: &Config) {
    let mut rows: Vec<(&str, String)> = vec![("target", target_text(&c.target))];
    match &c.target {
        Target::Native { api_key, .. } => rows.push((
            "API key",
            if api_key.is_some() {
                "set (not shown)"
            } else {
                "none"
            }
            .to_owned(),
        )),
        Target::Http {
            issuer, audience, ..
        } => {
            rows.push(("JWT issuer", issuer.clone().unwrap_or_else(|| "-".into())));
            rows.push((
                "JWT audience",
                audience.clone().unwrap_or_else(|| "-".into()),
            ));
        }
        Target::Redis { .. } => {}
    }
    rows.push(("sale", c.sale.clone()));
    rows.push(("users", c.users.to_string()));
    rows.push((
        "user ids",
        format!("{}..{}", c.user_base, c.user_base.saturating_add(c.users)),
    ));
    rows.push(("arrival", c.arrival.to_string()));
    rows.push((
        "connections",
        match c.connections {
            Connections::Pipelined(n) => format!("{n} pipelined, window {}", c.window),
            Connections::PerUser { concurrency } => {
                format!("one per user, {concurrency} open at once per process")
            }
        },
    ));
    rows.push(("processes", c.processes.to_string()));
    rows.push(("retry fraction", c.retry_fraction.to_string()));
    rows.push(("timeout", humantime::format_duration(c.timeout).to_string()));
    rows.push((
        "duration",
        c.duration.map_or_else(
            || "each user once".to_owned(),
            |d| humantime::format_duration(d).to_string(),
        ),
    ));
    rows.push((
        "deadline",
        humantime::format_duration(c.deadline).to_string(),
    ));
    rows.push((
        "start in",
        humantime::format_duration(c.start_in).to_string(),
    ));
    if let Some(p) = &c.payment {
        rows.push((
            "payments",
            format!(
                "pay fraction {}, cancel fraction {}, {} after the hold",
                p.pay_fraction,
                p.cancel_fraction,
                humantime::format_duration(p.after)
            ),
        ));
    }
    out.push_str("<h2>Configuration</h2>\n<table id=\"config\">\n");
    for (name, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    out.push_str("</table>\n");
}

fn section_invariants(out: &mut String, verdicts: &[Verdict]) {
    out.push_str("<h2>Invariants</h2>\n<table id=\"invariants\">\n<tr><th>invariant</th><th>verdict</th><th>counterexamples</th></tr>\n");
    for v in verdicts {
        let (class, word) = match (v.held, v.inconclusive) {
            (false, _) => ("violated", "violated"),
            (true, true) => ("undecided", "not decided"),
            (true, false) => ("held", "held"),
        };
        let _ = write!(
            out,
            "<tr data-invariant=\"{}\" data-held=\"{}\" data-inconclusive=\"{}\"><td>{}</td><td class=\"verdict {class}\">{word}</td><td>",
            escape(&v.invariant),
            v.held,
            v.inconclusive,
            escape(&v.invariant)
        );
        if !v.details.is_empty() {
            out.push_str("<ul class=\"details\">");
            for d in v.details.iter().take(MAX_DETAILS) {
                let _ = write!(out, "<li>{}</li>", escape(d));
            }
            if v.details.len() > MAX_DETAILS {
                let _ = write!(out, "<li>… and {} more</li>", v.details.len() - MAX_DETAILS);
            }
            out.push_str("</ul>");
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
}

fn section_summary(out: &mut String, r: &Report) {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
    let optional = |v: Option<u32>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    let mut rows = vec![
        ("answers", r.answers.to_string()),
        ("sent", r.sent.to_string()),
        ("answers-per-sec", format!("{:.0}", r.answers_per_sec)),
        ("time-to-sell-out", ms(r.time_to_sell_out_ms)),
        ("time-to-last-answer", ms(Some(r.time_to_last_answer_ms))),
        ("capacity", r.capacity.to_string()),
        ("available-before", r.available_before.to_string()),
        ("remaining-after", optional(r.remaining_after)),
    ];
    if let Some(p) = &r.payments {
        let c = &p.counts;
        rows.push(("holds", c.holds.to_string()));
        rows.push((
            "confirms",
            format!(
                "{} sent, {} confirmed, {} expired",
                c.confirms_sent, c.confirmed, c.confirms_expired
            ),
        ));
        rows.push((
            "cancels",
            format!("{} sent, {} released", c.cancels_sent, c.cancelled),
        ));
        rows.push(("paid-tickets", p.paid_tickets.to_string()));
        rows.push(("confirmed-at-end", optional(p.confirmed_at_end)));
    }
    out.push_str("<h2>Summary</h2>\n");
    named_rows(out, "summary", "", &rows);
    out.push_str("<table id=\"outcomes\">\n<tr><th>outcome</th><th class=\"n\">answers</th><th class=\"n\">p50</th><th class=\"n\">p90</th><th class=\"n\">p99</th><th class=\"n\">p99.9</th><th class=\"n\">max</th></tr>\n");
    for (kind, count) in &r.counts {
        let p = r.latency_ms.get(kind);
        let _ = writeln!(
            out,
            "<tr data-kind=\"{}\" data-count=\"{count}\"><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"n\">{count}</td>{}</tr>",
            kind.name(),
            chart::css(*kind),
            kind.name(),
            latency_cells(p)
        );
    }
    if let Some(p) = &r.service_ms {
        let _ = writeln!(
            out,
            "<tr><td>service time (served answers, from send)</td><td class=\"n\">{}</td>{}</tr>",
            p.count,
            latency_cells(Some(p))
        );
    }
    out.push_str("</table>\n<p class=\"sub\">Latency in milliseconds from each request's intended start.</p>\n");
}

/// A draw run's figures: the entries, how soon after the window closed the
/// draw was published and every result checked, and what the check
/// counted.
fn section_draw(out: &mut String, d: &DrawReport) {
    let ms = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.0} ms"));
    let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let entry = |pick: fn(&Percentiles) -> f64| {
        d.entry_latency_ms
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| format!("{:.3} ms", pick(p)))
    };
    let rows = [
        ("commitment", d.commitment.clone()),
        ("opens-at", unix_ms_text(d.opens_at)),
        ("draws-at", unix_ms_text(d.draws_at)),
        ("tickets", d.capacity.to_string()),
        (
            "entries-answered",
            format!("{} of {}", d.entries_answered, d.users),
        ),
        ("entry-p50", entry(|p| p.p50)),
        ("entry-p99", entry(|p| p.p99)),
        ("published-after-close", ms(d.published_after_close_ms)),
        (
            "results-checked-after-close",
            ms(d.results_checked_after_close_ms),
        ),
        ("entrants-published", count(d.entrants_published)),
        ("winners-published", count(d.winners_published)),
        ("winners-told", d.counted.winners_told.to_string()),
        ("losers-told", d.counted.losers_told.to_string()),
        ("results-asked", d.results_checked.to_string()),
        ("audit", d.audit.clone()),
    ];
    out.push_str("<h2>Draw</h2>\n");
    named_rows(out, "draw", "draw-", &rows);
    out.push_str("<p class=\"sub\">Times after the close are counted from the window's close (<code>draws_at</code>) by this machine's clock.</p>\n");
}

/// A table `id` of one value per row, each cell's id `prefix` + its row's
/// id, the row's id with spaces for its heading; values escaped.
fn named_rows(out: &mut String, id: &str, prefix: &str, rows: &[(&str, String)]) {
    let _ = writeln!(out, "<table id=\"{id}\">");
    for (row, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"n\" id=\"{prefix}{row}\">{}</td></tr>",
            row.replace('-', " "),
            escape(value)
        );
    }
    out.push_str("</table>\n");
}

/// Unix milliseconds as RFC 3339 UTC, with the number itself.
fn unix_ms_text(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    format!("{} ({ms})", humantime::format_rfc3339_millis(at))
}

fn latency_cells(p: Option<&Percentiles>) -> String {
    match p {
        Some(p) => [p.p50, p.p90, p.p99, p.p999, p.max]
            .iter()
            .map(|v| format!("<td class=\"n\">{v:.3}</td>"))
            .collect(),
        None => "<td class=\"n\">-</td>".repeat(5),
    }
}

fn section_charts(out: &mut String, r: &Report) -> anyhow::Result<()> {
    let s = &r.timeline;
    let kinds: Vec<&str> = s.per_kind.keys().map(|k| k.name()).collect();
    let charts = [
        ("chart-rate", chart::answers_per_second(s)?, kinds.join(" ")),
        (
            "chart-latency",
            chart::latency_overall(s)?,
            chart::PERCENTILES.map(|(name, _)| name).join(" "),
        ),
        (
            "chart-latency-outcome",
            chart::latency_per_outcome(s)?,
            kinds.join(" "),
        ),
    ];
    out.push_str("<h2>Over time</h2>\n");
    for (id, svg, series) in charts {
        let _ = writeln!(
            out,
            "<figure class=\"chart\" id=\"{id}\" data-series=\"{series}\" data-buckets=\"{}\" data-bucket-ms=\"{}\">\n{svg}\n<figcaption>{} buckets of {} ms since t0 (the last one may be cut short by the run's end); latency from each request's intended start.</figcaption>\n</figure>",
            s.buckets,
            s.bucket_ms,
            s.buckets,
            s.bucket_ms
        );
    }
    Ok(())
}

/// The report as JSON, without secrets, safe inside a `<script>` element.
fn run_data(report: &Report) -> String {
    let report = report.redacted();
    let kinds = report
        .timeline
        .per_kind
        .keys()
        .map(|k| (k.name(), chart::css(*k)));
    let percentiles = chart::PERCENTILES.map(|(name, color)| (name, chart::hex(color)));
    let colors: std::collections::BTreeMap<&str, String> = kinds.chain(percentiles).collect();
    let data = serde_json::json!({ "report": report, "colors": colors });
    // `<`, `>` and `&` only occur inside JSON strings, where `\u` escapes
    // mean the same.
    data.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests;
