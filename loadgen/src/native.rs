//! The native protocol as a [`Transport`]: one TCP connection, requests
//! pipelined, answers matched by id.
//!
//! The request path is built for speed, since the load generator shares the
//! machine with the server it measures: a reserve frame for the sale is
//! encoded once, and each request copies that template and patches in its
//! request id and user id (their offsets are checked at connect time by
//! decoding a patched copy). Reads and writes are non-blocking and never
//! wait on each other, so a server that stops reading cannot deadlock us.
//!
//! A connection made for one user's request or two (`--connect-per-user`)
//! sends its `Hello` with those requests behind it, in one write, and reads
//! the `Welcome` with their answers (docs/PROTOCOL.md, "A conversation"):
//! a connection storm is decided by what each connection costs, and this
//! saves one round trip, with its segments, system calls and wake-ups on
//! both sides.
//!
//! [`lookups`] asks many users' results the same way; [`leader`] finds,
//! among a cluster's nodes, the one to load.

pub mod leader;
pub mod lookups;

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use flashsale_protocol::codec;
use flashsale_protocol::handshake::{handshake, hello, welcome, HandshakeError};
use flashsale_protocol::{
    ClientCodec, ClientFrame, ErrorCode, ErrorFrame, FrameError, Request, RequestFrame, Response,
    ServerFrame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

use crate::check::Answer;
use crate::config::Target;
use crate::transport::{
    connect_from, connect_within, within, ConnectError, SaleSnapshot, Transport,
};

/// Room asked for per read at first: a handshake, a few answers.
const MIN_READ_CHUNK: usize = 4 * 1024;
/// Room asked for per read by a connection whose reads keep filling what
/// they were given (a deep pipeline).
const READ_CHUNK: usize = 64 * 1024;

/// A request frame for one sale and any user (a `Reserve`, a `Lookup`),
/// with the offsets of the two fields that change per request.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    id_at: usize,
    user_at: usize,
}

/// A request about one user in one sale whose last field is the user id.
type PerUser = fn(String, u64) -> Request;

/// A `Reserve` for one user.
const RESERVE: PerUser = |sale, user| Request::Reserve { sale, user };
/// A `Lookup` of one user.
const LOOKUP: PerUser = |sale, user| Request::Lookup { sale, user };

impl Template {
    fn new(sale: &str, request: PerUser) -> io::Result<Template> {
        let encode = |id, user| -> io::Result<Vec<u8>> {
            let mut buf = BytesMut::new();
            let frame = ClientFrame::Request(RequestFrame {
                id,
                request: request(sale.to_owned(), user),
            });
            ClientCodec::default()
                .encode(frame, &mut buf)
                .map_err(io::Error::other)?;
            Ok(buf.to_vec())
        };
        let bytes = encode(0, 0)?;
        // Layout per docs/PROTOCOL.md: u32 length, u32 variant, u64 id, ...,
        // and the user id is the last field.
        let template = Template {
            id_at: 8,
            user_at: bytes.len() - 8,
            bytes,
        };
        let probe = (0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        let mut patched = Vec::new();
        template.write(probe.0, probe.1, &mut patched);
        if patched != encode(probe.0, probe.1)? {
            return Err(io::Error::other(
                "the request frame layout is not the one this load generator knows",
            ));
        }
        Ok(template)
    }

    fn write(&self, id: u64, user: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        out[start + self.id_at..start + self.id_at + 8].copy_from_slice(&id.to_le_bytes());
        out[start + self.user_at..start + self.user_at + 8].copy_from_slice(&user.to_le_bytes());
    }
}

/// What every connection to one flashsale server shares.
pub struct NativeShared {
    addr: String,
    api_key: Option<String>,
    template: Template,
}

/// A pipelined connection to a flashsale server.
pub struct NativeTransport {
    pipe: Pipe,
    shared: Rc<NativeShared>,
}

/// One connection past its handshake, with its own buffers: requests are
/// queued into `write_buf` and go out as the socket takes them; answers are
/// decoded from `read_buf` as they arrive.
///
/// Its buffers start small and grow with what it carries: in a connection
/// storm each user's connection lives for one handshake and one answer, and
/// a 64 KiB buffer per user would cost more than the connection itself.
struct Pipe {
    stream: TcpStream,
    codec: ClientCodec,
    read_buf: BytesMut,
    /// Room asked for per read; doubles up to [`READ_CHUNK`] each time a
    /// read fills all the room it was given.
    read_chunk: usize,
    write_buf: Vec<u8>,
    written: usize,
    /// The server's `Welcome` has been read: false on a connection whose
    /// requests went out behind its `Hello`, until it arrives.
    welcomed: bool,
}

/// A connection to `addr` past its handshake, and the window it set.
async fn open(
    addr: &str,
    api_key: Option<String>,
    timeout: Duration,
) -> Result<(Pipe, usize), ConnectError> {
    let attempt = async {
        let mut stream = connect_from(addr, None).await?;
        let mut codec = ClientCodec::default();
        let mut read_buf = BytesMut::with_capacity(MIN_READ_CHUNK);
        let welcome = handshake(&mut stream, api_key, &mut codec, &mut read_buf)
            .await
            .map_err(handshake_error)?;
        let window = usize::try_from(welcome.max_in_flight).unwrap_or(usize::MAX);
        let pipe = Pipe::new(stream, codec, read_buf, Vec::new(), true);
        Ok::<_, ConnectError>((pipe, window))
    };
    connect_within(timeout, attempt).await
}

/// A connection to `addr`, from `source` if given, whose `Hello` is queued
/// with `first` (requests written into the queue) behind it: all go out on
/// the first flush, and the `Welcome` is read with the answers. A refusal
/// comes as the error of the read that meets it.
async fn open_sending(
    (addr, source): (&str, Option<IpAddr>),
    api_key: Option<String>,
    timeout: Duration,
    first: impl FnOnce(&mut Vec<u8>),
) -> Result<Pipe, ConnectError> {
    let attempt = async {
        let stream = connect_from(addr, source).await?;
        let mut write_buf = codec::frame(&hello(api_key)).map_err(io::Error::other)?;
        first(&mut write_buf);
        let read_buf = BytesMut::with_capacity(MIN_READ_CHUNK);
        Ok::<_, ConnectError>(Pipe::new(
            stream,
            ClientCodec::default(),
            read_buf,
            write_buf,
            false,
        ))
    };
    connect_within(timeout, attempt).await
}

/// A server that sheds connections refuses with `OVERLOADED`: that one is
/// told apart, so a connection-per-user run counts it as `Busy`.
fn handshake_error(e: HandshakeError) -> ConnectError {
    match e {
        HandshakeError::Refused(e) if e.code == ErrorCode::OVERLOADED => {
            ConnectError::Overloaded(e.to_string())
        }
        HandshakeError::Refused(e) => ConnectError::Refused(e.to_string()),
        HandshakeError::Protocol(message) => ConnectError::Refused(message),
        HandshakeError::Closed => ConnectError::Io(io::ErrorKind::UnexpectedEof.into()),
        HandshakeError::Frame(FrameError::Io(e)) => ConnectError::Io(e),
        HandshakeError::Frame(e) => ConnectError::Io(io::Error::other(e)),
    }
}

impl Transport for NativeTransport {
    type Shared = NativeShared;

