//! A leader cut off from the rest of its cluster, checked the way Jepsen
//! checks: a history of every answer the clients got, then the final state.
//!
//! Three `flashsale-server` nodes replicate through test-owned proxies
//! ([`Links`]). Buyers win on the leader; then its links are cut while
//! buyers keep asking it, and others buy from the majority side, which
//! elects a new leader; then the links heal. Every `Won` and
//! `AlreadyOwned` any client was told, on either side, must be in the
//! final state held by the same user, and no ticket may have two holders.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use flashsale_client::{Client, ClientConfig, ClientError, ErrorCode, ReserveOutcome};
use flashsale_tests::cluster::{node_args, serving};
use flashsale_tests::links::Links;
use flashsale_tests::poll::poll_async;
use flashsale_tests::{fixed_ports, runtime, ServerProcess};

const SALE: &str = "gig";
const CAPACITY: u32 = 500;
const KEY: &str = "partition-test-key-0123456789";

/// A client of node `addr` alone (it does not follow `NOT_LEADER`).
async fn client_of(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Client> {
    let config = ClientConfig::new(addr.to_string())
        .api_key(KEY)
        .request_timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .follow_leader(false);
    Ok(Client::connect(config).await?)
}

/// The node of `nodes` that serves the sale, once exactly one does.
async fn leader(nodes: &BTreeMap<u64, ServerProcess>) -> anyhow::Result<u64> {
    let addrs: Vec<(u64, SocketAddr)> = nodes.iter().map(|(id, n)| (*id, n.addr())).collect();
    let found = poll_async(600, Duration::from_millis(50), || async {
        Ok(match serving(&addrs, KEY, SALE).await[..] {
            [one] => Some(one),
            _ => None,
        })
    })
    .await?;
    found.ok_or_else(|| anyhow::anyhow!("no single node served within 30 s"))
}

/// What the clients were told: user to ticket, for every `Won` and
/// `AlreadyOwned`, and the users who asked at all.
#[derive(Default)]
struct History {
    told: BTreeMap<u64, u32>,
    asked: BTreeSet<u64>,
}

impl History {
    fn record(&mut self, user: u64, answer: &Result<ReserveOutcome, ClientError>) {
        self.asked.insert(user);
        if let Ok(outcome) = answer {
            if let Some(ticket) = outcome.ticket() {
                let earlier = self.told.insert(user, ticket);
                assert!(
                    earlier.is_none_or(|t| t == ticket),
                    "user {user} was told tickets {earlier:?} and {ticket}"
                );
            }
        }
    }
}

#[test]
fn a_partitioned_leader_acknowledges_nothing_the_majority_does_not_have() -> anyhow::Result<()> {
    runtime().block_on(async {
        let ports = fixed_ports(6)?;
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let proxies: BTreeMap<u64, SocketAddr> =
            (1..=3).zip(ports[..3].iter().map(|p| at(*p))).collect();
        let privates: BTreeMap<u64, SocketAddr> =
            (1..=3).zip(ports[3..].iter().map(|p| at(*p))).collect();
        let links = Links::start(&proxies, &privates).await?;
        let spec = proxies
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let root = tempfile::tempdir()?;
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            let mut args = node_args(id, &spec, KEY, &format!("{SALE}:{CAPACITY}"));
            args.extend(["--cluster-listen".to_owned(), privates[&id].to_string()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let dir = root.path().join(format!("node{id}"));
            nodes.insert(id, ServerProcess::start(&dir, &args)?);
        }
        let old = leader(&nodes).await?;
        let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        let mut history = History::default();

        // Before the cut: wins on the leader.
        let pinned = client_of(nodes[&old].addr(), Duration::from_secs(3)).await?;
        for user in 1..=20 {
            let answer = pinned.reserve(SALE, user).await;
            assert!(
                matches!(answer, Ok(ReserveOutcome::Won { .. })),
                "{answer:?}"
            );
            history.record(user, &answer);
        }

        // The cut. Buyers keep asking the old leader; others buy from the
        // majority's side once it has a leader of its own.
        links.isolate(old, others.clone());
        let asking_old = async {
            let mut answers = Vec::new();
            for user in 100..=140 {
                answers.push((user, pinned.reserve(SALE, user).await));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        };
        let buying_majority = async {
            let side: BTreeMap<u64, &ServerProcess> =
                others.iter().map(|id| (*id, &nodes[id])).collect();
            let addrs: Vec<(u64, SocketAddr)> =
                side.iter().map(|(id, n)| (*id, n.addr())).collect();
            let new = poll_async(600, Duration::from_millis(50), || async {
                Ok(serving(&addrs, KEY, SALE).await.first().copied())
            })
            .await?
            .ok_or_else(|| anyhow::anyhow!("the majority elected no leader within 30 s"))?;
            let client = client_of(side[&new].addr(), Duration::from_secs(5)).await?;
            let mut answers = Vec::new();
            for user in 200..=240 {
                answers.push((user, client.reserve(SALE, user).await));
            }
            anyhow::Ok((new, answers))
        };
        let (old_answers, majority) = tokio::join!(asking_old, buying_majority);
        let (new, majority_answers) = majority?;
        assert_ne!(new, old, "the cut-off leader cannot be the majority's");
        for (user, answer) in old_answers.iter().chain(&majority_answers) {
            history.record(*user, answer);
        }
        let majority_wins = majority_answers
            .iter()
            .filter(|(_, a)| matches!(a, Ok(ReserveOutcome::Won { .. })))
            .count();
        assert!(
            majority_wins > 0,
            "the majority side sold nothing: {majority_answers:?}"
        );

        // The links heal; the old leader follows the new one.
        links.heal();
        let last = leader(&nodes).await?;
        let check = client_of(nodes[&last].addr(), Duration::from_secs(10)).await?;
        let mut holders: BTreeMap<u32, u64> = BTreeMap::new();
        for user in history.asked.iter().copied() {
            let held = check.lookup(SALE, user).await?;
            if let Some(ticket) = held {
                if let Some(other) = holders.insert(ticket, user) {
                    panic!("ticket {ticket} is held by users {other} and {user}");
                }
            }
            if let Some(told) = history.told.get(&user) {
                assert_eq!(
                    held,
                    Some(*told),
                    "user {user} was told ticket {told}; the cluster says {held:?}"
                );
            }
        }
        let status = check.status(SALE).await?;
        assert_eq!(
            status.sold as usize,
            holders.len(),
            "sold counts the holders"
        );
        // The old leader answered nothing that claims a ticket the majority
        // lacks (checked above); a `NOT_LEADER` or a timeout was all it could
        // say while cut off.
        for (user, answer) in &old_answers {
            match answer {
                Ok(outcome) => assert!(
                    outcome.ticket().is_none()
                        || history.told.get(user) == outcome.ticket().as_ref(),
                    "user {user}: {outcome:?}"
                ),
                Err(ClientError::Server(e)) => assert!(
                    [ErrorCode::NOT_LEADER, ErrorCode::LOG_UNAVAILABLE].contains(&e.code),
                    "user {user}: {e}"
                ),
                Err(e) => assert!(e.outcome_unknown(), "user {user}: {e}"),
            }
        }
        drop(links);
        for node in nodes.into_values() {
            node.stop()?;
        }
        Ok(())
    })
}
