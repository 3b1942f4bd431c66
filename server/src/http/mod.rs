//! The HTTP front: a JSON API for browsers and other HTTP clients, beside
//! the binary protocol or in a separate gateway process.
//!
//! # Layout
//!
//! - [`backend`]: [`Backend`], the core behind the handlers: this process's
//!   [`Service`](crate::service::Service), called directly, or a remote core
//!   through a [`flashsale_client::Pool`]. Everything else here is the same
//!   in both deployments.
//! - [`auth`]: bearer tokens (HS256 JWTs) and the [`User`](auth::User)
//!   extractor of buying requests.
//! - `api` (private): the routes and the mapping of the core's answers to
//!   status codes and JSON bodies.
//! - `events` (private): Server-Sent Events. One poller per sale publishes
//!   the stock to a `watch` channel; every open page only forwards its
//!   changes, at most a few a second.
//! - `shed` (private): the bound on requests in progress; past it, 503 at
//!   once.
//! - `page` (private): the buyer's page, compiled into the binary.
//! - [`gateway`]: the stand-alone gateway (`flashsale-server gateway`).
//!
//! # Threads
//!
//! The front runs on its own multi-threaded tokio runtime, not on the
//! binary protocol's workers. Those are pinned current-thread runtimes,
//! each with its own `SO_REUSEPORT` listener, tuned for a tight pipelined
//! loop; an HTTP request costs far more (parsing, an HMAC, JSON), and a
//! burst of browsers would stall the native clients sharing that loop.
//! A separate runtime lets the OS share the cores between the two fronts,
//! and the only thing they share is the lock-free core and the log. Its
//! tasks are `Send`, so the multi-threaded scheduler spreads one HTTP
//! listener's connections over every core without a listener per thread.
//!
//! # Shutdown
//!
//! When the shutdown token is cancelled the listener stops accepting, idle
//! keep-alive connections close, event streams end, and requests in
//! progress finish (for at most the grace period) before the runtime is
//! dropped.

pub mod auth;
pub mod backend;
pub mod gateway;

mod api;
mod events;
mod page;
mod shed;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use tokio_util::sync::CancellationToken;

pub use backend::{Backend, BackendError};

use crate::config::HttpConfig;

/// Shared by every handler.
pub(crate) type AppState = Arc<State>;

/// What the handlers share.
pub struct State {
    backend: Backend,
    auth: auth::Auth,
    demo: bool,
    /// The sale ids `/api/config` names.
    sales: Vec<String>,
    events: events::Hub,
    shutdown: CancellationToken,
}

/// A running HTTP front: its listener and the thread of its runtime.
pub struct HttpFront {
    local_addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl HttpFront {
    /// Binds `config.listen` and serves on a new runtime until `shutdown` is
    /// cancelled. `backend` is built on that runtime (a remote pool's
    /// connections live there).
    ///
    /// # Errors
    ///
    /// No secret and no demo mode, an address that cannot be bound, or a
    /// backend that cannot be built.
    pub fn start<F>(
        config: &HttpConfig,
        backend: F,
        sales: Vec<String>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<HttpFront>
    where
        F: std::future::Future<Output = anyhow::Result<Backend>>,
    {
        let secret = secret(config)?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = config.threads {
            builder.worker_threads(threads.max(1));
        }
        let runtime = builder
            .thread_name("flashsale-http")
            .enable_all()
            .build()
            .context("cannot start the HTTP runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .with_context(|| format!("cannot listen for HTTP on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let backend = runtime.block_on(backend)?;
        let state = Arc::new(State {
            backend,
            auth: auth::Auth::new(&secret),
            demo: config.demo,
            sales,
            events: events::Hub::default(),
            shutdown: shutdown.clone(),
        });
        let router = api::router(state, config.max_in_flight.max(1));
        let thread = std::thread::Builder::new()
            .name("flashsale-http-main".into())
            .spawn(move || {
                runtime.block_on(serve(listener, router, shutdown, grace));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the HTTP thread")?;
        tracing::info!(%local_addr, demo = config.demo, max_in_flight = config.max_in_flight, "HTTP listening");
        Ok(HttpFront { local_addr, thread })
    }

    /// The address the HTTP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the front to stop (after its shutdown token is cancelled).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the HTTP thread panicked");
        }
    }
}

/// Every route of the front over `backend`, as a [`axum::Router`] with no
/// listener and no runtime of its own: for answering requests in-process
/// (the `http_request` fuzz target drives it with `tower::ServiceExt::oneshot`).
///
/// `secret` verifies buyers' tokens (HS256), `demo` adds `POST /demo/token`,
/// `sales` is what `/api/config` names, at most `max_in_flight` requests are
/// in progress at once, and event streams end when `shutdown` is cancelled:
/// the same state [`HttpFront::start`] builds. Call it inside a tokio runtime
/// with timers; an event stream spawns its poller there.
pub fn router(
    backend: Backend,
    secret: &[u8],
    demo: bool,
    sales: Vec<String>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> axum::Router {
    let state = Arc::new(State {
        backend,
        auth: auth::Auth::new(secret),
        demo,
        sales,
        events: events::Hub::default(),
        shutdown,
    });
    api::router(state, max_in_flight.max(1))
}

async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let stop = shutdown.clone();
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the HTTP server failed");
                shutdown.cancel();
            }
            return;
        }
        () = shutdown.cancelled() => {}
    }
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!(
            ?grace,
            "HTTP requests still in progress after the shutdown grace period; closing them"
        );
    }
}

/// The signing key: the configured one, or in demo mode a random one.
fn secret(config: &HttpConfig) -> anyhow::Result<Vec<u8>> {
    if config.demo {
        tracing::warn!("DEMO MODE: POST /demo/token hands out a token for any user to anyone. Never run a real sale like this.");
    }
    match &config.jwt_secret {
        Some(secret) if secret.is_empty() => anyhow::bail!("the JWT secret is empty"),
        Some(secret) => {
            if secret.len() < 32 {
                tracing::warn!(
                    bytes = secret.len(),
                    "the JWT secret is short; use at least 32 random bytes"
                );
            }
            Ok(secret.clone())
        }
        None if config.demo => random_secret(),
        None => anyhow::bail!(
            "the HTTP front needs a JWT secret to verify buyers' tokens: \
             --jwt-secret-file PATH or FLASHSALE_JWT_SECRET (or --demo for a throwaway one)"
        ),
    }
}

fn random_secret() -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("cannot read /dev/urandom for a demo secret")?;
    Ok(secret)
}

/// A JSON error body: `{"error": code, "message": message}`.
pub(crate) fn error_response(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> impl IntoResponse {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.into() })),
    )
}
