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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use flashsale_protocol::encoding;
use flashsale_protocol::{
    ClientFrame, ErrorCode, Hello, Request, RequestFrame, ReserveOutcome, Response, ServerFrame,
    PROTOCOL_VERSION,
};
use flashsale_tests::{
    client_config, http, proc_status_kib, runtime, HttpConn, RawConn, ServerProcess,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "a test secret of at least thirty-two bytes";
/// Hostile connections of each kind in the crowd.
const PER_KIND: usize = 18;
/// Reservations each pipelining client sends without waiting.
const PIPELINED: u64 = 600;
/// By when the server must have closed a hostile connection.
const CLOSE_DEADLINE: Duration = Duration::from_secs(30);
/// The server's resident memory must stay under this.
const MEMORY_BOUND_KIB: u64 = 256 * 1024;

fn secret_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("jwt-secret");
    std::fs::write(&path, SECRET)?;
    Ok(path)
}

fn bearer(user: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let claims = json!({ "sub": user.to_string(), "exp": exp });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing works");
    format!("Bearer {token}")
}

/// A length-prefixed frame.
fn frame(frame: &ClientFrame) -> Vec<u8> {
    let body = encoding::encode(frame).expect("frames encode");
    let mut bytes = u32::try_from(body.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

fn hello(version: u16) -> Vec<u8> {
    frame(&ClientFrame::Hello(Hello {
        version,
        api_key: None,
    }))
}

/// Deterministic noise.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
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
    let len = usize::try_from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
    encoding::decode(bytes.get(4..4 + len)?).ok()
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
            let hello = hello(PROTOCOL_VERSION);
            s.write_all(&hello[..5]).await?;
            let told = until_closed(&mut s, deadline).await?;
            match first_frame(&told) {
                Some(ServerFrame::Error(e)) => ensure!(e.code == ErrorCode::IDLE_TIMEOUT),
                other => bail!("a stalled frame answered {other:?}"),
            }
        }
        Kind::NativeWrongVersion => {
            s.write_all(&hello(PROTOCOL_VERSION + 7)).await?;
            let told = until_closed(&mut s, deadline).await?;
            match first_frame(&told) {
                Some(ServerFrame::Error(e)) => ensure!(e.code == ErrorCode::UNSUPPORTED_VERSION),
                other => bail!("a wrong version answered {other:?}"),
            }
        }
        Kind::NativePipeline => pipeline(&mut s, n, deadline).await?,
        Kind::NativeNeverReads => {
            s.write_all(&hello(PROTOCOL_VERSION)).await?;
            let ping = frame(&ClientFrame::Request(RequestFrame {
                id: 1,
                request: Request::Ping,
            }))
            .repeat(1024);
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
    s.write_all(&hello(PROTOCOL_VERSION)).await?;
    let first = 10_000_000 + n * PIPELINED;
    let mut requests = Vec::new();
    for id in 0..PIPELINED {
        requests.extend_from_slice(&frame(&ClientFrame::Request(RequestFrame {
            id,
            request: Request::Reserve {
                sale: "s".into(),
                user: first + id,
            },
        })));
    }
    let (mut reader, mut writer) = s.split();
    let write = async move { writer.write_all(&requests).await };
    let read = async move {
        let mut answered = HashSet::new();
        let mut welcomed = false;
        while answered.len() < PIPELINED as usize {
            let mut header = [0u8; 4];
            reader.read_exact(&mut header).await?;
            let mut body = vec![0u8; usize::try_from(u32::from_be_bytes(header))?];
            reader.read_exact(&mut body).await?;
            match encoding::decode::<ServerFrame>(&body)? {
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

/// The largest VmRSS seen, sampled until `stop`.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
            peak.fetch_max(kib, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hostile_crowd_harms_no_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap_or_default(),
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
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, stop, peak) = (server.pid(), stop_sampling.clone(), peak_rss.clone());
        std::thread::spawn(move || sample_rss(pid, stop, peak))
    };
    let rt = runtime();
    let done = Arc::new(AtomicBool::new(false));

    // The well-behaved: a native client and an HTTP client, buying until
    // the crowd is gone.
    let good_native = rt.spawn({
        let done = done.clone();
        async move {
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
            anyhow::Ok(tickets.len())
        }
    });
    let good_http = rt.spawn({
        let done = done.clone();
        async move {
            let mut conn = HttpConn::connect(web).await?;
            let mut answers = 0usize;
            let mut user = 2_000_000u64;
            while !done.load(Ordering::Relaxed) {
                let auth = bearer(user);
                let won = conn
                    .send(
                        "POST",
                        "/api/sales/s/reserve",
                        &[("authorization", &auth)],
                        "",
                    )
                    .await?;
                ensure!(
                    won.status == 201 && won.json()["outcome"] == "won",
                    "the good HTTP client was told {} {}",
                    won.status,
                    won.text()
                );
                let mine = conn
                    .send("GET", "/api/sales/s/me", &[("authorization", &auth)], "")
                    .await?;
                ensure!(mine.json()["ticket"] == won.json()["ticket"], "{mine:?}");
                let status = conn.send("GET", "/api/sales/s", &[], "").await?;
                ensure!(status.status == 200 && status.json()["sale"] == "s");
                answers += 3;
                user += 1;
            }
            anyhow::Ok(answers)
        }
    });

    // The crowd, all at once.
    let crowd: Vec<_> = KINDS
        .iter()
        .flat_map(|kind| (0..PER_KIND as u64).map(move |n| (*kind, n)))
        .map(|(kind, n)| (kind, rt.spawn(misbehave(kind, n, native, web))))
        .collect();
    let hostile = crowd.len();
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    for (kind, task) in crowd {
        match rt.block_on(task) {
            Ok(Ok(took)) => slowest = slowest.max(took),
            Ok(Err(e)) => failures.push(format!("{kind:?}: {e:#}")),
            Err(e) => failures.push(format!("{kind:?}: {e}")),
        }
    }
    done.store(true, Ordering::Relaxed);
    let native_wins = rt.block_on(good_native)??;
    let http_answers = rt.block_on(good_http)??;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );

    // Still up, on both ports.
    rt.block_on(async {
        let health = http(web, "GET", "/healthz", &[], "").await?;
        assert_eq!(health.status, 200);
        let client = client_config(native).connect().await?;
        client.ping().await?;
        anyhow::Ok(())
    })?;
    stop_sampling.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak_rss.load(Ordering::Relaxed);
    let hwm = proc_status_kib(server.pid(), "VmHWM:").context("no VmHWM")?;
    eprintln!(
        "{hostile} hostile connections, all closed by the server (slowest after {slowest:?}); \
         good clients: {native_wins} native wins, {http_answers} HTTP answers; \
         peak VmRSS {peak} KiB, VmHWM {hwm} KiB"
    );
    assert!(native_wins > 0 && http_answers > 0, "the good clients ran");
    assert!(
        hwm < MEMORY_BOUND_KIB,
        "the server's memory peaked at {hwm} KiB"
    );

    // A graceful stop is not held up by connections that never finish a
    // request head.
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

/// A connection past the native handshake; an `OVERLOADED` answer (a closed
/// connection not yet off the server's count) is retried a bounded number
/// of times.
fn welcomed(addr: SocketAddr) -> anyhow::Result<RawConn> {
    for _ in 0..50 {
        let mut c = RawConn::connect(addr)?;
        match c.hello(None)? {
            ServerFrame::Welcome(_) => return Ok(c),
            ServerFrame::Error(e) if e.code == ErrorCode::OVERLOADED => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => bail!("unexpected answer to Hello: {other:?}"),
        }
    }
    bail!("the server stayed at its connection limit")
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

    // Native: three fill the limit; the fourth is told OVERLOADED.
    let mut held: Vec<RawConn> = (0..3).map(|_| welcomed(native)).collect::<Result<_, _>>()?;
    let mut extra = RawConn::connect(native)?;
    match extra.recv()? {
        Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::OVERLOADED),
        other => panic!("expected OVERLOADED, got {other:?}"),
    }
    assert!(extra.is_closed());

    runtime().block_on(async {
        // HTTP: two keep-alive connections idle after an answer, and two
        // whose request body stops arriving. Connections are admitted in
        // the order they were accepted, so the fifth is the one refused.
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
            s.write_all(
                b"POST /demo/token HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"us",
            )
            .await?;
            fillers.push(s);
        }
        let refused = raw_http(web, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await?;
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
        assert!(refused.ends_with(r#"{"outcome":"busy"}"#), "{refused}");

        // The idle timeout closes every filler; then new connections are
        // served again.
        let deadline = Instant::now() + CLOSE_DEADLINE;
        for mut s in fillers {
            until_closed(&mut s, deadline).await?;
        }
        let mut served = None;
        for _ in 0..50 {
            let reply = http(web, "GET", "/healthz", &[], "").await?;
            if reply.status == 200 {
                served = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            served.is_some(),
            "the limit frees up once connections close"
        );
        // The body cap: the one route that reads a body refuses a big one.
        let big = " ".repeat(5000);
        let refused = http(web, "POST", "/demo/token", &[], &big).await?;
        assert_eq!(refused.status, 413);
        let metrics = http(web, "GET", "/metrics", &[], "").await?.text();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("flashsale_shed_total")
                    && l.contains(r#"protocol="http""#)
                    && l.contains(r#"reason="connections""#)),
            "{metrics}"
        );
        anyhow::Ok(())
    })?;

    for c in &mut held {
        match c.recv()? {
            Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::IDLE_TIMEOUT),
            other => panic!("expected IDLE_TIMEOUT, got {other:?}"),
        }
        assert!(c.is_closed());
    }
    drop(held);
    welcomed(native)?;
    server.stop()
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
        assert_eq!(http(web, "GET", "/healthz", &[], "").await?.status, 200);
        anyhow::Ok(())
    })?;
    server.stop()
}
