//! The open-file limit at startup: the soft limit is raised to the hard
//! one, a connection limit the process cannot honour is clamped (and the
//! clamp is both logged and enforced: past it, `OVERLOADED`, not a
//! connection left in the backlog), and a limit too small for anything is
//! refused. The server runs under `prlimit --nofile=SOFT:HARD`
//! (util-linux).

use std::time::Duration;

use anyhow::{ensure, Context};
use flashsale_protocol::{ErrorCode, ServerFrame};
use flashsale_tests::{RawConn, ServerProcess};

/// The `N` in the server's log line `"{flag} {configured} clamped to N"`.
fn clamped_to(log: &str, flag: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("{flag} ")) && l.contains("clamped to"))?;
    let after = line.split("clamped to ").nth(1)?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The soft and hard "Max open files" of a process.
fn open_file_limits(pid: u32) -> anyhow::Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit")?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers[..] {
        [soft, hard] => Ok((soft, hard)),
        _ => anyhow::bail!("cannot read {line:?}"),
    }
}

#[test]
fn the_soft_limit_is_raised_to_the_hard_one_and_limits_are_clamped_to_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_with_file_limits(
        &dir.path().join("data"),
        256,
        4096,
        &[
            "--http",
            "127.0.0.1:0",
            "--demo",
            "--http-max-connections",
            "50000",
            "--http-max-streams",
            "30000",
        ],
    )?;
    ensure!(
        open_file_limits(server.pid())? == (4096, 4096),
        "the soft limit is the hard one: {:?}",
        open_file_limits(server.pid())?
    );
    let log = server.log();
    ensure!(
        log.contains("open-file limit raised from 256 to the hard limit, 4096"),
        "{log}"
    );
    // The default --max-connections (100,000) and the HTTP bounds cannot
    // all be open under 4,096 files: each is clamped below it, with room
    // left for the server's own files.
    for flag in ["--max-connections", "--http-max-connections"] {
        let clamped = clamped_to(&log, flag).with_context(|| format!("{flag}: {log}"))?;
        ensure!(
            (4096 - 200..4096).contains(&clamped),
            "{flag} clamped to {clamped}"
        );
    }
    let streams = clamped_to(&log, "--http-max-streams").context("streams")?;
    ensure!(
        Some(streams) == clamped_to(&log, "--http-max-connections"),
        "streams clamped to the connection bound: {streams}"
    );
    server.stop()
}

#[test]
fn connections_past_the_clamped_limit_are_refused_not_left_waiting() -> anyhow::Result<()> {
    const FILES: u64 = 128;
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_with_open_files(&dir.path().join("data"), FILES, &[])?;
    let limit = clamped_to(&server.log(), "--max-connections").context("no clamp logged")?;
    ensure!(limit > 16 && limit < FILES, "clamped to {limit}");
    let mut held = Vec::new();
    for _ in 0..limit {
        held.push(RawConn::welcomed(server.addr(), None)?);
    }
    // One more: answered at once, with OVERLOADED, because the limit leaves
    // the server a descriptor to accept it with.
    let mut extra = RawConn::connect(server.addr())?;
    extra.set_read_timeout(Duration::from_secs(10))?;
    match extra.hello(None)? {
        ServerFrame::Error(e) if e.code == ErrorCode::OVERLOADED => {}
        other => anyhow::bail!("past the limit, a Hello was answered {other:?}"),
    }
    ensure!(
        !server.log().contains("accept failed"),
        "the server ran out of descriptors:\n{}",
        server.log()
    );
    drop(held);
    server.stop()
}

#[test]
fn a_limit_with_no_room_for_connections_is_refused_at_startup() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (status, stderr) =
        ServerProcess::run_to_exit_with_open_files(&dir.path().join("data"), 40, &[])?;
    ensure!(!status.success(), "started under 40 files: {stderr}");
    ensure!(
        stderr.contains("may open 40 files") && stderr.contains("LimitNOFILE"),
        "{stderr}"
    );
    Ok(())
}
