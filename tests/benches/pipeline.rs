//! The server's pipelined hot path over loopback, driven by raw frames.
//!
//! Run: `cargo bench -p flashsale-tests --bench pipeline` (one workload:
//! `... --bench pipeline -- pipeline/sold-out`).
//!
//! The native client spends more per request (a task and a oneshot channel)
//! than the server does, so this benchmark bypasses it: one single-threaded
//! runtime drives every connection, writes pre-encoded `Reserve` (or `Ping`)
//! frames in large batches with a deep window in flight, and reads answers in
//! large reads, looking only at the bytes it needs to count them. Client and
//! server share the machine's cores. Each workload starts its own release
//! `flashsale-server` (2 worker threads, fsync durability); one iteration is:
//!
//! - `rush`: a fresh sale of 200 tickets, `PIPELINE_ANSWERS / 10` distinct
//!   users (the 200 wins wait for the disk, everyone else is answered at
//!   once);
//! - `sold-out`: `PIPELINE_ANSWERS` distinct users on a sold-out sale, each
//!   answered `SoldOut`;
//! - `ping`: `PIPELINE_ANSWERS` pings, the protocol's floor.
//!
//! Every answer is checked (frame shape, outcome, and the sum of the ids
//! answered on each connection). Criterion reports the time per iteration
//! and answers per second; after each workload a line gives the server's CPU
//! time per answer, warm-up included.
//!
//! Tunables (environment): `PIPELINE_CONNECTIONS` (default 8),
//! `PIPELINE_WINDOW` (requests in flight per connection, default 8192),
//! `PIPELINE_ANSWERS` (default 20,000,000), and `PIPELINE_ADDR` (drive an
//! already running server instead of starting one, to profile it; start it
//! fresh for each run, with `--sale "bench:200,$(seq -f 'r%04g:200' -s, 0
//! 999)"`: the rush's sales and the sold-out sale).

mod common;

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use common::{CpuPerAnswer, FreshSales, Server, CAPACITY, SALE};
use criterion::{criterion_group, criterion_main, Criterion};
use flashsale_protocol::codec::frame;
use flashsale_protocol::handshake::handshake;
use flashsale_protocol::{ClientCodec, ClientFrame, Request, RequestFrame, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Requests written per `write` call.
const BATCH: usize = 1024;
/// Bytes asked of the socket per read.
const READ_LEN: usize = 256 * 1024;

#[derive(Clone, Copy)]
enum Op<'a> {
    /// A reservation in this sale.
    Reserve(&'a str),
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
            Op::Reserve(sale) => Request::Reserve {
                sale: sale.to_owned(),
                user: 0,
            },
            Op::Ping => Request::Ping,
        };
        let user_at = matches!(request, Request::Reserve { .. });
        let bytes = frame(&ClientFrame::Request(RequestFrame { id: 0, request }))?;
        // prefix, ClientFrame::Request index, then the id; the user is last.
        let user_at = user_at.then(|| bytes.len() - 8);
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
    let mut codec = ClientCodec::new(DEFAULT_MAX_FRAME_LEN);
    let mut early = BytesMut::new();
    handshake(&mut stream, None, &mut codec, &mut early).await?;
    ensure!(early.is_empty(), "bytes after the welcome");
    Ok(stream)
}

/// Sends requests `0..total` on `stream`, at most `window` unanswered, and
/// tallies the answers.
async fn drive_one(
    stream: &mut TcpStream,
    op: Op<'_>,
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
    op: Op<'_>,
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

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// The tunables, read from the environment.
struct Config {
    connections: u64,
    window: u64,
    answers: u64,
    addr: Option<SocketAddr>,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let addr = match std::env::var("PIPELINE_ADDR") {
            Ok(addr) => Some(
                addr.parse()
                    .with_context(|| format!("PIPELINE_ADDR={addr}"))?,
            ),
            Err(_) => None,
        };
        Ok(Config {
            connections: env_u64("PIPELINE_CONNECTIONS", 8)?.max(1),
            window: env_u64("PIPELINE_WINDOW", 8192)?.max(1),
            answers: env_u64("PIPELINE_ANSWERS", 20_000_000)?,
            addr,
        })
    }
}

/// A server (unless `PIPELINE_ADDR` names one), the connections to it, and
/// the server's CPU time per answer so far.
struct Pipeline {
    server: Option<(Server, CpuPerAnswer)>,
    runtime: Runtime,
    streams: Vec<TcpStream>,
    window: u64,
    /// The first user of the next run; no user is sent twice.
    next_user: u64,
}

