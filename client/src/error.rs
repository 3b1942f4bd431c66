//! What can go wrong when talking to a server.

use std::io;
use std::sync::Arc;

use flashsale_protocol::{ErrorCode, ErrorFrame};

/// Why a call failed.
///
/// Cheap to clone: a connection that fails hands the same error to every
/// request waiting on it, so the I/O error is shared behind an [`Arc`].
///
/// The variants fall in two groups, told apart by
/// [`outcome_unknown`](Self::outcome_unknown): either the request certainly
/// had no effect, or it may have reached the server and been applied with its
/// answer lost. For a reservation the second case calls for a
/// [`lookup`](crate::Client::lookup) (or a repeated `reserve`, which is safe).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed (connecting, reading or writing).
    #[error("i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// Connecting and the handshake did not finish within the connect
    /// timeout.
    #[error("connection attempt timed out")]
    ConnectTimeout,
    /// No answer arrived within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the answer arrived.
    #[error("connection closed")]
    Closed,
    /// The server refused the handshake (wrong API key, unsupported version,
    /// overloaded, ...).
    #[error("handshake refused: {0}")]
    Handshake(ErrorFrame),
    /// The server sent a connection-level error (idle timeout, shutting
    /// down, ...) and closed the connection; requests in flight on it have no
    /// answer.
    #[error("connection closed by server: {0}")]
    Disconnected(ErrorFrame),
    /// The server answered this request with an error (unknown sale, log
    /// unavailable, ...). The connection stays usable.
    #[error("server error: {0}")]
    Server(ErrorFrame),
    /// The server could not settle this answer now (a `lookup` of a ticket
    /// still being written); ask again after `retry_after_ms`. The
    /// connection stays usable. A shed reservation is not an error: it
    /// answers [`ReserveOutcome::Busy`](flashsale_protocol::ReserveOutcome::Busy).
    #[error("server busy; retry after {retry_after_ms} ms")]
    Busy {
        /// Suggested wait before asking again.
        retry_after_ms: u32,
    },
    /// The server broke the protocol (a frame that does not decode, a frame
    /// too large, an answer of the wrong kind). The connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request was refused before being sent (for example a sale id over
    /// [`MAX_SALE_ID_LEN`](flashsale_protocol::MAX_SALE_ID_LEN) bytes).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether the request may have been applied by the server even though
    /// no answer came back.
    ///
    /// `true` for [`Io`](Self::Io), [`Timeout`](Self::Timeout),
    /// [`Closed`](Self::Closed), [`Disconnected`](Self::Disconnected) and
    /// [`Protocol`](Self::Protocol): after a `reserve` failed this way, ask
    /// [`lookup`](crate::Client::lookup) (or reserve again) to learn the
    /// outcome. `false` when the server answered, or when the request was
    /// never sent. An [`Io`](Self::Io) error while connecting also counts
    /// as unknown: the answer is conservative, never falsely reassuring.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::Timeout
            | ClientError::Closed
            | ClientError::Disconnected(_)
            | ClientError::Protocol(_) => true,
            ClientError::ConnectTimeout
            | ClientError::Handshake(_)
            | ClientError::Server(_)
            | ClientError::Busy { .. }
            | ClientError::InvalidRequest(_) => false,
        }
    }

    /// The server's error code, for [`Handshake`](Self::Handshake),
    /// [`Disconnected`](Self::Disconnected) and [`Server`](Self::Server).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Handshake(e) | ClientError::Disconnected(e) | ClientError::Server(e) => {
                Some(e.code)
            }
            _ => None,
        }
    }

    /// Whether another connection attempt may succeed where this one failed.
    pub(crate) fn is_transient_connect_failure(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::ConnectTimeout
            | ClientError::Closed
            | ClientError::Disconnected(_) => true,
            ClientError::Handshake(e) => {
                e.code == ErrorCode::OVERLOADED || e.code == ErrorCode::SHUTTING_DOWN
            }
            _ => false,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}
