//! A crowd of hostile clients on both ports at once, while well-behaved
//! clients keep buying: every answer they get must be right, every hostile
//! connection must be closed by the server, the server's memory must stay
//! bounded, and the connection limits must refuse cleanly and recover.
//!
//! Counts and waits are bounded. Nothing here asserts a speed: the only
//! bounds on time are generous deadlines by which the server must have
//! closed a connection it has every reason to close.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_metrics::readback::series;
use flashsale_metrics::{Protocol, ShedReason, SHED};
use flashsale_protocol::{codec, handshake};
use flashsale_protocol::{
    ClientCodec, ClientFrame, ErrorCode, Hello, Request, ReserveOutcome, Response, ServerFrame,
    PROTOCOL_VERSION,
};
use flashsale_tests::poll::poll_async;
use flashsale_tests::raw::request_frame;
use flashsale_tests::token::{bearer, start_signed};
use flashsale_tests::{
    client_config, get, http, proc_status_kib, runtime, EventStream, HttpConn, RawConn,
    ServerProcess,
};
use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, FramedRead};

/// Hostile connections of each kind in the crowd.
const PER_KIND: usize = 18;
/// Reservations each pipelining client sends without waiting.
const PIPELINED: u64 = 600;
/// By when the server must have closed a hostile connection.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);
/// The server's resident memory must stay under this.
const MEMORY_BOUND_KIB: u64 = 256 * 1024;

/// The `Hello` every client sends, as bytes.
fn hello() -> Vec<u8> {
    codec::frame(&handshake::hello(None)).expect("a Hello encodes")
}

/// A `Hello` of another protocol version, which no client sends.
fn hello_of_version(version: u16) -> Vec<u8> {
    codec::frame(&ClientFrame::Hello(Hello {
        version,
        api_key: None,
    }))
    .expect("a Hello encodes")
}

/// `len` bytes of noise, the same for the same `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Reads (and keeps at most 64 KiB of) whatever the server sends until it
/// closes the connection; fails if it is still open at `deadline`.
async fn until_closed(stream: &mut TcpStream, deadline: Instant) -> anyhow::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => bail!("the server left the connection open"),
            Ok(Ok(0) | Err(_)) => return Ok(kept),
            Ok(Ok(n)) => {
                if kept.len() < 64 * 1024 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// Waits, without reading a byte (reading would be progress), until the
/// server has closed the connection: a write then fails.
async fn until_closed_unread(stream: &mut TcpStream, deadline: Instant) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.write_all(b"\r\n")).await {
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(())) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {}
        }
    }
    bail!("the server left the connection open")
}

