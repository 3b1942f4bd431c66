//! The handshake, written once for both sides.
//!
//! The client's side: the `Hello` to send and the judgement of the server's
//! first frame. Every client (the Rust client, the load generator, the
//! benches, the tests) opens a connection through [`handshake`], or, when it
//! must send something odd on purpose, builds the frame with [`hello`] and
//! judges the answer with [`welcome`].
//!
//! The server's side: [`check_hello`], the judgement of a `Hello` (the
//! server's connection loop asks it), and [`accept`], the whole exchange
//! over a framed connection for servers that need no more (the stand-in
//! servers of the tests).

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::codec::{ClientCodec, FrameError, ServerCodec};
use crate::message::{ClientFrame, ErrorCode, ErrorFrame, Hello, ServerFrame, Welcome};
use crate::PROTOCOL_VERSION;

/// Why a handshake did not end in a [`Welcome`].
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server refused: wrong key, unsupported version, overloaded,
    /// shutting down, a first frame that is not a `Hello`. It closes the
    /// connection after this frame.
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

/// The server's judgement of a `Hello`: the version first, so a client of
/// another version learns that much without a key, and nothing else; then
/// the key, when the server has one, compared in time independent of where
/// the keys differ (their lengths are not secret).
///
/// # Errors
///
/// The refusal to send before closing: `UNSUPPORTED_VERSION` or
/// `UNAUTHORIZED`.
pub fn check_hello(hello: &Hello, api_key: Option<&str>) -> Result<(), ErrorFrame> {
    if hello.version != PROTOCOL_VERSION {
        return Err(ErrorFrame::new(
            ErrorCode::UNSUPPORTED_VERSION,
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION}, not {}",
                hello.version
            ),
        ));
    }
    if let Some(expected) = api_key {
        let given = hello.api_key.as_deref().unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ErrorFrame::new(
                ErrorCode::UNAUTHORIZED,
                "missing or wrong API key",
            ));
        }
    }
    Ok(())
}

