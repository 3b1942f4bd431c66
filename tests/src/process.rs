//! The real binaries as child processes: built fresh, started on
//! `127.0.0.1:0`, stopped gently or with `kill -9`.
//!
//! Every test that spawns a server goes through [`ServerProcess`], so the
//! way a server is started (an ephemeral port read back from its stdout, a
//! log file beside the data directory, a bounded wait for both) is decided
//! once. A server that does not start, stop or answer in time fails the
//! test instead of hanging it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::poll::{run_for_stderr, wait_for_exit};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary, built (once per test process) so that a test
/// never runs a stale one: `cargo test -p flashsale-tests` alone does not
/// rebuild the server. With `FLASHSALE_TESTS_PREBUILT=1` (set by
/// `scripts/test.sh`, after a workspace-wide build), the binary is used as
/// it is; unset, empty or `0`, it is built.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("test binary has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // `cargo test --workspace` has just built every binary with the same
    // features as the tests; a nested `cargo build -p` would resolve other
    // features and rebuild half the tree. The test script says so.
    let prebuilt = std::env::var_os("FLASHSALE_TESTS_PREBUILT")
        .is_some_and(|v| !v.is_empty() && v != "0")
        && dir.join(name).exists();
    if !prebuilt && built.insert(name.to_owned()) {
        let package = match name {
            "flashsale-server" => "flashsale-server",
            "flashsale-gateway" => "flashsale-gateway",
            "flashsale-loadgen" => "flashsale-loadgen",
            _ => "flashsale-tests",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    dir.join(name)
}

/// A `flashsale-server` child process.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    log: PathBuf,
}

/// The stdout line that announces the binary-protocol listener.
const LISTENING_LINE: &str = "flashsale-server listening on ";
/// The stdout lines that announce the HTTP listener: the server's, and the
/// gateway's.
const HTTP_LINES: [&str; 2] = ["flashsale-server http on ", "flashsale-gateway http on "];
/// The stdout line that announces the admin listener.
const ADMIN_LINE: &str = "flashsale-server admin on ";

/// Which listener a stdout line announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Native,
    Http,
    Admin,
}

