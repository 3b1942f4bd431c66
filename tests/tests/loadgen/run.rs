//! Running `flashsale-loadgen` to completion and reading back its JSON
//! report; shared by the load generator's own tests and the overload tests.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use flashsale_tests::workspace_bin;
use serde_json::Value;

/// A finished run of the load generator.
pub struct Run {
    /// Its exit code (-1 when killed by a signal).
    pub code: i32,
    /// What it printed: the summary, with one line per invariant.
    pub stdout: String,
    /// Its JSON report.
    pub report: Value,
}

/// Runs the load generator quietly with `args`, writing its report to a
/// fresh file in `dir`.
///
/// # Errors
///
/// When it cannot run, or ends without writing a report.
pub fn loadgen(dir: &Path, args: &[&str]) -> anyhow::Result<Run> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let json = dir.join(format!(
        "report-{}.json",
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new(workspace_bin("flashsale-loadgen"))
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&json)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    anyhow::ensure!(
        json.exists(),
        "no report (exit {code}); stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&std::fs::read(&json)?)?;
    Ok(Run {
        code,
        stdout,
        report,
    })
}

impl Run {
    /// How many answers of `kind` the run counted.
    pub fn count(&self, kind: &str) -> u64 {
        self.report["counts"][kind].as_u64().unwrap_or(0)
    }

    /// Asserts that the run exited with 0.
    pub fn assert_passed(&self) {
        assert_eq!(self.code, 0, "{}", self.stdout);
    }

    /// Asserts that every request was answered: none timed out, none lost
    /// its connection.
    pub fn assert_all_answered(&self) {
        assert_eq!(
            self.count("timeout") + self.count("connection_error"),
            0,
            "{}",
            self.stdout
        );
    }

    /// Asserts that no invariant was violated; with `conclusive`, also that
    /// each could be decided and the run as a whole is ok.
    pub fn assert_invariants_hold(&self, conclusive: bool) {
        for v in self.report["invariants"].as_array().expect("invariants") {
            assert_eq!(v["held"], Value::Bool(true), "{v}\n{}", self.stdout);
            if conclusive {
                assert_eq!(v["inconclusive"], Value::Bool(false), "{v}");
            }
        }
        if conclusive {
            assert_eq!(self.report["ok"], Value::Bool(true));
        }
    }
}
