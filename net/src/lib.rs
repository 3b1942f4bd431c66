//! flashsale-net: the socket and process plumbing the fronts and binaries
//! share: the native protocol's workers, the HTTP front, `flashsale-server`
//! and `flashsale-gateway`.
//!
//! Each piece exists once so the two fronts cannot drift apart in how they
//! treat the kernel:
//!
//! - [`bind_reuseport`]: `n` listeners on one address with `SO_REUSEPORT`,
//!   so each worker thread has its own accept queue and the kernel spreads
//!   new connections over them.
//! - [`accept_until`]: the accept loop, with exponential backoff on errors
//!   (out of file descriptors must not become a busy loop) and a prompt stop
//!   on shutdown.
//! - [`linger`]: the close that does not destroy the last frame: half-close,
//!   then drain what the peer still sends for a bounded time, so the kernel
//!   does not answer it with a reset that discards our unread answer.
//! - [`process`]: logging, the stdout announcement, shutdown signals.
//! - [`open_files`]: the soft open-file limit raised to the hard one at
//!   startup, and the connection limits checked against it.

pub mod open_files;
pub mod process;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The listen backlog asked for. The kernel caps it at `somaxconn`; asking
/// high means the cap, not this number, is the limit.
pub const BACKLOG: i32 = 65_535;

/// How long a closing connection keeps discarding what the peer still sends.
pub const LINGER: Duration = Duration::from_millis(250);

/// First pause after a failed `accept`; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(1);
/// Longest pause after failed `accept`s.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// While `accept` keeps failing, at most one log line per this period
/// (the first failure is logged at once).
const ACCEPT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Binds `n` (at least one) non-blocking listeners to `addr` with
/// `SO_REUSEPORT`. When `addr` has port 0, the first bind picks the port and
/// the others share it.
///
/// The listeners have `TCP_NODELAY` set, which Linux copies to every
/// connection they accept: a request/answer protocol must not wait on
/// Nagle's algorithm, and setting it once here saves a system call per
/// connection (a storm of one-request connections makes thousands a
/// second).
///
/// # Errors
///
/// When a socket cannot be created, configured or bound.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(n.max(1));
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Accepts connections on `listener` and hands each to `admit`, until
/// `shutdown` is cancelled.
///
/// A failed `accept` (out of file descriptors, out of memory) is followed
/// by a pause that doubles from 1 ms up to 1 s and resets on the next
/// success: the loop never spins, and the connections already open keep
/// being served meanwhile. Connections that arrive meanwhile wait in the
/// listen backlog and are served once descriptors free up. The failures are
/// logged with `front`: the first at once, then one line per 10 s with the
/// count, and one line when accepting works again.
pub async fn accept_until(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    front: &'static str,
    mut admit: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = MIN_BACKOFF;
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                failures.recovered(front);
                admit(stream, peer);
            }
            Err(e) => {
                failures.failed(front, &e, Instant::now());
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A run of failed `accept`s, logged at a bounded rate.
#[derive(Debug, Default)]
struct AcceptFailures {
    /// When the run started, if one is going on.
    since: Option<Instant>,
    /// When the last line about it was logged.
    logged: Option<Instant>,
    /// Failures in the run.
    total: u64,
    /// Failures since the last line.
    unlogged: u64,
}

impl AcceptFailures {
    fn failed(&mut self, front: &'static str, error: &io::Error, now: Instant) {
        self.since.get_or_insert(now);
        self.total += 1;
        self.unlogged += 1;
        let due = self
            .logged
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_PERIOD);
        if due {
            tracing::warn!(
                front,
                %error,
                failures = self.unlogged,
                "accept failed; new connections wait in the backlog, open ones are served (at most one such line per {ACCEPT_LOG_PERIOD:?})"
            );
            self.logged = Some(now);
            self.unlogged = 0;
        }
    }

    fn recovered(&mut self, front: &'static str) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                front,
                failures = self.total,
                after = ?since.elapsed(),
                "accepting connections again"
            );
            *self = AcceptFailures::default();
        }
    }
}

/// Half-closes `stream` and drains what the peer still sends, for at most
/// [`LINGER`] and 64 KiB, so our last frame is not lost to a reset.
pub async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 4096];
    let deadline = Instant::now() + LINGER;
    for _ in 0..16 {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_listeners_share_one_port() {
        let listeners = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
    }

    #[test]
    fn accept_failures_are_logged_at_a_bounded_rate() {
        let mut failures = AcceptFailures::default();
        let start = Instant::now();
        let error = io::Error::from_raw_os_error(24);
        let mut lines = 0;
        for ms in 0..30_000 {
            let before = failures.logged;
            failures.failed("test", &error, start + Duration::from_millis(ms));
            if failures.logged != before {
                lines += 1;
            }
        }
        assert_eq!(lines, 3, "the first, then one per period");
        assert_eq!(failures.total, 30_000);
        failures.recovered("test");
        assert!(failures.since.is_none() && failures.logged.is_none());
    }

    #[tokio::test]
    async fn accepted_connections_inherit_nodelay() {
        let listener = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 1)
            .unwrap()
            .pop()
            .unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn accepts_until_shutdown_and_lingers_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut accepted = Vec::new();
        let stop = shutdown.clone();
        let accepting = accept_until(&listener, &shutdown, "test", |stream, _| {
            accepted.push(stream);
            stop.cancel();
        });
        tokio::time::timeout(Duration::from_secs(10), accepting)
            .await
            .expect("the loop stops once shut down");
        assert_eq!(accepted.len(), 1);
        let mut server = accepted.pop().unwrap();
        server.write_all(b"bye").await.unwrap();
        linger(&mut server).await;
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }
}
