//! 20,000 distinct signed-in users over HTTP against 200 tickets: exactly
//! 200 wins. The load generator mints each user's token with the front's
//! secret, as an identity provider would, and checks every invariant.

use std::process::Command;

use flashsale_tests::{workspace_bin, ServerProcess};
use serde_json::Value;

#[test]
fn twenty_thousand_signed_in_users_over_http() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("jwt-secret");
    std::fs::write(
        &secret,
        "a secret only the identity provider and the front share",
    )?;
    let secret_arg = secret.to_string_lossy().into_owned();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--sale",
            "drop:200",
            "--http",
            "127.0.0.1:0",
            "--jwt-secret-file",
            &secret_arg,
        ],
    )?;
    let report_path = dir.path().join("report.json");
    let out = Command::new(workspace_bin("flashsale-loadgen"))
        .args(["--target", &format!("http://{}", server.http_addr())])
        .args([
            "--jwt-secret-file",
            &secret_arg,
            "--sale",
            "drop",
            "--users",
            "20000",
            "--connections",
            "64",
        ])
        .args(["--quiet", "--deadline", "120s", "--json"])
        .arg(&report_path)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path)?)?;
    assert_eq!(report["counts"]["won"], 200, "{stdout}");
    assert_eq!(report["counts"]["sold_out"], 19_800, "{stdout}");
    assert_eq!(report["remaining_after"], 0);
    for v in report["invariants"].as_array().expect("invariants") {
        assert_eq!(v["held"], Value::Bool(true), "{v}");
        assert_eq!(v["inconclusive"], Value::Bool(false), "{v}");
    }
    server.stop()?;
    Ok(())
}
