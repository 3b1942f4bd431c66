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
//!   connections, overall and per client; past them, 503 (or 429) at once.
//! - [`rate_limit`]: token buckets per user and per client address; past
//!   them, 429 `rate_limited`. [`client_ip`]: who a request comes from
//!   (the TCP peer, or a trusted proxy's `X-Forwarded-For`).
//! - `page` (private): the buyer's page, compiled into the binary.
//! - `idle` (private): the socket under hyper, and how a keep-alive
//!   connection waits between requests without hyper's buffers.
//!
//! # Threads
//!
//! The front runs on threads of its own, not on the binary protocol's
//! workers: an HTTP request costs far more (parsing, an HMAC, JSON), and a
//! burst of browsers would stall the native clients sharing their loop.
//! The OS shares the cores between the two fronts, and the only thing they
//! share is the lock-free core and the log.
//!
//! Like the native front, it is thread-per-core: one thread per core
//! (`HttpConfig::threads`), each with a current-thread runtime and its own
//! `SO_REUSEPORT` listener, so the kernel spreads connections over the
//! threads and a connection stays on the thread that accepted it: no work
//! stealing, no wake-up of another thread for a request, and each listener
//! gets the native front's backlog (tokio's own bind asks for 1,024, which
//! a crowd of 10,000 connecting at once overflows). What the threads share
//! is behind `Arc`s: the router's state, the connection admission and the
//! in-flight bound. README "HTTP against the box's ceiling" has the
//! profile before and after.
//!
//! # The hot route
//!
//! `POST /api/sales/{sale}/reserve` is answered around the router
//! (`api::Hot`), by the same functions the route's handler uses; every
//! other request goes through the router. In a sold-out rush nearly every
//! request is that one, and the router's matching, middleware and
//! extractors cost more than the reservation itself.
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
//! hyper is kept only while a request is served: between two requests the
//! connection is handed back and waits for the socket to be readable with
//! no buffer, for at most the header timeout, and a fresh hyper connection
//! serves the next request (`idle`: when that is safe, and why it matters
//! for a crowd of idle keep-alive connections).
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
pub mod client_ip;
pub mod config;
pub mod flags;
pub mod rate_limit;

mod api;
mod draw;
mod events;
mod idle;
mod page;
mod shed;

use std::net::SocketAddr;
use std::sync::Arc;
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
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use idle::{Guarded, Tracked};

pub use backend::{Backend, BackendError};
pub use config::{HttpConfig, MIN_JWT_SECRET_LEN};

/// Shared by every handler.
pub(crate) type AppState = Arc<State>;

/// What the handlers share.
pub struct State {
    backend: Arc<dyn Backend>,
    auth: auth::Auth,
    /// The per-user buckets (the per-address ones are checked before a
    /// request reaches the state, in `connection`).
    limits: Arc<rate_limit::RateLimits>,
    demo: bool,
    /// The sale ids `/api/config` names.
    sales: Vec<String>,
    events: events::Hub,
    /// Permits for open event streams.
    streams: Arc<tokio::sync::Semaphore>,
    /// The longest life of one event stream.
    stream_lifetime: Duration,
    /// How long a request body may take to arrive.
    body_timeout: Duration,
    /// Whether `GET /metrics` is served here.
    metrics: bool,
    max_in_flight: usize,
    /// See [`HttpConfig::status_max_age`].
    status_max_age: Duration,
    shutdown: CancellationToken,
}

