//! One burst of users against a server that is about to be killed.
//!
//! Every user reserves on a shared [`Pool`]; some send two reservations at
//! once, some reserve again after their answer. What each user is told is
//! the clients' record, checked later against the recovered server. The
//! server is killed by a plain thread after a drawn delay, so the kill is
//! not held back by the runtime's timer granularity.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale_client::{ClientConfig, ClientError, Pool, ReconnectPolicy, ReserveOutcome};

use super::process::Running;

/// Connections the burst's users share.
const CONNECTIONS: usize = 8;
/// How long one request may wait once the server is gone or stalled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the burst's users may take to notice the server is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `Busy` answers a user accepts before giving up.
const BUSY_RETRIES: u32 = 20;

/// How one user behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// One reservation.
    Once,
    /// Two reservations sent at the same time (a double click).
    Twice,
    /// A reservation, then another once the first is answered (a reload).
    Again,
}

/// An answer that names a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `Won { ticket }`.
    Won(u32),
    /// `AlreadyOwned { ticket }`.
    AlreadyOwned(u32),
}

/// What a burst left behind.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every ticket-naming answer, in the order they were collected.
    pub acks: Vec<(u64, Ack)>,
    /// Answers that name no ticket (`SoldOut`, `Busy`) or requests that failed.
    pub other_answers: u64,
    /// Requests whose outcome is unknown (cut by the kill).
    pub cut: u64,
    /// How long after the burst started the server was killed.
    pub killed_after: Duration,
}

/// Runs `users` against `server` on `sale`, and `kill -9`s the server
/// `kill_after` the burst starts. Returns every answer received.
///
/// # Errors
///
/// Connecting fails, the kill fails, or the users do not finish within a
/// bound after the kill; also an answer no burst should get
/// (`UnknownSale`, `NotOpen`, a server error other than a lost log).
pub async fn run(
    server: Running,
    sale: &str,
    users: Vec<(u64, Behaviour)>,
    kill_after: Duration,
) -> anyhow::Result<Outcome> {
    let config = ClientConfig::new(server.addr().to_string())
        .request_timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::no_retry());
    let pool = Pool::connect(config, CONNECTIONS)
        .await
        .context("connecting the burst's pool")?;

    let start = Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(kill_after);
        let killed_after = start.elapsed();
        server.kill9().map(|()| killed_after)
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (user, behaviour) in users {
        let (pool, sale) = (pool.clone(), sale.to_owned());
        tasks.spawn(async move { (user, one_user(&pool, &sale, user, behaviour).await) });
    }

    let mut outcome = Outcome::default();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT + kill_after, async {
        while let Some(joined) = tasks.join_next().await {
            let (user, answers) = joined.context("a user task panicked")?;
            for answer in answers {
                match answer? {
                    Answer::Ack(ack) => outcome.acks.push((user, ack)),
                    Answer::NoTicket => outcome.other_answers += 1,
                    Answer::Cut => outcome.cut += 1,
                }
            }
        }
        anyhow::Ok(())
    })
    .await;
    tasks.abort_all();
    let killed = tokio::task::spawn_blocking(move || killer.join())
        .await
        .context("joining the killer")?;
    outcome.killed_after = match killed {
        Ok(result) => result.context("kill -9 during the burst")?,
        Err(_) => anyhow::bail!("the killer thread panicked"),
    };
    drained.context("the burst's users did not finish after the kill")??;
    Ok(outcome)
}

/// What one request came back with.
enum Answer {
    Ack(Ack),
    NoTicket,
    Cut,
}

async fn one_user(
    pool: &Pool,
    sale: &str,
    user: u64,
    behaviour: Behaviour,
) -> Vec<anyhow::Result<Answer>> {
    match behaviour {
        Behaviour::Once => vec![reserve(pool, sale, user).await],
        Behaviour::Twice => {
            let (a, b) = tokio::join!(reserve(pool, sale, user), reserve(pool, sale, user));
            vec![a, b]
        }
        Behaviour::Again => {
            let first = reserve(pool, sale, user).await;
            if matches!(first, Ok(Answer::Cut) | Err(_)) {
                return vec![first];
            }
            vec![first, reserve(pool, sale, user).await]
        }
    }
}

async fn reserve(pool: &Pool, sale: &str, user: u64) -> anyhow::Result<Answer> {
    for _ in 0..BUSY_RETRIES {
        match pool.reserve(sale, user).await {
            Ok(ReserveOutcome::Won { ticket }) => return Ok(Answer::Ack(Ack::Won(ticket))),
            Ok(ReserveOutcome::AlreadyOwned { ticket }) => {
                return Ok(Answer::Ack(Ack::AlreadyOwned(ticket)))
            }
            Ok(ReserveOutcome::SoldOut) => return Ok(Answer::NoTicket),
            Ok(ReserveOutcome::Busy { retry_after_ms }) => {
                let wait = u64::from(retry_after_ms).clamp(1, 100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Ok(other) => anyhow::bail!("user {user} was answered {other:?} on sale {sale}"),
            Err(e) if cut_by_the_kill(&e) => return Ok(Answer::Cut),
            Err(e) => anyhow::bail!("user {user}: {e}"),
        }
    }
    Ok(Answer::NoTicket)
}

/// Whether an error is what a client sees when the server dies under it:
/// the request was lost, or it could not be sent for lack of a server.
fn cut_by_the_kill(e: &ClientError) -> bool {
    e.outcome_unknown() || matches!(e, ClientError::ConnectTimeout)
}
