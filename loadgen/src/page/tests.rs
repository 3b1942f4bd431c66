//! The page of hand-made runs: what it shows, that it fetches nothing, and
//! that nothing from the run can inject markup.

use std::time::Duration;

use flashsale_protocol::{OutcomeKind, ReserveOutcome};

use super::*;
use crate::check::{Answer, Kind, Tally};
use crate::stats::Stats;

const HOSTILE: &str = "</script><script>alert(1)</script><img src=x onerror=alert(2)>\"'&";

/// A run of three users on two tickets: ticket 1 told to two users, the
/// third told sold out.
fn run(config: Config) -> Report {
    let mut tally = Tally::new(2, 1, 3);
    let mut stats = Stats::default();
    let history = [
        (1, Answer::Reserve(ReserveOutcome::Won { ticket: 1 }), 3),
        (2, Answer::Reserve(ReserveOutcome::Won { ticket: 1 }), 25),
        (3, Answer::Reserve(ReserveOutcome::SoldOut), 40),
    ];
    for (user, answer, at_ms) in history {
        tally.record(user, answer);
        let at = Duration::from_millis(at_ms);
        stats.record(answer.kind(), at, at);
    }
    stats.sent = 3;
    let summary = tally.into_summary();
    let mut report = Report::new(config, 2, Some(0), &summary, &stats, None);
    report.started_at = Some("2026-12-02T14:00:00Z".to_owned());
    report
}

fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page.find(start).expect("start marker") + start.len();
    let to = page[from..].find(end).expect("end marker") + from;
    &page[from..to]
}

#[test]
fn the_page_shows_the_run_and_its_verdicts() {
    let report = run(Config::native("127.0.0.1:7070", "launch", 3));
    let page = html(&report).unwrap();
    assert!(page.contains(
        "<title>flashsale rehearsal: sale &quot;launch&quot;, 2026-12-02T14:00:00Z</title>"
    ));
    assert!(page.contains("<tr data-kind=\"won\" data-count=\"2\">"));
    assert!(page.contains("<tr data-kind=\"sold_out\" data-count=\"1\">"));
    assert!(page.contains("<td class=\"n\" id=\"answers\">3</td>"));
    assert!(page.contains(
        "data-invariant=\"tickets_unique\" data-held=\"false\" data-inconclusive=\"false\""
    ));
    assert!(page.contains("class=\"banner bad\""));
    // The checker's counterexample, as it wrote it.
    let unique = report
        .invariants
        .iter()
        .find(|v| v.invariant == "tickets_unique")
        .unwrap();
    assert!(!unique.details.is_empty());
    assert!(page.contains(&escape(&unique.details[0])));
    // Three charts, each with the run's outcomes.
    for id in ["chart-rate", "chart-latency", "chart-latency-outcome"] {
        let figure = between(
            &page,
            &format!("<figure class=\"chart\" id=\"{id}\""),
            "</figure>",
        );
        assert!(figure.contains("<svg"), "{id}");
    }
    assert!(page.contains(
        "id=\"chart-rate\" data-series=\"won sold_out\" data-buckets=\"5\" data-bucket-ms=\"10\""
    ));

    let data: serde_json::Value = serde_json::from_str(between(
        &page,
        "<script type=\"application/json\" id=\"run-data\">",
        "</script>",
    ))
    .unwrap();
    assert_eq!(data["report"]["answers"], 3);
    assert_eq!(
        data["report"]["timeline"]["per_kind"]["won"]["count"],
        serde_json::json!([1, 0, 1, 0, 0])
    );
    assert_eq!(
        data["colors"]["won"],
        chart::css(Kind::Outcome(OutcomeKind::Won))
    );
}

#[test]
fn the_page_fetches_nothing() {
    let mut config = Config::native("10.0.0.1:7070", "launch", 3);
    config.payment = None;
    let page = html(&run(config)).unwrap();
    let lower = page.to_lowercase();
    for banned in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "<img",
        "@import",
        "url(",
    ] {
        assert!(!lower.contains(banned), "the page holds {banned:?}");
    }
    // The only script element is the inert data block.
    assert_eq!(lower.matches("<script").count(), 1);
    assert!(lower.contains("<script type=\"application/json\" id=\"run-data\">"));
    assert!(page.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""));
}

