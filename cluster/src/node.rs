//! One node of a cluster: its storage, its transport and its Raft instance,
//! and the few questions the server asks of them.
//!
//! A node starts with the whole membership from `--cluster`, so every node
//! of a new cluster initializes itself with the same members (openraft
//! allows that: the first election settles who leads). A node whose data
//! directory already holds a log skips that step and resumes from its log
//! and snapshot.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::log_store::LogStore;
use crate::network::{self, Advertised, Directory, Identity, Local, Network};
use crate::state::StateStore;
use crate::{Batch, Machine, NodeId, Raft};

/// How a node is run. Build with [`NodeConfig::new`], adjust with the
/// setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This node's id; must be one of [`NodeConfig::members`].
    pub id: NodeId,
    /// Every node's id and the address it replicates over (`host:port`).
    pub members: BTreeMap<NodeId, String>,
    /// Where the Raft log, vote and snapshot live.
    pub dir: PathBuf,
    /// The cluster key every node presents (empty: none).
    pub key: Vec<u8>,
    /// How often the leader tells followers it is alive.
    pub heartbeat: Duration,
    /// A follower that hears nothing from a leader for a random time in
    /// this range stands for election.
    pub election_timeout: (Duration, Duration),
    /// Entries applied since the last snapshot before a new one is taken
    /// and the log before it purged.
    pub snapshot_every: u64,
    /// Where this node serves buyers, told to the other nodes.
    pub advertised: Advertised,
    /// The address this node listens on for the others, when it is not its
    /// own entry in [`NodeConfig::members`] (behind a proxy or a NAT, the
    /// others reach it at its entry, which forwards here).
    pub listen: Option<String>,
}

impl NodeConfig {
    /// Default for [`NodeConfig::heartbeat`].
    pub const HEARTBEAT: Duration = Duration::from_millis(50);
    /// Default for [`NodeConfig::election_timeout`].
    ///
    /// openraft makes a follower that has heard from a leader wait the
    /// leader's lease (the upper bound) and then a random timeout in this
    /// range before it stands, and one whose log is behind another's wait
    /// twice the upper bound more: so the most up-to-date follower stands
    /// 450 to 600 ms after the last heartbeat. A vote request from a node
    /// whose log is behind (one that just restarted) starts that wait
    /// again, so a failover takes one or two such rounds. Nine heartbeats
    /// must go missing first, so a busy disk or a loaded machine does not
    /// start elections for nothing.
    pub const ELECTION_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(150), Duration::from_millis(300));
    /// Default for [`NodeConfig::snapshot_every`].
    pub const SNAPSHOT_EVERY: u64 = 5_000;

    /// Node `id` of the cluster `members`, keeping its state in `dir`.
    pub fn new(id: NodeId, members: BTreeMap<NodeId, String>, dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            id,
            members,
            dir: dir.into(),
            key: Vec::new(),
            heartbeat: Self::HEARTBEAT,
            election_timeout: Self::ELECTION_TIMEOUT,
            snapshot_every: Self::SNAPSHOT_EVERY,
            advertised: Advertised::default(),
            listen: None,
        }
    }

    /// Sets [`NodeConfig::listen`].
    #[must_use]
    pub fn listen(mut self, listen: impl Into<String>) -> Self {
        self.listen = Some(listen.into());
        self
    }

    /// Sets [`NodeConfig::advertised`].
    #[must_use]
    pub fn advertised(mut self, advertised: Advertised) -> Self {
        self.advertised = advertised;
        self
    }

    /// Sets [`NodeConfig::key`].
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets [`NodeConfig::heartbeat`] and [`NodeConfig::election_timeout`].
    #[must_use]
    pub fn timing(mut self, heartbeat: Duration, election_timeout: (Duration, Duration)) -> Self {
        self.heartbeat = heartbeat;
        self.election_timeout = election_timeout;
        self
    }

    /// Sets [`NodeConfig::snapshot_every`] (at least 1).
    #[must_use]
    pub fn snapshot_every(mut self, entries: u64) -> Self {
        self.snapshot_every = entries.max(1);
        self
    }

    /// The members spelled canonically: what identifies the cluster.
    pub fn cluster_spelling(&self) -> String {
        self.members
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn raft_config(&self) -> Result<openraft::Config, ClusterError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: self.cluster_spelling(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Keep a little log behind the snapshot, so a follower a few
            // entries behind catches up from the log, not a snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_every.min(1_000),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is inconsistent.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The log, the snapshot or the listener.
    #[error("cluster node: {0}")]
    Io(#[from] io::Error),
    /// openraft refused to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
}

/// What a node is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves reservations.
    Leader,
    /// Follows a leader (or waits for one).
    Follower,
    /// Stands for election.
    Candidate,
    /// Stopping.
    Shutdown,
}

impl Role {
    /// The role's name, as `/healthz` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A node's view of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The last entry applied to this node's state.
    pub last_applied: Option<u64>,
    /// The last entry known committed: on the leader, the highest entry a
    /// majority has (itself included); elsewhere, the last applied (a
    /// follower applies what it learns is committed).
    pub committed: Option<u64>,
    /// On the leader: how many entries each follower is behind.
    pub lag: BTreeMap<NodeId, u64>,
    /// On the leader: milliseconds since a majority last acknowledged it
    /// (a heartbeat or an entry); `None` before the first time.
    pub quorum_ack_ms: Option<u64>,
    /// How many nodes vote.
    pub voters: usize,
}

/// Why a batch was not replicated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// This node is not the leader; `leader` is, if known.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader's id, if this node knows it.
        leader: Option<NodeId>,
    },
    /// The batch's fate is unknown: the node is stopping, or lost its
    /// leadership while the batch was on its way.
    #[error("replication failed: {0}")]
    Failed(String),
}

