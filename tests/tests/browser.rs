//! The sale page in a real browser: Debian's Chromium, driven by
//! `tests/browser/buy.mjs` through playwright-core, buys a ticket from the
//! real server the moment the sale opens, then presses again and is shown
//! the same ticket. The server must agree on the ticket, and the two
//! screenshots (desktop and phone sizes) land in `target/screenshots/`.
//!
//! A second run, `tests/browser/hold.mjs`, drives a sale with holds: pay
//! within the countdown, a hold that runs out, the ticket back on a
//! watcher's page, and a cancel.
//!
//! A third, `tests/browser/fragment.mjs`, plays someone else's links: a
//! `#token=` link must sign no one in, and another page must not be able to
//! frame the sale page.
//!
//! A sale with a draw window on the page (`tests/browser/draw.mjs`) is in
//! the `draw` module.
//!
//! Needs `node`, `npm` and `/usr/bin/chromium` (Debian's `nodejs`, `npm` and
//! `chromium` packages); the Node dependencies come from the committed
//! lockfile through `npm ci`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_core::clock::now_ms;
use flashsale_tests::{client_config, runtime, ServerProcess};

#[path = "browser/draw.rs"]
mod draw;

/// How long `npm ci` may take.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the browser run may take (the script bounds itself at 60 s).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
/// The sale opens this long after the server starts, so the page is seen
/// before the opening and the button must come alive by itself.
const OPENS_IN_MS: u64 = 4_000;
const CHROMIUM: &str = "/usr/bin/chromium";

/// `tests/browser`, with Chromium, Node and the scripts' dependencies
/// checked or installed.
fn browser_ready() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_owned();
    let browser_dir = root.join("tests/browser");
    ensure!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install chromium"
    );
    ensure!(
        Command::new("node").arg("--version").output().is_ok(),
        "node is missing: apt-get install nodejs npm"
    );
    if !browser_dir.join("node_modules").exists() {
        let out = run_bounded(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&browser_dir),
            NPM_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "npm ci failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(browser_dir)
}

#[test]
fn a_visitor_buys_one_ticket_in_chromium() -> anyhow::Result<()> {
    let browser_dir = browser_ready()?;
    let dir = tempfile::tempdir()?;
    let opens_at = now_ms() + OPENS_IN_MS;
    let sale = format!("launch:50:{opens_at}");
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--demo", "--http", "127.0.0.1:0", "--sale", &sale],
    )?;
    let http = server.http_addr().to_string();

    let shots = target_dir().join("screenshots");
    std::fs::create_dir_all(&shots)?;
    let won_png = shots.join("browser-won-desktop.png");
    let again_png = shots.join("browser-already-yours-phone.png");
    for png in [&won_png, &again_png] {
        let _ = std::fs::remove_file(png);
    }

    let report = run_script(
        &browser_dir.join("buy.mjs"),
        &[
            format!("http://{http}/?sale=launch").into(),
            won_png.clone().into(),
            again_png.clone().into(),
        ],
        &server,
    )?;
    let ticket = report["ticket"].as_u64().context("no ticket")?;
    let user = report["user"].as_u64().context("no demo user")?;
    assert!((1..=50).contains(&ticket), "ticket #{ticket} out of range");
    assert!(
        now_ms() >= opens_at,
        "the page bought before the sale opened"
    );

    // The server names the same ticket for the same user.
    let (code, body) = http_request(
        &http,
        "POST",
        "/demo/token",
        None,
        Some(&format!("{{\"user\":{user}}}")),
    )?;
    assert_eq!(code, 200, "demo token: {body}");
    let token: serde_json::Value = serde_json::from_str(&body)?;
    let token = token["token"].as_str().context("no token")?;
    let (code, body) = http_request(&http, "GET", "/api/sales/launch/me", Some(token), None)?;
    assert_eq!(code, 200, "GET /me: {body}");
    let me: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(me["ticket"].as_u64(), Some(ticket), "GET /me: {body}");

    // Exactly one ticket is gone, over HTTP and over the native protocol.
    let (code, body) = http_request(&http, "GET", "/api/sales/launch", None, None)?;
    assert_eq!(code, 200, "GET sale: {body}");
    let status: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        (status["sold"].as_u64(), status["remaining"].as_u64()),
        (Some(1), Some(49)),
        "{body}"
    );
    let native = runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        anyhow::Ok(client.status("launch").await?)
    })?;
    assert_eq!((native.sold, native.remaining), (1, 49));

    for png in [&won_png, &again_png] {
        let bytes =
            std::fs::read(png).with_context(|| format!("no screenshot {}", png.display()))?;
        assert!(
            bytes.len() > 1_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG screenshot",
            png.display()
        );
    }
    server.stop()
}

