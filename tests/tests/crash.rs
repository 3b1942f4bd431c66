//! `kill -9` in the middle of a rush, several times over one data directory:
//! every win a client was told survives, no ticket is sold twice, and the
//! sale then sells exactly its remaining tickets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashsale_client::{Pool, ReserveOutcome};
use flashsale_tests::{client_config, runtime, ServerProcess};

const CAPACITY: u32 = 3000;
const TASKS: u64 = 64;
const ROUNDS: u64 = 3;

#[test]
fn acknowledged_wins_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let rt = runtime();
    let mut acknowledged: BTreeMap<u64, u32> = BTreeMap::new();
    let tried = Arc::new(Mutex::new(Vec::new()));
    let mut next_user = 1u64;

    for round in 0..ROUNDS {
        let server = ServerProcess::start(&data, &["--sale", &format!("s:{CAPACITY}")])?;
        let told = Arc::new(Mutex::new(Vec::new()));
        let first = next_user;
        next_user += 100_000;
        rt.block_on(async {
            let pool = Pool::connect(client_config(server.addr()), 8).await?;
            for t in 0..TASKS {
                let (pool, told, tried) = (pool.clone(), Arc::clone(&told), Arc::clone(&tried));
                tokio::spawn(async move {
                    // Each task buys for one user after another until the
                    // server dies under it.
                    for user in (first + t..first + 100_000).step_by(TASKS as usize) {
                        tried.lock().unwrap().push(user);
                        match pool.reserve("s", user).await {
                            Ok(ReserveOutcome::Won { ticket }) => {
                                told.lock().unwrap().push((user, ticket))
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
            }
            // Kill once this round has seen some wins (a different number each
            // round), or after a bounded wait.
            let target = 50 * (round as usize + 1);
            for _ in 0..2000 {
                if told.lock().unwrap().len() >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(())
        })?;
        server.kill9()?;
        let told = told.lock().unwrap().clone();
        assert!(!told.is_empty(), "round {round}: some wins before the kill");
        for (user, ticket) in told {
            assert!(
                acknowledged.insert(user, ticket).is_none(),
                "user {user} won twice"
            );
        }
    }

    // Recovery: every acknowledged win is there, with its ticket.
    let server = ServerProcess::start(&data, &[])?;
    rt.block_on(async {
        let pool = Pool::connect(client_config(server.addr()), 4).await?;
        for (&user, &ticket) in &acknowledged {
            assert_eq!(
                pool.lookup("s", user).await?,
                Some(ticket),
                "acknowledged win of {user} lost"
            );
        }
        // No ticket has two owners, among every user who ever tried.
        let status = pool.status("s").await?;
        let tried = tried.lock().unwrap().clone();
        let mut lookups = tokio::task::JoinSet::new();
        for chunk in tried.chunks(tried.len().div_ceil(32)) {
            let (pool, chunk) = (pool.clone(), chunk.to_vec());
            lookups.spawn(async move {
                let mut held = Vec::new();
                for user in chunk {
                    if let Some(ticket) = pool.lookup("s", user).await? {
                        held.push((ticket, user));
                    }
                }
                anyhow::Ok(held)
            });
        }
        let mut holders = BTreeMap::new();
        while let Some(held) = lookups.join_next().await {
            for (ticket, user) in held?? {
                assert!(
                    holders.insert(ticket, user).is_none(),
                    "ticket {ticket} sold twice"
                );
            }
        }
        assert_eq!(
            holders.len(),
            status.sold as usize,
            "every sold ticket has one holder"
        );
        assert!(status.sold <= CAPACITY);

        // The sale continues: exactly the remaining tickets can still be sold.
        let mut fresh = BTreeSet::new();
        let mut user = 1_000_000u64;
        loop {
            match pool.reserve("s", user).await? {
                ReserveOutcome::Won { ticket } => assert!(fresh.insert(ticket)),
                ReserveOutcome::SoldOut => break,
                other => anyhow::bail!("unexpected {other:?}"),
            }
            user += 1;
            anyhow::ensure!(
                user < 1_000_000 + u64::from(CAPACITY) + 1,
                "sold more than the capacity"
            );
        }
        assert_eq!(fresh.len() + holders.len(), CAPACITY as usize);
        assert!(fresh
            .iter()
            .all(|t| !holders.contains_key(t) && (1..=CAPACITY).contains(t)));
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