/// Writes `chunk` over and over, without reading, until a write blocks
/// for `stall` (the server stopped reading) or `budget` bytes are out.
async fn write_without_reading(
    stream: &mut TcpStream,
    chunk: &[u8],
    budget: usize,
    stall: Duration,
) -> bool {
    let mut sent = 0;
    while sent < budget {
        match tokio::time::timeout(stall, stream.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// The first frame of `bytes`, if it is a whole one.
fn first_frame(bytes: &[u8]) -> Option<ServerFrame> {
    ClientCodec::default()
        .decode(&mut bytes::BytesMut::from(bytes))
        .ok()
        .flatten()
}

fn status_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines().next().unwrap_or_default().to_owned()
}

/// The hostile kinds. Each connects, misbehaves, and then waits for the
/// server to close the connection, checking what it was told on the way.
#[derive(Debug, Clone, Copy)]
enum Kind {
    NativeNoise,
    NativeHugeLength,
    NativeSlowloris,
    NativeWrongVersion,
    NativePipeline,
    NativeNeverReads,
    HttpSlowloris,
    HttpTrickle,
    HttpHugeHeader,
    HttpNeverReads,
    HttpNoise,
}

const KINDS: [Kind; 11] = [
    Kind::NativeNoise,
    Kind::NativeHugeLength,
    Kind::NativeSlowloris,
    Kind::NativeWrongVersion,
    Kind::NativePipeline,
    Kind::NativeNeverReads,
    Kind::HttpSlowloris,
    Kind::HttpTrickle,
    Kind::HttpHugeHeader,
    Kind::HttpNeverReads,
    Kind::HttpNoise,
];

async fn misbehave(
    kind: Kind,
    n: u64,
    native: SocketAddr,
    web: SocketAddr,
) -> anyhow::Result<Duration> {
    let on_http = matches!(
        kind,
        Kind::HttpSlowloris
            | Kind::HttpTrickle
            | Kind::HttpHugeHeader
            | Kind::HttpNeverReads
            | Kind::HttpNoise
    );
    let addr = if on_http { web } else { native };
    let mut s = TcpStream::connect(addr).await?;
    let start = Instant::now();
    let deadline = start + CLOSE_DEADLINE;
    match kind {
        Kind::NativeNoise => {
            let _ = s.write_all(&noise(n, 64 + 61 * n as usize)).await;
            until_closed(&mut s, deadline).await?;
        }
        Kind::NativeHugeLength => {
            s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await?;
            let told = until_closed(&mut s, deadline).await?;
            match first_frame(&told) {
                Some(ServerFrame::Error(e)) => ensure!(e.code == ErrorCode::FRAME_TOO_LARGE),
                other => bail!("4 GiB length prefix answered {other:?}"),
            }
        }
        Kind::NativeSlowloris => {
            s.write_all(&hello()[..5]).await?;
            let told = until_closed(&mut s, deadline).await?;
            match first_frame(&told) {
                Some(ServerFrame::Error(e)) => ensure!(e.code == ErrorCode::IDLE_TIMEOUT),
                other => bail!("a stalled frame answered {other:?}"),
            }
        }
        Kind::NativeWrongVersion => {
            s.write_all(&hello_of_version(PROTOCOL_VERSION + 7)).await?;
            let told = until_closed(&mut s, deadline).await?;
            match first_frame(&told) {
                Some(ServerFrame::Error(e)) => ensure!(e.code == ErrorCode::UNSUPPORTED_VERSION),
                other => bail!("a wrong version answered {other:?}"),
            }
        }
        Kind::NativePipeline => pipeline(&mut s, n, deadline).await?,
        Kind::NativeNeverReads => {
            s.write_all(&hello()).await?;
            let ping = request_frame(1, Request::Ping).repeat(1024);
            write_without_reading(&mut s, &ping, 64 << 20, Duration::from_millis(500)).await;
            until_closed_unread(&mut s, deadline).await?;
        }
        Kind::HttpSlowloris => {
            s.write_all(b"GET /api/sales/s HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await?;
            until_closed(&mut s, deadline).await?;
        }
        Kind::HttpTrickle => {
            s.write_all(b"GET /api/sales/s HTTP/1.1\r\n").await?;
            // One header byte every 100 ms: each read is progress, so only
            // the header timeout can end this.
            loop {
                tokio::select! {
                    closed = until_closed(&mut s, deadline) => { closed?; break; }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if s.write_all(b"x").await.is_err() {
                    until_closed(&mut s, deadline).await?;
                    break;
                }
            }
        }
        Kind::HttpHugeHeader => {
            let mut request = b"GET /api/sales/s HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
            request.resize(request.len() + (1 << 20), b'a');
            request.extend_from_slice(b"\r\n\r\n");
            let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&request)).await;
            let told = until_closed(&mut s, deadline).await?;
            let status = status_line(&told);
            ensure!(
                told.is_empty() || status.starts_with("HTTP/1.1 431"),
                "a 1 MiB header answered {status:?}"
            );
        }
        Kind::HttpNeverReads => {
            let request = b"GET /app.js HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
            write_without_reading(&mut s, &request, 16 << 20, Duration::from_millis(500)).await;
            until_closed_unread(&mut s, deadline).await?;
        }
        Kind::HttpNoise => {
            let _ = s.write_all(&noise(n + 1000, 100 + 37 * n as usize)).await;
            let told = until_closed(&mut s, deadline).await?;
            let status = status_line(&told);
            ensure!(
                told.is_empty() || status.starts_with("HTTP/1.1 4"),
                "noise answered {status:?}"
            );
        }
    }
    Ok(start.elapsed())
}

/// Far more reservations than `--max-in-flight`, written at once; every one
/// must be answered `Won`, under its own id.
async fn pipeline(s: &mut TcpStream, n: u64, deadline: Instant) -> anyhow::Result<()> {
    s.write_all(&hello()).await?;
    let first = 10_000_000 + n * PIPELINED;
    let requests: Vec<u8> = (0..PIPELINED)
        .flat_map(|id| {
            let sale = "s".into();
            request_frame(
                id,
                Request::Reserve {
                    sale,
                    user: first + id,
                },
            )
        })
        .collect();
    let (reader, mut writer) = s.split();
    let write = async move { writer.write_all(&requests).await };
    let read = async move {
        let mut frames = FramedRead::new(reader, ClientCodec::default());
        let mut answered = HashSet::new();
        let mut welcomed = false;
        while answered.len() < PIPELINED as usize {
            match frames
                .next()
                .await
                .context("closed before every answer")??
            {
                ServerFrame::Welcome(_) if !welcomed => welcomed = true,
                ServerFrame::Response(r) => match r.response {
                    Response::Reserve(ReserveOutcome::Won { .. }) => {
                        ensure!(answered.insert(r.id), "id {} answered twice", r.id);
                    }
                    other => bail!("a pipelined reservation was told {other:?}"),
                },
                other => bail!("unexpected frame {other:?}"),
            }
        }
        anyhow::Ok(())
    };
    let (written, read) =
        tokio::time::timeout_at(deadline.into(), async { tokio::join!(write, read) })
            .await
            .context("the pipelined answers did not all come")?;
    written?;
    read?;
    // Now silent: the idle timeout closes it.
    until_closed(s, deadline).await?;
    Ok(())
}

/// The largest VmRSS of a process, sampled every 50 ms on a thread until
/// [`stop`](Self::stop).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        RssSampler { stop, peak, thread }
    }

    /// The peak, in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

#[test]
fn a_hostile_crowd_harms_no_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(
        dir.path(),
        &[
            "--sale",
            "s:200000",
            "--max-in-flight",
            "16",
            "--idle-timeout",
            "1s",
            "--http-idle-timeout",
            "1s",
            "--http-header-timeout",
            "1s",
        ],
    )?;
    let (native, web) = (server.addr(), server.http_addr());
    let sampler = RssSampler::start(server.pid());
    let rt = runtime();

    // The well-behaved buy until the crowd is gone.
    let done = Arc::new(AtomicBool::new(false));
    let good_native = rt.spawn(buy_natively_until(native, done.clone()));
    let good_http = rt.spawn(buy_over_http_until(web, done.clone()));
    let crowd = rt.block_on(the_crowd_is_closed_out(native, web));
    done.store(true, Ordering::Relaxed);
    let native_wins = rt.block_on(good_native)??;
    let http_answers = rt.block_on(good_http)??;
    assert!(
        crowd.failures.is_empty(),
        "{} failed: {:#?}",
        crowd.failures.len(),
        crowd.failures
    );

    rt.block_on(both_ports_still_serve(native, web))?;
    let peak = sampler.stop();
    let hwm = proc_status_kib(server.pid(), "VmHWM:").context("no VmHWM")?;
    eprintln!(
        "{} hostile connections, all closed by the server (slowest after {:?}); \
         good clients: {native_wins} native wins, {http_answers} HTTP answers; \
         peak VmRSS {peak} KiB, VmHWM {hwm} KiB",
        crowd.connections, crowd.slowest
    );
    assert!(native_wins > 0 && http_answers > 0, "the good clients ran");
    assert!(
        hwm < MEMORY_BOUND_KIB,
        "the server's memory peaked at {hwm} KiB"
    );
    a_graceful_stop_is_not_held_up_by_slow_heads(server)
}

