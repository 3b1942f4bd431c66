//! Three `flashsale-server` processes as one cluster (`--node-id`,
//! `--cluster`), on loopback: one leader serves the sale, followers send
//! clients to it, and after the leader is killed with `kill -9` a new one
//! holds every acknowledged win and sells the rest, never one ticket more.

#[path = "loadgen/run.rs"]
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flashsale_client::{Client, ClientError};
use flashsale_protocol::{ErrorCode, ReserveOutcome};
use flashsale_tests::cluster::{loopback_cluster, node_args};
use flashsale_tests::http_client::http;
use flashsale_tests::poll::poll_async;
use flashsale_tests::{client_config, runtime, ServerProcess};

const SALE: &str = "gig";
const CAPACITY: u32 = 60;
const KEY: &str = "cluster-test-key-0123456789";

struct Cluster {
    spec: String,
    dirs: BTreeMap<u64, PathBuf>,
    nodes: BTreeMap<u64, ServerProcess>,
    _root: tempfile::TempDir,
}

impl Cluster {
    fn new() -> anyhow::Result<Cluster> {
        let root = tempfile::tempdir()?;
        let spec = loopback_cluster(3)?;
        let dirs = (1..=3u64)
            .map(|id| (id, root.path().join(format!("node{id}"))))
            .collect();
        Ok(Cluster {
            spec,
            dirs,
            nodes: BTreeMap::new(),
            _root: root,
        })
    }

    /// Three nodes, all started.
    fn started() -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::new()?;
        for id in 1..=3 {
            cluster.start(id)?;
        }
        Ok(cluster)
    }

    /// Stops every running node.
    fn stop(mut self) -> anyhow::Result<()> {
        for node in std::mem::take(&mut self.nodes).into_values() {
            node.stop()?;
        }
        Ok(())
    }

    fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let mut args = node_args(id, &self.spec, KEY, &format!("{SALE}:{CAPACITY}"));
        args.extend(["--http", "127.0.0.1:0", "--demo"].map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = ServerProcess::start(&self.dirs[&id], &args)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// `/healthz` of node `id`.
    async fn health(&self, id: u64) -> anyhow::Result<serde_json::Value> {
        let reply = http(self.nodes[&id].http_addr(), "GET", "/healthz", &[], "").await?;
        Ok(reply.json())
    }

    /// The leader every running node names, once they agree and it says
    /// it leads.
    async fn leader(&self) -> anyhow::Result<u64> {
        let agreed = poll_async(400, Duration::from_millis(50), || async {
            let mut named = BTreeSet::new();
            let mut leading = Vec::new();
            for id in self.nodes.keys() {
                let health = self.health(*id).await?;
                named.insert(health["leader"].as_u64());
                if health["role"] == "leader" {
                    leading.push(*id);
                }
            }
            Ok(match leading[..] {
                [leader] if named.len() == 1 && named.contains(&Some(leader)) => Some(leader),
                _ => None,
            })
        })
        .await?;
        agreed.ok_or_else(|| anyhow::anyhow!("the nodes agreed on no leader within 20 s"))
    }

    /// A client of node `id` that follows the leader, knowing every
    /// running node's address.
    async fn client(&self, id: u64) -> anyhow::Result<Client> {
        let nodes: Vec<String> = self.nodes.values().map(|n| n.addr().to_string()).collect();
        let config = client_config(self.nodes[&id].addr())
            .api_key(KEY)
            .nodes(nodes);
        Ok(Client::connect(config).await?)
    }

    /// A client of node `id` alone, that hears its own answers.
    async fn client_of(&self, id: u64) -> anyhow::Result<Client> {
        let config = client_config(self.nodes[&id].addr())
            .api_key(KEY)
            .follow_leader(false);
        Ok(Client::connect(config).await?)
    }
}

