//! The background writer thread: batches commands, writes and syncs each
//! batch once, then runs the durable hook and answers every waiter. Each
//! commit is reported to the hook (records per batch, fsync time) and counted
//! in [`WalStats`](super::WalStats); a failure turns [`Wal::is_healthy`](super::Wal::is_healthy)
//! false for good.

use std::fs::File;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::Receiver;
use tokio::sync::oneshot;

use super::error::WalError;
use super::record::Record;
use super::{Durability, DurableHook, WalStats};

/// The file operations the writer needs, so tests can inject faults.
///
/// Implemented for [`std::fs::File`]. A wrapper can fail a write or a sync,
/// or write only part of a buffer before failing (a torn write), to exercise
/// the failure paths without a broken disk.
pub trait LogFile: Send + 'static {
    /// Writes the whole buffer at the end of the log.
    ///
    /// # Errors
    /// Any I/O error; part of the buffer may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (`fdatasync`).
    ///
    /// # Errors
    /// Any I/O error. After an error the state of earlier writes is unknown
    /// and the writer never retries.
    fn sync_data(&mut self) -> io::Result<()>;
}

impl LogFile for File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// Where to send the outcome of a command.
pub(crate) enum Waiter {
    /// An async caller awaiting a oneshot.
    Async(oneshot::Sender<Result<(), WalError>>),
    /// A thread blocked in `Wal::append_durable`.
    Blocking(crossbeam_channel::Sender<Result<(), WalError>>),
}

impl Waiter {
    pub(crate) fn complete(self, result: Result<(), WalError>) {
        // A waiter that stopped listening does not need the answer.
        match self {
            Waiter::Async(tx) => drop(tx.send(result)),
            Waiter::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

/// A message to the writer thread.
pub(crate) enum Command {
    /// Write a record; answer once it is durable.
    Append {
        record: Record,
        done: Option<Waiter>,
    },
    /// Answer once everything enqueued before is durable.
    Barrier { done: Waiter },
    /// Finish what is enqueued before, refuse what comes after, exit.
    Shutdown,
}

impl Command {
    /// Answers the command's waiter, if any, with `error`.
    pub(crate) fn reject(self, error: WalError) {
        match self {
            Command::Append {
                done: Some(done), ..
            }
            | Command::Barrier { done } => {
                done.complete(Err(error));
            }
            Command::Append { done: None, record } => {
                tracing::warn!(%record, %error, "write-ahead log append rejected");
            }
            Command::Shutdown => {}
        }
    }
}

/// The first write or sync error; once set, the log accepts nothing more.
#[derive(Clone)]
pub(crate) struct Failure {
    op: &'static str,
    source: Arc<io::Error>,
}

impl Failure {
    pub(crate) fn to_error(&self) -> WalError {
        WalError::Failed {
            op: self.op,
            source: Arc::clone(&self.source),
        }
    }
}

/// State shared by the handles and the writer thread.
#[derive(Default)]
pub(crate) struct Shared {
    /// False once shutdown starts; appends then fail at once.
    pub(crate) accepting: AtomicBool,
    /// False once `failure` is set (stored with `Release` after it, so a
    /// reader that loads false with `Acquire` finds `failure` set).
    pub(crate) healthy: AtomicBool,
    /// Written once by the writer thread. A std `Mutex` because it is only
    /// read on the error path, never contended on the hot one.
    pub(crate) failure: Mutex<Option<Failure>>,
    /// File offset up to which the log is durable (fdatasynced, or written
    /// under [`Durability::None`]): always the end of a whole record. Only
    /// the writer thread stores it, with `Release` after the sync, so a
    /// reader that loads it with `Acquire` and reads the file up to it
    /// finds whole records that no crash can take back.
    pub(crate) durable_end: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    fsyncs: AtomicU64,
    last_fsync_nanos: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            accepting: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
            ..Shared::default()
        }
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn stats(&self) -> WalStats {
        WalStats {
            batches: self.batches.load(Relaxed),
            records: self.records.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            last_fsync: std::time::Duration::from_nanos(self.last_fsync_nanos.load(Relaxed)),
        }
    }
}

/// The writer thread's state. It owns the receiving end only: when every
/// `Wal` handle is gone the channel disconnects and the thread exits, so
/// nothing here keeps the log alive.
pub(crate) struct Writer<F> {
    pub(crate) file: F,
    pub(crate) rx: Receiver<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) hook: Arc<dyn DurableHook>,
    pub(crate) durability: Durability,
    pub(crate) max_batch: usize,
}

impl<F: LogFile> Writer<F> {
    /// Runs until shutdown or until every handle is dropped.
    ///
    /// Returns `Err` if the log failed at any point.
    pub(crate) fn run(mut self) -> Result<(), WalError> {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut buf = Vec::with_capacity(4096);
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if self.process(&mut batch, &mut buf) {
                self.shared.accepting.store(false, Relaxed);
                // Whatever raced past the `accepting` check is refused, not lost.
                for command in self.rx.try_iter() {
                    command.reject(WalError::Closed);
                }
                break;
            }
        }
        match self.shared.failure() {
            Some(failure) => Err(failure.to_error()),
            None => Ok(()),
        }
    }

