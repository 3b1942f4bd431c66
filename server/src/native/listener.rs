//! One accept loop per pinned worker thread, each on its own `SO_REUSEPORT`
//! listener (bound by [`flashsale_net::bind_reuseport`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{refuse_overloaded, serve, ConnectionLimits};
use crate::serving::Serving;
use flashsale_metrics::{self as metrics, Protocol as Front, ShedReason};

/// The running worker threads.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts one worker thread per listener, pinned round-robin to the
    /// available cores. Each accepts until `shutdown` is cancelled, then lets
    /// its connections finish their in-flight requests (at most `grace`).
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        serving: Arc<Serving>,
        limits: ConnectionLimits,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> io::Result<Workers> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let open = Arc::new(AtomicUsize::new(0));
        metrics::set_connections(Front::Native, 0);
        let mut handles = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let core = cores.get(i % cores.len().max(1)).copied();
            let worker = Worker {
                serving: Arc::clone(&serving),
                limits: Arc::new(limits.clone()),
                shutdown: shutdown.clone(),
                open: Arc::clone(&open),
                grace,
            };
            let handle = std::thread::Builder::new()
                .name(format!("flashsale-worker-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::debug!(worker = i, "could not pin to a core");
                        }
                    }
                    worker.run(listener);
                })?;
            handles.push(handle);
        }
        Ok(Workers { handles, open })
    }

    /// Connections open right now, over every worker.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits for every worker thread to finish.
    pub fn join(self) {
        for handle in self.handles {
            if handle.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

struct Worker {
    serving: Arc<Serving>,
    /// Shared by the worker's connections rather than copied into each.
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    open: Arc<AtomicUsize>,
    grace: Duration,
}

impl Worker {
    fn run(self, listener: std::net::TcpListener) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker runtime");
                self.shutdown.cancel();
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register the listener");
                    self.shutdown.cancel();
                    return;
                }
            };
            let tracker = TaskTracker::new();
            flashsale_net::accept_until(&listener, &self.shutdown, "native", |stream, peer| {
                self.admit(stream, peer, &tracker);
            })
            .await;
            drop(listener);
            tracker.close();
            if tokio::time::timeout(self.grace, tracker.wait()).await.is_err() {
                tracing::warn!(grace = ?self.grace, "connections still busy after the shutdown grace period; closing them");
            }
        });
    }

    /// `stream` has `TCP_NODELAY` already: it inherits it from the listener
    /// ([`flashsale_net::bind_reuseport`]).
    fn admit(&self, stream: TcpStream, peer: SocketAddr, tracker: &TaskTracker) {
        let guard = ConnectionGuard::new(&self.open);
        if guard.count > self.limits.max_connections {
            metrics::shed(Front::Native, ShedReason::Connections);
            tracker.spawn_local(async move {
                refuse_overloaded(stream).await;
                drop(guard);
            });
            return;
        }
        let serving = Arc::clone(&self.serving);
        let limits = Arc::clone(&self.limits);
        let shutdown = self.shutdown.clone();
        tracker.spawn_local(async move {
            serve(stream, peer, serving, limits, shutdown).await;
            drop(guard);
        });
    }
}

/// Counts a connection as open for as long as it lives, in the shared
/// counter and in the open-connections gauge.
///
/// The gauge is set from a fresh load of the counter after each change, not
/// from the value this guard saw: two threads that change the count at once
/// then both set the latest value, barring a preemption between the load and
/// the set, which the next connect or disconnect corrects.
struct ConnectionGuard {
    open: Arc<AtomicUsize>,
    /// Open connections including this one, when it was accepted.
    count: usize,
}

impl ConnectionGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        let count = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::set_connections(Front::Native, open.load(Ordering::Relaxed));
        ConnectionGuard {
            open: Arc::clone(open),
            count,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::set_connections(Front::Native, self.open.load(Ordering::Relaxed));
    }
}
