//! The sale goes on after the crashes: its remaining tickets still sell,
//! each exactly once.
//!
//! In a sale with holds, "the rest" is what is on sale now plus the holds
//! still open, which come back when they expire: the harness waits
//! (bounded) until no hold is open, fresh buyers buy and pay what is on
//! sale, and again, until every ticket is confirmed. The first fresh buyer
//! walks away from its hold, so that every sale with holds ends with at
//! least one expiry for the check after the next restart to verify.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flashsale_client::{Pool, ReserveOutcome, SaleInfo};

use super::hold_check::info;
use super::hold_ledger::{HoldLedger, Standing};
use super::ledger::Book;
use super::step::{ask, Asked, Said, Wave};
use super::tally::Tally;

/// Buyers reserving at once.
const BUYERS: usize = 16;
/// Users handed out beyond the remaining stock before the sale is deemed
/// to oversell (every buyer may be one reservation past the last ticket).
pub const SLACK: u64 = 2 * BUYERS as u64;
/// Rounds of buying in a sale with holds: what is on sale once no hold is
/// open, then the abandoned hold, with a margin.
const HOLD_ROUNDS: u32 = 4;
/// How often the counters are read while waiting for holds to expire.
const POLL: Duration = Duration::from_millis(50);

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
    let users = first..first + remaining + SLACK;
    let bought = rush(pool, &book.sale, users, Pay::No).await?;
    let mut wins = Vec::new();
    for (user, waves) in &bought {
        book.tried_by(*user, true);
        book.told_all(*user, waves, tally);
        wins.extend(
            waves
                .iter()
                .flatten()
                .filter_map(|s| Some((*user, s.ticket()?))),
        );
    }
    fresh_tickets(
        &book.sale,
        book.capacity,
        &book.held_tickets(),
        &wins,
        tally,
    );
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

/// Sells and confirms what is left of `ledger`'s sale to fresh users (taken
/// from `next_user` on), waiting for open holds to expire, then checks: the
/// fresh buyers confirmed distinct tickets within the capacity that nobody
/// had confirmed, exactly as many as were not confirmed, and every ticket
/// is confirmed.
///
/// # Errors
///
/// A request fails, an answer no fresh buyer should get, or the open holds
/// do not come back within a bound.
pub async fn sell_rest_holds(
    pool: &Pool,
    ledger: &mut HoldLedger,
    next_user: &mut u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let sale = ledger.sale.clone();
    let confirmed_before: HashSet<u32> = ledger
        .holds(|k| k.standing == Standing::Confirmed)
        .into_iter()
        .map(|(_, k)| k.ticket)
        .collect();
    let open = info(pool, &sale).await?;
    let mut wins = Vec::new();
    let mut last = open.clone();
    for round in 0..HOLD_ROUNDS {
        last = until_settled(pool, &sale, ledger.hold).await?;
        if last.confirmed >= ledger.capacity {
            break;
        }
        let first = *next_user;
        *next_user += u64::from(last.remaining) + SLACK;
        let pay = if round == 0 {
            Pay::AllBut(first)
        } else {
            Pay::All
        };
        for (user, waves) in rush(pool, &sale, first..*next_user, pay).await? {
            ledger.told(user, &waves, tally);
            wins.extend(waves.iter().flatten().filter_map(|s| match s.said {
                Said::Confirm(flashsale_client::ConfirmOutcome::Confirmed { ticket }) => {
                    Some((user, ticket))
                }
                _ => None,
            }));
        }
    }
    fresh_tickets(&sale, ledger.capacity, &confirmed_before, &wins, tally);
    let unconfirmed = u64::from(ledger.capacity - open.confirmed.min(ledger.capacity));
    if wins.len() as u64 > unconfirmed {
        tally.oversold(format!(
            "sale {sale}: {} tickets confirmed after the crashes, {unconfirmed} were not confirmed",
            wins.len()
        ));
    }
    if last.confirmed < ledger.capacity {
        tally.other(format!(
            "sale {sale}: {} of {} confirmed after selling the rest ({last:?})",
            last.confirmed, ledger.capacity
        ));
    }
    ledger.check(pool, tally).await
}

/// Who pays their hold in a rush.
#[derive(Debug, Clone, Copy)]
enum Pay {
    /// Nobody: a sale without holds.
    No,
    /// Every buyer, at once.
    All,
    /// Every buyer but this user, who lets the hold expire.
    AllBut(u64),
}

/// Fresh users of `users` buying at once until `SoldOut`, each paying its
/// hold at once as `pay` says.
async fn rush(
    pool: &Pool,
    sale: &str,
    users: Range<u64>,
    pay: Pay,
) -> anyhow::Result<Vec<(u64, Vec<Wave>)>> {
    let next = Arc::new(AtomicU64::new(users.start));
    let mut buyers = tokio::task::JoinSet::new();
    for _ in 0..BUYERS {
        let (pool, next, sale, limit) =
            (pool.clone(), Arc::clone(&next), sale.to_owned(), users.end);
        buyers.spawn(async move {
            let mut bought = Vec::new();
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user >= limit {
                    return anyhow::Ok(bought);
                }
                let reserved = ask(&pool, &sale, user, Asked::Reserve).await?;
                let expires_at = match (reserved.said, pay) {
                    (Said::Reserve(ReserveOutcome::SoldOut), _) => return Ok(bought),
                    (Said::Reserve(ReserveOutcome::Won { .. }), Pay::No) => None,
                    (Said::Reserve(ReserveOutcome::Held { .. }), Pay::AllBut(u)) if u == user => {
                        None
                    }
                    (
                        Said::Reserve(ReserveOutcome::Held { expires_at, .. }),
                        Pay::All | Pay::AllBut(_),
                    ) => Some(expires_at),
                    (other, _) => bail!("fresh user {user} of sale {sale} was answered {other:?}"),
                };
                let mut waves = vec![vec![reserved]];
                if let Some(expires_at) = expires_at {
                    waves.push(vec![
                        ask(&pool, &sale, user, Asked::Confirm { expires_at }).await?,
                    ]);
                }
                bought.push((user, waves));
            }
        });
    }
    let mut bought = Vec::new();
    while let Some(joined) = buyers.join_next().await {
        bought.extend(joined.context("a buyer panicked")??);
    }
    Ok(bought)
}

/// Checks that fresh buyers got distinct tickets within the capacity, none
/// of them `taken` before.
fn fresh_tickets(
    sale: &str,
    capacity: u32,
    taken: &HashSet<u32>,
    wins: &[(u64, u32)],
    tally: &mut Tally,
) {
    let mut fresh = HashSet::new();
    for &(user, ticket) in wins {
        if !(1..=capacity).contains(&ticket) {
            tally.oversold(format!(
                "sale {sale}: fresh user {user} won ticket {ticket}, outside 1..={capacity}"
            ));
        }
        if taken.contains(&ticket) || !fresh.insert(ticket) {
            tally.duplicate(format!(
                "sale {sale}: fresh user {user} won ticket {ticket}, already sold"
            ));
        }
    }
}

/// The counters of `sale` once no hold is open (every ticket on sale or
/// confirmed), waiting at most a hold's length and a margin for the open
/// holds to expire.
async fn until_settled(pool: &Pool, sale: &str, hold: Duration) -> anyhow::Result<SaleInfo> {
    let deadline = Instant::now() + hold + Duration::from_secs(5);
    loop {
        let now = info(pool, sale).await?;
        if now.remaining + now.confirmed == now.capacity {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("sale {sale}: holds still open after {hold:?} and a margin: {now:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
