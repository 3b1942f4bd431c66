//! The Raft log and vote on disk: [`LogStore`], openraft's
//! [`RaftLogStorage`] over two files in one directory.
//!
//! # Why it looks like this
//!
//! **One fdatasync per `append` call.** openraft hands the store every
//! entry that arrived since its last write in a single `append`. All of
//! them are framed into one buffer, written with one `write` and made
//! durable with one `fdatasync`, after which openraft is told (the
//! [`LogFlushed`] callback). Since the leader and every follower do the
//! same, a batch costs one sync per node however many entries it holds:
//! group commit across the cluster, and the reason this store exists
//! rather than a key-value store under openraft.
//!
//! **The disk is never on the async task.** A dedicated thread owns the
//! files and runs appends, truncations, purges and meta updates strictly
//! in submission order, so a truncation can never overtake the append
//! before it. `append` returns as soon as the entries are queued and in
//! memory (openraft may read them before they are durable; it only counts
//! them once the callback says so); `truncate`, `purge` and `save_vote`
//! wait for their own completion.
//!
//! **Reads never touch the disk.** Every entry after the purged point is
//! kept in memory, with its offset in the file (where a truncation cuts).
//!
//! **Torn tails are expected, holes are not.** A crash can leave the last
//! write half done: recovery keeps every whole frame whose checksum
//! matches and whose payload decodes, and cuts the file at the first one
//! that does not, with a warning naming the offset. Nothing cut was ever
//! acknowledged, as its sync never completed. Entries that are whole but
//! not consecutive are not a torn write but a bug or a foreign file, and
//! opening fails.
//!
//! **Failure is final.** After a failed write or sync the kernel may have
//! dropped the dirty pages, and a retried fsync can report success for
//! data that never reached the disk. So the first failure is kept, and
//! every later call is refused with it; the process restarts and
//! recovers from what is really on disk.
//!
//! **Purges are cheap.** A purge records the purge point in `raft.meta`
//! and drops the entries from memory; the purged frames stay in the file,
//! skipped on open, until they are more than half of it and over 1 MiB.
//! Then the kept tail is copied into a new file that replaces the old one.
//!
//! # Files and bytes
//!
//! The directory (created with mode 0700 if missing, and locked while a
//! store has it open) holds two files, each created with mode 0600.
//!
//! `raft.log` starts with an 8-byte header: the ASCII magic `FSRAFT`, the
//! format version byte 1, a reserved byte 0. Frames follow back to back,
//! one per entry in index order. A frame is a 4-byte little-endian payload
//! length, the 4-byte little-endian CRC-32 (IEEE) of the payload, then the
//! payload: the [`Entry`] encoded by `flashsale_protocol::encoding` (bincode,
//! fixed-width little-endian integers). A payload is at most 64 MiB; a
//! longer length field is damage.
//!
//! `raft.meta` is an 8-byte header (`FSRMETA`, version byte 1) and exactly
//! one frame of the same shape whose payload holds the vote, the committed
//! log id and the last purged log id, each optional. It is replaced as a
//! whole: written to `raft.meta.tmp`, synced, renamed over, and the
//! directory synced. Damage to it fails the open, as it is never torn. The
//! vote is durable when `save_vote` returns; the committed log id, which
//! openraft lets a store keep lazily, reaches the disk with the next vote
//! or purge, within a second, or when the last handle is dropped.

mod error;
mod frame;
mod meta;
mod recovery;
mod writer;

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::fs::{self, DirBuilder, File, TryLockError};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};

use flashsale_protocol::encoding;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use tokio::sync::oneshot;

pub use self::error::LogStoreError;
use self::frame::{HEADER_LEN, MAX_PAYLOAD};
use self::writer::{Failure, Job, Writer};
use crate::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// Mode of the files the store creates.
use crate::files::FILE_MODE;
/// Name of the vote and commit file in the node's data directory.
pub const META_FILE_NAME: &str = "raft.meta";
/// Mode of a directory the store creates.
const DIR_MODE: u32 = 0o700;
/// Purged bytes below this never trigger a rewrite of the log file.
const REWRITE_MIN_BYTES: u64 = 1 << 20;

/// The paths of the store's files.
struct Paths {
    dir: PathBuf,
    log: PathBuf,
    log_tmp: PathBuf,
    meta: PathBuf,
    meta_tmp: PathBuf,
}