    /// Commits one batch and answers its waiters. Returns true on shutdown.
    fn process(&mut self, batch: &mut Vec<Command>, buf: &mut Vec<u8>) -> bool {
        let mut records = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        let mut shutdown = false;
        buf.clear();
        for command in batch.drain(..) {
            match command {
                command if shutdown => command.reject(WalError::Closed),
                Command::Shutdown => shutdown = true,
                Command::Barrier { done } => waiters.push(done),
                Command::Append { record, done } => match record.encode_into(buf) {
                    Ok(()) => {
                        records.push(record);
                        waiters.extend(done);
                    }
                    Err(e) => Command::Append { record, done }.reject(e.into()),
                },
            }
        }
        self.commit(buf, &records);
        // Answer only after the commit: an Ok here means durable and known
        // to the hook; an error means not known to be durable.
        let failure = self.shared.failure();
        for waiter in waiters {
            waiter.complete(failure.as_ref().map_or(Ok(()), |f| Err(f.to_error())));
        }
        shutdown
    }

    /// One write, one sync, then the hook. Records the first failure.
    fn commit(&mut self, buf: &[u8], records: &[Record]) {
        if buf.is_empty() || self.shared.failure().is_some() {
            return;
        }
        if let Err(e) = self.file.write_all(buf) {
            return self.fail("write", e);
        }
        let mut fsync = None;
        if self.durability == Durability::Fsync {
            let started = Instant::now();
            if let Err(e) = self.file.sync_data() {
                // Never retried: after a failed fsync the kernel may have
                // dropped the dirty pages, so a later success proves nothing.
                return self.fail("sync", e);
            }
            let elapsed = started.elapsed();
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            self.shared.last_fsync_nanos.store(nanos, Relaxed);
            self.shared.fsyncs.fetch_add(1, Relaxed);
            fsync = Some(elapsed);
        }
        self.shared.durable_end.fetch_add(buf.len() as u64, Release);
        self.shared.batches.fetch_add(1, Relaxed);
        self.shared.records.fetch_add(records.len() as u64, Relaxed);
        self.shared.bytes.fetch_add(buf.len() as u64, Relaxed);
        let hook = &self.hook;
        let observed = || {
            hook.committed(records.len(), fsync);
            hook.durable(records);
        };
        if catch_unwind(AssertUnwindSafe(observed)).is_err() {
            // The records are durable but whoever tracks them missed them;
            // answering Ok now could acknowledge an unmarked ticket.
            self.fail(
                "run the durable hook",
                io::Error::other("the durable hook panicked"),
            );
        }
    }

    fn fail(&self, op: &'static str, error: io::Error) {
        tracing::error!(op, %error, "write-ahead log failed; refusing all further records");
        let mut failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(Failure {
            op,
            source: Arc::new(error),
        });
        drop(failure);
        self.shared.healthy.store(false, Release);
    }
}