/// A sale with holds on the page: hold, countdown, pay; a hold running out
/// while a watcher is told live that the ticket is back; buy and cancel.
#[test]
fn a_hold_is_paid_or_runs_out_in_chromium() -> anyhow::Result<()> {
    let browser_dir = browser_ready()?;
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::start_with_admin(dir.path(), &["--demo"])?;
    let admin = flashsale_tests::Admin::of(&server);
    let rt = runtime();
    let created =
        rt.block_on(admin.create(r#"{"sale":"encore","capacity":2,"hold_seconds":4}"#))?;
    ensure!(created.status == 201, "create: {}", created.text());

    let shots = target_dir().join("screenshots");
    let held_png = shots.join("browser-held-desktop.png");
    let back_png = shots.join("browser-back-on-sale-desktop.png");
    let http = server.http_addr();
    let report = run_script(
        &browser_dir.join("hold.mjs"),
        &[
            format!("http://{http}/?sale=encore").into(),
            held_png.clone().into(),
            back_png.clone().into(),
        ],
        &server,
    )?;
    let payer = report["paid"]["user"].as_u64().context("no payer")?;
    let ticket = report["paid"]["ticket"]
        .as_u64()
        .context("no paid ticket")?;

    // The server agrees: one ticket paid by the payer, the others back on sale.
    rt.block_on(async {
        let sale = admin.sale("encore").await?;
        ensure!(
            sale["confirmed"] == 1 && sale["held"] == 0 && sale["remaining"] == 1,
            "{sale}"
        );
        let client = client_config(server.addr()).connect().await?;
        let me = client.me("encore", payer).await?;
        ensure!(
            me.ticket == Some(u32::try_from(ticket)?) && me.expires_at.is_none(),
            "{me:?}"
        );
        for user in ["expired", "cancelled"] {
            let user = report[user]["user"].as_u64().context("no user")?;
            ensure!(client.me("encore", user).await?.ticket.is_none(), "{user}");
        }
        anyhow::Ok(())
    })?;
    for png in [&held_png, &back_png] {
        let bytes =
            std::fs::read(png).with_context(|| format!("no screenshot {}", png.display()))?;
        ensure!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
    }
    server.stop()
}

/// A link carrying a valid token signs the visitor in as no one (login
/// CSRF); the page signs in from what its own origin stored, and refuses
/// to be framed.
#[test]
fn a_link_with_a_token_signs_no_one_in_chromium() -> anyhow::Result<()> {
    let browser_dir = browser_ready()?;
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::token::start_signed(dir.path(), &["--sale", "gig:5"])?;
    let user = 4242;
    let token = flashsale_tests::token::token(user);
    let report = run_script(
        &browser_dir.join("fragment.mjs"),
        &[
            format!("http://{}/?sale=gig", server.http_addr()).into(),
            token.into(),
            user.to_string().into(),
        ],
        &server,
    )?;
    let link = report["link"].as_str().context("no #user text")?;
    ensure!(link.contains("Sign in to buy"), "after the link: {link:?}");
    ensure!(report["framed_buy_buttons"] == 0, "{report}");
    server.stop()
}

/// The load generator's report page, from disk and offline: a real run
/// over two worker processes against the real server, then Chromium must
/// draw every chart with a line per outcome, make no request, and show the
/// numbers of the same run's JSON report.
#[test]
fn a_rehearsal_report_renders_offline_in_chromium() -> anyhow::Result<()> {
    let browser_dir = browser_ready()?;
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "drop:100"])?;
    let (page, json) = (dir.path().join("run.html"), dir.path().join("run.json"));
    let out = Command::new(flashsale_tests::workspace_bin("flashsale-loadgen"))
        .args(["--addr", &server.addr().to_string(), "--sale", "drop"])
        .args([
            "--users",
            "2000",
            "--processes",
            "2",
            "--retry-fraction",
            "0.3",
        ])
        .args(["--deadline", "60s", "--start-in", "200ms", "--quiet"])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&page)
        .output()?;
    ensure!(
        out.status.success(),
        "loadgen failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;

    let shot = target_dir().join("screenshots").join("loadgen-report.png");
    std::fs::create_dir_all(shot.parent().context("screenshot dir")?)?;
    let _ = std::fs::remove_file(&shot);
    let seen = run_script(
        &browser_dir.join("report.mjs"),
        &[page.clone().into(), shot.clone().into()],
        &server,
    )?;

    // Nothing left the page but the page itself.
    let requests: Vec<&str> = seen["requests"]
        .as_array()
        .context("no requests list")?
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with("file://") && r.ends_with("run.html")),
        "{requests:?}"
    );
    assert_eq!(seen["blocked"], serde_json::json!([]));

    // The numbers shown are the JSON report's.
    let counts = run["counts"].as_object().context("no counts")?;
    assert_eq!(run["counts"]["won"], 100, "wins = capacity");
    assert_eq!(seen["summary"]["answers"], run["answers"].to_string());
    let shown: Vec<(String, u64)> = seen["outcomes"]
        .as_array()
        .context("no outcomes")?
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or("").to_owned(),
                o["shown"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = counts
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(sorted(shown), sorted(expected));
    assert_eq!(seen["data"]["report"]["answers"], run["answers"]);
    // Through the browser's JSON, 10.0 comes back as 10: compare numbers.
    assert_eq!(
        as_floats(&seen["data"]["report"]["timeline"]),
        as_floats(&run["timeline"])
    );
    assert_eq!(verdicts(&seen["invariants"]), verdicts(&run["invariants"]));
    assert_eq!(seen["ok"], run["ok"]);
    let title = seen["title"].as_str().unwrap_or("");
    assert!(
        title.contains("\"drop\"") && title.contains(run["started_at"].as_str().unwrap_or("?")),
        "{title}"
    );

    // Every chart is drawn, with a line per outcome of the run in its
    // colour and the outcome in its legend.
    let charts = seen["charts"].as_array().context("no charts")?;
    assert_eq!(charts.len(), 3);
    for chart in charts {
        let id = chart["id"].as_str().unwrap_or("");
        assert!(
            chart["width"].as_f64() > Some(100.0) && chart["height"].as_f64() > Some(100.0),
            "{id}"
        );
        let texts: Vec<&str> = chart["texts"]
            .as_array()
            .context("texts")?
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert!(texts.contains(&"time since t0 (s)"), "{id}: {texts:?}");
        let lines = chart["lines"].as_array().context("lines")?;
        let series: Vec<&str> = chart["series"]
            .as_array()
            .context("series")?
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        if id == "chart-latency" {
            assert_eq!(series, ["max", "p99", "p50"]);
        } else {
            assert_eq!(
                sorted(series.iter().map(|s| s.to_string()).collect()),
                sorted(counts.keys().cloned().collect()),
                "{id}"
            );
        }
        for name in &series {
            assert!(
                texts.contains(name),
                "{id}: no legend for {name}: {texts:?}"
            );
            let Some(color) = seen["data"]["colors"][*name].as_str() else {
                continue;
            };
            // The legend's sample and the data line.
            let drawn: Vec<_> = lines.iter().filter(|l| l["stroke"] == color).collect();
            assert!(
                drawn.len() >= 2,
                "{id}: no line for {name} in {color}: {lines:?}"
            );
            if id == "chart-rate" {
                // Answers per second: a point for every bucket of the run.
                assert!(
                    drawn
                        .iter()
                        .any(|l| l["points"] == run["timeline"]["buckets"]),
                    "{id}: {name}: {drawn:?}"
                );
            }
        }
    }
    let bytes =
        std::fs::read(&shot).with_context(|| format!("no screenshot {}", shot.display()))?;
    ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    server.stop()
}

