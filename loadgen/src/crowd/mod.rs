//! A crowd of open pages: every user holds the sale's event stream open
//! before the opening, presses buy at t0 with everyone else, and waits for
//! its stream to say the sale is sold out.
//!
//! This is what a sale looks like from the browsers' side: the connections
//! that cost the fronts are not the buys, which come and go, but the
//! streams, which stay. A stream occupies its HTTP/1.1 connection (its
//! response never ends), so a user's buy goes over a second connection,
//! opened at t0 and closed after its answer, the way a browser opens
//! another connection to the same host while one is busy. A user therefore
//! holds two connections at its peak; [`plan`] counts the files and the
//! ports that takes before anything is opened.
//!
//! The measure is the time from the last ticket to each stream being told:
//! [`verdict`] draws it once every worker's results are merged.
//!
//! Workers print `streams open: N of M` once every stream of theirs is
//! settled (open or failed), and `streams told: N` once every open one was
//! told (or the deadline came), then hold the streams `--hold-after`
//! longer, so that a script can read the processes' memory at those
//! moments.

pub mod plan;
pub mod sse;
pub mod verdict;

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::check::Answer;
use crate::config::Target;
use crate::drive::Ctx;
use crate::http::{open_from, read_answer_and_body, sale_path, HttpShared, HttpTransport};
use crate::plan::Slice;
use crate::transport::Transport;

use self::sse::{says_sold_out, EventReader};
use self::verdict::StreamTally;

/// The crowd's part of a run's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crowd {
    /// Every front's `host:port`; users are dealt out over them
    /// ([`plan::target_of`]).
    pub targets: Vec<String>,
    /// How long streams stay open after every one of a worker's was told.
    pub hold_after: Duration,
    /// How soon after the last ticket every stream must be told.
    pub told_within: Duration,
}

/// One stream held open: dropping it closes the connection.
struct Held {
    _sender: SendRequest<Empty<Bytes>>,
    body: Incoming,
    reader: EventReader,
    /// When the stream said sold out, if it did while opening.
    told_at: Option<Instant>,
}

/// A worker's crowd, shared by its users' tasks.
struct Local {
    ctx: Rc<Ctx>,
    crowd: Crowd,
    worker: usize,
    /// One per target, with its minted tokens.
    fronts: Vec<Rc<HttpShared>>,
    /// Connections opened so far, to deal out source addresses.
    connections: Cell<u64>,
    /// Bounds the streams being opened, and the buys in flight.
    opening: Arc<Semaphore>,
    buying: Arc<Semaphore>,
    /// Streams not yet open or failed.
    unsettled: Cell<u64>,
    tally: RefCell<StreamTally>,
    /// Streams told, kept open until the worker lets them go.
    held: RefCell<Vec<Held>>,
}

impl Local {
    fn source(&self) -> Option<IpAddr> {
        let sources = &self.ctx.config.source_addrs;
        if sources.is_empty() {
            return None;
        }
        let n = self.connections.get();
        self.connections.set(n + 1);
        Some(sources[plan::source_of(self.worker, n, sources.len())])
    }

    fn front(&self, user: u64) -> &Rc<HttpShared> {
        &self.fronts[plan::target_of(user, self.fronts.len())]
    }

    /// One stream settled (open or failed); the last one says so.
    fn settled(&self) {
        self.unsettled.set(self.unsettled.get().saturating_sub(1));
        if self.unsettled.get() == 0 {
            let t = self.tally.borrow();
            eprintln!("streams open: {} of {}", t.opened, t.asked);
        }
    }
}

