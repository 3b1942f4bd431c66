//! Driving users through a [`Transport`]: the same for every target.
//!
//! A pipelined lane keeps up to `window` requests in flight on one
//! connection, sends each user at its intended time (or at once, if behind),
//! and measures every answer from that intended time, so a stalled target
//! cannot hide its stall by slowing the sender down. A connection-per-user
//! run opens, uses and closes a connection per user, with a bound on how
//! many are open at once. Both stop by themselves: requests time out, and
//! the run's deadline ends everything still open.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use flashsale_protocol::{OutcomeKind, ReserveOutcome};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::check::{Answer, Kind, Tally};
use crate::config::{Arrival, Config};
use crate::plan::{Lane, Planned, Retry};
use crate::shop::Shop;
use crate::stats::Stats;
use crate::transport::{ConnectError, Transport};

/// How often outstanding requests are checked for timeouts.
const TIMEOUT_SCAN: Duration = Duration::from_millis(50);

/// One worker's shared state. Single-threaded: tasks run on one
/// `current_thread` runtime, and no borrow is held across an await.
pub struct Ctx {
    /// The run.
    pub config: Config,
    /// The instant every user's arrival is measured from.
    pub t0: Instant,
    /// Past this, no new request is started (a `--duration` run).
    pub stop_sending: Option<Instant>,
    /// Past this, the run ends, answered or not.
    pub deadline: Instant,
    /// The invariant checker.
    pub tally: RefCell<Tally>,
    /// Latencies and timings.
    pub stats: RefCell<Stats>,
    /// Answers so far, for progress.
    pub answered: Cell<u64>,
    /// In a run with payments, the shop that acts on new holds.
    pub shop: Option<Rc<Shop>>,
}

impl Ctx {
    /// Records `answer` for `user`: its latency from `intended`, and its
    /// service time from `sent` (when the request left).
    pub fn record(&self, user: u64, answer: Answer, intended: Instant, sent: Instant) {
        let now = Instant::now();
        let new_hold = self.tally.borrow_mut().record(user, answer);
        if let (Some(hold), Some(shop)) = (new_hold, &self.shop) {
            shop.on_hold(user, hold);
        }
        self.stats
            .borrow_mut()
            .record_service(answer.kind(), now.saturating_duration_since(sent));
        self.stats.borrow_mut().record(
            answer.kind(),
            now.saturating_duration_since(intended),
            now.saturating_duration_since(self.t0),
        );
        self.answered.set(self.answered.get() + 1);
    }

    /// Whether the lane's next request may still start: repeats stop at
    /// the end of a `--duration`, and in a run with payments once every
    /// ticket is confirmed; the first round always runs.
    fn may_send(&self, lane: &Lane) -> bool {
        let stopped = self.stop_sending.is_some_and(|stop| Instant::now() >= stop)
            || self.shop.as_ref().is_some_and(|shop| shop.settled());
        !(lane.in_repeats() && stopped)
    }

    /// When `p` is meant to start. A burst's repeats run closed-loop (each
    /// starts when a slot frees), so they are measured from when they are
    /// sent; everything else from its place on the arrival schedule.
    fn intended(&self, p: &Planned, lane: &Lane, now: Instant) -> Instant {
        if lane.in_repeats() && self.config.arrival == Arrival::Burst {
            now
        } else {
            self.t0 + p.at
        }
    }

    fn sent(&self) {
        self.stats.borrow_mut().sent += 1;
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    user: u64,
    intended: Instant,
    sent: Instant,
    retry_after: bool,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    pending: Option<Pending>,
}

/// The requests in flight on one connection, indexed by a request id that
/// is a slot number plus a generation (so a late answer to a request that
/// already timed out is recognised and dropped).
struct InFlight {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl InFlight {
    fn new(window: usize) -> Self {
        let window = window.clamp(1, 1 << 20);
        InFlight {
            slots: (0..window).map(|_| Slot::default()).collect(),
            free: (0..window as u32).rev().collect(),
        }
    }

    fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn start(&mut self, pending: Pending) -> Option<u64> {
        let i = self.free.pop()?;
        let slot = &mut self.slots[i as usize];
        slot.pending = Some(pending);
        Some(u64::from(slot.generation) << 32 | u64::from(i))
    }

    fn finish(&mut self, id: u64) -> Option<Pending> {
        let i = (id & 0xffff_ffff) as usize;
        let slot = self.slots.get_mut(i)?;
        if u64::from(slot.generation) != id >> 32 {
            return None;
        }
        let pending = slot.pending.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(i as u32);
        Some(pending)
    }

