//! flashsale-wal, the write-ahead log: every sold ticket, durable before the
//! buyer hears.
//!
//! # Why it looks like this
//!
//! **Acknowledge after durable.** A win is only a win once its
//! [`Record::TicketSold`] is on disk: if the process dies a microsecond after
//! telling a buyer "you got ticket 17", restarting must still find ticket 17
//! sold to them, and must not sell it again. So the server appends the
//! record, waits for the writer to report it durable, and only then replies.
//!
//! **Group commit.** An `fdatasync` costs on the order of a millisecond and
//! tens of thousands of buyers arrive in the same second. Syncing once per
//! record would cap the sale at a few hundred wins per second and make every
//! buyer queue behind every other. Instead, callers send records over a
//! channel to one background thread. It takes the first command, drains
//! whatever else queued up meanwhile (up to [`WalConfig::max_batch_records`]),
//! writes the whole batch with one `write`, syncs once, runs the
//! [`DurableHook`] (so the server marks those buyers durable *before* anyone
//! is told), and then answers every waiter of the batch. The busier the
//! sale, the larger the batches, and the cost per record falls.
//!
//! **Failure is final.** If a write or sync fails, the batch's waiters get an
//! error, the log is marked unhealthy ([`Wal::is_healthy`]) and every later
//! command fails too. A failed `fsync` is never retried: the kernel may have
//! dropped the dirty pages, so a later success would prove nothing. An error
//! answer means "not known to be durable", not "not written": the record may
//! still be found at the next start (the server then honours it; one ticket
//! per user keeps this from selling twice).
//!
//! **Torn tails.** A crash can leave the last record half written. Records
//! are framed with a length and a CRC, so [`recover`] keeps every whole
//! record, moves the damaged tail to a side file for inspection, and
//! truncates the log there. Appends continue from that point.
//!
//! The byte layout and these rules are specified in `docs/WAL.md`.
//!
//! # Layout
//!
//! - [`record`] holds the [`Record`] type and its pure encoding and decoding.
//! - [`recovery`] reads a log back and cuts a damaged tail.
//! - `writer` runs the background group-commit thread, behind [`Wal`].
//! - [`files`] keeps the data directory and its files private to the
//!   server's user, and never follows a link planted there.
//! - [`error`] defines [`WalError`].
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use flashsale_wal::{NoHook, Record, WalConfig};
//!
//! # async fn sell() -> Result<(), flashsale_wal::WalError> {
//! let (wal, records) = WalConfig::default_for("data").open(Arc::new(NoHook))?;
//! println!("recovered {} records", records.len());
//! let (done, durable) = tokio::sync::oneshot::channel();
//! let sold = Record::TicketSold { sale: "gig".into(), ticket: 0, user: 42, at_ms: 0 };
//! wal.append(sold, Some(done));
//! // Only now may the buyer be told.
//! durable.await.unwrap_or(Err(flashsale_wal::WalError::Closed))?;
//! wal.shutdown()
//! # }
//! ```

pub mod error;
pub mod files;
pub mod record;
pub mod recovery;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::oneshot;

pub use self::error::WalError;
pub use self::record::{DrawSeed, Record};
pub use self::recovery::{recover, Recovered, LOG_FILE_NAME};
pub use self::writer::LogFile;
use self::writer::{Command, Shared, Waiter, Writer};

/// Whether the writer syncs each batch before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` once per batch, then acknowledge. Survives power loss.
    #[default]
    Fsync,
    /// Acknowledge once the batch is written to the OS, never sync.
    ///
    /// Acknowledged records survive the process being killed (the kernel
    /// has them) but not a kernel crash or power loss. For benchmarks and
    /// tests only.
    None,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?} (expected \"fsync\" or \"none\")"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::None => "none",
        })
    }
}

/// Called by the writer thread after each batch becomes durable.
///
/// It runs on the writer thread, after the batch's sync and before any of the
/// batch's waiters is answered, so whatever it records is visible to a caller
/// by the time that caller learns its record is durable. Keep it short: the
/// next batch waits for it. It must not block on this log (the writer would
/// wait on itself) and should not hold a [`Wal`] handle (the writer would
/// then only stop on an explicit [`Wal::shutdown`]). A panic in it fails the
/// log.
pub trait DurableHook: Send + Sync + 'static {
    /// `records` were just made durable, in log order.
    fn durable(&self, records: &[Record]);

    /// A batch of `records` records was just written and, under
    /// [`Durability::Fsync`], synced in `fsync` (`None` without a sync).
    /// Called before [`DurableHook::durable`]; the log's observers (metrics)
    /// hear of each group commit here, so the log itself reports to no one.
    fn committed(&self, records: usize, fsync: Option<Duration>) {
        let _ = (records, fsync);
    }
}

impl<F> DurableHook for F
where
    F: Fn(&[Record]) + Send + Sync + 'static,
{
    fn durable(&self, records: &[Record]) {
        self(records);
    }
}

/// A [`DurableHook`] that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl DurableHook for NoHook {
    fn durable(&self, _records: &[Record]) {}
}

