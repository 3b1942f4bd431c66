//! How a client connects: address, credentials, timeouts and reconnection.

use std::time::Duration;

use flashsale_protocol::DEFAULT_MAX_FRAME_LEN;

use crate::{Client, ClientError, Pool};

/// Everything a [`Client`] needs to reach a server.
///
/// Build one with [`ClientConfig::new`] and the chainable setters, then call
/// [`connect`](ClientConfig::connect) (or [`Client::connect`] /
/// [`Pool::connect`]).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use flashsale_client::ClientConfig;
///
/// # async fn example() -> Result<(), flashsale_client::ClientError> {
/// let client = ClientConfig::new("127.0.0.1:7070")
///     .api_key("secret")
///     .request_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's address, `host:port`. Resolved on every (re)connect.
    pub address: String,
    /// The other nodes of the server's cluster (`host:port` each), if it is
    /// one: tried in turn when the current node cannot be reached. Whether
    /// or not they are given, a node that does not lead answers
    /// `NOT_LEADER` with the leader's address, and the client goes there
    /// (see [`Client`]).
    pub nodes: Vec<String>,
    /// Whether a `NOT_LEADER` answer sends the request on to the leader it
    /// names (the default), or is returned as
    /// [`ClientError::Server`](crate::ClientError::Server): for a tool that
    /// asks one node about itself.
    pub follow_leader: bool,
    /// Sent in the handshake; `None` for a server without an API key.
    pub api_key: Option<String>,
    /// The most time one connection attempt (TCP connect plus handshake) may
    /// take.
    pub connect_timeout: Duration,
    /// The most time one request may wait for its answer, counted from the
    /// moment it starts waiting for a free slot on the connection. A request
    /// that times out is forgotten: a late answer is dropped. A timeout does
    /// not mean the request had no effect; see
    /// [`ClientError::outcome_unknown`].
    pub request_timeout: Duration,
    /// The largest frame body accepted from the server. A larger length
    /// prefix closes the connection with [`ClientError::Protocol`] before
    /// any of the body is buffered.
    pub max_frame_len: usize,
    /// How a lost connection is re-established.
    pub reconnect: ReconnectPolicy,
}

impl ClientConfig {
    /// A configuration for the server at `address`, with default timeouts
    /// and reconnect policy and no API key.
    pub fn new(address: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            nodes: Vec::new(),
            follow_leader: true,
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            reconnect: ReconnectPolicy::new(),
        }
    }

    /// Sets [`address`](Self::address).
    #[must_use]
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Sets [`nodes`](Self::nodes): the other nodes of a cluster.
    #[must_use]
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`follow_leader`](Self::follow_leader).
    #[must_use]
    pub fn follow_leader(mut self, follow: bool) -> Self {
        self.follow_leader = follow;
        self
    }

    /// Every address of the server: [`address`](Self::address) first, then
    /// [`nodes`](Self::nodes) without repeats.
    pub fn addresses(&self) -> Vec<&str> {
        let mut all = vec![self.address.as_str()];
        for node in &self.nodes {
            if !all.contains(&node.as_str()) {
                all.push(node);
            }
        }
        all
    }

    /// Sets [`api_key`](Self::api_key).
    #[must_use]
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`max_frame_len`](Self::max_frame_len).
    #[must_use]
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`reconnect`](Self::reconnect).
    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Connects one [`Client`]; see [`Client::connect`].
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect(self) -> Result<Client, ClientError> {
        Client::connect(self).await
    }

    /// Connects a [`Pool`] of `connections` clients; see [`Pool::connect`].
    ///
    /// # Errors
    ///
    /// As [`Pool::connect`].
    pub async fn connect_pool(self, connections: usize) -> Result<Pool, ClientError> {
        Pool::connect(self, connections).await
    }
}

impl Default for ClientConfig {
    /// A configuration for `127.0.0.1:7070`.
    fn default() -> Self {
        ClientConfig::new("127.0.0.1:7070")
    }
}

/// How a connection is (re)established: up to `attempts` tries, sleeping
/// between them for a backoff that starts at `initial_backoff` and doubles up
/// to `max_backoff`.
///
/// Only failures that may pass are retried: I/O errors, timeouts, a server
/// that closes during the handshake, or one that answers
/// [`OVERLOADED`](flashsale_protocol::ErrorCode::OVERLOADED) or
/// [`SHUTTING_DOWN`](flashsale_protocol::ErrorCode::SHUTTING_DOWN). A refused
/// API key or protocol version fails at once.
///
/// The policy governs connecting only. Requests are never re-sent; see the
/// crate documentation for why.
///
/// With a [`cooldown`](Self::cooldown), a reconnect that failed opens a
/// circuit breaker: for that long, calls fail at once with the same error
/// instead of each waiting for connection attempts of its own. A front
/// that serves many users from one client (a gateway) answers them "the
/// core is unavailable" at once while the core is down, and tries the core
/// again at most once per cooldown instead of piling requests behind
/// reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Connection attempts per (re)connect, at least 1.
    pub attempts: u32,
    /// Sleep after the first failed attempt.
    pub initial_backoff: Duration,
    /// Cap on the sleep between attempts.
    pub max_backoff: Duration,
    /// After a failed reconnect, calls fail at once with its error for this
    /// long. Zero (the default) tries again on the next call.
    pub cooldown: Duration,
}

impl ReconnectPolicy {
    /// Three attempts, backing off 50 ms then 100 ms (capped at 1 s), and
    /// no cooldown.
    pub const fn new() -> Self {
        ReconnectPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            cooldown: Duration::ZERO,
        }
    }

    /// A single attempt: a lost connection is reported, and the next call
    /// tries once to reconnect.
    pub const fn no_retry() -> Self {
        ReconnectPolicy {
            attempts: 1,
            ..Self::new()
        }
    }

    /// Sets [`attempts`](Self::attempts).
    #[must_use]
    pub const fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets [`initial_backoff`](Self::initial_backoff).
    #[must_use]
    pub const fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub const fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Sets [`cooldown`](Self::cooldown).
    #[must_use]
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The sleep after failed attempt number `attempt` (0-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = ReconnectPolicy::new()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(350));
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn setters_chain() {
        let c = ClientConfig::new("a:1")
            .address("b:2")
            .api_key("k")
            .max_frame_len(10)
            .reconnect(ReconnectPolicy::no_retry());
        assert_eq!(c.address, "b:2");
        assert_eq!(c.api_key.as_deref(), Some("k"));
        assert_eq!(c.max_frame_len, 10);
        assert_eq!(c.reconnect.attempts, 1);
    }
}