/// A native buyer, reserving for one new user after another until `done`:
/// every answer must be a new ticket. Returns how many it won.
async fn buy_natively_until(native: SocketAddr, done: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let client = client_config(native).connect().await?;
    let mut tickets = HashSet::new();
    let mut user = 1_000_000u64;
    while !done.load(Ordering::Relaxed) {
        match client.reserve("s", user).await? {
            ReserveOutcome::Won { ticket } => {
                ensure!(tickets.insert(ticket), "ticket {ticket} sold twice")
            }
            other => bail!("the good native client was told {other:?}"),
        }
        user += 1;
    }
    client.ping().await?;
    Ok(tickets.len())
}

/// How often the good HTTP client may find its connection closed under
/// it before that counts as a failure.
const HTTP_RECONNECTS: u32 = 20;

/// An HTTP buyer on a keep-alive connection until `done`: reserve, read the
/// ticket back, read the sale. Returns how many answers it checked.
///
/// The server closes a keep-alive connection whose next request head is
/// more than `--http-header-timeout` late, which a starved test process can
/// be on a busy machine. Like any HTTP client, this one then reconnects and
/// tries the same buyer again, whose reservation may already have been
/// made: the answer must then be that buyer's ticket.
async fn buy_over_http_until(web: SocketAddr, done: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let mut conn = HttpConn::connect(web).await?;
    let (mut answers, mut reconnects) = (0usize, 0u32);
    let mut user = 2_000_000u64;
    let mut retry = false;
    while !done.load(Ordering::Relaxed) {
        match buy_once_over_http(&mut conn, user, retry).await {
            Ok(()) => {
                answers += 3;
                user += 1;
                retry = false;
            }
            Err(e) if e.is::<hyper::Error>() && reconnects < HTTP_RECONNECTS => {
                eprintln!("the good HTTP client reconnects: {e:#}");
                reconnects += 1;
                retry = true;
                conn = HttpConn::connect(web).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(answers)
}

/// One buyer's three requests; `retry` when the buyer's reservation may
/// have gone through on a connection that closed before the answer.
async fn buy_once_over_http(conn: &mut HttpConn, user: u64, retry: bool) -> anyhow::Result<()> {
    let token = bearer(user);
    let auth = [("authorization", token.as_str())];
    let won = conn.send("POST", "/api/sales/s/reserve", &auth, "").await?;
    let outcome = won.json()["outcome"].clone();
    ensure!(
        (won.status == 201 && outcome == "won")
            || (retry && won.status == 200 && outcome == "already_owned"),
        "the good HTTP client was told {} {}",
        won.status,
        won.text()
    );
    let mine = conn.send("GET", "/api/sales/s/me", &auth, "").await?;
    ensure!(mine.json()["ticket"] == won.json()["ticket"], "{mine:?}");
    let status = conn.send("GET", "/api/sales/s", &[], "").await?;
    ensure!(status.status == 200 && status.json()["sale"] == "s");
    Ok(())
}

/// What became of the crowd.
struct Crowd {
    connections: usize,
    /// The longest a hostile connection stayed open.
    slowest: Duration,
    failures: Vec<String>,
}

/// Every hostile kind, [`PER_KIND`] times, all at once; each must be closed
/// by the server after being told what the kind expects.
async fn the_crowd_is_closed_out(native: SocketAddr, web: SocketAddr) -> Crowd {
    let tasks: Vec<_> = KINDS
        .iter()
        .flat_map(|kind| (0..PER_KIND as u64).map(move |n| (*kind, n)))
        .map(|(kind, n)| (kind, tokio::spawn(misbehave(kind, n, native, web))))
        .collect();
    let mut crowd = Crowd {
        connections: tasks.len(),
        slowest: Duration::ZERO,
        failures: Vec::new(),
    };
    for (kind, task) in tasks {
        match task.await {
            Ok(Ok(took)) => crowd.slowest = crowd.slowest.max(took),
            Ok(Err(e)) => crowd.failures.push(format!("{kind:?}: {e:#}")),
            Err(e) => crowd.failures.push(format!("{kind:?}: {e}")),
        }
    }
    crowd
}

async fn both_ports_still_serve(native: SocketAddr, web: SocketAddr) -> anyhow::Result<()> {
    assert_eq!(get(web, "/healthz").await?.status, 200);
    client_config(native).connect().await?.ping().await?;
    Ok(())
}

/// A graceful stop is not held up by connections that never finish a
/// request head, nor by ones that never send a byte.
fn a_graceful_stop_is_not_held_up_by_slow_heads(server: ServerProcess) -> anyhow::Result<()> {
    let web = server.http_addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = std::net::TcpStream::connect(web)?;
        std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nhost")?;
        held.push(s);
        held.push(std::net::TcpStream::connect(web)?);
    }
    server.stop()
}

/// A raw HTTP exchange: `request`, then everything until the server closes.
async fn raw_http(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let told = until_closed(&mut s, Instant::now() + CLOSE_DEADLINE).await?;
    Ok(String::from_utf8_lossy(&told).into_owned())
}

#[test]
fn full_connection_limits_refuse_cleanly_then_recover() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--demo",
            "--max-connections",
            "3",
            "--http-max-connections",
            "4",
            // One HTTP listener: the fillers below are admitted in the
            // order they connect (with one listener per thread, the
            // kernel may hand a later connection to another thread first).
            "--http-threads",
            "1",
            "--idle-timeout",
            "3s",
            "--http-idle-timeout",
            "3s",
            // Longer than the test: only the idle timeout closes the fillers.
            "--http-header-timeout",
            "10m",
        ],
    )?;
    let (native, web) = (server.addr(), server.http_addr());
    let held = a_full_native_front_refuses(native)?;
    runtime().block_on(async {
        let fillers = a_full_http_front_refuses(web).await?;
        idle_http_connections_close_and_free_the_limit(web, fillers).await?;
        // The body cap: the one route that reads a body refuses a big one.
        let big = " ".repeat(5000);
        let refused = http(web, "POST", "/demo/token", &[], &big).await?;
        assert_eq!(refused.status, 413);
        let metrics = get(web, "/metrics").await?.text();
        let shed = [
            ("protocol", Protocol::Http.label()),
            ("reason", ShedReason::Connections.label()),
        ];
        assert!(series(&metrics, SHED, &shed).is_some(), "{metrics}");
        anyhow::Ok(())
    })?;
    idle_native_connections_close_and_free_the_limit(native, held)?;
    server.stop()
}