/// Each invariant's name and whether it held.
fn verdicts(list: &serde_json::Value) -> Vec<(String, bool)> {
    list.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            (
                v["invariant"].as_str().unwrap_or("").to_owned(),
                v["held"] == true,
            )
        })
        .collect()
}

/// `value` with every number as a float.
fn as_floats(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => items.iter().map(as_floats).collect(),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| (k.clone(), as_floats(v)))
            .collect(),
        other => other.clone(),
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Runs a browser script with `args` and returns the JSON line it prints on
/// success; a failure carries the script's output and the server's log.
fn run_script(
    script: &Path,
    args: &[std::ffi::OsString],
    server: &ServerProcess,
) -> anyhow::Result<serde_json::Value> {
    let out = run_bounded(Command::new("node").arg(script).args(args), BROWSER_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the browser run failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON line from {}", script.display()))?;
    Ok(serde_json::from_str(line)?)
}

/// `target/` of this build: the test binary is `target/<profile>/deps/<name>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary has a path");
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Runs `cmd` with its output captured, killing it after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{cmd:?} did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&err_reader.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// One HTTP/1.1 exchange on a fresh connection: the status code and the body.
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let code = head.split(' ').nth(1).context("no status code")?.parse()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        body.push_str(after.get(..size).context("short chunk")?);
        rest = after.get(size + 2..).context("short chunk")?;
    }
}
