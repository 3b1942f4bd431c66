//! `flashsale-torture` at a size fit for every test run: twenty trials of
//! bursts killed with `kill -9`, some kills while the log is recovered, and
//! nothing acknowledged lost, oversold or sold twice. The run starts with a
//! sale with holds, so every run also kills the server amid holds, payments
//! and expiries, and must have checked some of each.

use std::process::{Command, Stdio};

use flashsale_tests::workspace_bin;

#[test]
fn twenty_crashes_lose_nothing() -> anyhow::Result<()> {
    let server = workspace_bin("flashsale-server");
    let torture = workspace_bin("flashsale-torture");
    let output = Command::new(torture)
        .args(["--trials", "20", "--users", "400", "--capacity", "100"])
        .args(["--deadline", "120", "--server"])
        .arg(server)
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "flashsale-torture failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = ["trials: ", "hold trials: "].map(|start| {
        stdout
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}:\n{stdout}\n{stderr}"))
    });
    let summary = summary.join(", ");
    let fields: Vec<(&str, u64)> = summary
        .split(", ")
        .filter_map(|field| {
            let (name, count) = field.split_once(": ")?;
            Some((name, count.parse().ok()?))
        })
        .collect();
    let count = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
    assert_eq!(count("trials"), Some(20), "{summary}");
    for name in [
        "lost",
        "oversold",
        "duplicates",
        "confirmed lost",
        "confirmed late",
        "other",
    ] {
        assert_eq!(count(name), Some(0), "{name} in {summary}");
    }
    // Each sale with holds ends with its rest sold and paid, one hold let
    // expire, and a kill and a check: so these are never zero.
    for name in [
        "acknowledged wins checked",
        "hold trials",
        "holds checked",
        "confirms checked",
        "expiries checked",
    ] {
        assert!(count(name).is_some_and(|c| c > 0), "{name} in {summary}");
    }
    Ok(())
}
