//! flashsale-http, the HTTP front: a JSON API for browsers and other HTTP
//! clients, beside the binary protocol in the server, or in a separate
//! gateway process.
//!
//! # Layout
//!
//! - [`backend`]: the [`Backend`] trait, the core behind the handlers. The
//!   server implements it over its own reservation core, the gateway over a
//!   pool of native connections to a remote one. Everything in this crate is
//!   the same in both deployments.
//! - [`config`]: [`HttpConfig`], the front's settings, and [`flags`], the
//!   command-line flags both binaries parse them from.
//! - [`auth`]: bearer tokens (HS256 JWTs) and the [`User`](auth::User)
//!   extractor of buying requests.
//! - `api` (private): the routes and the mapping of the core's answers to
//!   status codes and JSON bodies.
//! - [`admin`]: the operator's API on its own listener, behind the
//!   [`Operator`](admin::Operator) trait and a bearer key.
//! - `events` (private): Server-Sent Events. One poller per sale publishes
//!   the stock to a `watch` channel; every open page only forwards its
//!   changes, at most a few a second.
//! - `shed` (private): the bounds on requests in progress and on open
//!   connections; past them, 503 at once.
//! - `page` (private): the buyer's page, compiled into the binary.
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
//! # Connections
//!
//! Each connection is served by hyper's HTTP/1 server directly (not
//! `axum::serve`, which bounds neither connections nor header time), under
//! `ConnLimits`: a deadline for each request head (hyper's header read
//! timeout, which also ends keep-alive connections quiet between requests),
//! a 16 KiB cap on the head and the read buffer (431 past it), and an idle
//! timeout: the socket is wrapped in `Tracked`, which notes when a byte
//! last moved either way, and the connection's task closes it once nothing
//! has moved for the idle timeout (a body that stops arriving, a client
//! that stops reading). Past `max_connections`, a new connection gets a
//! canned 503 and is closed (`shed`).
//!
//! # Shutdown
//!
//! When the shutdown token is cancelled the listener stops accepting, idle
//! keep-alive connections close, event streams end, and requests in
//! progress finish (for at most the grace period) before the runtime is
//! dropped.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod config;
pub mod flags;

mod api;
mod events;
mod page;
mod shed;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flashsale_protocol::json::{ApiError, ErrorBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

pub use backend::{Backend, BackendError};
pub use config::HttpConfig;

/// Shared by every handler.
pub(crate) type AppState = Arc<State>;

/// What the handlers share.
pub struct State {
    backend: Arc<dyn Backend>,
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
        F: std::future::Future<Output = anyhow::Result<Arc<dyn Backend>>>,
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
        let router = router(
            backend,
            auth::Auth::with_rules(&secret, &config.token_rules),
            config.demo,
            sales,
            config.max_in_flight,
            shutdown.clone(),
        );
        let limits = ConnLimits::new(config);
        let admission = shed::Admission::new(config.max_connections);
        let thread = std::thread::Builder::new()
            .name("flashsale-http-main".into())
            .spawn(move || {
                runtime.block_on(serve(listener, router, limits, admission, shutdown, grace));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the HTTP thread")?;
        tracing::info!(
            %local_addr,
            demo = config.demo,
            max_in_flight = config.max_in_flight,
            max_connections = config.max_connections,
            header_timeout = ?config.header_timeout,
            idle_timeout = ?config.idle_timeout,
            jwt_issuer = config.token_rules.issuer.as_deref(),
            jwt_audience = config.token_rules.audience.as_deref(),
            jwt_max_lifetime = ?config.token_rules.max_lifetime,
            "HTTP listening"
        );
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
/// `auth` verifies buyers' tokens (HS256), `demo` adds `POST /demo/token`,
/// `sales` is what `/api/config` names, at most `max_in_flight` requests are
/// in progress at once, and event streams end when `shutdown` is cancelled:
/// the same state [`HttpFront::start`] builds. Call it inside a tokio runtime
/// with timers; an event stream spawns its poller there.
pub fn router(
    backend: Arc<dyn Backend>,
    auth: auth::Auth,
    demo: bool,
    sales: Vec<String>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> axum::Router {
    let state = Arc::new(State {
        backend,
        auth,
        demo,
        sales,
        events: events::Hub::default(),
        shutdown,
    });
    api::router(state, max_in_flight.max(1))
}

/// Largest request head (request line and headers) read; past it, 431 and
/// a close. Also the read buffer's bound, so a head that never ends cannot
/// grow it.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The bounds every HTTP connection is served under.
#[derive(Clone)]
struct ConnLimits {
    builder: http1::Builder,
    idle_timeout: Duration,
}

impl ConnLimits {
    fn new(config: &HttpConfig) -> Self {
        ConnLimits::with(config.header_timeout, config.idle_timeout)
    }

    fn with(header_timeout: Duration, idle_timeout: Duration) -> Self {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .max_buf_size(MAX_HEAD_BYTES);
        ConnLimits {
            builder,
            idle_timeout,
        }
    }
}

/// Accepts until `shutdown`, then waits (at most `grace`) for the
/// connections to finish.
async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnLimits,
    admission: shed::Admission,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    flashsale_net::accept_until(
        &listener,
        &shutdown,
        "http",
        |stream, _peer| match admission.admit() {
            shed::Admitted::Serve(permit) => {
                let router = router.clone();
                let limits = limits.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    connection(stream, router, &limits, &shutdown).await;
                    drop(permit);
                });
            }
            shed::Admitted::Refuse(permit) => {
                tracker.spawn(async move {
                    shed::refuse_connection(stream).await;
                    drop(permit);
                });
            }
            shed::Admitted::Drop => drop(stream),
        },
    )
    .await;
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "HTTP requests still in progress after the shutdown grace period; closing them"
        );
    }
}

/// Serves one connection until it closes, goes idle, or has finished its
/// request in progress after `shutdown`.
async fn connection(
    stream: TcpStream,
    router: axum::Router,
    limits: &ConnLimits,
    shutdown: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (io, activity) = Tracked::new(stream);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        router.clone().call(request.map(axum::body::Body::new))
    });
    let conn = limits.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(?peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(?peer, timeout = ?limits.idle_timeout, "HTTP connection idle; closing it");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, either way.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records its progress in an [`Activity`], for the idle
/// timeout: hyper owns the socket, the connection's task watches the clock.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl Tracked {
    fn new(inner: TcpStream) -> (Tracked, Activity) {
        let activity = Activity {
            opened: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        let io = Tracked {
            inner,
            activity: activity.clone(),
        };
        (io, activity)
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        None if config.demo => {
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| anyhow::anyhow!("cannot draw a random demo secret: {e}"))?;
            Ok(secret)
        }
        None => anyhow::bail!(
            "the HTTP front needs a JWT secret to verify buyers' tokens: \
             --jwt-secret-file PATH or FLASHSALE_JWT_SECRET (or --demo for a throwaway one)"
        ),
    }
}

/// A JSON error answer: `error`'s status, and the body
/// `{"error": code, "message": message}`.
pub(crate) fn api_error(error: ApiError, message: impl Into<String>) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}