    fn prepare(target: &Target, sale: &str) -> Result<NativeShared, ConnectError> {
        let Target::Native { addr, api_key } = target else {
            return Err(ConnectError::Refused("not a native target".into()));
        };
        Ok(NativeShared {
            addr: addr.clone(),
            api_key: api_key.clone(),
            template: Template::new(sale, RESERVE)?,
        })
    }

    async fn connect(
        shared: &Rc<NativeShared>,
        timeout: Duration,
    ) -> Result<(Self, usize), ConnectError> {
        let (pipe, window) = open(&shared.addr, shared.api_key.clone(), timeout).await?;
        let shared = Rc::clone(shared);
        Ok((NativeTransport { pipe, shared }, window))
    }

    async fn connect_sending(
        shared: &Rc<NativeShared>,
        timeout: Duration,
        source: Option<IpAddr>,
        user: u64,
        ids: std::ops::Range<u64>,
    ) -> Result<Self, ConnectError> {
        let template = &shared.template;
        let to = (shared.addr.as_str(), source);
        let pipe = open_sending(to, shared.api_key.clone(), timeout, |queue| {
            for id in ids {
                template.write(id, user, queue);
            }
        })
        .await?;
        let shared = Rc::clone(shared);
        Ok(NativeTransport { pipe, shared })
    }

    fn send(&mut self, id: u64, user: u64) {
        self.shared
            .template
            .write(id, user, &mut self.pipe.write_buf);
    }

    async fn poll(&mut self, until: Instant, answers: &mut Vec<(u64, Answer)>) -> io::Result<()> {
        let before = answers.len();
        loop {
            self.pipe.flush_some()?;
            self.pipe
                .read_some(|id, response| answers.push((id, answer_of(&response))))?;
            if answers.len() > before || Instant::now() >= until {
                return Ok(());
            }
            self.pipe.wait(until).await?;
        }
    }
}

impl Pipe {
    fn new(
        stream: TcpStream,
        codec: ClientCodec,
        read_buf: BytesMut,
        write_buf: Vec<u8>,
        welcomed: bool,
    ) -> Pipe {
        Pipe {
            stream,
            codec,
            read_buf,
            read_chunk: MIN_READ_CHUNK,
            write_buf,
            written: 0,
            welcomed,
        }
    }

    /// Waits until the socket can be read, or written while something is
    /// queued, or `until` has passed.
    async fn wait(&mut self, until: Instant) -> io::Result<()> {
        let pending_write = self.written < self.write_buf.len();
        tokio::select! {
            r = self.stream.readable() => r,
            w = self.stream.writable(), if pending_write => w,
            () = tokio::time::sleep_until(until) => Ok(()),
        }
    }

