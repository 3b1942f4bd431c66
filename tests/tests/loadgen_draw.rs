//! The load generator's draw run (`--draw`) against the real server: every
//! user enters a sale's draw window, over the native protocol and over
//! HTTP, and the run audits the published draw and checks every user's
//! result. (That the checker fails a tampered draw or a wrong result is
//! shown by its unit tests, `flashsale-loadgen`'s `draw::verdict`.)
//!
//! Each run waits for a real window of a second and a half to open and
//! close; the load generator bounds its own waits, and the run's exit is
//! awaited without a wall-clock assertion.

#[path = "loadgen/run.rs"]
mod run;

use anyhow::Context;
use flashsale_tests::token::{secret_file, start_signed};
use flashsale_tests::{workspace_bin, ServerProcess};

use self::run::{loadgen, Run};

/// The draw window of every sale here.
const WINDOW_MS: u64 = 1_500;
/// From the sale's flags to its opening: time for the server to start and
/// the load generator's processes to connect, with room for a machine busy
/// with other tests (a run that starts after the window closed enters
/// nobody).
const LEAD_MS: u64 = 6_000;
/// Tickets in every sale here.
const CAPACITY: u64 = 50;

/// A sale `d` of [`CAPACITY`] tickets whose draw window opens in
/// [`LEAD_MS`], as the server's flags for it. The binaries are built first,
/// so that the lead is not spent building them.
fn draw_sale() -> Vec<String> {
    workspace_bin("flashsale-server");
    workspace_bin("flashsale-loadgen");
    let opens_at = flashsale_core::clock::now_ms() + LEAD_MS;
    vec![
        "--sale".into(),
        format!("d:{CAPACITY}:{opens_at}"),
        "--draw-window-ms".into(),
        WINDOW_MS.to_string(),
    ]
}

/// Asserts that `run` entered `users` users, saw the draw published and
/// audited, and every result as the draw says.
fn assert_drawn(run: &Run, users: u64) {
    run.assert_passed();
    run.assert_invariants_hold(true);
    run.assert_all_answered();
    assert!(run.count("entered") >= users, "{}", run.stdout);
    let draw = &run.report["draw"];
    assert_eq!(draw["entries_answered"], users, "{draw}");
    assert_eq!(draw["entrants_published"], users, "{draw}");
    assert_eq!(draw["winners_published"], CAPACITY.min(users), "{draw}");
    assert_eq!(
        draw["counted"]["winners_told"],
        CAPACITY.min(users),
        "{draw}"
    );
    assert_eq!(
        draw["counted"]["losers_told"],
        users.saturating_sub(CAPACITY),
        "{draw}"
    );
    assert_eq!(draw["results_checked"], users, "{draw}");
    assert_eq!(draw["audit"], "passed", "{draw}");
    assert_eq!(draw["commitment"].as_str().map(str::len), Some(64));
    for timing in ["published_after_close_ms", "results_checked_after_close_ms"] {
        assert!(draw[timing].as_f64().is_some(), "{timing}: {draw}");
    }
    assert!(draw["entry_latency_ms"]["p99"].as_f64().is_some(), "{draw}");
    assert!(run.stdout.contains("ok   draw_audited"), "{}", run.stdout);
}

#[test]
fn two_thousand_entrants_over_the_native_protocol() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sale = draw_sale();
    let args: Vec<&str> = sale.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&dir.path().join("data"), &args)?;
    let addr = server.addr().to_string();
    let page = dir.path().join("draw.html");
    let run = loadgen(
        dir.path(),
        &[
            "--report",
            page.to_str().context("utf-8 path")?,
            "--draw",
            "--addr",
            &addr,
            "--sale",
            "d",
            "--users",
            "2000",
            "--connections",
            "4",
            "--processes",
            "2",
            "--retry-fraction",
            "0.1",
            "--deadline",
            "60s",
        ],
    )?;
    assert_drawn(&run, 2000);
    // A tenth of the users enter twice: repeats are answered the same.
    assert!(run.count("entered") > 2000, "{}", run.stdout);
    // The rehearsal page carries the draw's figures.
    let html = std::fs::read_to_string(&page)?;
    for cell in [
        "id=\"draw-entries-answered\">2000 of 2000</td>",
        "id=\"draw-winners-told\">50</td>",
        "id=\"draw-losers-told\">1950</td>",
        "id=\"draw-audit\">passed</td>",
    ] {
        assert!(html.contains(cell), "{cell} not on the page");
    }

    // The draw is made: a second run is refused before it starts.
    let again = loadgen(dir.path(), &["--draw", "--addr", &addr, "--sale", "d"]);
    assert!(again.is_err(), "a second draw run must be refused");
    server.stop()
}

#[test]
fn entrants_over_http() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sale = draw_sale();
    let args: Vec<&str> = sale.iter().map(String::as_str).collect();
    let server = start_signed(dir.path(), &args)?;
    let secret = secret_file(dir.path())?;
    let target = format!("http://{}", server.http_addr());
    let run = loadgen(
        dir.path(),
        &[
            "--draw",
            "--target",
            &target,
            "--jwt-secret-file",
            &secret.to_string_lossy(),
            "--sale",
            "d",
            "--users",
            "300",
            "--user-base",
            "1000",
            "--connections",
            "16",
            "--deadline",
            "60s",
        ],
    )?;
    assert_drawn(&run, 300);
    server.stop()
}

#[test]
fn a_sale_without_a_draw_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "plain:5"])?;
    let addr = server.addr().to_string();
    let out = std::process::Command::new(workspace_bin("flashsale-loadgen"))
        .args(["--draw", "--quiet", "--addr", &addr, "--sale", "plain"])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no draw window"), "{stderr}");
    server.stop()
}