/// A running HTTP front: its address and its threads, one runtime and one
/// listener each.
pub struct HttpFront {
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl HttpFront {
    /// Binds `config.listen` once per thread (`SO_REUSEPORT`) and serves
    /// until `shutdown` is cancelled, each thread on a runtime of its own.
    /// `backend` is built on the first thread's runtime (a remote pool's
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
        let threads = config.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let listeners = flashsale_net::bind_reuseport(config.listen, threads)
            .with_context(|| format!("cannot listen for HTTP on {}", config.listen))?;
        let local_addr = listeners
            .first()
            .context("no HTTP listener was bound")?
            .local_addr()?;
        let mut runtimes = Vec::with_capacity(listeners.len());
        for _ in &listeners {
            runtimes.push(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start an HTTP runtime")?,
            );
        }
        let backend = runtimes
            .first()
            .context("no HTTP runtime was started")?
            .block_on(backend)?;
        let auth = auth::Auth::with_rules(&secret, &config.token_rules);
        let limits = Arc::new(rate_limit::RateLimits::new(
            &config.rate_limit,
            config.trusted_proxies.clone(),
        )?);
        let door = limits.limits_ip().then(|| Arc::clone(&limits));
        let (router, hot) = routes(backend, auth, limits, config, sales, shutdown.clone());
        let conn_limits = ConnLimits::new(config);
        let admission = Arc::new(shed::Admission::new(
            config.max_connections,
            config.max_connections_per_ip,
        ));
        let mut handles = Vec::with_capacity(runtimes.len());
        for (i, (runtime, listener)) in runtimes.into_iter().zip(listeners).enumerate() {
            let front = Front {
                router: router.clone(),
                hot: Some(hot.clone()),
                door: door.clone(),
                limits: conn_limits.clone(),
            };
            let admission = Arc::clone(&admission);
            let stop = shutdown.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("flashsale-http-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, front, &admission, stop, grace).await,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot serve an HTTP listener");
                                stop.cancel();
                            }
                        }
                    });
                    runtime.shutdown_timeout(Duration::from_secs(1));
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    shutdown.cancel();
                    HttpFront {
                        local_addr,
                        threads: handles,
                    }
                    .join();
                    return Err(e).context("cannot start an HTTP thread");
                }
            }
        }
        tracing::info!(
            %local_addr,
            demo = config.demo,
            max_in_flight = config.max_in_flight,
            max_connections = config.max_connections,
            max_connections_per_ip = config.max_connections_per_ip,
            rate_limit_user = config.rate_limit.user.map(|r| r.to_string()),
            rate_limit_ip = config.rate_limit.ip.map(|r| r.to_string()),
            trusted_proxies = ?config.trusted_proxies.nets(),
            max_streams = config.stream_limit(),
            stream_lifetime = ?config.stream_lifetime,
            metrics = config.metrics,
            header_timeout = ?config.header_timeout,
            idle_timeout = ?config.idle_timeout,
            jwt_issuer = config.token_rules.issuer.as_deref(),
            jwt_audience = config.token_rules.audience.as_deref(),
            jwt_max_lifetime = ?config.token_rules.max_lifetime,
            threads,
            "HTTP listening"
        );
        Ok(HttpFront {
            local_addr,
            threads: handles,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the front to stop (after its shutdown token is cancelled).
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("an HTTP thread panicked");
            }
        }
    }
}

/// Every route of the front over `backend`, as a [`axum::Router`] with no
/// listener and no runtime of its own: for answering requests in-process
/// (the `http_request` fuzz target drives it with `tower::ServiceExt::oneshot`).
///
/// `auth` verifies buyers' tokens (HS256), `demo` adds `POST /demo/token`,
/// `sales` is what `/api/config` names, at most `max_in_flight` requests are
/// in progress at once, and event streams end when `shutdown` is cancelled;
/// every other setting is [`HttpConfig`]'s default. Call it inside a tokio
/// runtime with timers; an event stream spawns its poller there.
pub fn router(
    backend: Arc<dyn Backend>,
    auth: auth::Auth,
    demo: bool,
    sales: Vec<String>,
    max_in_flight: usize,
    shutdown: CancellationToken,
) -> axum::Router {
    let config = HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        .demo(demo)
        .max_in_flight(max_in_flight);
    let limits = Arc::new(rate_limit::RateLimits::off());
    routes(backend, auth, limits, &config, sales, shutdown).0
}

/// Every route, under `config`'s bounds: the state [`HttpFront::start`]
/// serves.
fn routes(
    backend: Arc<dyn Backend>,
    auth: auth::Auth,
    limits: Arc<rate_limit::RateLimits>,
    config: &HttpConfig,
    sales: Vec<String>,
    shutdown: CancellationToken,
) -> (axum::Router, api::Hot) {
    let state = Arc::new(State {
        backend,
        auth,
        limits,
        demo: config.demo,
        sales,
        events: events::Hub::default(),
        streams: Arc::new(tokio::sync::Semaphore::new(
            config
                .stream_limit()
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        stream_lifetime: config.stream_lifetime,
        body_timeout: config.body_timeout,
        metrics: config.metrics,
        max_in_flight: config.max_in_flight.max(1),
        status_max_age: config.status_max_age,
        shutdown,
    });
    api::router(state)
}

/// Largest request head (request line and headers) read; past it, 431 and
/// a close. Also the read buffer's bound, so a head that never ends cannot
/// grow it.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The bounds every HTTP connection is served under.
#[derive(Clone)]
struct ConnLimits {
    builder: http1::Builder,
    header_timeout: Duration,
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
            header_timeout,
            idle_timeout,
        }
    }
}

/// What one thread serves its connections with: the routes, the hot
/// route's way around them (the buyers' front only), the per-address rate
/// limit (when there is one), and the bounds.
#[derive(Clone)]
struct Front {
    router: axum::Router,
    hot: Option<api::Hot>,
    door: Option<Arc<rate_limit::RateLimits>>,
    limits: ConnLimits,
}

