//! Starting and stopping a whole server: recover the log, reconcile the
//! sales, bind the listeners, run the workers; on shutdown, stop accepting,
//! let in-flight work finish, and flush the log.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use flashsale_core::clock::now_ms;
use flashsale_core::{Journal, Registry, Sale, Sales};
use flashsale_http::admin::AdminFront;
use flashsale_http::{Backend, HttpFront};
use flashsale_protocol::SaleAction;
use flashsale_wal::{files, Wal, WalConfig};

use crate::backend::LocalBackend;
use crate::catalog::{self, definition_record, StoredSale};
use crate::config::ServerConfig;
use crate::expiry::Expiry;
use crate::journal::WalJournal;
use crate::leadership::Leadership;
use crate::log_hook::LogHook;
use crate::native::{ConnectionLimits, Workers};
use crate::operator::LocalOperator;
use crate::service::Service;
use crate::serving::Serving;
use crate::sink::Sink;
use flashsale_cluster::network::Advertised;

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    workers: Workers,
    http: Option<HttpFront>,
    admin: Option<AdminFront>,
    expiry: Expiry,
    serving: Arc<Serving>,
    /// A node of a cluster: the terms it leads.
    leadership: Option<Leadership>,
    /// The PostgreSQL drain, when configured.
    sink: Option<Sink>,
    /// Held for the server's life: one server per data directory.
    _dir_lock: std::fs::File,
}

