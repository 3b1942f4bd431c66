//! A worker process for the end-to-end burst tests: `users` distinct users,
//! multiplexed over `connections` pipelined connections, all reserving at
//! once. Prints one line per user, `USER OUTCOME [TICKET]`, then `done`.
//!
//! The tests run several of these so that no process needs more than a few
//! hundred sockets, however many users are simulated.
//!
//! Usage: flashsale-burst ADDR SALE FIRST_USER USERS CONNECTIONS

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use flashsale_client::{ClientConfig, ClientError, Pool, ReserveOutcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, sale, first, users, connections] = &args[..] else {
        bail!("usage: flashsale-burst ADDR SALE FIRST_USER USERS CONNECTIONS");
    };
    let first: u64 = first.parse().context("FIRST_USER")?;
    let users: u64 = users.parse().context("USERS")?;
    let connections: usize = connections.parse().context("CONNECTIONS")?;

    let config = ClientConfig::new(addr.as_str()).request_timeout(Duration::from_secs(30));
    let pool = Pool::connect(config, connections).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for user in first..first + users {
        let pool = pool.clone();
        let sale = sale.clone();
        tasks.spawn(async move { (user, reserve_until_answered(&pool, &sale, user).await) });
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(joined) = tasks.join_next().await {
        let (user, outcome) = joined?;
        match outcome? {
            ReserveOutcome::Won { ticket } => writeln!(out, "{user} won {ticket}")?,
            ReserveOutcome::AlreadyOwned { ticket } => {
                writeln!(out, "{user} already_owned {ticket}")?
            }
            ReserveOutcome::SoldOut => writeln!(out, "{user} sold_out")?,
            other => writeln!(out, "{user} other {other:?}")?,
        }
    }
    writeln!(out, "done")?;
    out.flush()?;
    Ok(())
}

/// Reserves, retrying `Busy` a bounded number of times.
async fn reserve_until_answered(
    pool: &Pool,
    sale: &str,
    user: u64,
) -> Result<ReserveOutcome, ClientError> {
    let mut outcome = pool.reserve(sale, user).await?;
    for _ in 0..100 {
        let ReserveOutcome::Busy { retry_after_ms } = outcome else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms.min(1000)))).await;
        outcome = pool.reserve(sale, user).await?;
    }
    Ok(outcome)
}
