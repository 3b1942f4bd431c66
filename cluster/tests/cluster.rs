//! Three nodes on loopback, each with its own data directory, driven
//! through [`ClusterNode`]: election, replication, the loss of the leader,
//! a node that lost its data catching up from a snapshot, and a node of
//! another cluster kept out.
//!
//! The machine under test records the batches it applies, so every check is
//! on what each node's state actually holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flashsale_cluster::network::Advertised;
use flashsale_cluster::{ClusterNode, Machine, NodeConfig, NodeId, ReplicateError, Role};
use tokio::net::TcpListener;
use tokio::time::{sleep, timeout, Instant};

/// The batches applied, in order.
#[derive(Default)]
struct Applied(Mutex<Vec<Vec<u8>>>);

impl Applied {
    fn get(&self) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Machine for Applied {
    fn apply(&self, batch: &[u8]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(batch.to_vec());
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        flashsale_protocol::encoding::encode(&self.get()).map_err(|e| e.to_string())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let batches: Vec<Vec<u8>> =
            flashsale_protocol::encoding::decode(snapshot).map_err(|e| e.to_string())?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = batches;
        Ok(())
    }
}

/// Longest any test waits for the cluster to settle.
const SETTLE: Duration = Duration::from_secs(20);

struct Node {
    node: ClusterNode,
    applied: Arc<Applied>,
}

struct Cluster {
    members: BTreeMap<NodeId, String>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    /// Three nodes on free loopback ports, none started.
    async fn new() -> Cluster {
        let mut members = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=3 {
            // Bound and released: the port is free for the node to bind.
            let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            members.insert(id, probe.local_addr().expect("addr").to_string());
            dirs.insert(id, tempfile::tempdir().expect("tempdir"));
        }
        Cluster {
            members,
            dirs,
            nodes: BTreeMap::new(),
        }
    }

    fn config(&self, id: NodeId) -> NodeConfig {
        NodeConfig::new(id, self.members.clone(), self.dirs[&id].path())
            .key(b"test-key".to_vec())
            .snapshot_every(20)
            .advertised(advertised(id))
            // Slower than the defaults: tests run side by side on a busy
            // machine, and an election nobody asked for would move the
            // leader under a check that names it.
            .timing(
                Duration::from_millis(100),
                (Duration::from_millis(1000), Duration::from_millis(2000)),
            )
    }

