//! One burst of users against a server that is about to be killed.
//!
//! Every user plays its [`Script`] on a shared [`Pool`]. What each user is
//! told is the clients' record, checked later against the recovered server.
//! The server is killed by a plain thread after a drawn delay, so the kill is
//! not held back by the runtime's timer granularity; the thread then tells
//! the users, so that none of them waits on a dead server.

use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale_client::{ClientConfig, Pool, ReconnectPolicy};
use tokio::sync::watch;

use super::process::Running;
use super::script::{play, Ctx, Script};
use super::step::{Said, Wave};

/// Connections the burst's users share.
const CONNECTIONS: usize = 8;
/// How long one request may wait once the server is gone or stalled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the burst's users may take to notice the server is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a burst left behind.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every user's requests and answers, users in the order they finished.
    pub users: Vec<(u64, Vec<Wave>)>,
    /// How long after the burst started the server was killed.
    pub killed_after: Duration,
}

impl Outcome {
    /// Answers that name a ticket or settle a hold, answers that do not
    /// (`SoldOut`, `Busy`, `NoHold`, ...), and requests cut by the kill.
    pub fn counts(&self) -> (u64, u64, u64) {
        let (mut named, mut other, mut cut) = (0, 0, 0);
        for step in self
            .users
            .iter()
            .flat_map(|(_, waves)| waves.iter().flatten())
        {
            match step.said {
                Said::Cut => cut += 1,
                Said::Reserve(outcome) if outcome.ticket().is_some() => named += 1,
                Said::Confirm(flashsale_client::ConfirmOutcome::Confirmed { .. })
                | Said::Release(flashsale_client::ReleaseOutcome::Released { .. }) => named += 1,
                _ => other += 1,
            }
        }
        (named, other, cut)
    }
}

/// Runs `users` against `server` on `sale`, and `kill -9`s the server
/// `kill_after` the burst starts. Returns every answer received.
///
/// # Errors
///
/// Connecting fails, the kill fails, or the users do not finish within a
/// bound after the kill; also an answer no burst should get
/// (`UnknownSale`, `NotOpen`, a server error).
pub async fn run(
    server: Running,
    sale: &str,
    users: Vec<(u64, Script)>,
    kill_after: Duration,
) -> anyhow::Result<Outcome> {
    let config = ClientConfig::new(server.addr().to_string())
        .request_timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::no_retry());
    let pool = Pool::connect(config, CONNECTIONS)
        .await
        .context("connecting the burst's pool")?;

    let (tell, killed) = watch::channel(false);
    let start = Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(kill_after);
        let killed_after = start.elapsed();
        let result = server.kill9().map(|()| killed_after);
        // Told even if the kill failed: the users must not wait for it.
        let _ = tell.send(true);
        result
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (user, script) in users {
        let ctx = Ctx {
            pool: pool.clone(),
            sale: sale.to_owned(),
            killed: killed.clone(),
        };
        tasks.spawn(async move { (user, play(ctx, user, script).await) });
    }

    let mut outcome = Outcome::default();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT + kill_after, async {
        while let Some(joined) = tasks.join_next().await {
            let (user, waves) = joined.context("a user task panicked")?;
            outcome.users.push((user, waves?));
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
