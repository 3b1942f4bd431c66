//! The example systemd units in `deploy/` are valid: `systemd-analyze
//! verify` accepts each, with its `ExecStart=` pointed at the freshly built
//! binary (verify wants the program to exist). Where the tool is missing,
//! the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context};
use flashsale_tests::workspace_bin;

const SYSTEMD_ANALYZE: &str = "systemd-analyze";

/// `deploy/` at the workspace root.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `unit` with `ExecStart=/usr/local/bin/<binary>` replaced by `binary`,
/// written to `dir` under the same name, for `systemd-analyze verify`.
fn pointed_at(unit: &Path, binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(unit)?;
    let name = unit.file_name().context("a unit file name")?;
    let installed = format!(
        "/usr/local/bin/{}",
        binary
            .file_name()
            .context("a binary name")?
            .to_string_lossy()
    );
    ensure!(
        text.contains(&format!("ExecStart={installed}")),
        "{} does not start {installed}",
        unit.display()
    );
    let copy = dir.join(name);
    std::fs::write(&copy, text.replace(&installed, &binary.to_string_lossy()))?;
    Ok(copy)
}

#[test]
fn the_example_units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    if Command::new(SYSTEMD_ANALYZE)
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: {SYSTEMD_ANALYZE} is not installed");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for (unit, binary) in [
        ("flashsale-server.service", "flashsale-server"),
        ("flashsale-gateway.service", "flashsale-gateway"),
    ] {
        let unit = pointed_at(&deploy_dir().join(unit), &workspace_bin(binary), dir.path())?;
        let text = std::fs::read_to_string(&unit)?;
        for needed in ["LimitNOFILE=", "DynamicUser=yes", "LoadCredential=", "%d/"] {
            ensure!(text.contains(needed), "{} lacks {needed}", unit.display());
        }
        let output = Command::new(SYSTEMD_ANALYZE)
            .arg("verify")
            .arg(&unit)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: {}\n{stderr}",
            unit.display(),
            output.status
        );
    }
    Ok(())
}
