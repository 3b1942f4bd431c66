//! A crowd of open pages at small scale, over the real binaries: one
//! server, two gateways, and the load generator in two worker processes
//! binding its connections to two loopback addresses. Every user holds the
//! sale's event stream open from before the opening, buys at t0, and must
//! be told by its stream that the sale is sold out.
//!
//! No timing is asserted: the 2 s bound on the news reaching every stream
//! is a benchmark figure (`bench/crowd.sh`). Here the bound is a generous
//! minute, and the run itself is bounded by its deadline.

#[path = "loadgen/run.rs"]
mod run;

use flashsale_tests::ServerProcess;
use serde_json::Value;

use self::run::loadgen;

const USERS: u64 = 1_500;
const TICKETS: u64 = 50;

#[test]
fn every_open_page_is_told_the_sale_is_sold_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("jwt-secret");
    std::fs::write(
        &secret,
        "a secret only the identity provider and the fronts share",
    )?;
    let secret = secret.to_string_lossy().into_owned();
    let core = ServerProcess::start(&dir.path().join("core"), &["--sale", "drop:50"])?;
    let gateway = |name: &str| {
        ServerProcess::start_gateway(
            &dir.path().join(name),
            core.addr(),
            &[
                "--jwt-secret-file",
                &secret,
                "--http-max-connections",
                "5000",
                "--http-max-connections-per-ip",
                "5000",
                "--http-max-streams",
                "5000",
            ],
        )
    };
    let gateways = [gateway("gateway-1")?, gateway("gateway-2")?];
    let targets = gateways
        .iter()
        .map(|g| format!("http://{}", g.http_addr()))
        .collect::<Vec<_>>()
        .join(",");
    let users = USERS.to_string();
    let run = loadgen(
        dir.path(),
        &[
            "--hold-streams",
            "--targets",
            &targets,
            "--source-addrs",
            "127.0.0.1,127.0.0.2",
            "--jwt-secret-file",
            &secret,
            "--sale",
            "drop",
            "--users",
            &users,
            "--processes",
            "2",
            "--concurrency",
            "128",
            "--start-in",
            "20s",
            "--told-within",
            "60s",
            "--deadline",
            "90s",
        ],
    )?;
    let streams = &run.report["streams"];
    run.assert_passed();
    assert_eq!(run.count("won"), TICKETS, "{}", run.stdout);
    assert_eq!(run.count("sold_out"), USERS - TICKETS, "{}", run.stdout);
    run.assert_all_answered();
    assert_eq!(streams["answered"], USERS, "{streams}");
    assert_eq!(streams["wins"], TICKETS, "{streams}");
    for (field, want) in [
        ("asked", USERS),
        ("opened", USERS),
        ("failed", 0),
        ("told", USERS),
        ("never_told", 0),
        ("told_late", 0),
    ] {
        assert_eq!(streams[field], want, "{field}: {}", run.stdout);
    }
    assert_eq!(streams["ok"], Value::Bool(true), "{}", run.stdout);
    assert!(streams["lag_ms"]["max"].as_f64().is_some(), "{streams}");
    assert_eq!(run.report["remaining_after"], 0);
    run.assert_invariants_hold(true);
    for g in gateways {
        g.stop()?;
    }
    core.stop()
}

#[test]
fn a_crowd_over_the_open_file_limit_is_refused_up_front() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=1000:1000")
        .arg(flashsale_tests::workspace_bin("flashsale-loadgen"))
        .args([
            "--hold-streams",
            "--target",
            "http://127.0.0.1:9",
            "--users",
            "5000",
            "--processes",
            "2",
            "--concurrency",
            "100",
            "--quiet",
        ])
        .env(
            "FLASHSALE_JWT_SECRET",
            "a secret only the identity provider and the fronts share",
        )
        .current_dir(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("over the limit of 1000"), "{stderr}");
    // 5,000 users over 1,000 - 100 - 64 files each.
    assert!(stderr.contains("--processes 6 or more"), "{stderr}");
    Ok(())
}
