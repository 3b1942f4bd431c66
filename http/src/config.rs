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
    /// for a real sale.
    pub demo: bool,
    /// HTTP requests in progress beyond which new ones are refused at once
    /// with 503 (event streams do not count).
    pub max_in_flight: usize,
    /// Open HTTP connections beyond which a new one is answered 503 and
    /// closed.
    pub max_connections: usize,
    /// How long a request's head (request line and headers) may take to
    /// arrive, counted from the moment the connection waits for it: when it
    /// opens, or when the previous answer has gone out.
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Threads of the HTTP runtime; `None` means one per core.
    pub threads: Option<usize>,
    /// Sale ids `/api/config` names. Empty means every sale the core runs,
    /// asked at each request, so sales created at runtime appear at once.
    pub sales: Vec<String>,
}

impl HttpConfig {
    /// The defaults, listening on `listen`, with no secret.
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            jwt_secret: None,
            token_rules: flashsale_token::Rules::new(),
            demo: false,
            max_in_flight: DEFAULT_HTTP_MAX_IN_FLIGHT,
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            threads: None,
            sales: Vec::new(),
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
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<hidden>"))
            .field("token_rules", &self.token_rules)
            .field("demo", &self.demo)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("threads", &self.threads)
            .field("sales", &self.sales)
            .finish()
    }
}