impl Server {
    /// Recovers the data directory, reconciles the configured sales with the
    /// stored ones, binds the listeners and starts the worker threads.
    ///
    /// # Errors
    ///
    /// Fails, without serving anything, when the data directory cannot be
    /// used (unwritable, full, a damaged log header, owned by another user
    /// or writable by group or others), when the flags
    /// contradict a stored sale, or when the address cannot be bound.
    pub fn start(config: ServerConfig) -> anyhow::Result<Server> {
        if let Err(e) = flashsale_metrics::install() {
            tracing::warn!(error = %e, "metrics are not recorded");
        }
        if let Some(key) = &config.api_key {
            anyhow::ensure!(
                key.len() <= flashsale_protocol::MAX_API_KEY_LEN,
                "the API key is {} bytes; a Hello carries at most {} (the first frame is capped \
                 before the handshake)",
                key.len(),
                flashsale_protocol::MAX_API_KEY_LEN
            );
        }
        files::prepare_dir(&config.data_dir)?;
        let dir_lock = lock_data_dir(&config.data_dir)?;
        if config.durability == flashsale_wal::Durability::None {
            tracing::warn!("durability is `none`: wins are acknowledged before they reach the disk, and a crash can lose acknowledged tickets. Use this for benchmarks only.");
        }
        let (serving, sink) = match &config.cluster {
            Some(_) => {
                refuse_single_log(&config.data_dir)?;
                (Serving::follower(), None)
            }
            None => {
                let hook = Arc::new(LogHook::default());
                let wal_config =
                    WalConfig::default_for(&config.data_dir).durability(config.durability);
                let (wal, records) = Wal::open(wal_config, hook.clone()).with_context(|| {
                    format!("cannot open the log in {}", config.data_dir.display())
                })?;
                let sink = match &config.sink {
                    Some(sink) => Some(Sink::start(
                        sink.clone(),
                        &config.data_dir,
                        wal.durable_end(),
                    )?),
                    None => None,
                };
                let service = open_sales(&records, &config, wal, &hook)?;
                (Serving::single(service), sink)
            }
        };
        let threads = config.worker_threads();
        let listeners = flashsale_net::bind_reuseport(config.listen, threads)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listeners
            .first()
            .map(std::net::TcpListener::local_addr)
            .transpose()?
            .context("no listener was bound")?;
        let limits = ConnectionLimits {
            max_connections: config.max_connections,
            max_in_flight: config.max_in_flight.max(1),
            idle_timeout: config.idle_timeout,
            handshake_timeout: config.handshake_timeout,
            max_frame_len: config.max_frame_len,
            api_key: config.api_key.as_deref().map(Arc::from),
        };
        let shutdown = CancellationToken::new();
        let http = match &config.http {
            None => None,
            Some(http) => {
                let sales = http.sales.clone();
                let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(Arc::clone(&serving)));
                let backend = std::future::ready(Ok(backend));
                Some(HttpFront::start(
                    http,
                    backend,
                    sales,
                    shutdown.clone(),
                    config.shutdown_grace,
                )?)
            }
        };
        let admin = match &config.admin {
            None => None,
            Some(admin) => {
                let operator = Arc::new(LocalOperator::new(Arc::clone(&serving)));
                match AdminFront::start(
                    admin.listen,
                    admin.key.clone(),
                    operator,
                    shutdown.clone(),
                    config.shutdown_grace,
                ) {
                    Ok(front) => Some(front),
                    Err(e) => {
                        stop_fronts(&shutdown, None, http, None, None);
                        return Err(e);
                    }
                }
            }
        };
        let expiry = Expiry::start(Arc::clone(&serving), shutdown.clone())?;
        let workers = match Workers::start(
            listeners,
            Arc::clone(&serving),
            limits,
            shutdown.clone(),
            config.shutdown_grace,
        ) {
            Ok(workers) => workers,
            Err(e) => {
                stop_fronts(&shutdown, None, http, admin, Some(expiry));
                return Err(e).context("cannot start the worker threads");
            }
        };
        let leadership = match &config.cluster {
            None => None,
            Some(cluster) => {
                let advertised = Advertised {
                    native: Some(local_addr.to_string()),
                    http: http.as_ref().map(|h| h.local_addr().to_string()),
                };
                match Leadership::start(cluster.clone(), advertised, &config, Arc::clone(&serving))
                {
                    Ok(leadership) => Some(leadership),
                    Err(e) => {
                        stop_fronts(&shutdown, Some(workers), http, admin, Some(expiry));
                        return Err(e);
                    }
                }
            }
        };
        tracing::info!(%local_addr, threads, "listening");
        Ok(Server {
            local_addr,
            shutdown,
            workers,
            http,
            admin,
            expiry,
            serving,
            leadership,
            sink,
            _dir_lock: dir_lock,
        })
    }

    /// The address of the admin API, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminFront::local_addr)
    }

    /// The address the listeners are bound to (with the real port when
    /// port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP front, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpFront::local_addr)
    }

    /// Cancelling this token starts a graceful shutdown. It is also
    /// cancelled when a worker thread cannot run.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The request handler, for embedding (and for tests).
    pub fn serving(&self) -> &Arc<Serving> {
        &self.serving
    }

    /// Stops accepting, lets in-flight requests finish, then flushes and
    /// closes the log, and lets the PostgreSQL drain write what the log
    /// holds (within its grace).
    ///
    /// # Errors
    ///
    /// Fails when the log failed at any point while running (a write or
    /// sync error): some records may not be durable.
    pub fn shutdown(self) -> anyhow::Result<()> {
        let Server {
            shutdown,
            workers,
            http,
            admin,
            expiry,
            serving,
            leadership,
            sink,
            ..
        } = self;
        stop_fronts(&shutdown, Some(workers), http, admin, Some(expiry));
        let flushed = match leadership {
            // The node's log is the cluster's: it stops with the node.
            Some(leadership) => {
                leadership.shutdown();
                Ok(())
            }
            None => flush(serving),
        };
        if let Some(sink) = sink {
            sink.shutdown();
        }
        flushed?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Stops whatever of the fronts has started: on shutdown, or when a later
/// part of the start-up fails.
fn stop_fronts(
    shutdown: &CancellationToken,
    workers: Option<Workers>,
    http: Option<HttpFront>,
    admin: Option<AdminFront>,
    expiry: Option<Expiry>,
) {
    shutdown.cancel();
    if let Some(workers) = workers {
        workers.join();
    }
    if let Some(http) = http {
        http.join();
    }
    if let Some(admin) = admin {
        admin.join();
    }
    if let Some(expiry) = expiry {
        expiry.join();
    }
}

/// Flushes and closes a single node's log, once nothing else holds it.
fn flush(serving: Arc<Serving>) -> anyhow::Result<()> {
    let Some(service) = serving.current() else {
        return Ok(());
    };
    drop(serving);
    match Arc::try_unwrap(service) {
        Ok(service) => service
            .into_wal()
            .shutdown()
            .context("cannot flush the log"),
        Err(_) => {
            tracing::warn!(
                "the service is still referenced; the log is flushed by its writer on drop"
            );
            Ok(())
        }
    }
}

/// The service over the sales `records` describe, reconciled with the
/// configured ones: new definitions and draw winners a crash cut off are
/// appended to `wal` (and made durable) first. What a single node does at
/// startup with its own log, and a node of a cluster each time it starts
/// to lead, with the replicated records.
///
/// # Errors
/// Flags that contradict a stored sale, a log that refuses the new
/// records, or records the core cannot rebuild a sale from.
pub fn open_sales(
    records: &[flashsale_wal::Record],
    config: &ServerConfig,
    wal: Wal,
    hook: &LogHook,
) -> anyhow::Result<Arc<Service>> {
    let plan = catalog::plan(
        records,
        &config.sales,
        catalog::Requested {
            draw_window_ms: config.draw_window_ms,
        },
        now_ms(),
        &mut draw_seed,
    )?;
    for spec in &plan.new_definitions {
        wal.append_durable(definition_record(spec))
            .with_context(|| format!("cannot record the definition of sale {:?}", spec.id))?;
        tracing::info!(sale = %spec.id, capacity = spec.capacity, opens_at_ms = spec.opens_at_ms, hold_ms = ?spec.hold_ms, draw = ?spec.draw, "sale created");
    }
    let journal: Arc<dyn Journal> = Arc::new(WalJournal::new(wal.clone()));
    let mut sales = Vec::with_capacity(plan.sales.len());
    for mut stored in plan.sales {
        for record in stored.repair_draw() {
            tracing::warn!(%record, "a winner of the draw was cut off the log by a crash; appending it again");
            wal.append_durable(record)
                .with_context(|| format!("cannot repair the draw of sale {:?}", stored.spec.id))?;
        }
        sales.push(restore(stored, &journal)?);
    }
    let sales = Arc::new(Registry::new(Sales::new(sales)?));
    hook.track(Arc::clone(&sales));
    for sale in sales.load().iter() {
        // Holds that ran out while the server was down are released now
        // (logged first, like every expiry).
        sale.expire_due(now_ms());
        let s = sale.status(now_ms());
        tracing::info!(sale = %sale.spec().id, capacity = s.capacity, sold = s.sold, held = s.held, confirmed = s.confirmed, state = ?s.state, opens_at_ms = s.opens_at_ms, draws_at_ms = ?sale.draws_at_ms(), "serving sale");
    }
    Ok(Service::new(sales, wal, config.durability))
}

/// Refuses to run a node of a cluster on a data directory that holds a
/// single node's log: its tickets would be silently left out of the
/// cluster's.
fn refuse_single_log(dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join(flashsale_wal::LOG_FILE_NAME);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > 0 => anyhow::bail!(
            "{} holds a single node's log; a node of a cluster keeps its log elsewhere \
             (docs/CLUSTER.md): give it an empty data directory",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// A sale rebuilt from what the log holds of it: its wins, or its holds with
/// their journal; then the operator's last pause or close.
fn restore(stored: StoredSale, journal: &Arc<dyn Journal>) -> anyhow::Result<Sale> {
    let id = stored.spec.id.clone();
    let sale = Sale::recover(stored.spec.clone(), stored.history(), Arc::clone(journal))
        .with_context(|| format!("cannot restore sale {id:?} from the log"))?;
    if let Some(action @ (SaleAction::Pause | SaleAction::Close)) = stored.gate {
        sale.apply(action);
    }
    Ok(sale)
}

/// A fresh secret for a new sale's draw, from the operating system.
///
/// # Errors
///
/// When the operating system has no random source: a draw decided by a
/// guessable seed would be worse than no sale.
pub fn draw_seed() -> Result<flashsale_draw::Seed, String> {
    let mut seed = [0u8; flashsale_draw::SEED_LEN];
    getrandom::fill(&mut seed).map_err(|e| {
        format!("the operating system gives no random bytes for a draw's seed: {e}")
    })?;
    Ok(seed)
}

/// Takes an exclusive lock on `LOCK` in the data directory, so that two
/// servers never sell the same stock from one log. The kernel releases it
/// when the process dies, however it dies. The file is private and never
/// opened through a link.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = files::open(
        files::private_options().create(true).truncate(false),
        "open",
        &path,
    )?;
    files::restrict(&file, &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data directory {} is in use by another flashsale-server",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
