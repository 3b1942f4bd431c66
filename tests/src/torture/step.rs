//! One request of a run and what came of it: the answer, or that the kill
//! cut it, with the instants it was sent and answered.
//!
//! The instants matter for holds. The server reads the same wall clock once
//! it has the request's bytes and before it answers, so it decides at some
//! millisecond between `sent_ms` and `answered_ms`. A hold found gone is
//! therefore an expiry only if `answered_ms` reached its deadline, and a
//! confirmation sent at or after the deadline must be refused.
//!
//! `Busy` answers are retried here, a bounded number of times, so that the
//! record only ever holds answers that decided something.

use std::time::Duration;

use anyhow::bail;
use flashsale_client::{
    ClientError, ConfirmOutcome, ErrorCode, Pool, ReleaseOutcome, ReserveOutcome,
};
use flashsale_core::clock::now_ms;

/// `Busy` answers a request accepts before giving up.
const BUSY_RETRIES: u32 = 20;

/// What a user asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A reservation.
    Reserve,
    /// A payment confirmation of the hold that ends at `expires_at`; its
    /// payment reference follows from the user and the deadline, so that a
    /// retry of the same payment is recognised as one.
    Confirm {
        /// The deadline of the hold being paid, Unix milliseconds.
        expires_at: u64,
    },
    /// The buyer gives up their hold.
    Cancel,
    /// The operator releases the user's ticket.
    Release,
}

/// What the server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// The answer to a reservation (never `Busy`).
    Reserve(ReserveOutcome),
    /// The answer to a confirmation.
    Confirm(ConfirmOutcome),
    /// The answer to a cancel or a release.
    Release(ReleaseOutcome),
    /// `Busy` every time: nothing was decided.
    Busy,
    /// No answer: the kill cut the request, which may or may not have been
    /// applied.
    Cut,
}

/// One request and its answer.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// What was asked.
    pub asked: Asked,
    /// What came back.
    pub said: Said,
    /// Unix milliseconds just before the (last) attempt was sent.
    pub sent_ms: u64,
    /// Unix milliseconds just after its answer (or its failure) arrived.
    pub answered_ms: u64,
}

impl Step {
    /// The ticket a reservation's answer names, if any.
    pub fn ticket(&self) -> Option<u32> {
        match self.said {
            Said::Reserve(outcome) => outcome.ticket(),
            _ => None,
        }
    }
}

/// Requests sent at the same moment (a double click, a payment racing a
/// cancel): their answers may come back in any order.
pub type Wave = Vec<Step>;

/// The payment reference of `user`'s hold ending at `expires_at`.
pub fn payment_ref(user: u64, expires_at: u64) -> String {
    format!("pay-{user}-{expires_at}")
}

/// Sends `asked` for `user` on `sale`, retrying while the server is busy.
///
/// # Errors
///
/// A failure that is not the kill's doing (a server error, a refused
/// request), or an answer no run should get (an unknown sale, a sale not
/// open, paused or closed).
pub async fn ask(pool: &Pool, sale: &str, user: u64, asked: Asked) -> anyhow::Result<Step> {
    let mut sent_ms = now_ms();
    for _ in 0..BUSY_RETRIES {
        sent_ms = now_ms();
        let answer = send(pool, sale, user, asked).await;
        let answered_ms = now_ms();
        let said = match answer {
            Ok(said) => said,
            Err(Wait(retry_after_ms)) => {
                let wait = u64::from(retry_after_ms).clamp(1, 100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            Err(Failed(e)) if cut_by_the_kill(&e) => Said::Cut,
            Err(Failed(e)) => bail!("user {user}, {asked:?} on sale {sale}: {e}"),
        };
        refuse_unexpected(said, sale, user)?;
        return Ok(Step {
            asked,
            said,
            sent_ms,
            answered_ms,
        });
    }
    Ok(Step {
        asked,
        said: Said::Busy,
        sent_ms,
        answered_ms: now_ms(),
    })
}

/// Why a request did not decide anything.
enum NoAnswer {
    Wait(u32),
    Failed(ClientError),
}
use NoAnswer::{Failed, Wait};

/// One attempt; `Err(Wait)` when the server asks to come back later.
async fn send(pool: &Pool, sale: &str, user: u64, asked: Asked) -> Result<Said, NoAnswer> {
    let said = match asked {
        Asked::Reserve => match pool.reserve(sale, user).await {
            Ok(ReserveOutcome::Busy { retry_after_ms }) => return Err(Wait(retry_after_ms)),
            answer => answer.map(Said::Reserve),
        },
        Asked::Confirm { expires_at } => pool
            .confirm(sale, user, &payment_ref(user, expires_at))
            .await
            .map(Said::Confirm),
        Asked::Cancel => pool.cancel(sale, user).await.map(Said::Release),
        Asked::Release => pool.release(sale, user).await.map(Said::Release),
    };
    match said {
        Ok(said) => Ok(said),
        Err(ClientError::Busy { retry_after_ms }) => Err(Wait(retry_after_ms)),
        Err(e) => Err(Failed(e)),
    }
}

/// Answers that mean the harness itself is wrong (it asked about a sale
/// that does not exist or is not selling), not the server.
fn refuse_unexpected(said: Said, sale: &str, user: u64) -> anyhow::Result<()> {
    let unexpected = matches!(
        said,
        Said::Reserve(
            ReserveOutcome::UnknownSale
                | ReserveOutcome::NotOpen { .. }
                | ReserveOutcome::Paused
                | ReserveOutcome::Closed
        ) | Said::Confirm(ConfirmOutcome::UnknownSale | ConfirmOutcome::NoHolds)
            | Said::Release(ReleaseOutcome::UnknownSale | ReleaseOutcome::NoHolds)
    );
    if unexpected {
        bail!("user {user} was answered {said:?} on sale {sale}");
    }
    Ok(())
}

/// Whether an error is what a client sees when the server dies under it:
/// the request was lost, or it could not be sent for lack of a server; or,
/// in a cluster, a leader deposed while the request's record was on its
/// way (`LOG_UNAVAILABLE`: it may have been recorded).
fn cut_by_the_kill(e: &ClientError) -> bool {
    e.outcome_unknown()
        || matches!(e, ClientError::ConnectTimeout)
        || matches!(e, ClientError::Server(frame) if frame.code == ErrorCode::LOG_UNAVAILABLE)
}
