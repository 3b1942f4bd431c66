//! Shared helpers for the end-to-end tests: start the real `flashsale-server`
//! binary on an ephemeral port, stop it gently or with `kill -9`, and talk
//! to it with raw frames.
//!
//! Every wait here is bounded: a server that does not start, stop or answer
//! in time fails the test instead of hanging it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use flashsale_protocol::encoding;
use flashsale_protocol::{
    ClientFrame, Hello, Request, RequestFrame, ServerFrame, PROTOCOL_VERSION,
};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary, built (once per test process) so that a test
/// never runs a stale one: `cargo test -p flashsale-tests` alone does not
/// rebuild the server. With `FLASHSALE_TESTS_PREBUILT` set (by
/// `scripts/test.sh`, after a workspace-wide build), the binary is used as
/// it is.
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
    let prebuilt =
        std::env::var_os("FLASHSALE_TESTS_PREBUILT").is_some() && dir.join(name).exists();
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
    data_dir: PathBuf,
    log: PathBuf,
}

/// The stdout line that announces the binary-protocol listener.
const LISTENING_LINE: &str = "flashsale-server listening on ";
/// The stdout lines that announce the HTTP listener: the server's, and the
/// gateway's.
const HTTP_LINES: [&str; 2] = ["flashsale-server http on ", "flashsale-gateway http on "];

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` with `data_dir` and extra `args`,
    /// and waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(workspace_bin("flashsale-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "2", "--data-dir"])
            .arg(data_dir)
            .args(args);
        let http = args.contains(&"--http");
        Self::spawn(cmd, data_dir, true, http)
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
        core: SocketAddr,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        let mut cmd = Command::new(workspace_bin("flashsale-gateway"));
        cmd.args(["--http", "127.0.0.1:0", "--core"])
            .arg(core.to_string())
            .args(args);
        Self::spawn(cmd, dir, false, true)
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
        Self::spawn(cmd, dir, false, true)
    }

    fn spawn(
        mut cmd: Command,
        data_dir: &Path,
        native: bool,
        http: bool,
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
                if let Some(addr) = line.strip_prefix(LISTENING_LINE) {
                    let _ = tx.send((false, addr.trim().to_owned()));
                } else if let Some(addr) = HTTP_LINES.iter().find_map(|p| line.strip_prefix(p)) {
                    let _ = tx.send((true, addr.trim().to_owned()));
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut addr, mut http_addr) = (None, None);
        while (native && addr.is_none()) || (http && http_addr.is_none()) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((is_http, line)) => {
                    let parsed: SocketAddr = line.parse().context("bad address line")?;
                    if is_http {
                        http_addr = Some(parsed);
                    } else {
                        addr = Some(parsed);
                    }
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
        let addr = addr.or(http_addr).context("no address announced")?;
        Ok(ServerProcess {
            child,
            addr,
            http_addr,
            data_dir: data_dir.to_owned(),
            log,
        })
    }

    /// Runs the server binary to completion with `args` (for start-up
    /// failures), returning its status and stderr.
    pub fn run_to_exit(data_dir: &Path, args: &[&str]) -> anyhow::Result<(ExitStatus, String)> {
        let mut child = Command::new(workspace_bin("flashsale-server"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = child.stderr.take().context("no stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = wait_timeout(&mut child, START_TIMEOUT).inspect_err(|_| {
            let _ = child.kill();
        })?;
        Ok((status, reader.join().unwrap_or_default()))
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
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        wait_timeout(&mut self.child, STOP_TIMEOUT)
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

fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!("process did not exit within {timeout:?}"))
}

/// A blocking raw-frame connection, for byte-level tests.
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    /// Connects with read and write timeouts.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<RawConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConn { stream })
    }

    /// Changes how long a blocked write may wait.
    pub fn set_write_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame.
    pub fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        let body = encoding::encode(frame)?;
        let mut bytes = u32::try_from(body.len())?.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        Ok(self.stream.write_all(&bytes)?)
    }

    /// Sends a `Hello` of this protocol version.
    pub fn hello(&mut self, api_key: Option<&str>) -> anyhow::Result<ServerFrame> {
        self.send(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key: api_key.map(Into::into),
        }))?;
        self.recv()?.context("closed before answering the Hello")
    }

    /// Sends one request.
    pub fn request(&mut self, id: u64, request: Request) -> anyhow::Result<()> {
        self.send(&ClientFrame::Request(RequestFrame { id, request }))
    }

    /// Reads one frame; `None` on a clean close.
    pub fn recv(&mut self) -> anyhow::Result<Option<ServerFrame>> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(header) as usize;
        anyhow::ensure!(len <= 1 << 20, "server sent a {len}-byte frame");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(Some(encoding::decode(&body)?))
    }

    /// Whether the server closed the connection (reads EOF within the read
    /// timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
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

/// An answer from the HTTP front.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl HttpReply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long one HTTP exchange may take in a test.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: SocketAddr,
}

impl HttpConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let stream = tokio::time::timeout(HTTP_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(HttpConn { sender, addr })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<HttpReply> {
        let response = tokio::time::timeout(HTTP_TIMEOUT, async {
            self.sender.ready().await?;
            let request = build_request(self.addr, method, path, headers, body)?;
            anyhow::Ok(self.sender.send_request(request).await?)
        })
        .await
        .context("HTTP request timed out")??;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(HTTP_TIMEOUT, http_body_util::BodyExt::collect(body))
            .await
            .context("HTTP body timed out")??
            .to_bytes();
        Ok(HttpReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

fn build_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<hyper::Request<http_body_util::Full<bytes::Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    Ok(builder.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_owned(),
    )))?)
}

/// One request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpReply> {
    HttpConn::connect(addr)
        .await?
        .send(method, path, headers, body)
        .await
}

/// An open Server-Sent Events stream.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: String,
    /// The answer's status and headers.
    pub status: u16,
    /// The answer's headers.
    pub headers: hyper::HeaderMap,
}

impl EventStream {
    /// Opens `path` on `addr` as an event stream.
    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<EventStream> {
        let conn = HttpConn::connect(addr).await?;
        let mut sender = conn.sender;
        sender.ready().await?;
        let request = build_request(addr, "GET", path, &[("accept", "text/event-stream")], "")?;
        let response = tokio::time::timeout(HTTP_TIMEOUT, sender.send_request(request))
            .await
            .context("no answer to the event stream request")??;
        let (parts, body) = response.into_parts();
        Ok(EventStream {
            body,
            buffer: String::new(),
            status: parts.status.as_u16(),
            headers: parts.headers,
        })
    }

    /// The `data` of the next event (comments skipped); `None` when the
    /// stream ends.
    pub async fn next_data(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return Ok(Some(data.join("\n")));
                }
            }
            let frame =
                tokio::time::timeout(HTTP_TIMEOUT, http_body_util::BodyExt::frame(&mut self.body))
                    .await
                    .context("no event in time")?;
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buffer.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
    }
}

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
        let mut child = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", path.display()))?;
        let mut stderr = child.stderr.take().context("no stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = wait_timeout(&mut child, PG_TIMEOUT).inspect_err(|_| {
            let _ = child.kill();
        })?;
        let stderr = reader.join().unwrap_or_default();
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

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a non-UTF-8 temporary path")
}

/// The value of the unlabelled metric `name` in a Prometheus text
/// exposition (`None` when absent).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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
        lines.next() == Some("sale,ticket,user,sold_at"),
        "bad CSV header"
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            match fields.as_slice() {
                [s, ticket, user, at] if *s == sale => {
                    Ok((user.parse()?, ticket.parse()?, (*at).to_owned()))
                }
                _ => bail!("bad CSV line {line:?}"),
            }
        })
        .collect()
}