    /// Writes what the socket takes now.
    fn flush_some(&mut self) -> io::Result<()> {
        while self.written < self.write_buf.len() {
            match self.stream.try_write(&self.write_buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.written == self.write_buf.len() {
            self.write_buf.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Reads what the socket has now and hands every whole answer to
    /// `answered`, with the id of the request it answers.
    fn read_some(&mut self, mut answered: impl FnMut(u64, Response)) -> io::Result<()> {
        loop {
            // Only when the room left is short: `reserve` of a full chunk on
            // a buffer that is not empty would reallocate (and copy) it.
            if self.read_buf.capacity() - self.read_buf.len() < self.read_chunk / 4 {
                self.read_buf.reserve(self.read_chunk);
            }
            let room = self.read_buf.capacity() - self.read_buf.len();
            match self.stream.try_read_buf(&mut self.read_buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) if n < room => break,
                Ok(_) => self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while let Some(frame) = self
            .codec
            .decode(&mut self.read_buf)
            .map_err(io::Error::other)?
        {
            match frame {
                frame if !self.welcomed => {
                    welcome(frame).map_err(|e| io::Error::other(handshake_error(e)))?;
                    self.welcomed = true;
                }
                ServerFrame::Response(r) => answered(r.id, r.response),
                ServerFrame::Error(e) => {
                    return Err(io::Error::other(format!(
                        "server closed the connection: {e}"
                    )))
                }
                ServerFrame::Welcome(_) => {
                    return Err(io::Error::other("unexpected second Welcome"))
                }
            }
        }
        if self.read_buf.is_empty() {
            self.read_buf.clear();
        } else if self.read_buf.capacity() > 16 * READ_CHUNK {
            // Keep a partial frame without holding on to a huge buffer.
            let rest = self.read_buf.split();
            self.read_buf = BytesMut::with_capacity(READ_CHUNK);
            self.read_buf.extend_from_slice(rest.chunk());
        }
        Ok(())
    }
}

/// A `Reserve` answer is its outcome; any other is an error answer.
fn answer_of(response: &Response) -> Answer {
    match response {
        Response::Reserve(outcome) => Answer::Reserve(*outcome),
        _ => Answer::Error,
    }
}

/// The sale's capacity and remaining stock, by a `Status` request.
pub async fn snapshot(
    target: &Target,
    sale: &str,
    timeout: Duration,
) -> anyhow::Result<SaleSnapshot> {
    let Target::Native { addr, api_key } = target else {
        anyhow::bail!("not a native target");
    };
    let (pipe, _) = open(addr, api_key.clone(), timeout).await?;
    let Pipe {
        mut stream,
        mut codec,
        read_buf: mut buf,
        ..
    } = pipe;
    let ask = async {
        let mut out = BytesMut::new();
        let frame = ClientFrame::Request(RequestFrame {
            id: 1,
            request: Request::Status {
                sale: sale.to_owned(),
            },
        });
        codec.encode(frame, &mut out)?;
        stream.write_all(&out).await?;
        loop {
            if let Some(frame) = codec.decode(&mut buf)? {
                return match frame {
                    ServerFrame::Response(r) => match r.response {
                        Response::Status(s) => Ok(SaleSnapshot::from(&s)),
                        Response::Error(ErrorFrame { message, .. }) => {
                            anyhow::bail!("status of sale {sale:?}: {message}")
                        }
                        other => anyhow::bail!("unexpected answer to Status: {other:?}"),
                    },
                    ServerFrame::Error(e) => anyhow::bail!("server closed the connection: {e}"),
                    other => anyhow::bail!("unexpected frame {other:?}"),
                };
            }
            if stream.read_buf(&mut buf).await? == 0 {
                anyhow::bail!("server closed the connection");
            }
        }
    };
    within(timeout, "Status", ask).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_match_the_codec() {
        for per_user in [RESERVE, LOOKUP] {
            for sale in ["d", "default", &"x".repeat(64)] {
                let t = Template::new(sale, per_user).unwrap();
                let mut out = Vec::new();
                t.write(42, u64::MAX, &mut out);
                t.write(7, 0, &mut out);
                let mut buf = BytesMut::from(&out[..]);
                let mut codec = flashsale_protocol::ServerCodec::default();
                let first = codec.decode(&mut buf).unwrap().unwrap();
                let second = codec.decode(&mut buf).unwrap().unwrap();
                let frame = |id, user| {
                    ClientFrame::Request(RequestFrame {
                        id,
                        request: per_user(sale.into(), user),
                    })
                };
                assert_eq!(first, frame(42, u64::MAX));
                assert_eq!(second, frame(7, 0));
                assert!(buf.is_empty());
            }
        }
        assert!(matches!(
            LOOKUP("d".into(), 1),
            Request::Lookup { user: 1, .. }
        ));
    }
}