#[test]
fn nothing_from_the_run_can_inject_markup() {
    let mut config = Config::native(HOSTILE, HOSTILE, 3);
    config.target = Target::Native {
        addr: HOSTILE.to_owned(),
        api_key: Some("the-api-key".to_owned()),
    };
    let mut report = run(config);
    report.invariants[0].details.push(HOSTILE.to_owned());
    let page = html(&report).unwrap();
    let lower = page.to_lowercase();
    assert_eq!(lower.matches("<script").count(), 1, "a script was injected");
    assert_eq!(
        lower.matches("</script>").count(),
        1,
        "the data block was closed early"
    );
    assert!(!lower.contains("<img"));
    assert!(!page.contains("onerror=alert(2)>"));
    assert!(page.contains("&lt;/script&gt;&lt;script&gt;alert(1)"));
    // The data block still holds the text, intact once parsed.
    let data: serde_json::Value =
        serde_json::from_str(between(&page, "id=\"run-data\">", "</script>")).unwrap();
    assert_eq!(data["report"]["config"]["sale"], HOSTILE);
    // Secrets stay off the page.
    assert!(!page.contains("the-api-key"));
    assert!(page.contains("set (not shown)"));
}

#[test]
fn an_http_runs_secret_stays_off_the_page() {
    let mut config = Config::native("x", "launch", 3);
    config.target = Target::Http {
        addr: "127.0.0.1:8080".to_owned(),
        secret: b"jwt-secret-bytes".to_vec(),
        issuer: Some("idp".to_owned()),
        audience: None,
    };
    let page = html(&run(config)).unwrap();
    let secret_as_json = serde_json::to_string(&b"jwt-secret-bytes".to_vec()).unwrap();
    assert!(!page.contains(&secret_as_json[1..secret_as_json.len() - 1]));
    assert!(page.contains("flashsale HTTP front at 127.0.0.1:8080"));
}

#[test]
fn escaping_covers_text_and_attributes() {
    assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    assert_eq!(escape("plain ünïcode"), "plain ünïcode");
}

#[test]
fn a_draw_run_shows_its_figures() {
    use crate::draw::verdict::{Counted, DrawReport};
    let mut report = run(Config::native("127.0.0.1:7070", "drop", 3));
    let mut draw = DrawReport {
        commitment: "ab".repeat(32),
        opens_at: 1_796_300_000_000,
        draws_at: 1_796_300_002_000,
        capacity: 2,
        users: 3,
        entries_answered: 3,
        entry_latency_ms: None,
        published_after_close_ms: Some(12.4),
        results_checked_after_close_ms: Some(61.6),
        entrants_published: Some(3),
        winners_published: Some(2),
        results_checked: 3,
        audit: "passed".to_owned(),
        counted: Counted {
            winners_told: 2,
            losers_told: 1,
            other_entrants: 0,
            violations: 0,
        },
    };
    report.draw = Some(draw.clone());
    let page = html(&report).unwrap();
    let table = between(&page, "<table id=\"draw\">", "</table>");
    for (id, value) in [
        ("entries-answered", "3 of 3"),
        ("published-after-close", "12 ms"),
        ("results-checked-after-close", "62 ms"),
        ("draws-at", "2026-12-03T12:13:22.000Z (1796300002000)"),
        ("winners-told", "2"),
        ("losers-told", "1"),
        ("entry-p99", "-"),
        ("audit", "passed"),
    ] {
        let cell = format!("id=\"draw-{id}\">{value}</td>");
        assert!(table.contains(&cell), "{cell} not in {table}");
    }

    // Never published: said so; and the audit's words are escaped.
    draw.published_after_close_ms = None;
    draw.results_checked_after_close_ms = None;
    draw.audit = format!("failed: {HOSTILE}");
    report.draw = Some(draw);
    let page = html(&report).unwrap();
    assert!(page.contains("id=\"draw-published-after-close\">never</td>"));
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("failed: &lt;/script&gt;"));

    // A run without a draw has no draw section.
    report.draw = None;
    assert!(!html(&report).unwrap().contains("id=\"draw\""));
}