/// An entry in memory, and where its frame starts in `raft.log`.
struct Slot {
    offset: u64,
    entry: Entry,
}

/// The Raft log and vote of one node, on disk in one directory. A cheap
/// handle: clones share the same store. The files are closed, and a
/// pending committed log id written, when the last clone is dropped.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    paths: Arc<Paths>,
    state: Mutex<State>,
    failure: Failure,
    worker: Option<JoinHandle<()>>,
}

/// The log as openraft sees it: what has been submitted, durable or not.
struct State {
    log: BTreeMap<u64, Slot>,
    /// The length of `raft.log` once every submitted job has run.
    end: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    jobs: Option<Sender<Job>>,
}

impl State {
    fn submit(&self, job: Job) -> Result<(), LogStoreError> {
        let jobs = self.jobs.as_ref().ok_or(LogStoreError::Closed)?;
        jobs.send(job).map_err(|_| LogStoreError::Closed)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        drop(state.jobs.take());
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!("the raft log store's writer thread panicked");
            }
        }
    }
}

impl LogStore {
    /// Opens the store in `dir`, creating the directory (mode 0700) and
    /// its files if missing, and recovers the log: a damaged tail is cut
    /// off with a warning.
    ///
    /// # Errors
    ///
    /// [`LogStoreError::Io`] naming the file and the operation,
    /// [`LogStoreError::Locked`] if another store has `dir` open,
    /// [`LogStoreError::BadHeader`], [`LogStoreError::BadMeta`] or
    /// [`LogStoreError::Gap`] for files this store cannot trust.
    pub fn open(dir: &Path) -> Result<LogStore, LogStoreError> {
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(LogStoreError::io("create", dir))?;
            // The new directory's name must outlive a crash too.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            let parent = parent.unwrap_or(Path::new("."));
            File::open(parent)
                .and_then(|p| p.sync_all())
                .map_err(LogStoreError::io("sync directory", parent))?;
        }
        let paths = Arc::new(Paths {
            dir: dir.to_owned(),
            log: dir.join("raft.log"),
            log_tmp: dir.join("raft.log.tmp"),
            meta: dir.join(META_FILE_NAME),
            meta_tmp: dir.join("raft.meta.tmp"),
        });
        let dir_handle = File::open(dir).map_err(LogStoreError::io("open", dir))?;
        match dir_handle.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LogStoreError::Locked {
                    path: dir.to_owned(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(LogStoreError::io("lock", dir)(e)),
        }
        for leftover in [&paths.log_tmp, &paths.meta_tmp] {
            match fs::remove_file(leftover) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(LogStoreError::io("remove", leftover)(e))
                }
                _ => {}
            }
        }
        let meta = meta::load(&paths)?;
        let recovered = recovery::recover(&paths, &dir_handle, meta.purged)?;

        let (jobs, inbox) = mpsc::channel();
        let failure: Failure = Arc::new(OnceLock::new());
        let state = State {
            log: recovered.log,
            end: recovered.end,
            vote: meta.vote,
            committed: meta.committed,
            purged: meta.purged,
            jobs: Some(jobs),
        };
        let writer = Writer {
            paths: Arc::clone(&paths),
            log: recovered.file,
            dir: dir_handle,
            meta,
            failure: Arc::clone(&failure),
            committed_due: None,
        };
        let worker = thread::Builder::new()
            .name("raft-log".to_owned())
            .spawn(move || writer.run(inbox))
            .map_err(LogStoreError::io("start the writer thread of", dir))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                paths,
                state: Mutex::new(state),
                failure,
                worker: Some(worker),
            }),
        })
    }

    /// The in-memory state, once the store is known not to have failed.
    fn state(&self) -> Result<MutexGuard<'_, State>, LogStoreError> {
        if let Some(cause) = self.shared.failure.get() {
            return Err(writer::refusal(cause));
        }
        Ok(self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.paths.dir)
            .finish_non_exhaustive()
    }
}

fn write_err(e: &LogStoreError) -> StorageError {
    StorageIOError::write_logs(e).into()
}

