//! How requests reach a target: the one thing that differs between the
//! native server and Redis. Everything else (who sends when, windows,
//! timeouts, retries, what is checked) is shared, so both systems are
//! measured by the same client.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use flashsale_protocol::SaleStatus;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::check::Answer;
use crate::config::Target;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect or the handshake failed.
    #[error("cannot connect: {0}")]
    Io(#[from] io::Error),
    /// Connecting took longer than the timeout.
    #[error("connecting timed out")]
    Timeout,
    /// The target refused the connection (an error frame, a Redis error).
    #[error("refused: {0}")]
    Refused(String),
    /// The target is shedding load: it refused the connection and asked to
    /// be retried later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

impl ConnectError {
    /// Whether the target refused because it sheds load.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, ConnectError::Overloaded(_))
    }
}

/// The state of a sale as the target reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaleSnapshot {
    /// Tickets in the sale.
    pub capacity: u32,
    /// Tickets left.
    pub remaining: u32,
}

impl From<&SaleStatus> for SaleSnapshot {
    fn from(status: &SaleStatus) -> Self {
        SaleSnapshot {
            capacity: status.capacity,
            remaining: status.remaining,
        }
    }
}

/// One connection to a target, carrying pipelined reservations.
///
/// Requests are identified by a `u64` the caller chooses; answers come back
/// with it, in any order.
// The futures need not be `Send`: every worker runs its connections on one
// single-threaded runtime.
#[allow(async_fn_in_trait)]
pub trait Transport: Sized {
    /// What every connection of a worker shares, built once by
    /// [`Transport::prepare`]: the address, and whatever would otherwise
    /// be worked out again per connection (a signing key, an encoded
    /// request, a parsed URL). A connection-per-user run opens thousands.
    type Shared: 'static;

    /// Prepares connections to `target` for reservations in `sale`.
    ///
    /// # Errors
    ///
    /// `target` is not this transport's, or cannot be used (a malformed
    /// URL).
    fn prepare(target: &Target, sale: &str) -> Result<Self::Shared, ConnectError>;

    /// Opens a connection. Returns it with the most requests the target
    /// wants in flight on it (`usize::MAX` if it does not say).
    async fn connect(
        shared: &Rc<Self::Shared>,
        timeout: Duration,
    ) -> Result<(Self, usize), ConnectError>;

    /// Opens a connection for `user` alone, its client side bound to
    /// `source` (any port) if given, with a reservation queued under each
    /// of `ids`: sent on the first [`Transport::poll`], or, where the
    /// protocol lets them, with the connection's own first bytes. A
    /// refusal that comes with the answers is the error of that poll (an
    /// [`io::Error`] carrying the [`ConnectError`]).
    ///
    /// # Errors
    ///
    /// As [`Transport::connect`]; and a `source` this transport cannot bind.
    async fn connect_sending(
        shared: &Rc<Self::Shared>,
        timeout: Duration,
        source: Option<std::net::IpAddr>,
        user: u64,
        ids: std::ops::Range<u64>,
    ) -> Result<Self, ConnectError> {
        if let Some(source) = source {
            return Err(ConnectError::Refused(format!(
                "this target's connections cannot be bound to {source}"
            )));
        }
        let (mut conn, _) = Self::connect(shared, timeout).await?;
        for id in ids {
            conn.send(id, user);
        }
        Ok(conn)
    }

    /// Queues a reservation for `user` under request id `id`. Sent on the
    /// next [`Transport::poll`].
    fn send(&mut self, id: u64, user: u64);

    /// Sends what is queued, then waits until at least one answer has
    /// arrived (appended to `answers`) or `until` has passed.
    ///
    /// # Errors
    ///
    /// The connection is lost; answers not yet delivered never will be.
    async fn poll(&mut self, until: Instant, answers: &mut Vec<(u64, Answer)>) -> io::Result<()>;
}

/// A TCP connection to `addr` with `TCP_NODELAY`, its client side bound to
/// `source` (any port) if given: a run of many connections from one
/// address makes the kernel search ever longer for a free port, and
/// spreading them over several addresses keeps that cheap, as for users
/// on many machines.
pub(crate) async fn connect_from(addr: &str, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => {
            let to = tokio::net::lookup_host(addr)
                .await?
                .find(|a| a.is_ipv4() == source.is_ipv4())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        format!("{addr} has no address of the family of {source}"),
                    )
                })?;
            let socket = if to.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(to).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks `target` for the state of `sale`.
pub async fn snapshot(
    target: &Target,
    sale: &str,
    timeout: Duration,
) -> anyhow::Result<SaleSnapshot> {
    match target {
        Target::Native { .. } => crate::native::snapshot(target, sale, timeout).await,
        Target::Redis { .. } => crate::redis::snapshot(target, sale, timeout).await,
        Target::Http { .. } => crate::http::snapshot(target, sale, timeout).await,
    }
}

/// `connecting`, or [`ConnectError::Timeout`] if it takes longer than
/// `timeout`: how every transport bounds its connect and handshake.
///
/// # Errors
///
/// `connecting`'s own, or the timeout.
pub async fn connect_within<T, E: Into<ConnectError>>(
    timeout: Duration,
    connecting: impl Future<Output = Result<T, E>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(Into::into)
}

/// `work`, or an error naming `what` if it takes longer than `timeout`.
///
/// # Errors
///
/// `work`'s own, or the timeout.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("{what} timed out after {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side is bound to the source address asked for, any port;
    /// without one, the kernel's choice.
    #[tokio::test]
    async fn connections_come_from_the_source_asked_for() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for source in ["127.0.0.3", "127.0.0.4"] {
            let source: IpAddr = source.parse().unwrap();
            let stream = connect_from(&addr, Some(source)).await.unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            assert_eq!(peer.ip(), source);
            assert_eq!(stream.local_addr().unwrap(), peer);
            assert!(stream.nodelay().unwrap());
        }
        let stream = connect_from(&addr, None).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(stream.local_addr().unwrap(), peer);
        // An IPv6 source for an IPv4-only address is refused, not guessed.
        let err = connect_from(&addr, Some("::1".parse().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
    }
}