    /// Ends every request sent before `cutoff` (all of them if `None`).
    fn expire(&mut self, cutoff: Option<Instant>) -> Vec<Pending> {
        let mut expired = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot
                .pending
                .is_some_and(|p| cutoff.is_none_or(|c| p.sent <= c))
            {
                expired.extend(slot.pending.take());
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(i as u32);
            }
        }
        expired
    }
}

/// Runs one pipelined connection's users to the end.
pub async fn run_lane<T: Transport>(ctx: Rc<Ctx>, shared: Rc<T::Shared>, mut lane: Lane) {
    let cfg = &ctx.config;
    let (mut conn, window) = match T::connect(&shared, cfg.timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flashsale-loadgen: {e}");
            return fail_rest(&ctx, &mut lane, Answer::ConnectionError);
        }
    };
    let mut inflight = InFlight::new(cfg.window.min(window));
    let mut retries: VecDeque<Pending> = VecDeque::new();
    let mut answers = Vec::with_capacity(1024);
    let mut next_scan = ctx.t0 + TIMEOUT_SCAN;
    tokio::time::sleep_until(ctx.t0).await;
    loop {
        let now = Instant::now();
        if now >= ctx.deadline {
            for p in inflight.expire(None) {
                ctx.record(p.user, Answer::Timeout, p.intended, p.sent);
            }
            return fail_rest(&ctx, &mut lane, Answer::Timeout);
        }
        // Start everything that is due, as far as the window allows.
        let mut next_due = None;
        while inflight.free.last().is_some() {
            if let Some(retry) = retries.pop_front() {
                let Some(id) = inflight.start(Pending { sent: now, ..retry }) else {
                    retries.push_front(retry);
                    break;
                };
                conn.send(id, retry.user);
                ctx.sent();
                continue;
            }
            let Some(p) = lane.peek().filter(|_| ctx.may_send(&lane)) else {
                break;
            };
            let intended = ctx.intended(&p, &lane, now);
            if intended > now {
                next_due = Some(intended);
                break;
            }
            let first = Pending {
                user: p.user,
                intended,
                sent: now,
                retry_after: p.retry == Retry::After,
            };
            let Some(id) = inflight.start(first) else {
                break;
            };
            lane.take();
            conn.send(id, p.user);
            ctx.sent();
            if p.retry == Retry::Concurrent {
                retries.push_back(Pending {
                    retry_after: false,
                    ..first
                });
            }
        }
        if inflight.outstanding() == 0 && retries.is_empty() && next_due.is_none() {
            return;
        }
        let mut until = ctx.deadline;
        if let Some(due) = next_due {
            until = until.min(due);
        }
        if inflight.outstanding() > 0 {
            until = until.min(next_scan);
        }
        if let Err(e) = conn.poll(until, &mut answers).await {
            eprintln!("flashsale-loadgen: connection lost: {e}");
            for p in inflight.expire(None).into_iter().chain(retries.drain(..)) {
                ctx.record(p.user, Answer::ConnectionError, p.intended, p.sent);
            }
            return fail_rest(&ctx, &mut lane, Answer::ConnectionError);
        }
        let now = Instant::now();
        for (id, answer) in answers.drain(..) {
            let Some(p) = inflight.finish(id) else {
                continue;
            };
            ctx.record(p.user, answer, p.intended, p.sent);
            if ctx.config.draw.is_some() && answer.kind() == Kind::Outcome(OutcomeKind::Busy) {
                // An entry shed is not an entry: ask again, measured from
                // the first intended start.
                retries.push_back(Pending {
                    sent: now,
                    retry_after: false,
                    ..p
                });
            } else if p.retry_after {
                retries.push_back(Pending {
                    user: p.user,
                    intended: now,
                    sent: now,
                    retry_after: false,
                });
            }
        }
        if now >= next_scan {
            next_scan = now + TIMEOUT_SCAN;
            if let Some(cutoff) = now.checked_sub(cfg.timeout) {
                for p in inflight.expire(Some(cutoff)) {
                    ctx.record(p.user, Answer::Timeout, p.intended, p.sent);
                }
            }
        }
    }
}