/// Three connections fill the native limit; the fourth is told
/// `OVERLOADED` and closed. Returns the three.
fn a_full_native_front_refuses(native: SocketAddr) -> anyhow::Result<Vec<RawConn>> {
    let held: Vec<RawConn> = (0..3)
        .map(|_| RawConn::welcomed(native, None))
        .collect::<Result<_, _>>()?;
    let mut extra = RawConn::connect(native)?;
    match extra.recv()? {
        Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::OVERLOADED),
        other => panic!("expected OVERLOADED, got {other:?}"),
    }
    assert!(extra.is_closed());
    Ok(held)
}

/// Two keep-alive connections idle after an answer, and two whose request
/// body stops arriving, fill the HTTP limit. Connections are admitted in
/// the order they were accepted, so the fifth is the one refused, with a
/// 503. Returns the four.
async fn a_full_http_front_refuses(web: SocketAddr) -> anyhow::Result<Vec<TcpStream>> {
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(web).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut answer = [0u8; 12];
        s.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"HTTP/1.1 200");
        fillers.push(s);
    }
    for _ in 0..2 {
        let mut s = TcpStream::connect(web).await?;
        s.write_all(b"POST /demo/token HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"us")
            .await?;
        fillers.push(s);
    }
    let refused = raw_http(web, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
    assert!(refused.ends_with(r#"{"outcome":"busy"}"#), "{refused}");
    Ok(fillers)
}

/// The idle timeout closes every filler; then new connections are served
/// again.
async fn idle_http_connections_close_and_free_the_limit(
    web: SocketAddr,
    fillers: Vec<TcpStream>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLOSE_DEADLINE;
    for mut s in fillers {
        until_closed(&mut s, deadline).await?;
    }
    let served = poll_async(50, Duration::from_millis(100), || async {
        Ok((get(web, "/healthz").await?.status == 200).then_some(()))
    })
    .await?;
    assert!(
        served.is_some(),
        "the limit frees up once connections close"
    );
    Ok(())
}

/// The idle timeout ends every native connection that fills the limit,
/// telling it so; then a new one is welcome again.
fn idle_native_connections_close_and_free_the_limit(
    native: SocketAddr,
    mut held: Vec<RawConn>,
) -> anyhow::Result<()> {
    for c in &mut held {
        match c.recv()? {
            Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::IDLE_TIMEOUT),
            other => panic!("expected IDLE_TIMEOUT, got {other:?}"),
        }
        assert!(c.is_closed());
    }
    drop(held);
    RawConn::welcomed(native, None)?;
    Ok(())
}

#[test]
fn the_header_timeout_ends_slow_heads_and_quiet_keep_alives() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--demo",
            "--http-header-timeout",
            "1s",
            // Longer than the test: only the header timeout closes these.
            "--http-idle-timeout",
            "10m",
        ],
    )?;
    let web = server.http_addr();
    runtime().block_on(async {
        let deadline = Instant::now() + CLOSE_DEADLINE;
        // Never a byte.
        let mut silent = TcpStream::connect(web).await?;
        // Half a head.
        let mut half = TcpStream::connect(web).await?;
        half.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await?;
        // A keep-alive connection after its answer: the next head is due
        // within the header timeout too.
        let mut kept = TcpStream::connect(web).await?;
        kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let told = until_closed(&mut kept, deadline).await?;
        assert!(status_line(&told).starts_with("HTTP/1.1 200"));
        assert!(until_closed(&mut silent, deadline).await?.is_empty());
        until_closed(&mut half, deadline).await?;
        // A request that does arrive in time is answered as usual.
        assert_eq!(get(web, "/healthz").await?.status, 200);
        anyhow::Ok(())
    })?;
    server.stop()
}

