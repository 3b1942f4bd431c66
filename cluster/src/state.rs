//! The state machine: what a committed entry does, and the snapshots that
//! let a node catch up without the whole log.
//!
//! The cluster does not know what a sale is. It hands each committed
//! [`Batch`](crate::Batch) to a [`Machine`], the server's fold of log records
//! into sales, buyers and holds: the same state a single node rebuilds from
//! its write-ahead log at a restart. A snapshot is that state, encoded by the
//! machine, stamped with the last entry it includes and the membership.
//!
//! **Why snapshots are kept on disk.** A node that lost its data directory
//! must rejoin from the leader's snapshot, not from the first sale ever
//! (openraft sends it once the entries it would need are purged). A node
//! that restarts loads its own last snapshot and replays only the committed
//! entries after it. The file is written whole to a temporary name, synced
//! and renamed, so a crash leaves either the old snapshot or the new one.
//! Its frame (`[len u32 LE][crc32 u32 LE][body]` after an 8-byte header,
//! `FSSNAP` + version 1 + 0) is checked on load: a damaged snapshot is an
//! error, never half a state.
//!
//! **Why one lock.** `apply` and `build_snapshot` take the same mutex, so a
//! snapshot's bytes and the log id stamped on them always agree: no entry
//! can be applied between reading the state and reading its position.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The application state the cluster replicates.
///
/// Called from the Raft task, one call at a time, with the state lock held:
/// keep each call short and never block on the cluster from inside it.
pub trait Machine: Send + Sync + 'static {
    /// Folds one committed batch of records into the state.
    ///
    /// # Errors
    /// A batch that cannot be read. The node stops: a replica that skipped a
    /// committed entry would diverge from the others.
    fn apply(&self, batch: &[u8]) -> Result<(), String>;

    /// The whole state, encoded.
    ///
    /// # Errors
    /// A state that cannot be encoded.
    fn snapshot(&self) -> Result<Vec<u8>, String>;

    /// Replaces the whole state by a snapshot's.
    ///
    /// # Errors
    /// A snapshot that cannot be read; the state is then unchanged.
    fn restore(&self, snapshot: &[u8]) -> Result<(), String>;
}

/// Name of the snapshot file in the node's data directory.
pub const SNAPSHOT_FILE_NAME: &str = "raft.snapshot";
const MAGIC: &[u8; 8] = b"FSSNAP\x01\x00";

/// The state machine openraft drives: a [`Machine`] plus the position and
/// membership it has reached, and the last snapshot. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    machine: Arc<dyn Machine>,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The last snapshot built or installed, as stored on disk.
    current: Option<Stored>,
    /// Snapshots built by this process, to tell their ids apart.
    built: u64,
}

/// A snapshot as the file holds it.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl StateStore {
    /// The state machine of the node whose data directory is `dir`: the
    /// machine restored from the snapshot there, if any.
    ///
    /// # Errors
    /// A snapshot file that cannot be read, is damaged, or that the machine
    /// refuses.
    pub fn open(dir: &Path, machine: Arc<dyn Machine>) -> Result<StateStore, io::Error> {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let current = match fs::read(&path) {
            Ok(bytes) => Some(decode_file(&bytes).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot {}: {why}", path.display()),
                )
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (last_applied, membership) = match &current {
            Some(stored) => {
                machine.restore(&stored.data).map_err(|why| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("snapshot {}: {why}", path.display()),
                    )
                })?;
                (stored.meta.last_log_id, stored.meta.last_membership.clone())
            }
            None => (None, StoredMembership::default()),
        };
        Ok(StateStore {
            machine,
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_owned(),
                last_applied,
                membership,
                current,
                built: 0,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut inner = self.lock();
        let data = self
            .machine
            .snapshot()
            .map_err(|why| StorageIOError::read_state_machine(&io::Error::other(why)))?;
        inner.built += 1;
        let snapshot_id = match inner.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, inner.built),
            None => format!("--{}", inner.built),
        };
        let stored = Stored {
            meta: SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            },
            data,
        };
        write_file(&inner.dir, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e))?;
        let snapshot = Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        };
        inner.current = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
    {
        let mut inner = self.lock();
        let mut answers = Vec::new();
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    self.machine.apply(&batch.0).map_err(|why| {
                        StorageIOError::apply(entry.log_id, &io::Error::other(why))
                    })?;
                }
                EntryPayload::Membership(membership) => {
                    inner.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                }
            }
            inner.last_applied = Some(entry.log_id);
            answers.push(());
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let stored = Stored {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let mut inner = self.lock();
        // Durable before the state moves: a crash right after must find
        // the snapshot whose entries the log may already have purged.
        write_file(&inner.dir, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.machine.restore(&stored.data).map_err(|why| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(why))
        })?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.current = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let inner = self.lock();
        Ok(inner.current.as_ref().map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}

/// Writes `stored` as the node's snapshot, replacing the old one whole
/// ([`crate::files::replace`]).
fn write_file(dir: &Path, stored: &Stored) -> io::Result<()> {
    let body = flashsale_protocol::encoding::encode(stored).map_err(io::Error::other)?;
    let len =
        u32::try_from(body.len()).map_err(|_| io::Error::other("a snapshot larger than 4 GiB"))?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    crate::files::replace(dir, SNAPSHOT_FILE_NAME, &bytes)
}

/// Reads a snapshot file's bytes back; any damage is an error.
fn decode_file(bytes: &[u8]) -> Result<Stored, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a flashsale snapshot (bad header)")?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or("cut short")?;
    let (crc, body) = rest.split_first_chunk::<4>().ok_or("cut short")?;
    if body.len() as u64 != u64::from(u32::from_le_bytes(*len)) {
        return Err(format!(
            "holds {} bytes where its frame says {}",
            body.len(),
            u32::from_le_bytes(*len)
        ));
    }
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err("checksum mismatch".into());
    }
    flashsale_protocol::encoding::decode(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            meta: SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(2, 1),
                    7,
                )),
                last_membership: StoredMembership::default(),
                snapshot_id: "2-1-7-1".into(),
            },
            data: b"state".to_vec(),
        }
    }

    #[test]
    fn a_snapshot_file_reads_back_and_any_damage_is_refused() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        write_file(dir.path(), &stored())?;
        let bytes = fs::read(dir.path().join(SNAPSHOT_FILE_NAME))?;
        let back = decode_file(&bytes).map_err(io::Error::other)?;
        assert_eq!(back.data, b"state");
        assert_eq!(back.meta, stored().meta);
        for cut in 0..bytes.len() {
            assert!(decode_file(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode_file(&bad).is_err(), "flip at {at} accepted");
        }
        Ok(())
    }
}