    /// Replicates `b` through whichever node leads, again while leadership
    /// moves; a batch whose fate was unknown and that the leader has since
    /// applied is not sent twice.
    async fn replicate(&self, b: &[u8]) -> NodeId {
        let deadline = Instant::now() + SETTLE;
        loop {
            let leader = self.leader().await;
            match self.nodes[&leader].node.replicate(b.to_vec()).await {
                Ok(_) => return leader,
                Err(ReplicateError::NotLeader { .. }) => {}
                Err(ReplicateError::Failed(_)) => {
                    let now = self.leader().await;
                    if self.nodes[&now].applied.get().iter().any(|a| a == b) {
                        return now;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader took a batch within {SETTLE:?}"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start(&mut self, config: NodeConfig) {
        let id = config.id;
        let applied = Arc::new(Applied::default());
        let machine: Arc<dyn Machine> = applied.clone();
        let node = ClusterNode::start(config, machine).await.expect("start");
        self.nodes.insert(id, Node { node, applied });
    }

    async fn start_all(&mut self) {
        for id in 1..=3 {
            self.start(self.config(id)).await;
        }
    }

    async fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.node.shutdown().await;
        }
    }

    /// The leader the running nodes agree on, once they do.
    async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + SETTLE;
        loop {
            let leaders: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.node.status().role == Role::Leader)
                .map(|n| n.node.id())
                .collect();
            if let [leader] = leaders[..] {
                if self.nodes[&leader].node.caught_up().await.is_ok() {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader within {SETTLE:?}"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` has applied exactly `want`.
    async fn converges(&self, id: NodeId, want: &[Vec<u8>]) {
        let deadline = Instant::now() + SETTLE;
        while self.nodes[&id].applied.get() != want {
            assert!(
                Instant::now() < deadline,
                "node {id} applied {} batches, not the {} expected",
                self.nodes[&id].applied.get().len(),
                want.len()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        for id in 1..=3 {
            self.stop(id).await;
        }
    }
}

/// What node `id` tells the others of itself.
fn advertised(id: NodeId) -> Advertised {
    Advertised {
        native: Some(format!("127.0.0.1:{}", 7000 + id)),
        http: Some(format!("127.0.0.1:{}", 8000 + id)),
    }
}

fn batch(i: usize) -> Vec<u8> {
    format!("batch {i}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_acknowledged_by_the_leader_survive_its_loss() {
    timeout(Duration::from_secs(90), async {
        let mut cluster = Cluster::new().await;
        cluster.start_all().await;
        let mut acked = Vec::new();
        for i in 0..30 {
            cluster.replicate(&batch(i)).await;
            acked.push(batch(i));
        }
        for id in 1..=3 {
            cluster.converges(id, &acked).await;
        }

        // A follower refuses, naming the leader, whose addresses for
        // buyers it has learned from the leader's own hello.
        let first = cluster.leader().await;
        let follower = (1..=3).find(|id| *id != first).expect("a follower");
        assert_eq!(
            cluster.nodes[&follower].node.replicate(batch(99)).await,
            Err(ReplicateError::NotLeader {
                leader: Some(first)
            })
        );
        assert_eq!(
            cluster.nodes[&follower].node.advertised(first),
            Some(advertised(first))
        );

        cluster.stop(first).await;
        let second = cluster.leader().await;
        assert_ne!(second, first, "a stopped node cannot lead");
        cluster.converges(second, &acked).await;
        for i in 30..40 {
            cluster.replicate(&batch(i)).await;
            acked.push(batch(i));
        }

        // The old leader comes back as a follower and catches up.
        cluster.start(cluster.config(first)).await;
        cluster.converges(first, &acked).await;
        assert_eq!(cluster.nodes[&first].node.status().role, Role::Follower);
        cluster.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_catches_up_from_a_snapshot() {
    timeout(Duration::from_secs(90), async {
        let mut cluster = Cluster::new().await;
        cluster.start_all().await;
        let leader = cluster.leader().await;
        let lost = (1..=3).find(|id| *id != leader).expect("a follower");
        cluster.stop(lost).await;
        cluster
            .dirs
            .insert(lost, tempfile::tempdir().expect("tempdir"));

        // Far past `snapshot_every`: the leader snapshots and purges the
        // log the lost node would need.
        let acked: Vec<Vec<u8>> = (0..100).map(batch).collect();
        for b in &acked {
            cluster.replicate(b).await;
        }
        let leader = cluster.leader().await;
        let deadline = Instant::now() + SETTLE;
        while cluster.nodes[&leader]
            .node
            .raft()
            .metrics()
            .borrow()
            .purged
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the leader did not purge its log behind a snapshot"
            );
            sleep(Duration::from_millis(20)).await;
        }

        cluster.start(cluster.config(lost)).await;
        cluster.converges(lost, &acked).await;
        let rejoined = cluster.nodes[&lost].node.raft().metrics().borrow().snapshot;
        assert!(rejoined.is_some(), "the lost node was sent a snapshot");
        cluster.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_is_kept_out() {
    timeout(Duration::from_secs(90), async {
        let mut cluster = Cluster::new().await;
        for id in 1..=2 {
            cluster.start(cluster.config(id)).await;
        }
        cluster
            .start(cluster.config(3).key(b"another-key".to_vec()))
            .await;
        // Nodes 1 and 2 are a majority: they elect one of them, and take
        // every batch.
        let acked: Vec<Vec<u8>> = (0..5).map(batch).collect();
        for b in &acked {
            // Node 3 is never elected: its vote requests are refused.
            cluster.replicate(b).await;
        }
        let leader = cluster.leader().await;
        assert!(leader != 3, "the node with the wrong key leads");
        let other = 3 - leader;
        cluster.converges(other, &acked).await;
        assert!(
            cluster.nodes[&3].applied.get().is_empty(),
            "the node with the wrong key received entries"
        );
        assert_ne!(cluster.nodes[&3].node.status().role, Role::Leader);
        cluster.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_node_not_among_the_members_does_not_start() {
    let cluster = Cluster::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig::new(7, cluster.members.clone(), dir.path());
    let machine: Arc<dyn Machine> = Arc::new(Applied::default());
    let refused = ClusterNode::start(config, machine).await;
    let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("node 7 is not one of the members"), "{why}");
}
