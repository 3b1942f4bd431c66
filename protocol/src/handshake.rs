//! The handshake, written once for every client: the `Hello` to send and
//! the judgement of the server's first frame.
//!
//! The server's side is in the server's connection loop; every client (the
//! Rust client, the load generator, the benches, the tests) opens a
//! connection through [`handshake`], or, when it must send something odd on
//! purpose, builds the frame with [`hello`] and judges the answer with
//! [`welcome`].

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{ClientCodec, FrameError};
use crate::message::{ClientFrame, ErrorFrame, Hello, ServerFrame, Welcome};
use crate::PROTOCOL_VERSION;

/// Why a handshake did not end in a [`Welcome`].
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server refused: wrong key, unsupported version, overloaded,
    /// shutting down. It closes the connection after this frame.
    #[error("handshake refused: {0}")]
    Refused(ErrorFrame),
    /// The server answered something other than `Welcome` or an error, or
    /// welcomed another protocol version.
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
    /// The connection closed before the answer.
    #[error("connection closed during the handshake")]
    Closed,
    /// A frame could not be written or read.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The first frame a client sends: a `Hello` of this crate's version.
pub fn hello(api_key: Option<String>) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION,
        api_key,
    })
}

/// Judges the server's answer to a `Hello`.
///
/// # Errors
///
/// [`HandshakeError::Refused`] for an error frame, [`HandshakeError::Protocol`]
/// for a response before the welcome or a welcome of another version.
pub fn welcome(frame: ServerFrame) -> Result<Welcome, HandshakeError> {
    match frame {
        ServerFrame::Welcome(w) if w.version == PROTOCOL_VERSION => Ok(w),
        ServerFrame::Welcome(w) => Err(HandshakeError::Protocol(format!(
            "the server speaks protocol version {}, expected {PROTOCOL_VERSION}",
            w.version
        ))),
        ServerFrame::Error(e) => Err(HandshakeError::Refused(e)),
        ServerFrame::Response(_) => Err(HandshakeError::Protocol(
            "a response before the handshake".into(),
        )),
    }
}

/// Sends a `Hello` on `io` and reads the answer with `codec`.
///
/// Bytes the server sent after its welcome stay in `buf`: hand them to
/// whatever reads the connection next. Not bounded in time: wrap it in a
/// timeout.
///
/// # Errors
///
/// See [`HandshakeError`].
pub async fn handshake<S>(
    io: &mut S,
    api_key: Option<String>,
    codec: &mut ClientCodec,
    buf: &mut BytesMut,
) -> Result<Welcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    codec.encode(hello(api_key), &mut out)?;
    io.write_all(&out).await.map_err(FrameError::Io)?;
    loop {
        if let Some(frame) = codec.decode(buf)? {
            return welcome(frame);
        }
        if io.read_buf(buf).await.map_err(FrameError::Io)? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Response, ResponseFrame};

    #[test]
    fn judges_every_first_frame() {
        let ok = Welcome {
            version: PROTOCOL_VERSION,
            max_in_flight: 8,
        };
        assert_eq!(welcome(ServerFrame::Welcome(ok.clone())).unwrap(), ok);
        let other = Welcome {
            version: PROTOCOL_VERSION + 1,
            max_in_flight: 8,
        };
        assert!(matches!(
            welcome(ServerFrame::Welcome(other)),
            Err(HandshakeError::Protocol(_))
        ));
        let refusal = ErrorFrame::new(ErrorCode::UNAUTHORIZED, "no");
        assert!(matches!(
            welcome(ServerFrame::Error(refusal.clone())),
            Err(HandshakeError::Refused(e)) if e == refusal
        ));
        let early = ServerFrame::Response(ResponseFrame {
            id: 1,
            response: Response::Pong,
        });
        assert!(matches!(welcome(early), Err(HandshakeError::Protocol(_))));
    }
}
