//! Many buyers at once from separate processes: `flashsale-burst` workers
//! reserving for a range of users each, and what every user was told.
//!
//! One test process cannot open tens of thousands of connections at the
//! same instant without its own runtime becoming the bottleneck; separate
//! worker processes make the server, not the test, the thing under load.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::process::workspace_bin;

/// What one simulated user was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    /// `Won { ticket }`.
    Won(u32),
    /// `AlreadyOwned { ticket }`.
    AlreadyOwned(u32),
    /// `SoldOut`.
    SoldOut,
}

/// Runs `processes` burst workers at once against `addr`, splitting users
/// `first..first + users` between them, each over `connections` connections.
/// Returns what every user was told.
pub fn burst(
    addr: SocketAddr,
    sale: &str,
    first: u64,
    users: u64,
    processes: u64,
    connections: usize,
) -> anyhow::Result<Vec<(u64, Told)>> {
    let bin = workspace_bin("flashsale-burst");
    let per = users.div_ceil(processes);
    let mut children = Vec::new();
    for p in 0..processes {
        let start = first + p * per;
        let count = per.min(first + users - start);
        let child = Command::new(&bin)
            .args([
                addr.to_string(),
                sale.to_owned(),
                start.to_string(),
                count.to_string(),
                connections.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot spawn flashsale-burst")?;
        children.push(child);
    }
    let mut told = Vec::with_capacity(users as usize);
    for child in children {
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "a burst worker failed: {}",
            output.status
        );
        let text = String::from_utf8(output.stdout)?;
        anyhow::ensure!(text.ends_with("done\n"), "a burst worker stopped early");
        for line in text.lines().filter(|l| *l != "done") {
            told.push(parse_told(line)?);
        }
    }
    Ok(told)
}

fn parse_told(line: &str) -> anyhow::Result<(u64, Told)> {
    let mut parts = line.split(' ');
    let user = parts.next().context("user")?.parse()?;
    let told = match (parts.next(), parts.next()) {
        (Some("won"), Some(t)) => Told::Won(t.parse()?),
        (Some("already_owned"), Some(t)) => Told::AlreadyOwned(t.parse()?),
        (Some("sold_out"), None) => Told::SoldOut,
        _ => bail!("unexpected burst line {line:?}"),
    };
    Ok((user, told))
}
