//! The sale goes on after the crashes: its remaining tickets still sell,
//! each exactly once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use flashsale_client::{Pool, ReserveOutcome};

use super::burst::Ack;
use super::ledger::{Book, Tally};

/// Buyers reserving at once.
const BUYERS: usize = 16;
/// Users handed out beyond the remaining stock before the sale is deemed
/// to oversell (every buyer may be one reservation past the last ticket).
pub const SLACK: u64 = 2 * BUYERS as u64;

/// Sells what is left of `book`'s sale to fresh users `first..` until
/// `SoldOut`, then checks: the winners got distinct tickets within the
/// capacity that nobody held before, exactly as many as were left, and the
/// sale then counts as sold out.
///
/// # Errors
///
/// A request fails, or gets an answer no fresh buyer should get.
pub async fn sell_rest(
    pool: &Pool,
    book: &mut Book,
    first: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let status = pool.status(&book.sale).await.context("status")?;
    let remaining = u64::from(status.remaining);
    let limit = first + remaining + SLACK;
    let next = Arc::new(AtomicU64::new(first));
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..BUYERS {
        let (pool, next, sale) = (pool.clone(), Arc::clone(&next), book.sale.clone());
        buyers.spawn(async move {
            let mut won = Vec::new();
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user >= limit {
                    return anyhow::Ok(won);
                }
                match buy(&pool, &sale, user).await? {
                    Some(ticket) => won.push((user, ticket)),
                    None => return Ok(won),
                }
            }
        });
    }
    let mut wins = Vec::new();
    while let Some(joined) = buyers.join_next().await {
        wins.extend(joined.context("a buyer panicked")??);
    }

    let held = book.held_tickets();
    let mut fresh = HashSet::new();
    for &(user, ticket) in &wins {
        if !(1..=book.capacity).contains(&ticket) {
            tally.oversold(format!(
                "sale {}: fresh user {user} won ticket {ticket}, outside 1..={}",
                book.sale, book.capacity
            ));
        }
        if held.contains(&ticket) || !fresh.insert(ticket) {
            tally.duplicate(format!(
                "sale {}: fresh user {user} won ticket {ticket}, already sold",
                book.sale
            ));
        }
        book.tried_by(user, true);
        book.told(user, Ack::Won(ticket), tally);
    }
    let sold = wins.len() as u64;
    if sold > remaining {
        tally.oversold(format!(
            "sale {}: {sold} tickets sold after the crashes, {remaining} were left",
            book.sale
        ));
    } else if sold < remaining {
        tally.other(format!(
            "sale {}: SoldOut after {sold} more tickets, {remaining} were left",
            book.sale
        ));
    }
    book.check(pool, tally).await?;
    if !book.sold_out() {
        tally.other(format!(
            "sale {}: {} of {} sold after selling the rest",
            book.sale, book.sold, book.capacity
        ));
    }
    Ok(())
}

/// One fresh user's reservation: `Some(ticket)` on a win, `None` on
/// `SoldOut`.
async fn buy(pool: &Pool, sale: &str, user: u64) -> anyhow::Result<Option<u32>> {
    for _ in 0..100 {
        match pool.reserve(sale, user).await {
            Ok(ReserveOutcome::Won { ticket }) => return Ok(Some(ticket)),
            Ok(ReserveOutcome::SoldOut) => return Ok(None),
            Ok(ReserveOutcome::Busy { retry_after_ms }) => {
                let wait = u64::from(retry_after_ms).clamp(1, 100);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Ok(other) => bail!("fresh user {user} of sale {sale} was answered {other:?}"),
            Err(e) => bail!("fresh user {user} of sale {sale}: {e}"),
        }
    }
    bail!("fresh user {user} of sale {sale} was busy 100 times")
}
