//! What an idle connection costs the server: its resident memory (`VmRSS`)
//! read before and after opening 10,000 of them, divided by 10,000.
//!
//! The contract: at most 4 KiB per idle native connection (past its
//! `Hello`), at most 8 KiB per idle HTTP keep-alive connection (past one
//! request) or open event stream. Each kind is measured on a fresh server,
//! so that memory freed by one kind is not reused by the next and hidden
//! from its count; the connections of one kind are closed before the next
//! kind opens, so this process holds at most 10,000 sockets at once.
//! Connections open at most [`AT_ONCE`] at a time: a burst of handshakes
//! would count buffers that only exist while a handshake is in progress.
//!
//! The figures are printed (`--nocapture`); the README quotes them.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context};
use flashsale_protocol::{codec, handshake, ServerFrame};
use flashsale_tests::process::proc_status_kib;
use flashsale_tests::{runtime, EventStream, HttpConn, ServerProcess};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections of each kind.
const CONNECTIONS: usize = 10_000;
/// Connections being opened at once.
const AT_ONCE: usize = 32;
/// Connections opened and closed before the first reading, so that what
/// the first connection of a kind sets up once (a sale's event poller,
/// the runtimes' first slabs) is not counted against the 10,000.
const WARM_UP: usize = 200;
/// The contract's bounds, in bytes per connection.
const NATIVE_BOUND: u64 = 4096;
const HTTP_BOUND: u64 = 8192;
/// How long one whole kind may take to open, on a slow machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Flags that let 10,000 connections of one kind stay open, idle, from
/// one address, for as long as the test runs.
const FLAGS: &[&str] = &[
    "--sale",
    "s:100",
    "--demo",
    "--idle-timeout",
    "10m",
    "--http-idle-timeout",
    "10m",
    "--http-header-timeout",
    "10m",
    "--http-stream-lifetime",
    "10m",
    "--max-connections",
    "12000",
    "--http-max-connections",
    "12000",
    "--http-max-connections-per-ip",
    "12000",
    "--http-max-streams",
    "12000",
];

/// The server's resident memory now, in bytes.
fn rss(server: &ServerProcess) -> anyhow::Result<u64> {
    Ok(proc_status_kib(server.pid(), "VmRSS:").context("no VmRSS")? * 1024)
}

/// A native connection past its `Hello`.
async fn welcomed(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(&codec::frame(&handshake::hello(None))?)
        .await?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).await?;
    match flashsale_protocol::encoding::decode::<ServerFrame>(&body)? {
        ServerFrame::Welcome(_) => Ok(stream),
        other => anyhow::bail!("answered {other:?} to a Hello"),
    }
}

/// An HTTP connection kept alive after one answered request.
async fn kept_alive(addr: SocketAddr) -> anyhow::Result<HttpConn> {
    let mut conn = HttpConn::connect(addr).await?;
    let reply = conn.send("GET", "/healthz", &[], "").await?;
    ensure!(reply.status == 200, "healthz answered {}", reply.status);
    Ok(conn)
}

/// An event stream that has delivered its first event.
async fn streaming(addr: SocketAddr) -> anyhow::Result<EventStream> {
    let mut events = EventStream::open(addr, "/api/sales/s/events").await?;
    ensure!(events.status == 200, "events answered {}", events.status);
    events.next_data().await?.context("the stream ended")?;
    Ok(events)
}

/// Opens `n` connections with `open`, [`AT_ONCE`] at a time.
async fn open_many<T, F, Fut>(n: usize, open: F) -> anyhow::Result<Vec<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let opening = stream::iter(0..n)
        .map(|_| open())
        .buffer_unordered(AT_ONCE)
        .try_collect();
    tokio::time::timeout(PHASE_TIMEOUT, opening)
        .await
        .context("opening the connections took too long")?
}

/// Held by each test while it runs: at most one kind at a time, so this
/// process never holds more than 10,000 sockets.
static ONE_KIND_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Starts a fresh server, warms it up with `open`, then opens
/// [`CONNECTIONS`] more with it and returns the growth of its resident
/// memory per connection.
fn bytes_per_connection<T, F, Fut>(kind: &str, open: F) -> anyhow::Result<u64>
where
    F: Fn(SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let _alone = ONE_KIND_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(&dir.path().join("data"), FLAGS)?;
    let (native, web) = (server.addr(), server.http_addr());
    let rt = runtime();
    let warm = rt.block_on(open_many(WARM_UP, || open(native, web)))?;
    drop(warm);
    // Let the server see the warm-up connections close.
    std::thread::sleep(Duration::from_secs(1));
    let before = rss(&server)?;
    let held = rt.block_on(open_many(CONNECTIONS, || open(native, web)))?;
    // Let the last connections settle into idleness.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(&server)?;
    let per = after.saturating_sub(before) / CONNECTIONS as u64;
    println!(
        "{kind}: {CONNECTIONS} idle connections: VmRSS {before} -> {after} bytes, {per} bytes per connection"
    );
    drop(held);
    drop(rt);
    server.stop()?;
    Ok(per)
}

/// Fails unless a [`CONNECTIONS`]-strong crowd of `kind` costs at most
/// `bound` bytes per connection.
fn holds<T, F, Fut>(kind: &str, bound: u64, open: F) -> anyhow::Result<()>
where
    F: Fn(SocketAddr, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let per = bytes_per_connection(kind, open)?;
    ensure!(per <= bound, "{per} bytes per {kind}, over {bound}");
    Ok(())
}

#[test]
fn an_idle_native_connection_costs_at_most_4_kib() -> anyhow::Result<()> {
    holds("idle native connection", NATIVE_BOUND, |native, _| {
        welcomed(native)
    })
}

#[test]
fn an_idle_http_connection_costs_at_most_8_kib() -> anyhow::Result<()> {
    holds("idle HTTP keep-alive connection", HTTP_BOUND, |_, web| {
        kept_alive(web)
    })
}

#[test]
fn an_open_event_stream_costs_at_most_8_kib() -> anyhow::Result<()> {
    holds("open event stream", HTTP_BOUND, |_, web| streaming(web))
}
