//! Offered several times more than the server will take at once: it sheds
//! with `Busy` / 503 + `Retry-After` instead of queueing, the answers it does
//! serve stay prompt, memory stays bounded, and nothing it acknowledged is
//! affected.
//!
//! Bounds here are generous on purpose (this is not a speed test): "prompt"
//! means every served answer arrives well inside the request timeout, so no
//! request ever times out; "bounded memory" means the server's peak RSS
//! stays under a fixed ceiling.

use std::process::Command;

use flashsale_client::ReserveOutcome;
use flashsale_tests::{client_config, runtime, workspace_bin, ServerProcess};
use serde_json::Value;

/// Peak resident memory the server may reach under these loads.
const RSS_CEILING: u64 = 256 * 1024 * 1024;

fn loadgen(args: &[&str], report: &std::path::Path) -> anyhow::Result<(i32, String, Value)> {
    let out = Command::new(workspace_bin("flashsale-loadgen"))
        .args(args)
        .args(["--quiet", "--timeout", "20s", "--deadline", "90s", "--json"])
        .arg(report)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        report.exists(),
        "no report: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        out.status.code().unwrap_or(-1),
        stdout,
        serde_json::from_slice(&std::fs::read(report)?)?,
    ))
}

fn count(report: &Value, kind: &str) -> u64 {
    report["counts"][kind].as_u64().unwrap_or(0)
}

/// Invariants hold; the win count may be inconclusive (shed users never
/// learnt their fate), never violated.
fn assert_invariants_hold(report: &Value, stdout: &str) {
    for v in report["invariants"].as_array().expect("invariants") {
        assert_eq!(v["held"], Value::Bool(true), "{v}\n{stdout}");
    }
}

#[test]
fn http_front_sheds_past_its_in_flight_bound() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "overload-secret")?;
    let secret_arg = secret.to_string_lossy().into_owned();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--sale",
            "s:300",
            "--http",
            "127.0.0.1:0",
            "--jwt-secret-file",
            &secret_arg,
            "--http-max-in-flight",
            "4",
        ],
    )?;
    // 128 connections, each with a request in flight at all times, against a
    // bound of 4: most requests are shed at once.
    let (code, stdout, report) = loadgen(
        &[
            "--target",
            &format!("http://{}", server.http_addr()),
            "--jwt-secret-file",
            &secret_arg,
            "--sale",
            "s",
            "--users",
            "6000",
            "--connections",
            "128",
            "--arrival",
            "rate:50000",
        ],
        &dir.path().join("http.json"),
    )?;
    assert_eq!(code, 0, "{stdout}");
    assert!(count(&report, "busy") > 0, "nothing was shed:\n{stdout}");
    assert_eq!(
        count(&report, "timeout") + count(&report, "connection_error"),
        0,
        "{stdout}"
    );
    assert!(
        count(&report, "won") > 0,
        "some requests were served:\n{stdout}"
    );
    assert_invariants_hold(&report, &stdout);
    assert!(
        server.peak_rss()? < RSS_CEILING,
        "peak RSS {} bytes",
        server.peak_rss()?
    );

    // What was acknowledged stands: every winner still holds a ticket, and
    // the stock the server reports matches the wins.
    let won = count(&report, "won");
    let status = runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        anyhow::Ok(client.status("s").await?)
    })?;
    assert_eq!(
        u64::from(status.sold),
        won,
        "sold matches the wins acknowledged"
    );
    server.stop()?;
    Ok(())
}

#[test]
fn native_server_sheds_connections_past_its_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--sale", "s:100", "--max-connections", "16"],
    )?;
    let addr = server.addr().to_string();
    // A connection storm: far more connections at once than the limit.
    let (code, stdout, report) = loadgen(
        &[
            "--addr",
            &addr,
            "--sale",
            "s",
            "--users",
            "3000",
            "--connect-per-user",
            "--concurrency",
            "200",
        ],
        &dir.path().join("native.json"),
    )?;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        count(&report, "busy") > 0,
        "no connection was refused:\n{stdout}"
    );
    assert_eq!(
        count(&report, "timeout") + count(&report, "connection_error"),
        0,
        "{stdout}"
    );
    assert_invariants_hold(&report, &stdout);
    assert!(
        server.peak_rss()? < RSS_CEILING,
        "peak RSS {} bytes",
        server.peak_rss()?
    );

    // Acknowledged wins are unaffected, and a user who was shed can come
    // back and buy (or learn it is sold out).
    let won = count(&report, "won");
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let status = client.status("s").await?;
        assert_eq!(u64::from(status.sold), won);
        let again = client.reserve("s", 1_000_000).await?;
        assert!(
            matches!(again, ReserveOutcome::Won { .. } | ReserveOutcome::SoldOut),
            "{again:?}"
        );
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
