//! A node of a cluster: follows, and leads when elected.
//!
//! The node's Raft instance, its transport and the state machine run on a
//! small runtime of their own, apart from the pinned workers. One thread,
//! the conductor, watches the node's role:
//!
//! - **Following**, it keeps [`Serving`] empty, so the fronts answer
//!   `NOT_LEADER` with the leader's native address, and keeps `/healthz`'s
//!   role, leader and term current.
//! - **Elected**, it waits until the node has applied everything committed
//!   before its term (openraft commits a blank entry first; a linearizable
//!   read waits for it), then builds a service from the replicated records
//!   exactly as a single node does from its log at startup
//!   ([`open_sales`](crate::server::open_sales)), over a write-ahead log whose
//!   batches go to the cluster ([`ReplicatedFile`]), and serves it.
//! - **Deposed** (another leader, or a batch the cluster would not commit),
//!   it empties [`Serving`] at once and drops the term's service. Whatever
//!   that core decided and the cluster did not commit was never
//!   acknowledged: waiters of such batches are told the log failed, which
//!   says "maybe" (`LOG_UNAVAILABLE`), and a new term starts from the
//!   committed records only.
//!
//! So a win is acknowledged only once a majority of the nodes has its
//! record on disk: the term's log writer hands each group commit to
//! [`ClusterNode::replicate`], which returns once the entry is committed.
//!
//! With `--sink`, the node that leads also drains the replica log into
//! PostgreSQL, for as long as its term lasts; the position stored with the
//! rows is a byte offset in a file every node holds alike, so the next
//! leader's drain resumes exactly there ([`crate::replica`]).

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use flashsale_cluster::network::Advertised;
use flashsale_cluster::node::Status;
use flashsale_cluster::{ClusterNode, NodeConfig, ReplicateError, Role};
use flashsale_protocol::json::{ClusterRole, NodeRole};
use flashsale_wal::{Durability, LogFile, WalConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, ServerConfig};
use crate::log_hook::LogHook;
use crate::replica::{Replica, REPLICA_LOG_FILE_NAME};
use crate::server::open_sales;
use crate::serving::Serving;
use crate::sink::Sink;

/// How often the conductor looks at the node's role and lease.
const POLL: Duration = Duration::from_millis(20);
/// Pause before trying again to lead after a term could not start.
const RETRY: Duration = Duration::from_millis(200);
/// The most records a leader puts in one group commit, so one entry of the
/// cluster's log. A replication round (the leader's write and sync, the
/// entry to the followers, theirs, the answers) takes a few times as long as
/// one local `fdatasync`, so a leader lets a batch grow larger than a single
/// node does ([`WalConfig::DEFAULT_MAX_BATCH_RECORDS`]): with the single
/// node's bound, the round, not the CPU, would cap the wins per second.
/// 8,192 records are about 250 KiB, a few milliseconds of wins at the peak.
const LEADER_MAX_BATCH_RECORDS: usize = 8192;
/// How long after a majority last acknowledged it a leader still serves.
/// A follower that heard from it stands for election only after the
/// leader's lease and an election timeout have passed (450 ms at least with
/// [`NodeConfig::ELECTION_TIMEOUT`]), so a leader cut off from the others
/// has paused well before another can be elected.
const LEASE_MS: u64 = 200;

