//! The server's pipelined hot path over loopback, driven by raw frames.
//!
//! Run: `cargo bench -p flashsale-tests --bench pipeline`
//!
//! The native client spends more per request (a task and a oneshot channel)
//! than the server does, so this benchmark bypasses it: one single-threaded
//! runtime drives every connection, writes pre-encoded `Reserve` (or `Ping`)
//! frames in large batches with a deep window in flight, and reads answers in
//! large reads, looking only at the bytes it needs to count them. Client and
//! server share the machine's cores. Workloads, in this order:
//!
//! - `rush`: a fresh sale of 200 tickets, distinct users (fsync durability:
//!   the 200 wins wait for the disk, everyone else is answered at once);
//! - `sold-out`: distinct users on the sold-out sale, each answered `SoldOut`;
//! - `ping`: the protocol's floor, no core work at all.
//!
//! Every answer is checked (frame shape, outcome, and the sum of the ids
//! answered on each connection), and one line per workload is printed.
//!
//! Tunables (environment): `PIPELINE_CONNECTIONS` (default 8),
//! `PIPELINE_WINDOW` (requests in flight per connection, default 8192),
//! `PIPELINE_ANSWERS` (answers per measured workload, default 20,000,000),
//! `PIPELINE_ONLY` (`rush`, `sold-out` or `ping`: run only the setup it needs
//! and that workload), and `PIPELINE_ADDR` (drive an already running server,
//! which must have a fresh sale `bench` of 200 tickets, instead of starting
//! one; for profiling it).

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_protocol::{encoding, ClientFrame, Hello, Request, RequestFrame, PROTOCOL_VERSION};
use flashsale_tests::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Requests written per `write` call.
const BATCH: usize = 1024;
/// Bytes asked of the socket per read.
const READ_LEN: usize = 256 * 1024;
/// The sale every reservation is for.
const SALE: &str = "bench";
/// Tickets in it.
const CAPACITY: u64 = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Reserve,
    Ping,
}

/// What the answers to one workload were.
#[derive(Default)]
struct Tally {
    answers: u64,
    won: u64,
    sold_out: u64,
    pong: u64,
    other: u64,
    id_sum: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.answers += o.answers;
        self.won += o.won;
        self.sold_out += o.sold_out;
        self.pong += o.pong;
        self.other += o.other;
        self.id_sum = self.id_sum.wrapping_add(o.id_sum);
    }
}

/// A request frame with its id and user patched in place for each copy.
struct Template {
    bytes: Vec<u8>,
    id_at: usize,
    user_at: Option<usize>,
}

impl Template {
    fn new(op: Op) -> anyhow::Result<Template> {
        let request = match op {
            Op::Reserve => Request::Reserve {
                sale: SALE.to_owned(),
                user: 0,
            },
            Op::Ping => Request::Ping,
        };
        let bytes = frame(&ClientFrame::Request(RequestFrame { id: 0, request }))?;
        // prefix, ClientFrame::Request index, then the id; the user is last.
        let user_at = (op == Op::Reserve).then(|| bytes.len() - 8);
        Ok(Template {
            bytes,
            id_at: 8,
            user_at,
        })
    }

    /// Appends requests `ids` (the user is `first_user + id`) to `out`.
    fn fill(&self, out: &mut Vec<u8>, ids: std::ops::Range<u64>, first_user: u64) {
        out.clear();
        for id in ids {
            let at = out.len();
            out.extend_from_slice(&self.bytes);
            out[at + self.id_at..at + self.id_at + 8].copy_from_slice(&id.to_le_bytes());
            if let Some(u) = self.user_at {
                out[at + u..at + u + 8].copy_from_slice(&(first_user + id).to_le_bytes());
            }
        }
    }
}

fn frame(message: &ClientFrame) -> anyhow::Result<Vec<u8>> {
    let body = encoding::encode(message)?;
    let mut out = u32::try_from(body.len())?.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Counts the complete answer frames at the front of `buf`; returns how many
/// bytes they span.
fn count(buf: &[u8], tally: &mut Tally) -> anyhow::Result<usize> {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + 4) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        ensure!(len <= 1 << 16, "a {len}-byte answer");
        let Some(body) = buf.get(at + 4..at + 4 + len) else {
            break;
        };
        at += 4 + len;
        // ServerFrame::Response (1), id, then the Response variant.
        let word = |i: usize| {
            body.get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        ensure!(word(0) == Some(1), "not a Response frame: {body:02x?}");
        let id = body
            .get(4..12)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .context("short Response frame")?;
        tally.answers += 1;
        tally.id_sum = tally.id_sum.wrapping_add(id);
        match (word(12), word(16)) {
            (Some(0), _) => tally.pong += 1,
            (Some(1), Some(0)) => tally.won += 1,
            (Some(1), Some(2)) => tally.sold_out += 1,
            _ => tally.other += 1,
        }
    }
    Ok(at)
}

