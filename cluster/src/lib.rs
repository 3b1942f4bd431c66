//! flashsale-cluster: the reservation core's log, replicated over Raft, so
//! that losing a machine loses no acknowledged ticket.
//!
//! # Why it looks like this
//!
//! **Consensus is not ours to write.** Elections, log matching, commit
//! rules and snapshots are [openraft](https://docs.rs/openraft)'s (see
//! `docs/CLUSTER.md` for why openraft over tikv's raft-rs). This crate gives
//! it what every openraft application provides: where the log lives
//! ([`log_store`]), what applying an entry means ([`state`]), and how nodes
//! reach each other ([`network`]).
//!
//! **The leader decides, the log carries the decisions.** The core stays
//! what it is: on the leader, a reservation is decided in memory by the
//! same compare-and-swap as on a single node, and the records the single
//! node would write to its write-ahead log are written to the Raft log
//! instead, one entry per group commit ([`Batch`]). The win is acknowledged
//! once a majority of nodes has that entry durably on disk. Followers fold
//! the committed records into the same state a restart would rebuild
//! ([`Machine`]); a node that becomes leader builds its core from that
//! state, as a restart does from the log.
//!
//! **One fdatasync per batch, per node.** openraft hands the log store
//! every entry that arrived since its last write in one `append`; the store
//! writes them with one `write` and syncs once ([`log_store`]), on the
//! leader and on each follower, so group commit holds across the cluster.
//!
//! # Layout
//!
//! - [`log_store`]: the Raft log and vote on disk, framed and checksummed.
//! - [`files`]: files replaced whole (the vote, the snapshot).
//! - [`state`]: the state machine over a [`Machine`], and its snapshots.
//! - [`network`]: node-to-node RPC over TCP, refused to other clusters.
//! - [`node`]: one node, started from its [`NodeConfig`]: storage,
//!   transport, the Raft instance, and the questions the server asks of it
//!   (am I leader, who is, replicate this batch).

pub mod files;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state;

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use self::node::{ClusterNode, NodeConfig, ReplicateError, Role};
pub use self::state::Machine;

/// A node's id in `--cluster`.
pub type NodeId = u64;

/// One Raft entry's application payload: the records of one group commit,
/// encoded as the write-ahead log encodes them (`docs/WAL.md`), back to
/// back. The cluster never looks inside; the [`Machine`] does.
///
/// The bytes are shared, not owned: openraft clones an entry for each
/// follower it replicates to and for the state machine, and a clone of
/// [`Bytes`] is a reference count, not a copy of the batch. They are
/// encoded as one byte string (a length, then the bytes), which is how
/// bincode encodes a `Vec<u8>` too, element by element; as a byte string it
/// is one copy.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Bytes);

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The Raft types of a flashsale cluster.
    pub TypeConfig:
        D = Batch,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A position in the log.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors, as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;

#[cfg(test)]
mod tests {
    use flashsale_protocol::encoding;

    use super::*;

    /// A batch is a byte string on the wire and in `raft.log`: the bytes a
    /// `Vec<u8>` of the same records encodes to, so logs written before the
    /// batch shared its bytes still read.
    #[test]
    fn a_batch_encodes_as_its_bytes_did_as_a_vec() -> Result<(), Box<dyn std::error::Error>> {
        let records = vec![0_u8, 1, 2, 0xfe, 0xff];
        let shared = encoding::encode(&Batch(Bytes::from(records.clone())))?;
        assert_eq!(shared, encoding::encode(&records)?);
        let decoded: Batch = encoding::decode(&shared)?;
        assert_eq!(decoded, Batch(Bytes::from(records)));
        Ok(())
    }
}