/// The running node and its conductor.
pub struct Leadership {
    runtime: tokio::runtime::Runtime,
    node: Arc<ClusterNode>,
    stop: CancellationToken,
    conductor: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Starts node `cluster.node_id`, telling its peers it serves buyers at
    /// `advertised`, and the conductor that makes it serve through
    /// `serving` while it leads.
    ///
    /// # Errors
    /// The runtime, the node (storage, address) or the thread cannot start.
    pub fn start(
        cluster: ClusterConfig,
        advertised: Advertised,
        config: &ServerConfig,
        serving: Arc<Serving>,
    ) -> anyhow::Result<Leadership> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flashsale-raft")
            .enable_all()
            .build()
            .context("cannot start the cluster's runtime")?;
        // With a drain, the replica also keeps the replica log it reads.
        let replica = Arc::new(match &config.sink {
            Some(_) => Replica::with_log(&config.data_dir.join(REPLICA_LOG_FILE_NAME))
                .context("cannot write the replica log")?,
            None => Replica::default(),
        });
        let node_config = NodeConfig::new(
            cluster.node_id,
            cluster.members.clone(),
            config.data_dir.clone(),
        )
        .key(cluster.key.clone())
        .advertised(advertised);
        let node_config = match &cluster.listen {
            Some(listen) => node_config.listen(listen.clone()),
            None => node_config,
        };
        let cluster_spelling = node_config.cluster_spelling();
        let machine: Arc<dyn flashsale_cluster::Machine> = replica.clone();
        let node = runtime
            .block_on(ClusterNode::start(node_config, machine))
            .with_context(|| format!("cannot start cluster node {}", cluster.node_id))?;
        tracing::info!(node = cluster.node_id, members = ?cluster.members, "cluster node started");
        let node = Arc::new(node);
        let stop = CancellationToken::new();
        let conductor = Conductor {
            node: Arc::clone(&node),
            runtime: runtime.handle().clone(),
            replica,
            cluster_spelling,
            config: config.clone(),
            serving,
            stop: stop.clone(),
        };
        let conductor = std::thread::Builder::new()
            .name("flashsale-leadership".into())
            .spawn(move || conductor.run())
            .context("cannot start the leadership thread")?;
        Ok(Leadership {
            runtime,
            node,
            stop,
            conductor: Some(conductor),
        })
    }

    /// Stops leading (if it does), then stops the node.
    pub fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(conductor) = self.conductor.take() {
            if conductor.join().is_err() {
                tracing::error!("the leadership thread panicked");
            }
        }
        if let Ok(node) = Arc::try_unwrap(self.node) {
            self.runtime.block_on(node.shutdown());
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// The thread that makes the node serve while it leads.
struct Conductor {
    node: Arc<ClusterNode>,
    runtime: tokio::runtime::Handle,
    replica: Arc<Replica>,
    /// The cluster's members, spelled canonically: part of the drain's id.
    cluster_spelling: String,
    config: ServerConfig,
    serving: Arc<Serving>,
    stop: CancellationToken,
}

impl Conductor {
    fn run(self) {
        // The log of the last term, being closed: the next term starts
        // only once every batch of this one is committed or failed, so
        // its records are in the replica the next term is built from.
        let mut closing: Option<JoinHandle<()>> = None;
        while !self.stop.is_cancelled() {
            let status = self.publish();
            if closing.as_ref().is_some_and(|c| !c.is_finished()) {
                std::thread::sleep(POLL);
                continue;
            }
            if let Some(closed) = closing.take() {
                if closed.join().is_err() {
                    tracing::error!("closing a term's log panicked");
                }
            }
            if status.role != Role::Leader || !leased(&status) {
                std::thread::sleep(POLL);
                continue;
            }
            let (wal, served) = self.lead(status.term);
            if let Err(e) = served {
                tracing::warn!(error = %format!("{e:#}"), "could not serve a term");
                std::thread::sleep(RETRY);
            }
            if let Some(wal) = wal {
                let closed = wal.clone();
                let closer = std::thread::Builder::new()
                    .name("flashsale-term-close".into())
                    .spawn(move || close(closed));
                match closer {
                    Ok(closer) => closing = Some(closer),
                    // No thread for it: close it here, however long it takes.
                    Err(_) => close(wal),
                }
            }
        }
        self.serving.follow(None);
    }

    /// Tells `/healthz` and the fronts the node's role and leader now.
    fn publish(&self) -> Status {
        let status = self.node.status();
        self.serving.set_role(ClusterRole {
            role: if status.role == Role::Leader {
                NodeRole::Leader
            } else {
                NodeRole::Follower
            },
            leader: status.leader,
            term: status.term,
        });
        if self.serving.current().is_none() {
            self.serving.set_leader(self.native_of(status.leader));
        }
        flashsale_metrics::cluster(
            status.role.as_str(),
            status.term,
            status.last_applied.unwrap_or(0),
            status.committed.unwrap_or(0),
            &status.lag,
        );
        status
    }

    /// Where node `leader` serves the native protocol, unless it is this
    /// node (which does not serve now) or unknown.
    fn native_of(&self, leader: Option<u64>) -> Option<String> {
        leader
            .filter(|id| *id != self.node.id())
            .and_then(|id| self.node.advertised(id))
            .and_then(|advertised| advertised.native)
    }

    /// Serves `term`: builds its service, serves it until the node is
    /// deposed, loses its lease, or its log fails, then stops serving.
    /// Returns the term's log (to be closed before another term starts)
    /// and why the term could not be served, if it could not.
    fn lead(&self, term: u64) -> (Option<flashsale_wal::Wal>, anyhow::Result<()>) {
        if let Err(e) = self.runtime.block_on(self.node.caught_up()) {
            return (None, Err(anyhow::anyhow!("not caught up: {e}")));
        }
        let hook = Arc::new(LogHook::default());
        let file = ReplicatedFile {
            node: Arc::clone(&self.node),
            runtime: self.runtime.clone(),
            pending: Vec::new(),
        };
        let wal = match WalConfig::default_for(&self.config.data_dir)
            .durability(Durability::Fsync)
            .max_batch_records(LEADER_MAX_BATCH_RECORDS)
            .start_on(file, hook.clone())
        {
            Ok(wal) => wal,
            Err(e) => return (None, Err(e.into())),
        };
        let service = match open_sales(&self.replica.records(), &self.config, wal.clone(), &hook) {
            Ok(service) => service,
            Err(e) => return (Some(wal), Err(e)),
        };
        tracing::info!(term, "leading: serving the sales");
        self.serving.lead(Arc::clone(&service));
        let mut paused = false;
        let mut drain = Drain::Waiting;
        let why = loop {
            if let Drain::Waiting = drain {
                drain = self.start_drain();
            }
            let status = self.publish();
            if status.role != Role::Leader || status.term != term {
                break "deposed";
            }
            if !service.wal().is_healthy() {
                break "the log failed";
            }
            if self.stop.is_cancelled() {
                break "stopping";
            }
            // Without a majority heard from lately, this node may be cut
            // off, and another elected: pause until it hears from them. In
            // the same term, nobody else can have led, so the term's core
            // is still right when the lease comes back.
            match (leased(&status), paused) {
                (false, false) => {
                    self.serving.follow(None);
                    paused = true;
                    tracing::info!(term, "paused: no majority heard from lately");
                }
                (true, true) => {
                    self.serving.lead(Arc::clone(&service));
                    paused = false;
                    tracing::info!(term, "serving again");
                }
                _ => {}
            }
            std::thread::sleep(POLL);
        };
        let status = self.node.status();
        self.serving.follow(self.native_of(status.leader));
        tracing::info!(term, why, now = status.term, leader = ?status.leader, "no longer leading");
        if let Drain::Running(sink) = drain {
            if self.stop.is_cancelled() {
                // The node stops: let the drain write what is committed.
                sink.shutdown();
            }
            // Deposed: dropping it stops it. The next leader's drain resumes
            // from the position stored with the last rows committed, and the
            // position moves only from where each drain found it.
        }
        (Some(wal), Ok(()))
    }
}

/// The term's PostgreSQL drain.
enum Drain {
    /// None configured, or it could not start (said once, in the log).
    Off,
    /// Configured, not started: the replica holds no record yet.
    Waiting,
    /// Draining the replica log.
    Running(Sink),
}

impl Conductor {
    /// Starts the drain of the replica log, once there is something to
    /// drain (its id depends on the first record).
    fn start_drain(&self) -> Drain {
        let Some(config) = &self.config.sink else {
            return Drain::Off;
        };
        let Some(id) = self.replica.drain_id(&self.cluster_spelling) else {
            return Drain::Waiting;
        };
        let log = self.config.data_dir.join(REPLICA_LOG_FILE_NAME);
        match Sink::start_on(config.clone(), &log, id, Box::new(self.replica.end())) {
            Ok(sink) => Drain::Running(sink),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the PostgreSQL drain cannot start in this term");
                Drain::Off
            }
        }
    }
}