/// Accepts until `shutdown`, then waits (at most `grace`) for the
/// connections to finish.
async fn serve(
    listener: tokio::net::TcpListener,
    front: Front,
    admission: &shed::Admission,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    flashsale_net::accept_until(&listener, &shutdown, "http", |stream, peer| match admission
        .admit(peer.ip())
    {
        shed::Admitted::Serve(permit) => {
            let front = front.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                connection(stream, peer.ip(), front, &shutdown).await;
                drop(permit);
            });
        }
        shed::Admitted::Refuse(answer, permit) => {
            tracker.spawn(async move {
                shed::refuse_connection(stream, answer).await;
                drop(permit);
            });
        }
        shed::Admitted::Drop => drop(stream),
    })
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

/// Serves one connection from `client` (the TCP peer's address) until it
/// closes, goes idle, or has finished its request in progress after
/// `shutdown`. The per-address rate limit is checked first; then a
/// reservation goes by the hot path, every other request through the
/// router.
///
/// Each request is served by a hyper connection that is dropped once the
/// connection is idle again (see [`idle`]); between two, the task waits for
/// the socket to be readable, within the header timeout, and the next hyper
/// connection gets what is left of it for the head.
async fn connection(
    stream: TcpStream,
    client: std::net::IpAddr,
    front: Front,
    shutdown: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (mut io, activity) = Tracked::new(stream);
    let Front {
        router,
        hot,
        door,
        limits,
    } = front;
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let router = router.clone();
        let hot = hot.clone();
        let in_progress = requests.begin(&request);
        let refused = door.as_ref().and_then(|door| door.ip(client, &request));
        if request.uri().path().ends_with("/events") {
            // An event stream parks itself on its connection (see `idle`).
            request
                .extensions_mut()
                .insert(events::Connection(requests.clone()));
        }
        Box::pin(async move {
            let response = match (refused, &hot, api::Hot::sale(&request)) {
                (Some(mut refused), _, _) => {
                    api::set_common_headers(refused.headers_mut());
                    refused
                }
                (None, Some(hot), Some(sale)) => hot.reserve(request.headers(), sale).await,
                _ => match router.oneshot(request.map(axum::body::Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| Guarded::new(body, in_progress)))
        })
    });
    // The header timeout runs from when the connection starts waiting for
    // a head: on the first hyper connection from the accept, on a later one
    // from when the previous answer went out, so the quiet wait counts.
    let mut head_within = limits.header_timeout;
    loop {
        let mut builder = limits.builder.clone();
        builder.header_read_timeout(head_within);
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service.clone()));
        let mut draining = false;
        // `None`: hyper has flushed the head and first event of a stream
        // and lets go of the socket (see `idle`).
        let ended = loop {
            let idle_at = activity.last() + limits.idle_timeout;
            let served = std::future::poll_fn(|cx| match conn.poll_without_shutdown(cx) {
                std::task::Poll::Ready(result) => std::task::Poll::Ready(Some(result)),
                std::task::Poll::Pending if activity.detachable() => std::task::Poll::Ready(None),
                std::task::Poll::Pending => std::task::Poll::Pending,
            });
            tokio::select! {
                result = served => break result,
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                }
                () = tokio::time::sleep_until(idle_at) => {
                    if activity.last() + limits.idle_timeout <= Instant::now() {
                        tracing::debug!(?peer, timeout = ?limits.idle_timeout, "HTTP connection idle; closing it");
                        return;
                    }
                }
            }
        };
        let parts = conn.into_parts();
        let tracked = parts.io.into_inner();
        io = match ended {
            Some(Err(e)) => {
                tracing::debug!(?peer, error = %e, "HTTP connection ended with an error");
                return;
            }
            Some(Ok(())) => match tracked.take_back(parts.read_buf) {
                Ok(io) if !draining => io,
                // Ended for good, or shutting down: close as hyper would have.
                Ok(io) | Err(io) => return io.close().await,
            },
            None => {
                let mut io = tracked.resume(parts.read_buf);
                let Some(stream) = activity.take_parked() else {
                    return io.close().await;
                };
                // Boxed: only a connection with an open stream holds its state.
                let rest = events::write_rest(&mut io, stream, limits.idle_timeout, shutdown);
                match Box::pin(rest).await {
                    events::Ended::Cleanly if !shutdown.is_cancelled() => io,
                    events::Ended::Cleanly => return io.close().await,
                    events::Ended::Closed => return,
                }
            }
        };
        tracing::trace!(?peer, "HTTP connection between requests");
        let waiting_since = Instant::now();
        let wait = limits.header_timeout.min(limits.idle_timeout);
        tokio::select! {
            ready = io.readable() => {
                if let Err(e) = ready {
                    tracing::debug!(?peer, error = %e, "HTTP connection ended with an error");
                    return;
                }
            }
            () = shutdown.cancelled() => return io.close().await,
            () = tokio::time::sleep(wait) => {
                tracing::debug!(?peer, timeout = ?wait, "HTTP connection idle; closing it");
                return io.close().await;
            }
        }
        head_within = limits
            .header_timeout
            .saturating_sub(waiting_since.elapsed());
    }
}

