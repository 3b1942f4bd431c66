//! The drain into PostgreSQL: every sold ticket of the write-ahead log,
//! copied exactly once into the business's system of record.
//!
//! # Why it looks like this
//!
//! **Off the hot path.** Reservations never wait for the database: a win is
//! acknowledged once its record is durable in the log, and the log is the
//! buffer. One background thread, with a small runtime of its own, tails the
//! log file (read-only, its own handle) and writes what it finds in batches.
//! If PostgreSQL is down or slow, the backlog stays in the log, the lag
//! shows in `/metrics` and in warnings, and the drain catches up when the
//! database is back, retrying with capped exponential backoff.
//!
//! **Only durable records.** The log's writer publishes the offset up to
//! which the file is fdatasynced ([`Wal::durable_offset`](flashsale_wal::Wal::durable_offset)),
//! and the drain never reads past it. A record written but not yet synced
//! could vanish in a power cut, and its ticket be sold again to someone
//! else; it must not reach the database first.
//!
//! **Exactly once.** Each batch is one transaction: `BEGIN`, one `INSERT`
//! of all its rows, an `UPDATE` of the drain position to the byte offset
//! just after the batch's last record (only if the position is still where
//! this drain left it), `COMMIT`. Rows and position commit together or not
//! at all, so after any crash or restart of either side the drain resumes
//! exactly after the last committed batch. The table's keys (one row per
//! ticket, one ticket per user and sale) make a disagreement between the log
//! and the table loud: a unique violation stops the drain with an error; it
//! never skips a row.
//!
//! **Which log.** The position is stored per log, under a random id that the
//! drain creates on its first start in the data directory (the file
//! `sink.id`, see [`log_id`]), so another data directory never resumes from
//! this one's position. A stored position before the first record or past
//! the durable end means the log was replaced or cut: the drain stops with
//! an error instead of guessing.
//!
//! # Layout
//!
//! - [`schema`] holds the SQL: tables, the batch statements, `migrate`.
//! - `tail` reads the durable part of the log from a position.
//! - `drainer` is the loop: connect, resume, batch, back off.

mod drainer;
pub mod schema;
mod tail;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use flashsale_wal::record::DecodeError;
use flashsale_wal::{DurableEnd, LOG_FILE_NAME};

pub use self::schema::migrate;

/// Name of the file in the data directory that holds the log's id.
pub const LOG_ID_FILE: &str = "sink.id";

/// How to drain the log into PostgreSQL.
#[derive(Clone)]
#[non_exhaustive]
pub struct SinkConfig {
    /// Connection string, `postgres://user[:password]@host:port/db` or the
    /// `key=value` form. No TLS: meant for a database on loopback or a
    /// private network.
    pub url: String,
    /// The password, when it is kept out of the URL (read from a file).
    pub password: Option<Vec<u8>>,
    /// How often the drain looks for new durable records when idle.
    pub poll_interval: Duration,
    /// Most rows in one batch (one `INSERT`).
    pub max_batch_rows: usize,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// Longest a graceful shutdown waits for the drain to write what the
    /// log holds.
    pub shutdown_grace: Duration,
}

impl SinkConfig {
    /// Defaults for the database at `url`: poll every 50 ms, batches of up
    /// to 10,000 rows, retries from 100 ms to 10 s, 5 s of grace.
    pub fn new(url: impl Into<String>) -> Self {
        SinkConfig {
            url: url.into(),
            password: None,
            poll_interval: Duration::from_millis(50),
            max_batch_rows: 10_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// The parsed connection settings.
    ///
    /// # Errors
    /// When the URL is not a PostgreSQL connection string.
    pub fn pg_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .context("--sink is not a PostgreSQL connection string")?;
        if let Some(password) = &self.password {
            config.password(password.as_slice());
        }
        if config.get_application_name().is_none() {
            config.application_name("flashsale-sink");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_options().is_none() {
            // A statement stuck longer than this (a lock, a hung server) is
            // abandoned and retried rather than stalling the drain for good.
            config.options("-c statement_timeout=60000");
        }
        Ok(config)
    }
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("url", &redact(&self.url))
            .field("poll_interval", &self.poll_interval)
            .field("max_batch_rows", &self.max_batch_rows)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

/// The database a connection string names, without any password, for logs.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

fn redact(url: &str) -> String {
    tokio_postgres::Config::from_str(url).map_or_else(|_| "<unparsable>".into(), |c| describe(&c))
}

/// Why the drain stopped for good (until an operator looks).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The log file cannot be opened or read.
    #[error("cannot read the log {}: {reason}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A record in the durable part of the log does not decode.
    #[error("the log {} is damaged at offset {offset} inside its durable part: {error}", path.display())]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// File offset of the bad record.
        offset: u64,
        /// Why it does not decode.
        error: DecodeError,
    },
    /// The stored position is not inside this log.
    #[error(
        "the drain position stored in PostgreSQL ({stored}) is not inside the log {} \
         (records from 12 to {end}): the log was replaced or cut; refusing to guess. \
         Check the data directory, then fix or delete this log's row of flashsale_drain",
        path.display()
    )]
    BeyondEnd {
        /// The log file.
        path: PathBuf,
        /// The stored position.
        stored: u64,
        /// The log's durable end.
        end: u64,
    },
    /// The table and the log disagree, or someone else moved the position.
    #[error("the database disagrees with the log: {0}")]
    Disagree(String),
}