/// Counters of the writer, for metrics. See [`Wal::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches written (batches of only barriers are not counted).
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written, frames included, since open.
    pub bytes: u64,
    /// Successful `fdatasync` calls.
    pub fsyncs: u64,
    /// Duration of the latest successful `fdatasync`.
    pub last_fsync: Duration,
}

/// How to open the log. Build with [`WalConfig::default_for`], adjust with
/// the setters, then [`WalConfig::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WalConfig {
    /// Data directory holding `wal.log`; created if missing.
    pub dir: PathBuf,
    /// Whether batches are synced before being acknowledged.
    pub durability: Durability,
    /// Most commands (appends and barriers) taken into one batch. A bigger
    /// batch shares one sync among more records; a smaller one bounds how
    /// long the first record of a batch waits for the others to be encoded.
    pub max_batch_records: usize,
}

impl WalConfig {
    /// Default for [`WalConfig::max_batch_records`].
    pub const DEFAULT_MAX_BATCH_RECORDS: usize = 1024;

    /// Configuration for a log in `dir`, with `fsync` durability.
    pub const fn new(dir: PathBuf) -> Self {
        WalConfig {
            dir,
            durability: Durability::Fsync,
            max_batch_records: Self::DEFAULT_MAX_BATCH_RECORDS,
        }
    }

    /// Configuration for a log in `dir`, with `fsync` durability.
    pub fn default_for(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir.into())
    }

    /// Sets [`WalConfig::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`WalConfig::max_batch_records`] (at least 1).
    #[must_use]
    pub fn max_batch_records(mut self, max: usize) -> Self {
        self.max_batch_records = max.max(1);
        self
    }

    /// Recovers the log (see [`recover`]), then starts the writer thread.
    ///
    /// Returns the handle and every record recovered, in log order.
    ///
    /// # Errors
    /// Those of [`recover`], or [`WalError::Io`] if the thread cannot start.
    pub fn open(self, hook: Arc<dyn DurableHook>) -> Result<(Wal, Vec<Record>), WalError> {
        self.open_with(hook, |file| file)
    }

    /// [`WalConfig::open`], with the log file wrapped by `wrap` before the
    /// writer uses it: the seam for fault injection and instrumentation.
    ///
    /// # Errors
    /// As [`WalConfig::open`].
    pub fn open_with<F: LogFile>(
        self,
        hook: Arc<dyn DurableHook>,
        wrap: impl FnOnce(std::fs::File) -> F,
    ) -> Result<(Wal, Vec<Record>), WalError> {
        let (file, recovered) = recovery::open_log(&self.dir)?;
        let wal = self.spawn(wrap(file), recovered.end_offset, hook)?;
        Ok((wal, recovered.records))
    }

    /// Starts the writer on `file`, with nothing to recover: batches go to
    /// `file` from its first byte, and `dir` only names the log in errors.
    /// For a log kept elsewhere than `wal.log`: a node of a cluster hands
    /// each batch to its replicated log ([`LogFile::sync_data`] returns once
    /// a majority of the nodes has it on disk).
    ///
    /// # Errors
    /// [`WalError::Io`] if the thread cannot start.
    pub fn start_on<F: LogFile>(
        self,
        file: F,
        hook: Arc<dyn DurableHook>,
    ) -> Result<Wal, WalError> {
        self.spawn(file, 0, hook)
    }

    fn spawn<F: LogFile>(
        self,
        file: F,
        end_offset: u64,
        hook: Arc<dyn DurableHook>,
    ) -> Result<Wal, WalError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::new());
        shared.durable_end.store(end_offset, Relaxed);
        let writer = Writer {
            file,
            rx,
            shared: Arc::clone(&shared),
            hook,
            durability: self.durability,
            max_batch: self.max_batch_records.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("flashsale-wal".into())
            .spawn(move || writer.run())
            .map_err(WalError::io("start the writer thread for", &self.dir))?;
        let inner = Inner {
            tx,
            shared,
            thread: Mutex::new(Some(thread)),
        };
        Ok(Wal {
            inner: Arc::new(inner),
        })
    }
}

/// Reads the durable end offset of a log; see [`Wal::durable_end`].
#[derive(Clone)]
pub struct DurableEnd {
    shared: Arc<Shared>,
}

impl DurableEnd {
    /// The current [`Wal::durable_offset`]. It stops moving once the log is
    /// shut down or has failed.
    pub fn get(&self) -> u64 {
        self.shared.durable_end.load(Acquire)
    }
}

impl fmt::Debug for DurableEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DurableEnd").field(&self.get()).finish()
    }
}

// Every connection thread holds a handle: that it can is checked here, at
// compile time.
const _: fn() = || {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Wal>();
};

/// Handle to an open log. Cheap to clone; every clone feeds the same writer.
///
/// The writer stops on [`Wal::shutdown`], or when the last handle is dropped
/// (dropping waits for everything enqueued to be written, best effort).
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    /// Taken by whichever of `shutdown` or `drop` joins the writer first.
    /// A std `Mutex`: touched once, at the end.
    thread: Mutex<Option<JoinHandle<Result<(), WalError>>>>,
}

