//! `flashsale-torture` at a size fit for every test run.
//!
//! A single node: twenty trials of bursts killed with `kill -9`, some kills
//! while the log is recovered, and nothing acknowledged lost, oversold or
//! sold twice. The run starts with a sale with holds, so every run also
//! kills the server amid holds, payments and expiries, and must have
//! checked some of each.
//!
//! A cluster: twenty trials of three nodes with the leader (or a follower,
//! or a node catching up) killed mid-burst, every acknowledged win checked
//! on the next leader, and the sale sold out exactly at the end.

use std::process::{Command, Stdio};

use flashsale_tests::workspace_bin;

/// Runs `flashsale-torture` with `args`; returns its summary fields
/// (`name: count`), after checking that it passed and broke no promise.
fn torture(args: &[&str], summary_lines: &[&str]) -> anyhow::Result<Vec<(String, u64)>> {
    let server = workspace_bin("flashsale-server");
    let torture = workspace_bin("flashsale-torture");
    let output = Command::new(torture)
        .args(args)
        .arg("--server")
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
    let mut fields = Vec::new();
    for start in summary_lines {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?}:\n{stdout}\n{stderr}"));
        for field in line.split(", ") {
            let Some((name, count)) = field.split_once(": ") else {
                continue;
            };
            if let Ok(count) = count.parse() {
                fields.push((name.to_owned(), count));
            }
        }
    }
    for name in [
        "lost",
        "oversold",
        "duplicates",
        "confirmed lost",
        "confirmed late",
        "other",
    ] {
        assert_eq!(count(&fields, name), Some(0), "{name} in {fields:?}");
    }
    Ok(fields)
}

fn count(fields: &[(String, u64)], name: &str) -> Option<u64> {
    fields.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
}

#[test]
fn twenty_crashes_lose_nothing() -> anyhow::Result<()> {
    let fields = torture(
        &[
            "--trials",
            "20",
            "--users",
            "400",
            "--capacity",
            "100",
            "--deadline",
            "120",
        ],
        &["trials: ", "hold trials: "],
    )?;
    assert_eq!(count(&fields, "trials"), Some(20), "{fields:?}");
    // Each sale with holds ends with its rest sold and paid, one hold let
    // expire, and a kill and a check: so these are never zero.
    for name in [
        "acknowledged wins checked",
        "hold trials",
        "holds checked",
        "confirms checked",
        "expiries checked",
    ] {
        assert!(
            count(&fields, name).is_some_and(|c| c > 0),
            "{name} in {fields:?}"
        );
    }
    Ok(())
}

#[test]
fn twenty_kills_in_a_cluster_lose_nothing() -> anyhow::Result<()> {
    let fields = torture(
        &[
            "--cluster",
            "--trials",
            "20",
            "--users",
            "200",
            "--capacity",
            "2000",
            "--deadline",
            "300",
        ],
        &["trials: ", "cluster kills: "],
    )?;
    assert_eq!(count(&fields, "trials"), Some(20), "{fields:?}");
    assert!(
        count(&fields, "acknowledged wins checked").is_some_and(|c| c > 0),
        "{fields:?}"
    );
    assert!(
        count(&fields, "leader kills").is_some_and(|c| c > 0),
        "no leader was killed: {fields:?}"
    );
    Ok(())
}