/// Runs the users of `slice` as a crowd; returns what their streams were
/// told. The buys are recorded in `ctx` like any other run's.
pub async fn run(ctx: Rc<Ctx>, slice: Slice, crowd: Crowd) -> StreamTally {
    let c = &ctx.config;
    let Target::Http {
        secret,
        issuer,
        audience,
        ..
    } = &c.target
    else {
        let mut tally = StreamTally {
            asked: slice.users,
            ..StreamTally::default()
        };
        tally.note("a crowd needs an http:// target".to_owned());
        return tally;
    };
    let mut fronts = Vec::new();
    for addr in &crowd.targets {
        let target = Target::Http {
            addr: addr.clone(),
            secret: secret.clone(),
            issuer: issuer.clone(),
            audience: audience.clone(),
        };
        match HttpTransport::prepare(&target, &c.sale) {
            Ok(shared) => fronts.push(Rc::new(shared)),
            Err(e) => {
                let mut tally = StreamTally {
                    asked: slice.users,
                    ..StreamTally::default()
                };
                tally.note(format!("{addr}: {e}"));
                return tally;
            }
        }
    }
    let concurrency = match c.connections {
        crate::config::Connections::PerUser { concurrency } => concurrency,
        crate::config::Connections::Pipelined(n) => n,
    }
    .max(1);
    let local = Rc::new(Local {
        worker: slice.worker,
        fronts,
        connections: Cell::new(0),
        opening: Arc::new(Semaphore::new(concurrency)),
        buying: Arc::new(Semaphore::new(concurrency)),
        unsettled: Cell::new(slice.users),
        tally: RefCell::new(StreamTally {
            asked: slice.users,
            ..StreamTally::default()
        }),
        held: RefCell::new(Vec::new()),
        crowd,
        ctx: Rc::clone(&ctx),
    });
    if slice.users == 0 {
        eprintln!("streams open: 0 of 0");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for user in slice.first_user..slice.first_user + slice.users {
        tasks.spawn_local(one_user(Rc::clone(&local), user));
    }
    while tasks.join_next().await.is_some() {}
    eprintln!("streams told: {}", local.tally.borrow().told_us.len());
    let hold_until = (Instant::now() + local.crowd.hold_after).min(ctx.deadline);
    tokio::time::sleep_until(hold_until).await;
    local.held.borrow_mut().clear();
    local.tally.take()
}

/// One user: its stream before t0, its buy at t0, then the stream's news.
async fn one_user(local: Rc<Local>, user: u64) {
    let ctx = &local.ctx;
    let stream = {
        let permit = Arc::clone(&local.opening).acquire_owned().await;
        let opened = tokio::time::timeout_at(ctx.t0, open_stream(&local, user)).await;
        drop(permit);
        match opened {
            Ok(Ok(held)) => {
                local.tally.borrow_mut().opened += 1;
                Some(held)
            }
            Ok(Err(why)) => {
                local.tally.borrow_mut().note(why);
                None
            }
            Err(_) => {
                local.tally.borrow_mut().note("not open by t0".to_owned());
                None
            }
        }
    };
    local.settled();
    tokio::time::sleep_until(ctx.t0).await;
    let watch = async {
        let Some(mut held) = stream else { return };
        match told(&mut held, ctx.deadline).await {
            Ok(at) => {
                let us = at.saturating_duration_since(ctx.t0).as_micros() as u64;
                local.tally.borrow_mut().told_us.push(us);
                local.held.borrow_mut().push(held);
            }
            Err(why) => {
                let mut tally = local.tally.borrow_mut();
                tally.ended_early += 1;
                tally.note(why);
            }
        }
    };
    tokio::join!(buy(&local, user), watch);
}

/// Opens `user`'s stream and reads its first event.
async fn open_stream(local: &Local, user: u64) -> Result<Held, String> {
    let front = local.front(user);
    let addr = front.addr();
    let mut sender = open_from(addr, local.source())
        .await
        .map_err(|e| format!("{addr}: connect: {e}"))?;
    let request = Request::get(format!("{}/events", sale_path(&local.ctx.config.sale)))
        .header(HOST, addr)
        .header(ACCEPT, "text/event-stream")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!(
            "{addr}: the stream was answered {}",
            response.status()
        ));
    }
    let mut held = Held {
        _sender: sender,
        body: response.into_body(),
        reader: EventReader::default(),
        told_at: None,
    };
    // Open means the first event arrived. It may already say sold out.
    while let Some(frame) = held.body.frame().await {
        let frame = frame.map_err(|e| format!("{addr}: {e}"))?;
        if let Some(data) = frame.data_ref() {
            let events = held.reader.feed(data).map_err(|e| format!("{addr}: {e}"))?;
            if !events.is_empty() {
                if events.iter().any(|d| says_sold_out(d)) {
                    held.told_at = Some(Instant::now());
                }
                return Ok(held);
            }
        }
    }
    Err(format!("{addr}: the stream ended before its first event"))
}