impl Pipeline {
    fn start(config: &Config, sales: &str) -> anyhow::Result<Pipeline> {
        let (server, addr) = match config.addr {
            Some(addr) => (None, addr),
            None => {
                let server = Server::start(sales)?;
                let addr = server.addr();
                let cpu = CpuPerAnswer::start(&server)?;
                (Some((server, cpu)), addr)
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let streams = runtime.block_on(async {
            let mut streams = Vec::new();
            for _ in 0..config.connections {
                streams.push(connect(addr).await?);
            }
            anyhow::Ok(streams)
        })?;
        Ok(Pipeline {
            server,
            runtime,
            streams,
            window: config.window,
            next_user: 1,
        })
    }

    /// Sends `total` requests and tallies their answers.
    fn run(&mut self, op: Op, total: u64) -> anyhow::Result<(Tally, Duration)> {
        let first_user = self.next_user;
        self.next_user += total;
        let run = drive(&mut self.streams, op, first_user, total, self.window);
        let (tally, elapsed) = self.runtime.block_on(run)?;
        if let Some((_, cpu)) = &mut self.server {
            cpu.add(tally.answers);
        }
        Ok((tally, elapsed))
    }

    /// Sends a rush of `total` requests for a fresh `sale`, and checks it
    /// sold every ticket and nothing else.
    fn rush(&mut self, sale: &str, total: u64) -> anyhow::Result<Duration> {
        let (tally, elapsed) = self.run(Op::Reserve(sale), total)?;
        ensure!(
            tally.won == CAPACITY,
            "expected {CAPACITY} wins, got {} (is the sale fresh?)",
            tally.won
        );
        ensure!(tally.other == 0, "unexpected answers in the rush");
        Ok(elapsed)
    }

    /// Forgets the CPU time counted so far.
    fn reset(&mut self) -> anyhow::Result<()> {
        if let Some((server, cpu)) = &mut self.server {
            *cpu = CpuPerAnswer::start(server)?;
        }
        Ok(())
    }

    /// Prints the server's CPU time per answer since its start or
    /// [`reset`](Self::reset), and stops it.
    fn finish(self, name: &str) -> anyhow::Result<()> {
        match self.server {
            Some((server, cpu)) => {
                println!("{name}: {}\n", cpu.report(&server)?);
                server.stop()
            }
            None => Ok(()),
        }
    }
}

/// Runs one workload of `answers` answers per iteration.
fn workload(
    c: &mut Criterion,
    name: &str,
    answers: u64,
    setup: impl FnOnce() -> anyhow::Result<Pipeline>,
    iteration: impl FnMut(&mut Pipeline) -> anyhow::Result<Duration>,
) {
    let ran = common::workload(c, "pipeline", name, answers, setup, iteration);
    if let Some(pipeline) = ran {
        pipeline.finish(name).expect("the server stops cleanly");
    }
}

fn config() -> Config {
    Config::from_env().expect("PIPELINE_* settings")
}

fn rush(c: &mut Criterion) {
    let config = config();
    let total = config.answers / 10;
    let mut sales = FreshSales::default();
    workload(
        c,
        "rush",
        total,
        || Pipeline::start(&config, &common::rush_sales()),
        |pipeline| pipeline.rush(&sales.take(), total),
    );
}

fn sold_out(c: &mut Criterion) {
    let config = config();
    workload(
        c,
        "sold-out",
        config.answers,
        || {
            let mut pipeline = Pipeline::start(&config, &common::one_sale())?;
            pipeline.rush(SALE, 10 * CAPACITY)?;
            pipeline.reset()?;
            Ok(pipeline)
        },
        |pipeline| {
            let (tally, elapsed) = pipeline.run(Op::Reserve(SALE), config.answers)?;
            ensure!(tally.sold_out == tally.answers, "expected only SoldOut");
            Ok(elapsed)
        },
    );
}

fn ping(c: &mut Criterion) {
    let config = config();
    workload(
        c,
        "ping",
        config.answers,
        || Pipeline::start(&config, &common::one_sale()),
        |pipeline| {
            let (tally, elapsed) = pipeline.run(Op::Ping, config.answers)?;
            ensure!(tally.pong == tally.answers, "expected only Pong");
            Ok(elapsed)
        },
    );
}

criterion_group!(benches, rush, sold_out, ping);
criterion_main!(benches);
