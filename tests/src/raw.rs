//! Byte-level access to the native protocol: a blocking connection that
//! writes whatever a test hands it, well-formed or not, and reads back
//! whole frames.
//!
//! The typed client hides the framing and refuses to send a malformed frame,
//! which is exactly what the byte-level tests need to send. Frames and the
//! `Hello` are still built by the protocol crate
//! ([`codec::frame`], [`handshake::hello`]) so that a well-formed frame here
//! is byte for byte what every client sends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use flashsale_protocol::{codec, encoding, handshake};
use flashsale_protocol::{ClientFrame, ErrorCode, Request, RequestFrame, ServerFrame};

use crate::poll::poll;

/// A blocking raw-frame connection, for byte-level tests.
pub struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    /// Connects with read and write timeouts.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<RawConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConn { stream })
    }

    /// A connection past the handshake, with `api_key`. A closed connection
    /// leaves the server's count a moment after the client sees the close,
    /// so an `OVERLOADED` answer is retried a bounded number of times.
    ///
    /// # Errors
    ///
    /// Any other answer to the `Hello`, or still `OVERLOADED` after the
    /// last try.
    pub fn welcomed(addr: SocketAddr, api_key: Option<&str>) -> anyhow::Result<RawConn> {
        poll(50, Duration::from_millis(100), || {
            let mut c = RawConn::connect(addr)?;
            match c.hello(api_key)? {
                ServerFrame::Welcome(_) => Ok(Some(c)),
                ServerFrame::Error(e) if e.code == ErrorCode::OVERLOADED => Ok(None),
                other => bail!("unexpected answer to Hello: {other:?}"),
            }
        })?
        .context("the server stayed at its connection limit")
    }

    /// Changes how long a blocked read may wait.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Changes how long a blocked write may wait.
    pub fn set_write_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame.
    pub fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        Ok(self.stream.write_all(&codec::frame(frame)?)?)
    }

    /// Sends the `Hello` every client sends, and reads the answer.
    pub fn hello(&mut self, api_key: Option<&str>) -> anyhow::Result<ServerFrame> {
        self.send(&handshake::hello(api_key.map(Into::into)))?;
        self.recv()?.context("closed before answering the Hello")
    }

    /// Sends one request.
    pub fn request(&mut self, id: u64, request: Request) -> anyhow::Result<()> {
        self.send(&ClientFrame::Request(RequestFrame { id, request }))
    }

    /// Reads one frame; `None` on a clean close.
    pub fn recv(&mut self) -> anyhow::Result<Option<ServerFrame>> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(header) as usize;
        anyhow::ensure!(len <= 1 << 20, "server sent a {len}-byte frame");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(Some(encoding::decode(&body)?))
    }

    /// Whether the server closed the connection (reads EOF within the read
    /// timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// One whole request frame (length prefix and body), for tests that write
/// frames as bytes.
///
/// # Panics
///
/// Never for the requests tests send: encoding a request only fails past
/// `u32::MAX` bytes.
pub fn request_frame(id: u64, request: Request) -> Vec<u8> {
    codec::frame(&ClientFrame::Request(RequestFrame { id, request })).expect("a request encodes")
}