/// Waits, at most until `deadline`, for the stream to say sold out;
/// returns when it did.
async fn told(held: &mut Held, deadline: Instant) -> Result<Instant, String> {
    if let Some(at) = held.told_at {
        return Ok(at);
    }
    loop {
        let frame = tokio::select! {
            frame = held.body.frame() => frame,
            () = tokio::time::sleep_until(deadline) => {
                return Err("not told by the run's deadline".to_owned());
            }
        };
        let Some(frame) = frame else {
            return Err("the stream ended before it was told".to_owned());
        };
        let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
        if let Some(data) = frame.data_ref() {
            let events = held.reader.feed(data).map_err(|e| e.to_string())?;
            if events.iter().any(|d| says_sold_out(d)) {
                return Ok(Instant::now());
            }
        }
    }
}

/// `user` presses buy, on a connection of its own, and is answered.
async fn buy(local: &Local, user: u64) {
    let ctx = &local.ctx;
    let Ok(permit) = Arc::clone(&local.buying).acquire_owned().await else {
        return;
    };
    let started = Instant::now();
    let until = (started + ctx.config.timeout).min(ctx.deadline);
    let front = local.front(user);
    let source = local.source();
    ctx.stats.borrow_mut().sent += 1;
    let ask = async {
        let mut sender = open_from(front.addr(), source).await?;
        let request = front.reserve_request(user)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        read_answer_and_body(response).await
    };
    let answer = match tokio::time::timeout_at(until, ask).await {
        Ok(Ok((answer, said))) => {
            if let Some(said) = said {
                local
                    .tally
                    .borrow_mut()
                    .note(format!("buy answered {said}"));
            }
            answer
        }
        Ok(Err(_)) => Answer::ConnectionError,
        Err(_) => Answer::Timeout,
    };
    drop(permit);
    ctx.record(user, answer, ctx.t0, started);
}

/// The buyers' side of a finished crowd run, from its report: a user is
/// answered when told its fate (a ticket, or none left); a shed request
/// (`busy`) leaves it unanswered like a lost one.
pub fn buys(
    report: &crate::report::Report,
    crowd: &Crowd,
    users: u64,
    last_win: Option<Duration>,
) -> verdict::Buys {
    use crate::check::Kind;
    use flashsale_protocol::OutcomeKind;
    let count = |kinds: &[OutcomeKind]| {
        kinds
            .iter()
            .map(|k| report.count(Kind::Outcome(*k)))
            .sum::<u64>()
    };
    verdict::Buys {
        users,
        answered: count(&[
            OutcomeKind::Won,
            OutcomeKind::Held,
            OutcomeKind::AlreadyOwned,
            OutcomeKind::SoldOut,
        ]),
        wins: count(&[OutcomeKind::Won, OutcomeKind::Held]),
        capacity: report.capacity,
        last_win,
        told_within: crowd.told_within,
    }
}

/// Checks, before anything is opened, that a crowd run fits the machine:
/// the open files of each worker (after raising the limit as far as it
/// goes; workers inherit it) and the client ports.
///
/// # Errors
///
/// When it does not fit: the error says what would.
pub fn preflight(config: &crate::config::Config) -> anyhow::Result<()> {
    let Some(crowd) = &config.crowd else {
        return Ok(());
    };
    let concurrency = match config.connections {
        crate::config::Connections::PerUser { concurrency } => concurrency,
        crate::config::Connections::Pipelined(n) => n,
    };
    let needs = plan::Needs {
        users: config.users,
        processes: config.processes as u64,
        concurrency: concurrency as u64,
    };
    needs
        .check_files(raise_file_limit())
        .map_err(|e| anyhow::anyhow!("--hold-streams: {e}"))?;
    let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| plan::port_range_size(&text));
    if let Some(ports) = ports {
        let pools = if config.source_addrs.is_empty() {
            crowd.targets.len()
        } else {
            config.source_addrs.len()
        };
        needs
            .check_ports(pools as u64, ports)
            .map_err(|e| anyhow::anyhow!("--hold-streams: {e}"))?;
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit; returns the
/// limit now in force.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => u64::MAX,
    }
}