/// The signing key: the configured one, or in demo mode a random one.
///
/// Demo mode never signs with a configured secret: its tokens, for any user
/// to anyone, would then be valid wherever the identity provider's key is
/// trusted. Nor does it run on an address others can reach without an
/// explicit opt-in; and a configured secret must be at least
/// [`MIN_JWT_SECRET_LEN`] bytes.
fn secret(config: &HttpConfig) -> anyhow::Result<Vec<u8>> {
    if config.demo {
        anyhow::ensure!(
            config.jwt_secret.is_none(),
            "--demo signs tokens for anyone with a secret of its own; it is refused together with \
             a configured JWT secret (--jwt-secret-file or FLASHSALE_JWT_SECRET): use one or the other"
        );
        let public = !config.listen.ip().is_loopback();
        anyhow::ensure!(
            !public || config.demo_on_public_address,
            "--demo on {}, an address others can reach, lets anyone buy the whole stock; \
             listen on loopback, or add --insecure-demo-on-public-address if that is really meant",
            config.listen
        );
        tracing::warn!("DEMO MODE: POST /demo/token hands out a token for any user to anyone. Never run a real sale like this.");
        if public {
            tracing::warn!(listen = %config.listen, "DEMO MODE ON AN ADDRESS OTHERS CAN REACH (--insecure-demo-on-public-address)");
        }
        let mut secret = vec![0u8; MIN_JWT_SECRET_LEN];
        getrandom::fill(&mut secret)
            .map_err(|e| anyhow::anyhow!("cannot draw a random demo secret: {e}"))?;
        return Ok(secret);
    }
    match &config.jwt_secret {
        Some(secret) if secret.is_empty() => anyhow::bail!("the JWT secret is empty"),
        Some(secret) if secret.len() < MIN_JWT_SECRET_LEN => {
            anyhow::ensure!(
                config.insecure_short_secret,
                "the JWT secret is {} bytes; at least {MIN_JWT_SECRET_LEN} random bytes are needed \
                 (a short one can be guessed offline from a single token)",
                secret.len()
            );
            tracing::warn!(
                bytes = secret.len(),
                "the JWT secret is short (--insecure-short-jwt-secret): tests only"
            );
            Ok(secret.clone())
        }
        Some(secret) => Ok(secret.clone()),
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
    let mut response = (status, Json(body)).into_response();
    if error == ApiError::NotLeader {
        // An election settles within about a second.
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(1),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: [u8; 4], demo: bool, secret: Option<&[u8]>) -> HttpConfig {
        let mut config = HttpConfig::new(SocketAddr::from((listen, 8080))).demo(demo);
        config.jwt_secret = secret.map(<[u8]>::to_vec);
        config
    }

    #[test]
    fn demo_mode_never_signs_with_a_configured_secret_nor_runs_in_public() {
        let strong = [7u8; MIN_JWT_SECRET_LEN];
        let refused = secret(&config([127, 0, 0, 1], true, Some(&strong))).unwrap_err();
        assert!(refused.to_string().contains("--demo"), "{refused}");
        let own = secret(&config([127, 0, 0, 1], true, None)).unwrap();
        assert_eq!(own.len(), MIN_JWT_SECRET_LEN);
        assert_ne!(
            own,
            secret(&config([127, 0, 0, 1], true, None)).unwrap(),
            "random each time"
        );

        let public = config([0, 0, 0, 0], true, None);
        let refused = secret(&public).unwrap_err().to_string();
        assert!(
            refused.contains("--insecure-demo-on-public-address"),
            "{refused}"
        );
        let opted_in = HttpConfig {
            demo_on_public_address: true,
            ..public
        };
        assert!(secret(&opted_in).is_ok());
    }

    #[test]
    fn short_secrets_are_refused_unless_for_tests() {
        for weak in [&b"k"[..], &[0u8; 4], &[b'x'; MIN_JWT_SECRET_LEN - 1]] {
            let short = config([127, 0, 0, 1], false, Some(weak));
            assert!(secret(&short).is_err(), "{weak:?}");
            let tests = HttpConfig {
                insecure_short_secret: true,
                ..short
            };
            assert_eq!(secret(&tests).unwrap(), weak);
        }
        assert!(secret(&config([127, 0, 0, 1], false, Some(b""))).is_err());
        let strong = [b'x'; MIN_JWT_SECRET_LEN];
        assert_eq!(
            secret(&config([0, 0, 0, 0], false, Some(&strong))).unwrap(),
            strong
        );
        assert!(secret(&config([127, 0, 0, 1], false, None)).is_err());
    }
}