/// Waits for the writer to run a job.
async fn completion(done: oneshot::Receiver<io::Result<()>>) -> io::Result<()> {
    done.await
        .unwrap_or_else(|_| Err(io::Error::other(LogStoreError::Closed)))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let state = self.state().map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(state
            .log
            .range(range)
            .map(|(_, slot)| slot.entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.state().map_err(|e| StorageIOError::read_logs(&e))?;
        let last = state.log.last_key_value().map(|(_, s)| s.entry.log_id);
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: last.or(state.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let err = |e: &LogStoreError| StorageError::from(StorageIOError::write_vote(e));
        let (done, completed) = oneshot::channel();
        {
            let state = self.state().map_err(|e| err(&e))?;
            let job = Job::Vote { vote: *vote, done };
            state.submit(job).map_err(|e| err(&e))?;
        }
        completion(completed)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.state().map_err(|e| err(&e))?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let state = self.state().map_err(|e| StorageIOError::read_vote(&e))?;
        Ok(state.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut state = self.state().map_err(|e| write_err(&e))?;
        state.committed = committed;
        state
            .submit(Job::Committed(committed))
            .map_err(|e| write_err(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let state = self.state().map_err(|e| StorageIOError::read(&e))?;
        Ok(state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        done: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Encoding, the costly part, happens outside the lock.
        let mut bytes = Vec::new();
        let mut framed = Vec::new();
        for entry in entries {
            let payload = encoding::encode(&entry).map_err(|e| write_err(&e.into()))?;
            if payload.len() > MAX_PAYLOAD {
                let index = entry.log_id.index;
                let len = payload.len();
                return Err(write_err(&LogStoreError::TooLarge { index, len }));
            }
            framed.push((bytes.len() as u64, entry));
            frame::push(&mut bytes, &payload);
        }

        let mut state = self.state().map_err(|e| write_err(&e))?;
        // openraft truncates before it overwrites: an entry at or before
        // the last one would leave the file and memory disagreeing, so it
        // is refused before anything changes. Entries at or before the purge
        // point (openraft's own test suite appends some) are written, but
        // are not part of the log: they are not kept, as recovery skips them.
        let mut last = state.log.last_key_value().map(|(&i, _)| i);
        for (_, entry) in &framed {
            let index = entry.log_id.index;
            if let Some(last) = last.filter(|&last| index <= last) {
                return Err(write_err(&LogStoreError::OutOfOrder { index, last }));
            }
            last = Some(index);
        }
        let offset = state.end;
        let len = bytes.len() as u64;
        state
            .submit(Job::Append {
                offset,
                bytes,
                done,
            })
            .map_err(|e| write_err(&e))?;
        let purged = state.purged.map(|p| p.index);
        for (at, entry) in framed {
            let index = entry.log_id.index;
            if purged.is_none_or(|p| index > p) {
                let offset = offset + at;
                state.log.insert(index, Slot { offset, entry });
            }
        }
        state.end = offset + len;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (done, completed) = oneshot::channel();
        {
            let mut state = self.state().map_err(|e| write_err(&e))?;
            let removed = state.log.split_off(&log_id.index);
            let Some((_, first)) = removed.first_key_value() else {
                return Ok(());
            };
            let len = first.offset;
            state.end = len;
            state
                .submit(Job::Truncate { len, done })
                .map_err(|e| write_err(&e))?;
        }
        completion(completed)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let (done, completed) = oneshot::channel();
        {
            let mut state = self.state().map_err(|e| write_err(&e))?;
            if state.purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            state.purged = Some(log_id);
            state.log = match log_id.index.checked_add(1) {
                Some(next) => state.log.split_off(&next),
                None => BTreeMap::new(),
            };
            let header = HEADER_LEN as u64;
            let keep_from = state
                .log
                .first_key_value()
                .map_or(state.end, |(_, s)| s.offset);
            let dead = keep_from - header;
            let rewrite = dead > REWRITE_MIN_BYTES && dead > (state.end - header) / 2;
            if rewrite {
                // The offsets the file will have once the writer is done.
                for slot in state.log.values_mut() {
                    slot.offset -= dead;
                }
                state.end -= dead;
            }
            let rewrite_from = rewrite.then_some(keep_from);
            let job = Job::Purge {
                purged: log_id,
                rewrite_from,
                done,
            };
            state.submit(job).map_err(|e| write_err(&e))?;
        }
        completion(completed)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