/// A running node.
pub struct ClusterNode {
    id: NodeId,
    raft: Raft,
    local: Arc<Local>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

impl ClusterNode {
    /// Starts node `config.id`: opens its log and snapshot (restoring
    /// `machine` from the snapshot), listens for its peers on its own
    /// `--cluster` address, and joins the election.
    ///
    /// # Errors
    /// A configuration that does not name this node, storage that cannot be
    /// opened, an address that cannot be bound, or openraft refusing to
    /// start.
    pub async fn start(
        config: NodeConfig,
        machine: Arc<dyn Machine>,
    ) -> Result<ClusterNode, ClusterError> {
        let own = config.members.get(&config.id).ok_or_else(|| {
            ClusterError::Config(format!(
                "node {} is not one of the members ({})",
                config.id,
                config.cluster_spelling()
            ))
        })?;
        let raft_config = Arc::new(config.raft_config()?);
        std::fs::create_dir_all(&config.dir)?;
        let log = LogStore::open(&config.dir).map_err(|e| ClusterError::Io(io::Error::other(e)))?;
        let state = StateStore::open(&config.dir, machine)?;
        let listen = config.listen.as_deref().unwrap_or(own);
        let listener = TcpListener::bind(network::resolve(listen).await?).await?;
        let local = Arc::new(Local {
            me: config.id,
            identity: Identity {
                cluster: config.cluster_spelling(),
                key: config.key.clone(),
            },
            advertised: config.advertised.clone(),
            directory: Directory::default(),
        });
        local.directory.learn(config.id, config.advertised.clone());
        let network = Network::new(Arc::clone(&local));
        let raft = Raft::new(config.id, raft_config, network, log, state)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(network::serve(
            listener,
            raft.clone(),
            Arc::clone(&local),
            shutdown.clone(),
        ));
        let node = ClusterNode {
            id: config.id,
            raft,
            local,
            shutdown,
            server,
        };
        node.initialize(&config.members).await?;
        Ok(node)
    }

    /// Makes a new cluster's first membership, if this node has none yet.
    async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), ClusterError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Another node's membership reached us first: ours is the same.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where node `id` serves buyers, if this node has heard from it.
    pub fn advertised(&self, id: NodeId) -> Option<Advertised> {
        self.local.directory.get(id)
    }

    /// The Raft instance, for what this type does not wrap.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Replicates `batch` and returns once a majority of the nodes has it
    /// durably on disk and this node has applied it.
    ///
    /// # Errors
    /// [`ReplicateError::NotLeader`] if this node is not the leader (nothing
    /// was written), [`ReplicateError::Failed`] if the batch's fate is
    /// unknown.
    pub async fn replicate(&self, batch: impl Into<Bytes>) -> Result<u64, ReplicateError> {
        match self.raft.client_write(Batch(batch.into())).await {
            Ok(written) => Ok(written.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ReplicateError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(e) => Err(ReplicateError::Failed(e.to_string())),
        }
    }

    /// Waits, at most `timeout`, until a leader is known and this node has
    /// applied everything committed before it: what a new leader must wait
    /// for before it builds its core from the state.
    ///
    /// # Errors
    /// [`ReplicateError::NotLeader`] if this node is not the leader.
    pub async fn caught_up(&self) -> Result<(), ReplicateError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReplicateError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ReplicateError::Failed(e.to_string())),
        }
    }

    /// The node's view of the cluster now.
    pub fn status(&self) -> Status {
        status_of(&self.raft.metrics().borrow())
    }

    /// Stops the node: no more calls served, the Raft task stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        let _ = self.server.await;
    }
}

/// The status `metrics` describe.
pub fn status_of(metrics: &RaftMetrics<NodeId, BasicNode>) -> Status {
    let role = match metrics.state {
        ServerState::Leader => Role::Leader,
        ServerState::Candidate => Role::Candidate,
        ServerState::Shutdown => Role::Shutdown,
        ServerState::Follower | ServerState::Learner => Role::Follower,
    };
    let last = metrics.last_log_index.unwrap_or(0);
    let lag = metrics
        .replication
        .iter()
        .flatten()
        .map(|(id, matched)| {
            let at = matched.map_or(0, |log_id| log_id.index);
            (*id, last.saturating_sub(at))
        })
        .filter(|(id, _)| *id != metrics.id)
        .collect();
    let last_applied = metrics.last_applied.map(|log_id| log_id.index);
    let committed = match &metrics.replication {
        Some(replication) => {
            // The leader's own log counts as one copy.
            let mut copies: Vec<Option<u64>> = replication
                .iter()
                .filter(|(id, _)| **id != metrics.id)
                .map(|(_, matched)| matched.map(|log_id| log_id.index))
                .collect();
            copies.push(metrics.last_log_index);
            copies.sort_unstable_by(|a, b| b.cmp(a));
            copies.get(copies.len() / 2).copied().flatten()
        }
        None => last_applied,
    };
    Status {
        role,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        last_applied,
        committed,
        lag,
        quorum_ack_ms: metrics.millis_since_quorum_ack,
        voters: metrics.membership_config.membership().voter_ids().count(),
    }
}
