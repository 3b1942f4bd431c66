//! What one user of a burst does, drawn before the burst starts.
//!
//! In a sale without holds a user only reserves: once, twice at once (a
//! double click), or again after the answer (a reload). In a sale with holds
//! a winner then pays, cancels, pays and cancels at the same moment, or
//! walks away and lets the hold expire; each after a drawn delay, so that
//! the kill lands amid payments, cancels and expiries alike. Users from
//! earlier trials come back to pay holds that have already expired, and the
//! operator releases tickets now and then.
//!
//! A user stops as soon as the server is known to be dead: what it would
//! send then could not be answered, and the record would only learn that
//! its outcome is unknown.

use std::time::Duration;

use flashsale_client::{Pool, ReserveOutcome};
use tokio::sync::watch;

use super::step::{ask, Asked, Said, Step, Wave};

/// How one user reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// One reservation.
    Once,
    /// Two reservations sent at the same time (a double click).
    Twice,
    /// A reservation, then another once the first is answered (a reload).
    Again,
}

/// What a winner of a sale with holds does with the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Pays after this long (past the deadline, the payment is late).
    Confirm(Duration),
    /// Cancels after this long.
    Cancel(Duration),
    /// Pays and cancels at the same moment, after this long.
    Race(Duration),
    /// Lets the hold expire.
    Abandon,
}

/// Everything one user does in a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Reserves in a sale without holds.
    Reserve(Behaviour),
    /// Reserves in a sale with holds after `start`, then does `then` with
    /// the hold it is told about.
    Hold {
        /// How it reserves.
        behaviour: Behaviour,
        /// When it arrives, after the burst starts.
        start: Duration,
        /// What it does with its hold.
        then: Then,
    },
    /// Pays, after `start`, the hold that ended at `expires_at`, which is
    /// already past (or cancelled, or released).
    LateConfirm {
        /// When it arrives, after the burst starts.
        start: Duration,
        /// The deadline of the hold it pays.
        expires_at: u64,
    },
    /// The operator releases the user's ticket after `start`.
    Release {
        /// When it arrives, after the burst starts.
        start: Duration,
    },
}

/// What every user of a burst shares.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The burst's connections.
    pub pool: Pool,
    /// The sale.
    pub sale: String,
    /// Becomes true once the server has been killed.
    pub killed: watch::Receiver<bool>,
}

/// Plays `script` for `user`: every request, in waves of requests sent
/// together.
///
/// # Errors
///
/// As [`ask`].
pub async fn play(mut ctx: Ctx, user: u64, script: Script) -> anyhow::Result<Vec<Wave>> {
    let mut waves = Vec::new();
    let (start, asked) = match script {
        Script::Reserve(behaviour) => return reserve(&ctx, user, behaviour).await,
        Script::Hold {
            behaviour,
            start,
            then,
        } => {
            if !ctx.alive_after(start).await {
                return Ok(waves);
            }
            waves = reserve(&ctx, user, behaviour).await?;
            let Some(expires_at) = waves.iter().flatten().find_map(deadline) else {
                return Ok(waves);
            };
            let confirm = Asked::Confirm { expires_at };
            match then {
                Then::Confirm(after) => (after, vec![confirm]),
                Then::Cancel(after) => (after, vec![Asked::Cancel]),
                Then::Race(after) => (after, vec![confirm, Asked::Cancel]),
                Then::Abandon => return Ok(waves),
            }
        }
        Script::LateConfirm { start, expires_at } => (start, vec![Asked::Confirm { expires_at }]),
        Script::Release { start } => (start, vec![Asked::Release]),
    };
    if ctx.alive_after(start).await {
        waves.push(together(&ctx, user, &asked).await?);
    }
    Ok(waves)
}

/// The reservations of one user.
async fn reserve(ctx: &Ctx, user: u64, behaviour: Behaviour) -> anyhow::Result<Vec<Wave>> {
    let once = [Asked::Reserve];
    match behaviour {
        Behaviour::Once => Ok(vec![together(ctx, user, &once).await?]),
        Behaviour::Twice => Ok(vec![
            together(ctx, user, &[Asked::Reserve, Asked::Reserve]).await?,
        ]),
        Behaviour::Again => {
            let first = together(ctx, user, &once).await?;
            if first.iter().any(|s| s.said == Said::Cut) {
                return Ok(vec![first]);
            }
            Ok(vec![first, together(ctx, user, &once).await?])
        }
    }
}

/// Sends every request of `asked` at the same moment.
async fn together(ctx: &Ctx, user: u64, asked: &[Asked]) -> anyhow::Result<Wave> {
    let steps = asked
        .iter()
        .map(|&asked| ask(&ctx.pool, &ctx.sale, user, asked));
    futures_util::future::join_all(steps)
        .await
        .into_iter()
        .collect()
}

/// The deadline of the hold a reservation's answer names.
fn deadline(step: &Step) -> Option<u64> {
    match step.said {
        Said::Reserve(ReserveOutcome::Held { expires_at, .. }) => Some(expires_at),
        Said::Reserve(ReserveOutcome::AlreadyHeld { expires_at, .. }) => expires_at,
        _ => None,
    }
}

impl Ctx {
    /// Waits `delay`; false if the server was killed first.
    async fn alive_after(&mut self, delay: Duration) -> bool {
        if delay.is_zero() {
            return !*self.killed.borrow();
        }
        // Alive only if the delay ran out first; a closed channel means the
        // killer is gone, which is as good as killed.
        tokio::time::timeout(delay, self.killed.wait_for(|&k| k))
            .await
            .is_err()
    }
}