/// Another client than the crowd's, on loopback.
const BUYER_ADDR: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// One client opening as many event streams and connections as the front
/// has room for cannot take a buyer's place: its streams stop at their own
/// bound (503), its connections at the bound per client (429), both with
/// `Retry-After`, and a buyer from another address still buys. Streams end
/// after their lifetime with a `retry:` hint, and free their places. The
/// gateway enforces the same bound per client.
#[test]
fn one_client_cannot_starve_buyers() -> anyhow::Result<()> {
    const MAX_CONNECTIONS: usize = 24;
    const PER_CLIENT: usize = 8;
    const STREAMS: usize = 4;
    let dir = tempfile::tempdir()?;
    let server = start_signed(
        dir.path(),
        &[
            "--sale",
            "gig:5",
            "--http-max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--http-max-connections-per-ip",
            &PER_CLIENT.to_string(),
            "--http-max-streams",
            &STREAMS.to_string(),
            "--http-stream-lifetime",
            "2s",
            // Longer than the test: only the bounds close these.
            "--http-header-timeout",
            "10m",
        ],
    )?;
    let web = server.http_addr();
    runtime().block_on(async {
        let crowd = Crowded::by_one_client(web, MAX_CONNECTIONS).await?;
        assert_eq!(crowd.streams.len(), STREAMS, "{:?}", crowd.refusals);
        assert!(
            crowd.streams.len() + crowd.conns.len() <= PER_CLIENT,
            "one client holds {} streams and {} connections",
            crowd.streams.len(),
            crowd.conns.len()
        );
        for (status, code) in [(503, None), (429, Some("too_many_connections"))] {
            let refusal = crowd.refusals.iter().find(|r| r.status == status);
            let refusal =
                refusal.with_context(|| format!("no {status} in {:?}", crowd.refusals))?;
            assert!(refusal.retry_after.is_some(), "{refusal:?}");
            if let Some(code) = code {
                assert_eq!(refusal.error.as_deref(), Some(code), "{refusal:?}");
            }
        }
        a_buyer_buys(web, 1).await?;
        crowd.streams_end_and_free_their_places(web).await
    })?;

    let secret = flashsale_tests::token::secret_file(dir.path())?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        server.addr(),
        &[
            "--jwt-secret-file",
            flashsale_tests::process::path_str(&secret)?,
            "--http-max-connections-per-ip",
            "2",
        ],
    )?;
    runtime().block_on(async {
        let crowd = Crowded::by_one_client(gateway.http_addr(), 4).await?;
        assert!(crowd.streams.len() + crowd.conns.len() <= 2);
        let refused = crowd.refusals.iter().find(|r| r.status == 429);
        assert!(refused.is_some(), "{:?}", crowd.refusals);
        a_buyer_buys(gateway.http_addr(), 2).await
    })?;
    gateway.stop()?;
    server.stop()
}

