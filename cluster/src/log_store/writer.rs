//! The thread that owns the files: it runs appends, truncations, purges and
//! meta updates one at a time, in the order they were submitted, so the
//! async side never blocks on the disk and never reorders two writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openraft::storage::LogFlushed;
use openraft::Vote;
use tokio::sync::oneshot;

use super::frame::LOG_HEADER;
use super::meta::{self, Meta};
use super::{LogStoreError, Paths, FILE_MODE};
use crate::{LogId, NodeId, TypeConfig};

/// How long a new committed log id may wait before it is written to
/// `raft.meta` on its own (a vote or purge writes it at once). openraft
/// lets the committed id be saved lazily; writing it with every commit
/// would cost two more syncs per batch than the log itself.
const COMMITTED_DELAY: Duration = Duration::from_secs(1);

/// Where the writer reports whether it is done.
pub(super) type Done = oneshot::Sender<io::Result<()>>;

/// The first failure, shared by the writer and every handle of the store.
pub(super) type Failure = Arc<OnceLock<Arc<LogStoreError>>>;

/// One unit of work, run after every job submitted before it.
pub(super) enum Job {
    /// Write `bytes` (whole frames) at `offset`, then sync once.
    Append {
        offset: u64,
        bytes: Vec<u8>,
        done: LogFlushed<TypeConfig>,
    },
    /// Cut the file to `len` bytes and sync.
    Truncate { len: u64, done: Done },
    /// Record `purged` in the meta file; then, with `rewrite_from`, drop
    /// the file's bytes between the header and that offset.
    Purge {
        purged: LogId,
        rewrite_from: Option<u64>,
        done: Done,
    },
    /// Record the vote in the meta file.
    Vote { vote: Vote<NodeId>, done: Done },
    /// Record the committed log id, lazily.
    Committed(Option<LogId>),
}

/// The state of the writer thread.
pub(super) struct Writer {
    pub(super) paths: Arc<Paths>,
    pub(super) log: File,
    pub(super) dir: File,
    pub(super) meta: Meta,
    pub(super) failure: Failure,
    /// When the committed log id, changed since the last meta write, is
    /// due on disk.
    pub(super) committed_due: Option<Instant>,
}

/// The error a caller sees once the store has failed.
pub(super) fn refusal(cause: &Arc<LogStoreError>) -> LogStoreError {
    LogStoreError::Failed {
        cause: Arc::clone(cause),
    }
}

impl Writer {
    /// Runs jobs until every handle of the store is gone, then writes a
    /// pending committed log id.
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let job = match self.committed_due {
                None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => jobs.recv_timeout(due.saturating_duration_since(Instant::now())),
            };
            match job {
                Ok(job) => self.execute(job),
                Err(RecvTimeoutError::Timeout) => self.flush_committed(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush_committed();
    }

    fn execute(&mut self, job: Job) {
        match job {
            Job::Append {
                offset,
                bytes,
                done,
            } => done.log_io_completed(self.guard(|w| w.append(offset, &bytes))),
            Job::Truncate { len, done } => reply(done, self.guard(|w| w.truncate(len))),
            Job::Purge {
                purged,
                rewrite_from,
                done,
            } => reply(done, self.guard(|w| w.purge(purged, rewrite_from))),
            Job::Vote { vote, done } => reply(
                done,
                self.guard(|w| {
                    w.meta.vote = Some(vote);
                    w.store_meta()
                }),
            ),
            Job::Committed(committed) => {
                self.meta.committed = committed;
                self.committed_due
                    .get_or_insert_with(|| Instant::now() + COMMITTED_DELAY);
            }
        }
    }

    /// Runs `op` unless the store has failed; its failure is final.
    fn guard(&mut self, op: impl FnOnce(&mut Self) -> Result<(), LogStoreError>) -> io::Result<()> {
        if let Some(cause) = self.failure.get() {
            return Err(io::Error::other(refusal(cause)));
        }
        op(self).map_err(|e| {
            tracing::error!(
                "raft log store failed, refusing everything from now on: {}",
                chain(&e)
            );
            let cause = Arc::clone(self.failure.get_or_init(|| Arc::new(e)));
            io::Error::other(refusal(&cause))
        })
    }

    fn append(&mut self, offset: u64, bytes: &[u8]) -> Result<(), LogStoreError> {
        if bytes.is_empty() {
            // Everything submitted before is already durable.
            return Ok(());
        }
        let path = &self.paths.log;
        self.log
            .write_all_at(bytes, offset)
            .map_err(LogStoreError::io("write", path))?;
        self.log
            .sync_data()
            .map_err(LogStoreError::io("sync", path))
    }

    fn truncate(&mut self, len: u64) -> Result<(), LogStoreError> {
        let path = &self.paths.log;
        self.log
            .set_len(len)
            .map_err(LogStoreError::io("truncate", path))?;
        self.log.sync_all().map_err(LogStoreError::io("sync", path))
    }

    fn purge(&mut self, purged: LogId, rewrite_from: Option<u64>) -> Result<(), LogStoreError> {
        // The purge point first: if a crash comes before the rewrite, the
        // old file still holds every kept entry, and the purged ones are
        // skipped on open.
        self.meta.purged = Some(purged);
        self.store_meta()?;
        match rewrite_from {
            Some(from) => self.rewrite(from),
            None => Ok(()),
        }
    }

    /// Replaces `raft.log` by a copy without the bytes before `from`.
    fn rewrite(&mut self, from: u64) -> Result<(), LogStoreError> {
        let (log, tmp) = (&self.paths.log, &self.paths.log_tmp);
        let end = self
            .log
            .metadata()
            .map_err(LogStoreError::io("examine", log))?
            .len();
        let mut out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(tmp)
            .map_err(LogStoreError::io("create", tmp))?;
        out.write_all(&LOG_HEADER)
            .map_err(LogStoreError::io("write", tmp))?;
        let mut src = &self.log;
        src.seek(SeekFrom::Start(from))
            .map_err(LogStoreError::io("seek", log))?;
        let kept = end.saturating_sub(from);
        let copied = io::copy(&mut src.take(kept), &mut out)
            .map_err(LogStoreError::io("copy the kept entries of", log))?;
        if copied != kept {
            let short = io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected");
            return Err(LogStoreError::io("copy the kept entries of", log)(short));
        }
        out.sync_all().map_err(LogStoreError::io("sync", tmp))?;
        fs::rename(tmp, log).map_err(LogStoreError::io("rename over raft.log", tmp))?;
        self.dir
            .sync_all()
            .map_err(LogStoreError::io("sync directory", &self.paths.dir))?;
        self.log = out;
        Ok(())
    }

    fn store_meta(&mut self) -> Result<(), LogStoreError> {
        meta::store(&self.paths, &self.meta)?;
        self.committed_due = None;
        Ok(())
    }

    fn flush_committed(&mut self) {
        if self.committed_due.is_some() {
            // A failure here has no caller: it is logged and made final.
            let _ = self.guard(Self::store_meta);
            self.committed_due = None;
        }
    }
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

fn reply(done: Done, result: io::Result<()>) {
    // The caller may have given up waiting; the work is done regardless.
    let _ = done.send(result);
}