/// How far the drained log is durable: the drain never reads past it.
pub trait End: Send + 'static {
    /// The offset up to which the log holds durable, whole records.
    fn get(&self) -> u64;
}

impl End for DurableEnd {
    fn get(&self) -> u64 {
        DurableEnd::get(self)
    }
}

/// A node of a cluster's replica log ([`crate::replica`]): every byte in
/// it is a record the cluster committed.
impl End for std::sync::Arc<std::sync::atomic::AtomicU64> {
    fn get(&self) -> u64 {
        self.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The running drain. [`Sink::shutdown`] stops it; dropping it asks it to
/// stop without waiting.
pub struct Sink {
    stop: CancellationToken,
    done: crossbeam_channel::Receiver<()>,
    grace: Duration,
}

impl Sink {
    /// Starts draining the log of `data_dir` into the database of `config`,
    /// reading no further than `durable`.
    ///
    /// Creates the log's id file on the first start. Does not wait for the
    /// database: if it is down, the drain retries in the background.
    ///
    /// # Errors
    /// A malformed URL, an unreadable log, or an id file that cannot be read
    /// or created.
    pub fn start(config: SinkConfig, data_dir: &Path, durable: DurableEnd) -> anyhow::Result<Sink> {
        let log_id = log_id(data_dir)?;
        Sink::start_on(
            config,
            &data_dir.join(LOG_FILE_NAME),
            log_id,
            Box::new(durable),
        )
    }

    /// Starts draining the log file `log`, stored in the database under
    /// `log_id`, reading no further than `durable`: [`Sink::start`] for a
    /// log other than a single node's `wal.log` (a cluster node's replica
    /// log, whose id the cluster's nodes share).
    ///
    /// # Errors
    /// As [`Sink::start`].
    pub fn start_on(
        config: SinkConfig,
        log: &Path,
        log_id: String,
        durable: Box<dyn End>,
    ) -> anyhow::Result<Sink> {
        let pg = config.pg_config()?;
        let tail = tail::Tail::open(log)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the drain's runtime")?;
        let stop = CancellationToken::new();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        tracing::info!(database = %describe(&pg), %log_id, "draining the log into PostgreSQL");
        let drainer = drainer::Drainer::new(config.clone(), pg, log_id, tail, durable);
        let token = stop.clone();
        std::thread::Builder::new()
            .name("flashsale-sink".into())
            .spawn(move || {
                runtime.block_on(drainer.run(token));
                let _ = done_tx.send(());
            })
            .context("cannot start the drain thread")?;
        Ok(Sink {
            stop,
            done,
            grace: config.shutdown_grace,
        })
    }

    /// Lets the drain write what the log holds now (call it after the log
    /// is flushed), waiting at most the configured grace, then stops it.
    pub fn shutdown(self) {
        self.stop.cancel();
        // The drain's own final pass is bounded by the grace too; the extra
        // second covers its last round trip.
        if self
            .done
            .recv_timeout(self.grace + Duration::from_secs(1))
            .is_err()
        {
            tracing::warn!(
                grace = ?self.grace,
                "the PostgreSQL drain did not finish in time; it resumes from its stored position at the next start"
            );
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The id of the log in `data_dir`, under which its drain position is
/// stored: 32 random hex digits in the file `sink.id`, created (durably)
/// the first time.
///
/// The id belongs to the log: copy, move or delete `sink.id` together with
/// `wal.log`. A data directory copied with its id resumes the original's
/// position, which is right only for the copy that goes on selling alone.
///
/// # Errors
/// When the file cannot be read, holds something else, or cannot be created.
pub fn log_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(LOG_ID_FILE);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mut text = String::new();
            file.read_to_string(&mut text)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let id = text.trim();
            anyhow::ensure!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{} does not hold a log id (32 hex digits)",
                path.display()
            );
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_log_id(data_dir, &path),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
    }
}

fn create_log_id(data_dir: &Path, path: &Path) -> anyhow::Result<String> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random)
        .map_err(|e| anyhow::anyhow!("cannot draw a random log id: {e}"))?;
    let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
    flashsale_wal::files::write_new(data_dir, LOG_ID_FILE, format!("{id}\n").as_bytes())
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = log_id(dir.path()).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(log_id(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(log_id(other.path()).unwrap(), id);
        std::fs::write(dir.path().join(LOG_ID_FILE), "nonsense").unwrap();
        assert!(log_id(dir.path()).is_err());
    }

    #[test]
    fn the_password_never_shows() {
        let config = SinkConfig::new("postgres://app:hunter2@db.example:6543/sales");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("app@db.example:6543/sales"), "{debug}");
        let pg = config.pg_config().unwrap();
        assert_eq!(pg.get_application_name(), Some("flashsale-sink"));
        assert!(SinkConfig::new("http://nope").pg_config().is_err());
    }
}