/// A refusal one crowding client was given.
#[derive(Debug)]
struct Refusal {
    status: u16,
    retry_after: Option<String>,
    error: Option<String>,
}

/// What one client got hold of: event streams (with what they sent so
/// far), then keep-alive connections. Raw sockets: a connection refused
/// past the bound per client is answered before its request is read, which
/// an HTTP client library takes for a broken connection.
struct Crowded {
    streams: Vec<(TcpStream, Vec<u8>)>,
    conns: Vec<TcpStream>,
    refusals: Vec<Refusal>,
}

/// An answer read off a raw socket: its status, its head, and its body
/// (for a chunked answer, whatever of it came with the head).
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `GET path` on a new connection and reads the answer's head, and
/// its body when it has a length.
async fn raw_get(web: SocketAddr, path: &str) -> anyhow::Result<(TcpStream, RawAnswer)> {
    let mut s = TcpStream::connect(web).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: */*\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let mut answer = RawAnswer {
                status: status_line(head.as_bytes())
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .with_context(|| format!("no status in {head:?}"))?,
                head,
                body: Vec::new(),
            };
            let length: usize = answer
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                answer.body = bytes.split_off(end + 4);
                return Ok((s, answer));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .context("no whole answer in time")??;
        ensure!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}

impl Crowded {
    /// `attempts` event streams, then `attempts` keep-alive connections,
    /// from one client, keeping every one that is served.
    async fn by_one_client(web: SocketAddr, attempts: usize) -> anyhow::Result<Crowded> {
        let mut crowd = Crowded {
            streams: Vec::new(),
            conns: Vec::new(),
            refusals: Vec::new(),
        };
        for _ in 0..attempts {
            let (s, answer) = raw_get(web, "/api/sales/gig/events").await?;
            if answer.status == 200 {
                crowd.streams.push((s, answer.body));
            } else {
                crowd.refused(&answer);
            }
        }
        for _ in 0..attempts {
            let (s, answer) = raw_get(web, "/healthz").await?;
            if answer.status == 200 {
                crowd.conns.push(s);
            } else {
                crowd.refused(&answer);
            }
        }
        Ok(crowd)
    }

    fn refused(&mut self, answer: &RawAnswer) {
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        self.refusals.push(Refusal {
            status: answer.status,
            retry_after: answer.header("retry-after"),
            error: body["error"].as_str().map(str::to_owned),
        });
    }

    /// Every stream ends by itself (its last chunk comes), having sent a
    /// `retry:` hint; then the client may open a stream again.
    async fn streams_end_and_free_their_places(mut self, web: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLOSE_DEADLINE;
        let mut buf = [0u8; 4096];
        for (s, sent) in &mut self.streams {
            while !sent.ends_with(b"\r\n0\r\n\r\n") {
                let left = deadline.saturating_duration_since(Instant::now());
                let n = tokio::time::timeout(left, s.read(&mut buf))
                    .await
                    .context("a stream outlived its lifetime")??;
                ensure!(n > 0, "a stream was cut instead of ended");
                sent.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(sent);
            ensure!(text.contains("retry:"), "no retry hint: {text}");
        }
        drop(self);
        // The server sees the crowd's connections close a moment after they
        // do: until then a new one may still be refused at the door (before
        // its request is read, which the HTTP client reports as an error).
        let again = poll_async(50, Duration::from_millis(100), || async {
            Ok(EventStream::open(web, "/api/sales/gig/events")
                .await
                .ok()
                .filter(|stream| stream.status == 200)
                .map(|_| ()))
        })
        .await?;
        ensure!(again.is_some(), "no stream once the others ended");
        Ok(())
    }
}

/// A buyer from another address than the crowd's buys a ticket.
async fn a_buyer_buys(web: SocketAddr, user: u64) -> anyhow::Result<()> {
    let mut buyer = HttpConn::connect_from(web, BUYER_ADDR).await?;
    let authorization = bearer(user);
    let reply = buyer
        .send(
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &authorization)],
            "",
        )
        .await?;
    ensure!(reply.status == 201, "the buyer was told {reply:?}");
    Ok(())
}