/// A connection past its handshake.
async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream
        .write_all(&frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key: None,
        }))?)
        .await?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut body).await?;
    ensure!(
        body.first() == Some(&0),
        "the Hello was refused: {body:02x?}"
    );
    Ok(stream)
}

/// Sends requests `0..total` on `stream`, at most `window` unanswered, and
/// tallies the answers.
async fn drive_one(
    stream: &mut TcpStream,
    op: Op,
    first_user: u64,
    total: u64,
    window: u64,
) -> anyhow::Result<Tally> {
    let template = Template::new(op)?;
    let (mut rd, mut wr) = stream.split();
    let answered = Cell::new(0u64);
    let room = Notify::new();
    let writer = async {
        let mut batch = Vec::with_capacity(BATCH * template.bytes.len());
        let mut sent = 0;
        while sent < total {
            let n = (BATCH as u64).min(total - sent).min(window);
            while sent + n - answered.get() > window {
                room.notified().await;
            }
            template.fill(&mut batch, sent..sent + n, first_user);
            wr.write_all(&batch).await?;
            sent += n;
        }
        anyhow::Ok(())
    };
    let reader = async {
        let mut tally = Tally::default();
        let mut buf = vec![0u8; READ_LEN];
        let mut filled = 0;
        while tally.answers < total {
            let n = rd.read(&mut buf[filled..]).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            filled += n;
            let used = count(&buf[..filled], &mut tally)?;
            buf.copy_within(used..filled, 0);
            filled -= used;
            answered.set(tally.answers);
            room.notify_one();
        }
        Ok(tally)
    };
    let ((), tally) = tokio::try_join!(writer, reader)?;
    // 0 + 1 + ... + (total - 1), modulo 2^64 as the tally sums it.
    let expected = (u128::from(total) * u128::from(total.saturating_sub(1)) / 2) as u64;
    ensure!(
        tally.id_sum == expected,
        "some ids were answered twice or never"
    );
    Ok(tally)
}

/// Runs `total` requests split over `streams`, users from `first_user` on.
async fn drive(
    streams: &mut [TcpStream],
    op: Op,
    first_user: u64,
    total: u64,
    window: u64,
) -> anyhow::Result<(Tally, Duration)> {
    let per = total / streams.len() as u64;
    let start = Instant::now();
    let runs = streams
        .iter_mut()
        .enumerate()
        .map(|(i, stream)| drive_one(stream, op, first_user + i as u64 * per, per, window));
    let tallies = futures_util::future::try_join_all(runs).await?;
    let elapsed = start.elapsed();
    let mut tally = Tally::default();
    for t in &tallies {
        tally.add(t);
    }
    Ok((tally, elapsed))
}

fn report(name: &str, (t, elapsed): &(Tally, Duration)) {
    println!(
        "{name:<9} {:>10} answers in {:>6.3} s = {:>10.0} answers/s   won {}  sold-out {}  pong {}  other {}",
        t.answers,
        elapsed.as_secs_f64(),
        t.answers as f64 / elapsed.as_secs_f64(),
        t.won,
        t.sold_out,
        t.pong,
        t.other,
    );
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let connections = env_u64("PIPELINE_CONNECTIONS", 8)?.max(1);
    let window = env_u64("PIPELINE_WINDOW", 8192)?.max(1);
    let answers = env_u64("PIPELINE_ANSWERS", 20_000_000)?;
    let only = std::env::var("PIPELINE_ONLY").ok();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);

    let dir = tempfile::tempdir()?;
    let (server, addr) = match std::env::var("PIPELINE_ADDR") {
        Ok(addr) => (None, addr.parse()?),
        Err(_) => {
            let sale = format!("{SALE}:{CAPACITY}");
            let server = ServerProcess::start(&dir.path().join("data"), &["--sale", &sale])?;
            let addr = server.addr();
            (Some(server), addr)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..connections {
            streams.push(connect(addr).await?);
        }
        println!(
            "{connections} connections, {window} requests in flight on each, one client thread"
        );
        // The rush comes first in any case: the sold-out workload needs it.
        if runs("rush") || runs("sold-out") {
            let rush = drive(&mut streams, Op::Reserve, 1, answers / 10, window).await?;
            ensure!(
                rush.0.won == CAPACITY,
                "expected {CAPACITY} wins, got {}",
                rush.0.won
            );
            ensure!(rush.0.other == 0, "unexpected answers in the rush");
            if runs("rush") {
                report("rush", &rush);
            }
        }
        if runs("sold-out") {
            let sold_out = drive(&mut streams, Op::Reserve, 1 << 40, answers, window).await?;
            ensure!(
                sold_out.0.sold_out == sold_out.0.answers,
                "expected only SoldOut"
            );
            report("sold-out", &sold_out);
        }
        if runs("ping") {
            let ping = drive(&mut streams, Op::Ping, 0, answers, window).await?;
            ensure!(ping.0.pong == ping.0.answers, "expected only Pong");
            report("ping", &ping);
        }
        anyhow::Ok(())
    })?;
    match server {
        Some(server) => server.stop(),
        None => Ok(()),
    }
}