impl Listener {
    fn of(line: &str) -> Option<(Listener, &str)> {
        if let Some(addr) = line.strip_prefix(LISTENING_LINE) {
            return Some((Listener::Native, addr));
        }
        if let Some(addr) = line.strip_prefix(ADMIN_LINE) {
            return Some((Listener::Admin, addr));
        }
        HTTP_LINES
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .map(|addr| (Listener::Http, addr))
    }
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` with `data_dir` and extra `args`,
    /// and waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        Self::start_as(
            Command::new(workspace_bin("flashsale-server")),
            data_dir,
            args,
        )
    }

    /// [`start`](Self::start) with the server binary at `program` (for a
    /// program that is not a test, which [`workspace_bin`] cannot place).
    pub fn start_program(
        program: &Path,
        data_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        Self::start_as(Command::new(program), data_dir, args)
    }

    /// [`start`](Self::start), in a process that may hold at most `limit`
    /// open files (`prlimit --nofile`, from util-linux).
    pub fn start_with_open_files(
        data_dir: &Path,
        limit: u64,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        Self::start_with_file_limits(data_dir, limit, limit, args)
    }

    /// [`start`](Self::start), in a process started with the soft open-file
    /// limit `soft` and the hard limit `hard`.
    pub fn start_with_file_limits(
        data_dir: &Path,
        soft: u64,
        hard: u64,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        Self::start_as(with_file_limits(soft, hard), data_dir, args)
    }

    /// [`run_to_exit`](Self::run_to_exit) under the open-file limit `limit`.
    pub fn run_to_exit_with_open_files(
        data_dir: &Path,
        limit: u64,
        args: &[&str],
    ) -> anyhow::Result<(ExitStatus, String)> {
        let mut cmd = with_file_limits(limit, limit);
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args);
        run_for_stderr(&mut cmd, START_TIMEOUT)
    }

    /// Starts `cmd`, the server's command line so far, with the flags of
    /// [`start`](Self::start) added.
    fn start_as(mut cmd: Command, data_dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "2", "--data-dir"])
            .arg(data_dir)
            .args(args);
        let wanted = [
            Some(Listener::Native),
            args.contains(&"--http").then_some(Listener::Http),
            args.contains(&"--admin").then_some(Listener::Admin),
        ];
        Self::spawn(cmd, data_dir, &wanted)
    }

    /// Starts the server with its HTTP front on `127.0.0.1:0` too (`args`
    /// should carry a JWT secret or `--demo`), and waits until both listen.
    pub fn start_http(data_dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        let mut all = vec!["--http", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::start(data_dir, &all)
    }

    /// Starts `flashsale-gateway --core CORE --http 127.0.0.1:0` with extra
    /// `args`, logging next to `dir`, and waits until it listens.
    /// [`addr`](Self::addr) and [`http_addr`](Self::http_addr) are then both
    /// its HTTP address.
    pub fn start_gateway(
        dir: &Path,
        core: impl std::fmt::Display,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(workspace_bin("flashsale-gateway"));
        cmd.args(["--http", "127.0.0.1:0", "--core"])
            .arg(core.to_string())
            .args(args);
        Self::spawn(cmd, dir, &[Some(Listener::Http)])
    }

    /// [`start_gateway`](Self::start_gateway) through the deprecated alias
    /// `flashsale-server gateway ...`.
    pub fn start_gateway_alias(
        dir: &Path,
        core: SocketAddr,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        // The alias runs the gateway binary next to the server's: make sure
        // it is built.
        workspace_bin("flashsale-gateway");
        let mut cmd = Command::new(workspace_bin("flashsale-server"));
        cmd.args(["gateway", "--http", "127.0.0.1:0", "--core"])
            .arg(core.to_string())
            .args(args);
        Self::spawn(cmd, dir, &[Some(Listener::Http)])
    }

    /// Spawns `cmd` and waits until it has announced every `wanted` listener.
    fn spawn(
        mut cmd: Command,
        data_dir: &Path,
        wanted: &[Option<Listener>],
    ) -> anyhow::Result<ServerProcess> {
        let log = data_dir.with_extension("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot spawn flashsale-server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((listener, addr)) = Listener::of(&line) {
                    let _ = tx.send((listener, addr.trim().to_owned()));
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut found: Vec<(Listener, SocketAddr)> = Vec::new();
        let missing = |found: &[(Listener, SocketAddr)]| {
            wanted
                .iter()
                .flatten()
                .any(|w| !found.iter().any(|(l, _)| l == w))
        };
        while missing(&found) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((listener, line)) => {
                    let parsed: SocketAddr = line.parse().context("bad address line")?;
                    found.push((listener, parsed));
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "server did not start; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        let of = |wanted: Listener| found.iter().find(|(l, _)| *l == wanted).map(|(_, a)| *a);
        let http_addr = of(Listener::Http);
        let admin_addr = of(Listener::Admin);
        let addr = of(Listener::Native)
            .or(http_addr)
            .context("no address announced")?;
        Ok(ServerProcess {
            child,
            addr,
            http_addr,
            admin_addr,
            data_dir: data_dir.to_owned(),
            log,
        })
    }

    /// Runs the server binary to completion with `args` (for start-up
    /// failures), returning its status and stderr.
    pub fn run_to_exit(data_dir: &Path, args: &[&str]) -> anyhow::Result<(ExitStatus, String)> {
        let mut cmd = Command::new(workspace_bin("flashsale-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args);
        run_for_stderr(&mut cmd, START_TIMEOUT)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP front's address.
    ///
    /// # Panics
    ///
    /// When the process was started without an HTTP front.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr.expect("the server was started with --http")
    }

    /// The admin API's address.
    ///
    /// # Panics
    ///
    /// When the process was started without `--admin`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
            .expect("the server was started with --admin")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> anyhow::Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        wait_for_exit(&mut self.child, STOP_TIMEOUT)
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, nothing is
    /// answered until [`resume`](Self::resume). Resume it before
    /// [`stop`](Self::stop), which would otherwise wait out its timeout.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a [paused](Self::pause) process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        Ok(nix::sys::signal::kill(pid, signal)?)
    }

    /// Stops the server with SIGTERM and fails, showing its log, unless it
    /// exits 0.
    pub fn stop(self) -> anyhow::Result<()> {
        let log = self.log.clone();
        let status = self.terminate()?;
        if !status.success() {
            bail!(
                "server exited with {status}; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `kill -9`: no chance to flush anything.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many of the process's open descriptors are numbered below
    /// `limit` (entries of `/proc/<pid>/fd`): under an open-file limit of
    /// `limit`, it has run out when this reaches `limit`. Descriptors it
    /// inherited above the limit (a build tool's pipe) do not count.
    pub fn open_files_below(&self, limit: u64) -> anyhow::Result<u64> {
        let mut count = 0;
        for entry in std::fs::read_dir(format!("/proc/{}/fd", self.pid()))? {
            let fd = entry?.file_name().to_string_lossy().parse::<u64>();
            count += u64::from(fd.is_ok_and(|fd| fd < limit));
        }
        Ok(count)
    }

    /// The process id, to read the server's `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let kib = proc_status_kib(self.pid(), "VmHWM:").context("no VmHWM in /proc/PID/status")?;
        Ok(kib * 1024)
    }
}