/// The server's side of the handshake on a framed connection: reads the
/// first frame, judges it with `judge` (usually [`check_hello`], or a
/// refusal decided before, such as `OVERLOADED`), and answers a
/// [`Welcome`] with `max_in_flight`, or the refusal. Returns the `Hello`
/// once welcomed; the connection is then ready for requests.
///
/// Not bounded in time: wrap it in a timeout.
///
/// # Errors
///
/// [`HandshakeError::Refused`] with the refusal that was sent (a first
/// frame other than a `Hello` is refused with `HANDSHAKE_REQUIRED`, as the
/// server does); the caller closes the connection.
/// [`HandshakeError::Closed`] when the peer closed before its `Hello`, and
/// [`HandshakeError::Frame`] for a frame that could not be read (left
/// unanswered) or an answer that could not be written.
pub async fn accept<S>(
    framed: &mut Framed<S, ServerCodec>,
    max_in_flight: u32,
    judge: impl FnOnce(&Hello) -> Result<(), ErrorFrame>,
) -> Result<Hello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let judged = match framed.next().await.ok_or(HandshakeError::Closed)?? {
        ClientFrame::Hello(hello) => judge(&hello).map(|()| hello),
        ClientFrame::Request(_) => Err(ErrorFrame::new(
            ErrorCode::HANDSHAKE_REQUIRED,
            "the first frame must be a Hello",
        )),
    };
    match judged {
        Ok(hello) => {
            let welcome = Welcome {
                version: PROTOCOL_VERSION,
                max_in_flight,
            };
            framed.send(ServerFrame::Welcome(welcome)).await?;
            Ok(hello)
        }
        Err(refusal) => {
            framed.send(ServerFrame::Error(refusal.clone())).await?;
            Err(HandshakeError::Refused(refusal))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, DuplexStream};

    use super::*;
    use crate::{Request, RequestFrame, Response, ResponseFrame};

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

    fn hello_of(version: u16, api_key: Option<&str>) -> Hello {
        Hello {
            version,
            api_key: api_key.map(str::to_owned),
        }
    }

    #[test]
    fn checks_the_version_before_the_key() {
        let keyed = Some("right");
        assert_eq!(check_hello(&hello_of(PROTOCOL_VERSION, None), None), Ok(()));
        assert_eq!(
            check_hello(&hello_of(PROTOCOL_VERSION, Some("any")), None),
            Ok(())
        );
        assert_eq!(
            check_hello(&hello_of(PROTOCOL_VERSION, Some("right")), keyed),
            Ok(())
        );
        for wrong in [None, Some("wrong"), Some("righ"), Some("right!")] {
            let refusal = check_hello(&hello_of(PROTOCOL_VERSION, wrong), keyed).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::UNAUTHORIZED, "{wrong:?}");
        }
        let other = hello_of(PROTOCOL_VERSION + 1, Some("wrong"));
        let refusal = check_hello(&other, keyed).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::UNSUPPORTED_VERSION);
    }

    /// A server's framed end, and a client's end read with the client codec.
    fn pair() -> (Framed<DuplexStream, ServerCodec>, DuplexStream) {
        let (server, client) = duplex(4096);
        (Framed::new(server, ServerCodec::default()), client)
    }

    async fn send(client: &mut DuplexStream, frame: ClientFrame) {
        let mut out = BytesMut::new();
        ClientCodec::default().encode(frame, &mut out).unwrap();
        client.write_all(&out).await.unwrap();
    }

    async fn answer(client: &mut DuplexStream) -> ServerFrame {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                return frame;
            }
            assert_ne!(client.read_buf(&mut buf).await.unwrap(), 0, "closed");
        }
    }

    #[tokio::test]
    async fn welcomes_a_hello_the_judge_accepts() {
        let (mut server, mut client) = pair();
        let (welcomed, ()) = tokio::join!(
            accept(&mut server, 7, |h| check_hello(h, Some("k"))),
            send(&mut client, hello(Some("k".into()))),
        );
        assert_eq!(welcomed.unwrap(), hello_of(PROTOCOL_VERSION, Some("k")));
        let ok = welcome(answer(&mut client).await).unwrap();
        assert_eq!(ok.max_in_flight, 7);
    }

    #[tokio::test]
    async fn answers_the_judges_refusal() {
        let (mut server, mut client) = pair();
        let busy = ErrorFrame::new(ErrorCode::OVERLOADED, "later");
        let (refused, ()) = tokio::join!(
            accept(&mut server, 7, |_| Err(busy.clone())),
            send(&mut client, hello(None)),
        );
        assert!(matches!(refused, Err(HandshakeError::Refused(e)) if e == busy));
        assert!(matches!(
            welcome(answer(&mut client).await),
            Err(HandshakeError::Refused(e)) if e == busy
        ));
    }

    #[tokio::test]
    async fn refuses_a_request_before_the_hello() {
        let (mut server, mut client) = pair();
        let request = ClientFrame::Request(RequestFrame {
            id: 1,
            request: Request::Ping,
        });
        let (refused, ()) = tokio::join!(
            accept(&mut server, 7, |_| Ok(())),
            send(&mut client, request),
        );
        assert!(matches!(
            refused,
            Err(HandshakeError::Refused(e)) if e.code == ErrorCode::HANDSHAKE_REQUIRED
        ));
        assert!(matches!(
            welcome(answer(&mut client).await),
            Err(HandshakeError::Refused(e)) if e.code == ErrorCode::HANDSHAKE_REQUIRED
        ));
    }

    #[tokio::test]
    async fn a_close_before_the_hello_is_closed() {
        let (mut server, client) = pair();
        drop(client);
        assert!(matches!(
            accept(&mut server, 7, |_| Ok(())).await,
            Err(HandshakeError::Closed)
        ));
    }
}
