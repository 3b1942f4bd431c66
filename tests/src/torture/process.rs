//! Starting and killing the real server on one data directory.
//!
//! Unlike `flashsale_tests::ServerProcess`, which always waits for the
//! listening line, a [`Launcher`] can also kill a server that is still
//! recovering its log: at a chosen instant after `spawn`, whether or not it
//! has announced its address yet.
//!
//! Every start also opens the admin API (with the test operator key), since
//! sales with holds can only be created through it; a clean start waits for
//! both addresses.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The stdout line that announces the binary-protocol listener.
const LISTENING_LINE: &str = "flashsale-server listening on ";
/// The stdout line that announces the admin API.
const ADMIN_LINE: &str = "flashsale-server admin on ";
/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the server's log a failure shows.
const LOG_TAIL_LINES: usize = 40;

/// How to start the server on one data directory.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `flashsale-server` binary.
    pub bin: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where every start appends its stderr.
    pub log: PathBuf,
    /// `ID:CAPACITY` of every sale without holds, each passed as `--sale`
    /// (sales with holds are created through the admin API, and kept by
    /// the log).
    pub sales: Vec<String>,
    /// The operator key file, for `--admin-key-file`.
    pub admin_key: PathBuf,
}

/// Which listener a stdout line announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Native,
    Admin,
}

/// A server process, and the channel on which its addresses will arrive.
struct Spawned {
    child: Child,
    addrs: mpsc::Receiver<(Line, SocketAddr)>,
}

/// A server that announced its addresses.
#[derive(Debug)]
pub struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// What a kill during recovery interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KilledAt {
    /// The server had not announced its address yet.
    BeforeListening,
    /// The server was already listening.
    AfterListening,
    /// The server had exited by itself: a startup failure.
    Exited(ExitStatus),
}

impl Launcher {
    fn spawn(&self) -> anyhow::Result<Spawned> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "2", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--admin", "127.0.0.1:0", "--admin-key-file"])
            .arg(&self.admin_key);
        for sale in &self.sales {
            cmd.args(["--sale", sale]);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot spawn {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, addrs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let announced = [(Line::Native, LISTENING_LINE), (Line::Admin, ADMIN_LINE)]
                    .into_iter()
                    .find_map(|(kind, prefix)| Some((kind, line.strip_prefix(prefix)?)));
                if let Some((kind, Ok(addr))) = announced.map(|(k, a)| (k, a.trim().parse())) {
                    let _ = tx.send((kind, addr));
                }
            }
        });
        Ok(Spawned { child, addrs })
    }

    /// Starts the server and waits until it listens.
    ///
    /// # Errors
    ///
    /// The server exits or stays silent for too long; the error shows the
    /// end of its log.
    pub fn start(&self) -> anyhow::Result<Running> {
        let mut spawned = self.spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut addr, mut admin) = (None, None);
        let waited = loop {
            if let (Some(addr), Some(admin)) = (addr, admin) {
                break Ok((addr, admin));
            }
            match spawned
                .addrs
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok((Line::Native, a)) => addr = Some(a),
                Ok((Line::Admin, a)) => admin = Some(a),
                Err(e) => break Err(e),
            }
        };
        match waited {
            Ok((addr, admin)) => Ok(Running {
                child: spawned.child,
                addr,
                admin,
            }),
            Err(e) => {
                let _ = spawned.child.kill();
                let status = spawned.child.wait();
                bail!(
                    "the server did not start ({e}; exit {status:?}); the end of its log:\n{}",
                    self.log_tail()
                )
            }
        }
    }

    /// Starts the server and `kill -9`s it `delay` after the spawn, while
    /// it recovers its log or just after it starts listening.
    ///
    /// # Errors
    ///
    /// The server cannot be spawned or reaped.
    pub fn kill_while_starting(&self, delay: Duration) -> anyhow::Result<KilledAt> {
        let deadline = Instant::now() + delay;
        let mut spawned = self.spawn()?;
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        if let Some(status) = spawned.child.try_wait()? {
            return Ok(KilledAt::Exited(status));
        }
        spawned.child.kill()?;
        spawned.child.wait()?;
        Ok(
            if spawned
                .addrs
                .try_iter()
                .any(|(line, _)| line == Line::Native)
            {
                KilledAt::AfterListening
            } else {
                KilledAt::BeforeListening
            },
        )
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Running {
    /// The binary-protocol address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `kill -9`: nothing is flushed, nothing is answered.
    ///
    /// # Errors
    ///
    /// The process cannot be signalled or reaped.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    ///
    /// # Errors
    ///
    /// The server does not exit in time, or exits with a failure.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "the server exited with {status} on SIGTERM"
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a server behind, whatever failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