/// A reservation answered by the leader. One cut by the leader's death
/// (its outcome unknown), or refused while no leader was known, is sent
/// again: reserving twice is safe, the same ticket comes back.
async fn reserve(client: &Client, user: u64) -> anyhow::Result<ReserveOutcome> {
    let answered = poll_async(200, Duration::from_millis(50), || async {
        match client.reserve(SALE, user).await {
            Ok(outcome) => Ok(Some(outcome)),
            Err(ClientError::Server(e)) if e.code == ErrorCode::NOT_LEADER => Ok(None),
            Err(e) if e.outcome_unknown() || matches!(e, ClientError::ConnectTimeout) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    answered.ok_or_else(|| anyhow::anyhow!("user {user} was never answered"))
}

#[test]
fn acknowledged_wins_survive_the_leader_killed_and_the_sale_sells_exactly_out() -> anyhow::Result<()>
{
    runtime().block_on(async {
        let mut cluster = Cluster::started()?;
        let first = cluster.leader().await?;
        let health = cluster.health(first).await?;
        assert_eq!(health["status"], "ok", "{health}");
        assert!(health["term"].as_u64().is_some_and(|t| t >= 1), "{health}");

        // A follower names the leader's native address.
        let follower = (1..=3).find(|id| *id != first).expect("a follower");
        let asked = cluster.client_of(follower).await?;
        match asked.reserve(SALE, 999).await {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::NOT_LEADER);
                assert_eq!(e.message, cluster.nodes[&first].addr().to_string());
            }
            other => panic!("a follower answered {other:?}"),
        }

        // Half the stock is won through a client given a follower first:
        // it follows the leader.
        let mut won: BTreeMap<u64, u32> = BTreeMap::new();
        let leader = cluster.client(follower).await?;
        for user in 1..=u64::from(CAPACITY / 2) {
            match reserve(&leader, user).await? {
                ReserveOutcome::Won { ticket } => {
                    won.insert(user, ticket);
                }
                other => panic!("user {user}: {other:?}"),
            }
        }

        // The leader dies; another takes over with every acknowledged win,
        // and the same client finds it.
        if let Some(node) = cluster.nodes.remove(&first) {
            node.kill9()?;
        }
        let second = cluster.leader().await?;
        assert_ne!(second, first);
        for (user, ticket) in &won {
            assert_eq!(
                reserve(&leader, *user).await?,
                ReserveOutcome::AlreadyOwned { ticket: *ticket },
                "user {user} lost their ticket with the leader"
            );
        }

        // The rest sells on the new leader, and not one ticket more.
        let mut sold_out = 0;
        for user in 1000..1000 + u64::from(CAPACITY) {
            match reserve(&leader, user).await? {
                ReserveOutcome::Won { ticket } => {
                    won.insert(user, ticket);
                }
                ReserveOutcome::SoldOut => sold_out += 1,
                other => panic!("user {user}: {other:?}"),
            }
        }
        assert_eq!(won.len(), CAPACITY as usize, "exactly the capacity sold");
        assert_eq!(sold_out, CAPACITY / 2);
        let tickets: BTreeSet<u32> = won.values().copied().collect();
        assert_eq!(tickets, (1..=CAPACITY).collect(), "each ticket once");

        // The killed node comes back as a follower of the new leader.
        cluster.start(first)?;
        assert_eq!(cluster.leader().await?, second);
        let back = cluster.client_of(first).await?;
        let refused = back.reserve(SALE, 5000).await;
        assert!(
            matches!(&refused, Err(ClientError::Server(e)) if e.code == ErrorCode::NOT_LEADER),
            "{refused:?}"
        );
        let status = leader.status(SALE).await?;
        assert_eq!((status.sold, status.remaining), (CAPACITY, 0));
        cluster.stop()
    })
}

#[test]
fn a_follower_answers_every_http_route_with_the_leader() -> anyhow::Result<()> {
    runtime().block_on(async {
        let cluster = Cluster::started()?;
        let leader = cluster.leader().await?;
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        let addr: SocketAddr = cluster.nodes[&follower].http_addr();
        let health = cluster.health(follower).await?;
        assert_eq!(health["status"], "ok");
        assert_eq!(health["role"], "follower");
        assert_eq!(health["leader"].as_u64(), Some(leader));
        let status = http(addr, "GET", &format!("/api/sales/{SALE}"), &[], "").await?;
        assert_eq!(status.status, 503, "{}", status.text());
        assert_eq!(status.json()["error"], "not_leader");
        assert_eq!(status.header("retry-after"), Some("1"));
        let metrics = http(addr, "GET", "/metrics", &[], "").await?.text();
        assert!(
            metrics.contains("flashsale_cluster_role{role=\"follower\"} 1"),
            "{metrics}"
        );
        for gauge in [
            "flashsale_cluster_term",
            "flashsale_cluster_commit_index",
            "flashsale_cluster_applied_index",
        ] {
            assert!(metrics.contains(gauge), "no {gauge} in {metrics}");
        }
        cluster.stop()
    })
}

#[test]
fn the_load_generator_finds_the_leader_among_the_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::started()?;
    let leader = runtime().block_on(cluster.leader())?;
    // The leader last: the load generator asks the others first.
    let mut order: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    order.push(leader);
    let addrs = order
        .iter()
        .map(|id| cluster.nodes[id].addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let users = (2 * CAPACITY).to_string();
    let dir = tempfile::tempdir()?;
    let run = run::loadgen(
        dir.path(),
        &[
            "--addr",
            &addrs,
            "--api-key",
            KEY,
            "--sale",
            SALE,
            "--users",
            &users,
            "--connections",
            "4",
            "--deadline",
            "60s",
            "--start-in",
            "200ms",
        ],
    )?;
    run.assert_passed();
    run.assert_all_answered();
    run.assert_invariants_hold(true);
    assert_eq!(run.count("won"), u64::from(CAPACITY), "{}", run.stdout);
    assert_eq!(run.count("sold_out"), u64::from(CAPACITY), "{}", run.stdout);
    cluster.stop()
}

#[test]
fn a_gateway_given_the_nodes_keeps_selling_through_a_failover() -> anyhow::Result<()> {
    runtime().block_on(async {
        let mut cluster = Cluster::started()?;
        let first = cluster.leader().await?;
        let nodes = cluster
            .nodes
            .values()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir()?;
        let secret = flashsale_tests::token::secret_file(dir.path())?;
        let secret = flashsale_tests::process::path_str(&secret)?;
        let gateway = ServerProcess::start_gateway(
            &dir.path().join("gateway"),
            &nodes,
            &[
                "--jwt-secret-file",
                secret,
                "--api-key",
                KEY,
                "--sale",
                SALE,
            ],
        )?;
        let http_addr = gateway.http_addr();
        // A reservation through the gateway, retried while the core fails
        // over: a 5xx says "maybe", and reserving again is safe.
        let buy = |user: u64| async move {
            let path = format!("/api/sales/{SALE}/reserve");
            let auth = flashsale_tests::bearer(user);
            let answered = poll_async(200, Duration::from_millis(50), || async {
                let reply = http(http_addr, "POST", &path, &[("authorization", &auth)], "").await?;
                Ok((reply.status < 500).then(|| reply.json()))
            })
            .await?;
            answered.ok_or_else(|| anyhow::anyhow!("user {user} was never answered"))
        };
        let won = buy(1).await?;
        assert_eq!(won["outcome"], "won", "{won}");
        if let Some(node) = cluster.nodes.remove(&first) {
            node.kill9()?;
        }
        let again = buy(1).await?;
        assert_eq!(again["outcome"], "already_owned", "{again}");
        assert_eq!(again["ticket"], won["ticket"], "{again}");
        let next = buy(2).await?;
        assert_eq!(next["outcome"], "won", "{next}");
        assert_ne!(next["ticket"], won["ticket"]);
        gateway.stop()?;
        cluster.stop()
    })
}