/// The server's command, under `prlimit --nofile=SOFT:HARD` (util-linux).
fn with_file_limits(soft: u64, hard: u64) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg(workspace_bin("flashsale-server"));
    cmd
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/<pid>/status` (such as `VmRSS:` or `VmHWM:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A path as `&str`, for a command line.
///
/// # Errors
///
/// When it is not UTF-8.
pub fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a non-UTF-8 path")
}

/// A multi-threaded runtime for a test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A client configuration for `server` with test-friendly timeouts.
pub fn client_config(addr: SocketAddr) -> flashsale_client::ClientConfig {
    flashsale_client::ClientConfig::new(addr.to_string()).request_timeout(Duration::from_secs(30))
}

/// Runs `flashsale-server export --data-dir DIR --sale SALE` and parses
/// its CSV into `(user, ticket, sold_at)`, after checking the header.
pub fn export(data_dir: &Path, sale: &str) -> anyhow::Result<Vec<(u64, u32, String)>> {
    let output = Command::new(workspace_bin("flashsale-server"))
        .arg("export")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--sale", sale])
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut lines = text.lines();
    anyhow::ensure!(
        lines.next() == Some("sale,ticket,user,sold_at,status"),
        "bad CSV header"
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            match fields.as_slice() {
                [s, ticket, user, at, "sold" | "held" | "confirmed"] if *s == sale => {
                    Ok((user.parse()?, ticket.parse()?, (*at).to_owned()))
                }
                _ => bail!("bad CSV line {line:?}"),
            }
        })
        .collect()
}

/// `n` loopback ports that are free now and lie below the kernel's range
/// of ephemeral ports, for servers that must get the same port back after
/// a restart (the replication ports of a cluster's nodes). A port taken
/// from the ephemeral range may meanwhile become some connection's local
/// port, and the restarted server could not bind it.
///
/// # Errors
///
/// When no `n` such ports are free.
pub fn fixed_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (first, last) = (10_000u16, low.saturating_sub(1).max(10_001));
    // Spread concurrent processes over the range, so they rarely probe the
    // same ports first; within one process, never hand a port out twice
    // (tests run side by side, and a port is only free until its node binds
    // it).
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let span = u32::from(last - first);
    let start = std::process::id().wrapping_mul(7_919) % span;
    let mut ports = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    for i in 0..span {
        let port = first + u16::try_from((start + i) % span).unwrap_or(0);
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
            ports.push(port);
            if ports.len() == n {
                given.extend(&ports);
                return Ok(ports);
            }
        }
    }
    bail!("fewer than {n} free ports between {first} and {last}")
}