impl Wal {
    /// Opens the log described by `config`. Same as [`WalConfig::open`].
    ///
    /// # Errors
    /// As [`WalConfig::open`].
    pub fn open(
        config: WalConfig,
        hook: Arc<dyn DurableHook>,
    ) -> Result<(Wal, Vec<Record>), WalError> {
        config.open(hook)
    }

    /// Enqueues `record`. `done`, if given, receives `Ok` once the record is
    /// durable and the hook has seen it, or the error that prevented it.
    ///
    /// Never blocks. If `done`'s receiver ends with `RecvError` (the writer
    /// went away without answering), treat it as not durable.
    pub fn append(&self, record: Record, done: Option<oneshot::Sender<Result<(), WalError>>>) {
        self.submit(record, done.map(Waiter::Async));
    }

    /// Enqueues `record` and blocks the calling thread until it is durable.
    /// For startup and tools; never call it from an async task or the hook.
    ///
    /// # Errors
    /// Why the record is not known to be durable: [`WalError::Failed`],
    /// [`WalError::Closed`] or [`WalError::Encode`].
    pub fn append_durable(&self, record: Record) -> Result<(), WalError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(record, Some(Waiter::Blocking(tx)));
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// `done` receives `Ok` once everything enqueued before this call is
    /// durable (or the error that prevented it). Writes nothing itself.
    pub fn barrier(&self, done: oneshot::Sender<Result<(), WalError>>) {
        let done = Waiter::Async(done);
        match self.check_open() {
            Ok(()) => self.send(Command::Barrier { done }),
            Err(e) => done.complete(Err(e)),
        }
    }

    /// False once a write or sync has failed; the log then refuses everything.
    pub fn is_healthy(&self) -> bool {
        self.inner.shared.healthy.load(Acquire)
    }

    /// File offset up to which `wal.log` is durable: every byte before it
    /// belongs to a whole record that has been fdatasynced (with
    /// [`Durability::None`], written to the OS). A reader of the file (the
    /// PostgreSQL drain in the server binary) never reads past it, so it never
    /// passes on a record that a power cut could still take back.
    pub fn durable_offset(&self) -> u64 {
        self.inner.shared.durable_end.load(Acquire)
    }

    /// A handle that reads [`Wal::durable_offset`] without keeping the log
    /// open: it holds neither the file nor the writer.
    pub fn durable_end(&self) -> DurableEnd {
        DurableEnd {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// A snapshot of the writer's counters.
    pub fn stats(&self) -> WalStats {
        self.inner.shared.stats()
    }

    /// Stops accepting commands, finishes everything enqueued before, and
    /// joins the writer thread. Other clones' later commands get
    /// [`WalError::Closed`]. If another clone already shut the log down,
    /// returns at once. Blocks until everything enqueued before is written
    /// and the writer exits; from async code, call it in `spawn_blocking`.
    ///
    /// # Errors
    /// [`WalError::Failed`] if the log failed at any point, so some
    /// commands were refused.
    pub fn shutdown(self) -> Result<(), WalError> {
        self.inner
            .stop()
            .unwrap_or_else(|| match self.inner.shared.failure() {
                Some(failure) => Err(failure.to_error()),
                None => Ok(()),
            })
    }

    fn submit(&self, record: Record, done: Option<Waiter>) {
        let checked = self.check_open().and_then(|()| Ok(record.validate()?));
        match checked {
            Ok(()) => self.send(Command::Append { record, done }),
            Err(e) => Command::Append { record, done }.reject(e),
        }
    }

    fn send(&self, command: Command) {
        if let Err(crossbeam_channel::SendError(command)) = self.inner.tx.send(command) {
            command.reject(WalError::Closed);
        }
    }

    fn check_open(&self) -> Result<(), WalError> {
        let shared = &self.inner.shared;
        if !shared.healthy.load(Acquire) {
            if let Some(failure) = shared.failure() {
                return Err(failure.to_error());
            }
        }
        if !shared.accepting.load(Relaxed) {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

impl Inner {
    /// Stops and joins the writer. `None` if it was already joined.
    fn stop(&self) -> Option<Result<(), WalError>> {
        self.shared.accepting.store(false, Relaxed);
        // Fails only if the writer already exited; then there is nothing to stop.
        let _ = self.tx.send(Command::Shutdown);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        if thread.thread().id() == std::thread::current().id() {
            // Dropped from the hook, on the writer thread itself: it will see
            // the shutdown command once the hook returns.
            return Some(Ok(()));
        }
        Some(thread.join().unwrap_or_else(|_| {
            Err(WalError::Failed {
                op: "run the writer thread",
                source: Arc::new(std::io::Error::other("the writer thread panicked")),
            })
        }))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(Err(error)) = self.stop() {
            tracing::error!(%error, "write-ahead log dropped after a failure");
        }
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("healthy", &self.is_healthy())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