/// Closes a term's log: refuses what comes, waits for what is on its way.
fn close(wal: flashsale_wal::Wal) {
    if let Err(e) = wal.shutdown() {
        tracing::info!(error = %e, "the term's log closed after a failure");
    }
}

/// Whether a leader still knows a majority follows it: heard from within
/// [`LEASE`]. A leader cut off from the others stops serving before any
/// follower can stand for election (the election timeout is longer), so
/// two nodes never serve at once.
fn leased(status: &Status) -> bool {
    status.voters <= 1 || status.quorum_ack_ms.is_none_or(|ms| ms <= LEASE_MS)
}

/// The write-ahead log's file on a node that leads: each batch the writer
/// writes is one entry of the cluster's log, and the writer's sync returns
/// once a majority of the nodes has it on disk.
struct ReplicatedFile {
    node: Arc<ClusterNode>,
    runtime: tokio::runtime::Handle,
    pending: Vec<u8>,
}

impl LogFile for ReplicatedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        // The batch leaves as the entry's bytes; the next one starts at the
        // size this one reached, so it grows without copying itself.
        let next = Vec::with_capacity(self.pending.len());
        let batch = std::mem::replace(&mut self.pending, next);
        match self.runtime.block_on(self.node.replicate(batch)) {
            Ok(_) => Ok(()),
            // The log fails for good: the term is over.
            Err(ReplicateError::NotLeader { leader }) => Err(io::Error::other(format!(
                "this node no longer leads the cluster (the leader is {leader:?})"
            ))),
            Err(ReplicateError::Failed(why)) => Err(io::Error::other(why)),
        }
    }
}
