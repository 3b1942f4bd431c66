//! The load generator's HTML report (`--report`) of real runs against the
//! real server: over worker processes, over the HTTP front with its secret,
//! and with payments in a sale with holds; and against a throwaway
//! `redis-server` (which must be installed: the test fails, rather than
//! skips, without it). The page must carry the same
//! numbers as the JSON report of the same run, fetch nothing, and keep the
//! secrets off. (`browser.rs` opens such a page in Chromium.)

#[path = "loadgen/run.rs"]
mod run;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flashsale_tests::{runtime, start_with_admin, Admin, ServerProcess};
use serde_json::{json, Value};

use self::run::{loadgen, Run};

/// Bounds every run here shares.
const BOUNDS: &[&str] = &["--deadline", "60s", "--start-in", "200ms"];

/// Runs the load generator with `args` and `--report`; returns the run and
/// its page.
fn run_with_page(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<(Run, String)> {
    let page = dir.join(format!("{name}.html"));
    let page_arg = page.to_string_lossy().into_owned();
    let run = loadgen(dir, &[args, BOUNDS, &["--report", &page_arg]].concat())?;
    let html = std::fs::read_to_string(&page)
        .map_err(|e| anyhow::anyhow!("no page {} ({e}):\n{}", page.display(), run.stdout))?;
    Ok((run, html))
}

/// The report embedded in the page.
fn run_data(html: &str) -> Value {
    let start = "<script type=\"application/json\" id=\"run-data\">";
    let from = html.find(start).expect("a run-data block") + start.len();
    let to = html[from..].find("</script>").expect("the end of run-data") + from;
    serde_json::from_str(&html[from..to]).expect("run-data is JSON")
}

/// Checks what every page must be: self-contained, and a faithful copy of
/// the run's JSON report, with answers over time adding up to the counts.
fn assert_page_matches(run: &Run, html: &str) {
    let lower = html.to_lowercase();
    for banned in ["https://", "<script src", "<link", "<img", "url("] {
        assert!(!lower.contains(banned), "the page holds {banned:?}");
    }
    // The only URL is the target's own address, as text.
    for (at, _) in lower.match_indices("http://") {
        let url = &html[at..(at + 40).min(html.len())];
        let target = run.report["config"]["target"]["Http"]["addr"]
            .as_str()
            .map(|addr| format!("http://{addr}"));
        assert!(
            target.as_deref().is_some_and(|t| url.starts_with(t)),
            "a URL on the page: {url}"
        );
    }
    let data = run_data(html);
    let page = &data["report"];
    for field in [
        "answers",
        "sent",
        "counts",
        "latency_ms",
        "invariants",
        "ok",
        "timeline",
        "started_at",
        "payments",
    ] {
        assert_eq!(page[field], run.report[field], "{field}");
    }
    for (kind, count) in run.report["counts"].as_object().expect("counts") {
        let total: u64 = page["timeline"]["per_kind"][kind]["count"]
            .as_array()
            .expect("a column per outcome")
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(Some(total), count.as_u64(), "{kind} over time");
        assert!(
            html.contains(&format!("<tr data-kind=\"{kind}\" data-count=\"{count}\">")),
            "{kind} in the outcomes table"
        );
    }
    for v in run.report["invariants"].as_array().expect("invariants") {
        let row = format!(
            "data-invariant=\"{}\" data-held=\"{}\" data-inconclusive=\"{}\"",
            v["invariant"].as_str().unwrap_or(""),
            v["held"],
            v["inconclusive"]
        );
        assert!(html.contains(&row), "{row}");
    }
    assert!(html.contains(&format!(
        "<td class=\"n\" id=\"answers\">{}</td>",
        run.report["answers"]
    )));
}

#[test]
fn the_page_of_a_run_over_worker_processes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "drop:100"])?;
    let addr = server.addr().to_string();
    let args = [
        "--addr",
        &addr,
        "--sale",
        "drop",
        "--users",
        "3000",
        "--processes",
        "3",
        "--retry-fraction",
        "0.3",
    ];
    let (run, html) = run_with_page(dir.path(), "processes", &args)?;
    run.assert_passed();
    run.assert_all_answered();
    run.assert_invariants_hold(true);
    assert_eq!(run.count("won"), 100);
    assert_page_matches(&run, &html);
    assert!(html.contains("class=\"banner ok\""));
    // Three processes merged into one timeline, in one bucket width.
    let timeline = &run.report["timeline"];
    let buckets = timeline["buckets"].as_u64().unwrap_or(0);
    assert!(buckets >= 1);
    for column in timeline["per_kind"].as_object().expect("columns").values() {
        assert_eq!(
            column["count"].as_array().map(Vec::len),
            Some(buckets as usize)
        );
    }
    server.stop()
}

#[test]
fn the_page_of_an_http_run_keeps_the_secret_off() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::token::start_signed(dir.path(), &["--sale", "gig:20"])?;
    let secret_file = flashsale_tests::token::secret_file(dir.path())?;
    let secret_path = secret_file.to_string_lossy().into_owned();
    let http = format!("http://{}", server.http_addr());
    let args = [
        "--target",
        &http,
        "--jwt-secret-file",
        &secret_path,
        "--sale",
        "gig",
        "--users",
        "200",
    ];
    let (run, html) = run_with_page(dir.path(), "http", &args)?;
    run.assert_passed();
    assert_eq!(run.count("won"), 20, "{}", run.stdout);
    assert_page_matches(&run, &html);
    assert!(
        !html.contains(flashsale_tests::token::SECRET),
        "the JWT secret is on the page"
    );
    assert_eq!(
        run_data(&html)["report"]["config"]["target"]["Http"]["secret"],
        json!([])
    );
    server.stop()
}

#[test]
fn the_page_of_a_run_with_payments() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let admin = Admin::of(&server);
    let body = json!({"sale": "paid", "capacity": 5, "opens_at": null, "hold_seconds": 1});
    let reply = runtime().block_on(admin.create(&body.to_string()))?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let addr = server.addr().to_string();
    let args = [
        "--addr",
        &addr,
        "--sale",
        "paid",
        "--users",
        "60",
        "--arrival",
        "rate:300",
        "--processes",
        "2",
        "--pay-fraction",
        "0.3",
        "--pay-after",
        "200ms",
    ];
    let (run, html) = run_with_page(dir.path(), "payments", &args)?;
    run.assert_passed();
    run.assert_invariants_hold(true);
    assert_page_matches(&run, &html);
    assert!(html.contains("data-invariant=\"every_ticket_ends_confirmed\" data-held=\"true\""));
    assert!(html.contains(&format!(
        "id=\"paid-tickets\">{}</td>",
        run.report["payments"]["paid_tickets"]
    )));
    server.stop()
}

/// A `redis-server` without persistence on a free loopback port, killed
/// when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start redis-server ({e}): apt-get install redis-server")
            })?;
        let redis = Redis(child, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_page_of_a_redis_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let redis = Redis::start(dir.path())?;
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let args = [
        "--target",
        &url,
        "--reset-capacity",
        "50",
        "--sale",
        "r",
        "--users",
        "500",
        "--processes",
        "2",
    ];
    let (run, html) = run_with_page(dir.path(), "redis", &args)?;
    run.assert_passed();
    assert_eq!(run.count("won"), 50, "{}", run.stdout);
    assert_page_matches(&run, &html);
    assert!(html.contains(&format!("Redis + Lua at {url}")));
    Ok(())
}
