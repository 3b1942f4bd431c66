//! The HTTP front's configuration, the same in the server and in a gateway.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Default bound on HTTP requests in progress at once.
pub const DEFAULT_HTTP_MAX_IN_FLIGHT: usize = 4096;
/// Default bound on open HTTP connections.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 10_000;
/// Default time a request's head may take to arrive.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an HTTP connection may go without a byte either way.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest HS256 secret accepted: RFC 7518 asks for a key at least as
/// long as the hash, 256 bits.
pub const MIN_JWT_SECRET_LEN: usize = 32;
/// Default time a request body may take to arrive.
pub const DEFAULT_HTTP_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on open HTTP connections from one client address.
pub const DEFAULT_HTTP_MAX_CONNECTIONS_PER_IP: usize = 1000;
/// Default longest life of one event stream.
pub const DEFAULT_HTTP_STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// Without a bound of their own, event streams may hold at most this share
/// (one in `STREAM_SHARE`) of the connection bound.
const STREAM_SHARE: usize = 4;

/// The HTTP front (see the [crate docs](crate)), in the server or in a gateway.
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Address of the HTTP listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The HS256 key that signs buyers' tokens. `None` is refused unless
    /// [`demo`](Self::demo) is on, which then makes up a random one.
    pub jwt_secret: Option<Vec<u8>>,
    /// What a token must say besides its signature: the issuer and
    /// audience it must name, and its longest lifetime.
    pub token_rules: flashsale_token::Rules,
    /// Demo mode: `POST /demo/token` hands out a token for any user. Never
    /// for a real sale. It always signs with a random secret of its own, so
    /// it is refused together with [`jwt_secret`](Self::jwt_secret), and on
    /// an address other than loopback unless
    /// [`demo_on_public_address`](Self::demo_on_public_address).
    pub demo: bool,
    /// Allows demo mode on an address other than loopback: whoever reaches
    /// it can mint tokens and buy the whole stock.
    pub demo_on_public_address: bool,
    /// Accepts a JWT secret shorter than [`MIN_JWT_SECRET_LEN`] bytes: for
    /// tests only, a short secret can be guessed offline from one token.
    pub insecure_short_secret: bool,
    /// HTTP requests in progress beyond which new ones are refused at once
    /// with 503 (event streams do not count: they have their own bound,
    /// [`max_streams`](Self::max_streams)).
    pub max_in_flight: usize,
    /// Open HTTP connections beyond which a new one is answered 503 and
    /// closed.
    pub max_connections: usize,
    /// Open HTTP connections from one client (an IPv4 address, or an IPv6
    /// /64) beyond which a new one from it is answered 429 and closed.
    pub max_connections_per_ip: usize,
    /// Token buckets per user and per client address; all off by default.
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// Peers whose `X-Forwarded-For` names the client the per-address
    /// rate limit counts against; none by default (every client is its
    /// TCP peer).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Open event streams beyond which a new one is answered 503. `None`:
    /// a quarter of [`max_connections`](Self::max_connections), so that
    /// streams, which never end on their own, cannot take every connection
    /// from buyers ([`stream_limit`](Self::stream_limit)).
    pub max_streams: Option<usize>,
    /// An event stream ends, cleanly, after at most this long; the browser
    /// reconnects by itself.
    pub stream_lifetime: Duration,
    /// How long a request body may take to arrive once its head has; past
    /// it, 408 and a close.
    pub body_timeout: Duration,
    /// Whether this listener serves `GET /metrics` (off when the server
    /// serves it on its admin listener only).
    pub metrics: bool,
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from the moment the connection waits for it: when it
    /// opens, or when the previous answer has gone out.
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// HTTP threads, each with its own runtime and `SO_REUSEPORT`
    /// listener; `None` means one per core.
    pub threads: Option<usize>,
    /// Sale ids `/api/config` names. Empty means every sale the core runs,
    /// asked at each request, so sales created at runtime appear at once.
    pub sales: Vec<String>,
    /// `GET /api/sales/{sale}` (and a new event stream's first event) is
    /// answered from the sale's event poller when its last status is at
    /// most this old, instead of asking the core. Zero asks the core every
    /// time. The poller runs while the sale has open streams, so a crowd of
    /// open pages costs the core one status request per poll, not one per
    /// page. The gateway sets [`GATEWAY_STATUS_MAX_AGE`].
    pub status_max_age: Duration,
}

/// The age of a cached status a gateway answers with: a few polls of the
/// event hub.
pub const GATEWAY_STATUS_MAX_AGE: Duration = Duration::from_millis(250);

impl HttpConfig {
    /// The defaults, listening on `listen`, with no secret.
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            jwt_secret: None,
            token_rules: flashsale_token::Rules::new(),
            demo: false,
            demo_on_public_address: false,
            insecure_short_secret: false,
            max_in_flight: DEFAULT_HTTP_MAX_IN_FLIGHT,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            max_connections_per_ip: DEFAULT_HTTP_MAX_CONNECTIONS_PER_IP,
            rate_limit: crate::rate_limit::RateLimitConfig::new(),
            trusted_proxies: crate::client_ip::TrustedProxies::default(),
            max_streams: None,
            stream_lifetime: DEFAULT_HTTP_STREAM_LIFETIME,
            body_timeout: DEFAULT_HTTP_BODY_TIMEOUT,
            metrics: true,
            threads: None,
            sales: Vec::new(),
            status_max_age: Duration::ZERO,
        }
    }

    /// Sets [`HttpConfig::jwt_secret`].
    #[must_use]
    pub fn jwt_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Sets [`HttpConfig::demo`].
    #[must_use]
    pub fn demo(mut self, demo: bool) -> Self {
        self.demo = demo;
        self
    }

    /// Sets [`HttpConfig::max_in_flight`].
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Clamps [`max_connections`](Self::max_connections) to what `budget`
    /// leaves for connections, and an explicit
    /// [`max_streams`](Self::max_streams) to the connection bound (every
    /// stream is a connection), each with a WARN line.
    pub fn fit_open_files(&mut self, budget: &flashsale_net::open_files::FileBudget) {
        self.max_connections = budget.fit("--http-max-connections", self.max_connections);
        if let Some(streams) = self.max_streams {
            if streams > self.max_connections {
                tracing::warn!(
                    configured = streams,
                    clamped = self.max_connections,
                    "--http-max-streams {streams} clamped to {}: every event stream is an HTTP \
                     connection, and there may be at most that many",
                    self.max_connections
                );
                self.max_streams = Some(self.max_connections);
            }
        }
    }

    /// The bound on open event streams: [`HttpConfig::max_streams`], or a
    /// quarter of the connection bound.
    pub fn stream_limit(&self) -> usize {
        self.max_streams
            .unwrap_or(self.max_connections / STREAM_SHARE)
            .max(1)
    }
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<hidden>"))
            .field("token_rules", &self.token_rules)
            .field("demo", &self.demo)
            .field("demo_on_public_address", &self.demo_on_public_address)
            .field("insecure_short_secret", &self.insecure_short_secret)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("rate_limit", &self.rate_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_streams", &self.max_streams)
            .field("stream_lifetime", &self.stream_lifetime)
            .field("body_timeout", &self.body_timeout)
            .field("metrics", &self.metrics)
            .field("threads", &self.threads)
            .field("sales", &self.sales)
            .finish()
    }
}
