//! The opening-second rush against the real binary: 20,000 distinct users,
//! 200 tickets, several client processes with pipelined connections.

use std::collections::{BTreeSet, HashMap};

use flashsale_client::{Pool, ReserveOutcome, SaleState};
use flashsale_tests::{burst, client_config, runtime, ServerProcess, Told};

const USERS: u64 = 20_000;
const CAPACITY: u32 = 200;

#[test]
fn twenty_thousand_users_get_exactly_two_hundred_tickets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "drop:200"])?;

    let told = burst(server.addr(), "drop", 1, USERS, 4, 16)?;
    assert_eq!(told.len(), USERS as usize, "every user is answered");

    let winners: HashMap<u64, u32> = told
        .iter()
        .filter_map(|(user, t)| match t {
            Told::Won(ticket) => Some((*user, *ticket)),
            _ => None,
        })
        .collect();
    let sold_out = told.iter().filter(|(_, t)| *t == Told::SoldOut).count();
    assert_eq!(winners.len(), CAPACITY as usize, "exactly {CAPACITY} wins");
    assert_eq!(
        sold_out,
        (USERS - u64::from(CAPACITY)) as usize,
        "everyone else is told sold out"
    );
    let tickets: BTreeSet<u32> = winners.values().copied().collect();
    assert_eq!(
        tickets,
        (1..=CAPACITY).collect(),
        "tickets 1..=200, each once"
    );

    runtime().block_on(async {
        let pool = Pool::connect(client_config(server.addr()), 4).await?;
        for (&user, &ticket) in &winners {
            assert_eq!(
                pool.reserve("drop", user).await?,
                ReserveOutcome::AlreadyOwned { ticket },
                "retry of {user}"
            );
            assert_eq!(pool.lookup("drop", user).await?, Some(ticket));
        }
        let loser = told
            .iter()
            .find(|(_, t)| *t == Told::SoldOut)
            .map(|(u, _)| *u)
            .unwrap_or(0);
        assert_eq!(pool.lookup("drop", loser).await?, None);
        assert_eq!(
            pool.reserve("drop", USERS + 1).await?,
            ReserveOutcome::SoldOut
        );
        let status = pool.status("drop").await?;
        assert_eq!(
            (status.remaining, status.sold, status.state),
            (0, CAPACITY, SaleState::SoldOut)
        );
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
