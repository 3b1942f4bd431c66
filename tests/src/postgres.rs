//! A throwaway PostgreSQL cluster, for the drain into PostgreSQL and the
//! `migrate` command.
//!
//! The drain's promises (each winner exactly once, through outages and
//! `kill -9`) can only be checked against a real database: a cluster per
//! test, created with `initdb`, on a free loopback port, removed on drop.
//! The tests fail, rather than skip, when PostgreSQL is missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::poll::run_for_stderr;
use crate::process::path_str;

/// A throwaway PostgreSQL cluster for the drain's tests: `initdb` in a
/// temporary directory, started on a free loopback port with its socket in
/// that directory, one database `flashsale`, trust authentication for the
/// user `postgres`. Stopped (`-m immediate`) and removed on drop.
///
/// PostgreSQL refuses to run as root, so when the tests run as root the
/// server programs run as the `postgres` system user (`runuser`), and the
/// directory is handed to it.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// How long PostgreSQL may take to start or stop.
const PG_TIMEOUT: Duration = Duration::from_secs(60);

impl PgCluster {
    /// Creates and starts a cluster.
    ///
    /// # Errors
    ///
    /// When no PostgreSQL is installed under `/usr/lib/postgresql/*/bin`
    /// (`scripts/test.sh` installs it), or it cannot start.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("flashsale-pg").tempdir()?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(status.success(), "cannot hand {:?} to postgres", dir.path());
        }
        let mut cluster = PgCluster { dir, bin, port: 0 };
        let data = cluster.data_dir();
        cluster.run_as_owner(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        // A free port can be taken between the probe and the start: retry.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.start_server() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        cluster.psql_db("postgres", "CREATE DATABASE flashsale")?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/flashsale`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/flashsale", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (`-m fast`: clients are disconnected), keeping the
    /// data for [`start`](Self::start_again).
    pub fn stop(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        self.run_as_owner(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "fast", "-w", "stop"],
        )
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.start_server()
    }

    /// Runs `sql` in the `flashsale` database with `psql`; returns its
    /// unaligned, tuples-only output (`|` between columns).
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_db("flashsale", sql)
    }

    /// Starts `psql` on the `flashsale` database reading commands from a
    /// pipe, for a connection held open across steps (a lock). It ends when the
    /// returned child's stdin is closed or the child is killed.
    pub fn psql_pipe(&self) -> anyhow::Result<Child> {
        Ok(Command::new(self.bin.join("psql"))
            .args(self.psql_args("flashsale"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn psql_args(&self, db: &str) -> Vec<String> {
        vec![
            "-X".into(),
            "-q".into(),
            "-At".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            db.into(),
        ]
    }

    fn psql_db(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(self.psql_args(db))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?.trim_end().to_owned())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            path_str(self.dir.path())?
        );
        self.run_as_owner(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-t",
                "60",
                "-w",
                "start",
            ],
        )
        .with_context(|| {
            format!(
                "PostgreSQL did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Runs a PostgreSQL server program, as `postgres` when we are root.
    fn run_as_owner(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&path);
            cmd
        } else {
            Command::new(&path)
        };
        cmd.args(args).current_dir(self.dir.path());
        let (status, stderr) = run_for_stderr(&mut cmd, PG_TIMEOUT)
            .with_context(|| format!("running {}", path.display()))?;
        anyhow::ensure!(status.success(), "{program} {args:?} failed: {stderr}");
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data_dir()) {
            let _ = self.run_as_owner("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install PostgreSQL (scripts/test.sh does)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb under /usr/lib/postgresql/*/bin: install PostgreSQL")
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_owned();
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