/// Records `answer` for every first-round user the lane has not sent.
pub fn fail_rest(ctx: &Ctx, lane: &mut Lane, answer: Answer) {
    while let Some(p) = lane.peek() {
        if lane.in_repeats() {
            break;
        }
        lane.take();
        ctx.record(p.user, answer, ctx.t0 + p.at, ctx.t0 + p.at);
    }
}

/// Runs every user of `lane` on a connection of its own, at most
/// `concurrency` open at once; worker `worker`'s connections take the
/// run's source addresses in turn.
pub async fn run_per_user<T: Transport + 'static>(
    ctx: Rc<Ctx>,
    shared: Rc<T::Shared>,
    mut lane: Lane,
    (concurrency, worker): (usize, usize),
) {
    let sources = ctx.config.source_addrs.clone();
    let mut opened = 0u64;
    let open = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::time::sleep_until(ctx.t0).await;
    while let Some(p) = lane.peek().filter(|_| ctx.may_send(&lane)) {
        let intended = ctx.intended(&p, &lane, Instant::now());
        tokio::time::sleep_until(intended).await;
        if Instant::now() >= ctx.deadline {
            break;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => permit,
            () = tokio::time::sleep_until(ctx.deadline) => break,
        };
        let Ok(permit) = permit else { break };
        lane.take();
        let ctx = Rc::clone(&ctx);
        let shared = Rc::clone(&shared);
        let source = (!sources.is_empty())
            .then(|| sources[crate::crowd::plan::source_of(worker, opened, sources.len())]);
        opened += 1;
        tasks.spawn_local(async move {
            one_user::<T>(&ctx, &shared, (p, source), intended).await;
            drop(permit);
        });
        // Reap finished tasks as we go, so a million users do not pile up.
        while tasks.try_join_next().is_some() {}
    }
    fail_rest(&ctx, &mut lane, Answer::Timeout);
    while tasks.join_next().await.is_some() {}
}

async fn one_user<T: Transport>(
    ctx: &Ctx,
    shared: &Rc<T::Shared>,
    (p, source): (Planned, Option<std::net::IpAddr>),
    intended: Instant,
) {
    let cfg = &ctx.config;
    let requests: usize = if p.retry == Retry::Concurrent { 2 } else { 1 };
    let deadline = |from: Instant| (from + cfg.timeout).min(ctx.deadline);
    // A connection-per-user request is served from its connect on.
    let started = Instant::now();
    let connect = T::connect_sending(shared, cfg.timeout, source, p.user, 0..requests as u64);
    let mut conn = match tokio::time::timeout_at(deadline(intended), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            for _ in 0..requests {
                ctx.record(p.user, refused(&e), intended, started);
            }
            return;
        }
        Err(_) => {
            for _ in 0..requests {
                ctx.record(p.user, Answer::ConnectionError, intended, started);
            }
            return;
        }
    };
    for _ in 0..requests {
        ctx.sent();
    }
    if await_answers(
        ctx,
        &mut conn,
        p.user,
        requests,
        (intended, started),
        deadline(Instant::now()),
    )
    .await
        && p.retry == Retry::After
    {
        let now = Instant::now();
        conn.send(2, p.user);
        ctx.sent();
        await_answers(ctx, &mut conn, p.user, 1, (now, now), deadline(now)).await;
    }
}

/// What a user whose connection was refused is answered: a target that
/// sheds connections says so, and that is `Busy`, not a failure.
fn refused(e: &ConnectError) -> Answer {
    if e.is_overloaded() {
        Answer::Reserve(ReserveOutcome::Busy { retry_after_ms: 0 })
    } else {
        Answer::ConnectionError
    }
}

/// Waits for `expected` answers; records them, or the failure. Returns
/// whether all arrived.
async fn await_answers<T: Transport>(
    ctx: &Ctx,
    conn: &mut T,
    user: u64,
    expected: usize,
    (intended, sent): (Instant, Instant),
    until: Instant,
) -> bool {
    let mut answers = Vec::with_capacity(expected);
    while answers.len() < expected {
        if Instant::now() >= until {
            for _ in answers.len()..expected {
                ctx.record(user, Answer::Timeout, intended, sent);
            }
            break;
        }
        if let Err(e) = conn.poll(until, &mut answers).await {
            let answer = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ConnectError>())
                .map_or(Answer::ConnectionError, refused);
            for _ in answers.len()..expected {
                ctx.record(user, answer, intended, sent);
            }
            break;
        }
    }
    let complete = answers.len() >= expected;
    for (_, answer) in answers {
        ctx.record(user, answer, intended, sent);
    }
    complete
}
