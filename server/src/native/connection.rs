//! One client connection: handshake, then decode, answer, and write in
//! batches.
//!
//! The loop reads whatever the socket has, decodes every complete frame in
//! the buffer, and answers each: answers known at once are encoded straight
//! into the write buffer; wins wait for the log in a [`FuturesUnordered`], so
//! they are written whenever their batch is durable, possibly after answers
//! to later requests. The write buffer is flushed once per pass, so a client
//! that pipelines a thousand requests costs a handful of syscalls.
//!
//! Requests are decoded as borrowed views of the read buffer
//! ([`ClientFrameRef`]) and answers are encoded in place in the write buffer,
//! so a request answered at once allocates nothing. A connection whose reads
//! keep filling the buffer (a deep pipeline) gets larger reads, up to
//! 64 KiB, so the loop's fixed cost per pass is spread over more requests.
//!
//! Bounds, so one client cannot hurt the others: the read buffer holds at
//! most one read plus one frame (the codec refuses a length above the
//! maximum before buffering it); at most `max_in_flight` requests wait on the log; and when
//! the write buffer passes a high-water mark (a client that does not read),
//! the connection stops reading until it drains. A connection that makes no
//! progress for `idle_timeout` is closed.
//!
//! Memory: most connections are idle most of the time, so an idle one
//! holds no buffer at all. The loop waits for the socket to be readable
//! before it takes a read buffer (from the worker thread's pool, see
//! [`buffers`](super::buffers)), and when a read finds nothing more to
//! read, the connection is about to wait: it gives back its empty buffers,
//! keeps a partial frame in an allocation of the frame's received length,
//! and drops its empty queue of answers and its counters, which are
//! created again on its next request. A frame is decoded only once it is
//! whole ([`ServerCodec::frame_ready`]), so a body announced but not yet
//! received reserves nothing. The write buffer is taken when an answer is
//! encoded and given back once written out. What an idle welcomed
//! connection costs is its task (this loop's state: the socket's
//! registration, the idle timer and the branches it waits on): about
//! 1.5 KiB of the process's resident memory, measured over 10,000, which
//! the `connection_memory` test holds under 4 KiB. The pipelined hot path
//! takes and gives back its buffers on every pass, from the pool, so it
//! still reads and writes warm memory.
//!
//! Before the handshake, a connection has proved nothing, not even that it
//! knows the API key, so it gets less: a first frame over
//! [`MAX_HELLO_LEN`] is refused on its length prefix, reads are of that
//! size, and it has `handshake_timeout` to get its `Hello` in, however it
//! trickles: what it holds meanwhile is what it has sent, at most that one
//! small frame. The full frame size and read size come with the `Welcome`.
//!
//! Metrics: a sold-out rush answers millions of requests per second, so
//! answers are counted in a per-connection [`OutcomeCounts`] (a plain array)
//! and added to the shared counters once per pass of the loop, together with
//! the change in requests waiting on the log, and once more when the
//! connection ends. A win is counted when its durable answer is encoded, not
//! when its ticket is claimed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use flashsale_protocol::{
    codec::HEADER_LEN, encoding, handshake::check_hello, ClientFrameRef, ErrorCode, ErrorFrame,
    FrameError, RequestFrameRef, ResponseFrame, ServerCodec, ServerFrame, Welcome, MAX_HELLO_LEN,
    PROTOCOL_VERSION,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant, Sleep};
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

use super::buffers;
use crate::service::Answer;
use crate::serving::Serving;
use flashsale_core::clock::now_ms;
use flashsale_metrics::{self as metrics, Op, Outcome, OutcomeCounts, Protocol};

/// Bytes asked of the socket per read before the handshake: one whole
/// `Hello` of the largest accepted size.
const HELLO_READ_CHUNK: usize = HEADER_LEN + MAX_HELLO_LEN;
/// Bytes asked of the socket per read, once welcomed.
const READ_CHUNK: usize = 16 * 1024;
/// Room a write buffer is taken with; it grows as answers need.
const WRITE_CHUNK: usize = 16 * 1024;
/// Bytes asked of the socket per read by a connection whose reads keep
/// filling the buffer (a deep pipeline): fewer, larger reads and passes of
/// the loop per request, while an ordinary connection keeps a small buffer.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// Encoded answers beyond which the connection stops reading requests.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Requests waiting for the log, per connection, beyond which the
    /// connection stops reading.
    pub max_in_flight: u32,
    /// Close a connection without progress for this long.
    pub idle_timeout: Duration,
    /// Close a connection whose `Hello` is not in and accepted this long
    /// after it was accepted.
    pub handshake_timeout: Duration,
    /// Largest accepted frame body.
    pub max_frame_len: usize,
    /// The key a `Hello` must carry, if any.
    pub api_key: Option<Arc<str>>,
}

/// Answers waiting on the log, with the operation they answer, to count them.
type Pending =
    FuturesUnordered<Pin<Box<dyn std::future::Future<Output = (Op, ResponseFrame)> + Send>>>;

/// Serves one connection until it closes. Errors are logged and end only
/// this connection.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    serving: Arc<Serving>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
) {
    let mut conn = Connection::new(serving, limits);
    let result = conn.run(&mut stream, &shutdown).await;
    conn.finish_metrics();
    match result {
        Ok(()) => tracing::trace!(%peer, "connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
    // A peer that closed first sends nothing more, so a plain close cannot
    // reset away our last answer: no half-close and drain (two syscalls per
    // connection in a storm of one-request connections).
    if !conn.peer_closed {
        // Boxed: its drain buffer is needed only at the close, and would
        // otherwise be part of every open connection's task.
        Box::pin(flashsale_net::linger(&mut stream)).await;
    }
}

/// Tells a connection over the limit to come back later, and closes it.
pub async fn refuse_overloaded(mut stream: TcpStream) {
    let mut codec = ServerCodec::default();
    let mut buf = BytesMut::new();
    let frame = ServerFrame::Error(ErrorFrame::new(
        ErrorCode::OVERLOADED,
        "the server is at its connection limit; retry later",
    ));
    if codec.encode(frame, &mut buf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
    }
    flashsale_net::linger(&mut stream).await;
}

struct Connection {
    serving: Arc<Serving>,
    limits: Arc<ConnectionLimits>,
    codec: ServerCodec,
    /// Received bytes not yet decoded; no memory while there are none and
    /// the socket has nothing either.
    read_buf: BytesMut,
    /// Bytes asked per read; doubles, up to [`MAX_READ_CHUNK`], each time a
    /// read of a welcomed connection fills all the room it was given.
    read_chunk: usize,
    /// Encoded answers not yet written; no memory while there are none.
    write_buf: BytesMut,
    /// Created by the first answer that waits on the log, dropped once
    /// empty when the connection waits for its peer.
    pending: Option<Pending>,
    greeted: bool,
    /// Set once the connection is to close: no more reading, and once the
    /// in-flight answers are out, this frame (if any) goes last.
    closing: Option<Option<ErrorFrame>>,
    /// Answers encoded since the last flush to the shared counters; boxed
    /// and dropped like `pending`, being most of an idle connection's size.
    counts: Option<Box<OutcomeCounts>>,
    /// This connection's share of the in-flight gauge: the number of
    /// pending answers at the last flush.
    in_flight_reported: usize,
    /// The peer closed its side (a read saw the end of the stream).
    peer_closed: bool,
}

impl Connection {
    fn new(serving: Arc<Serving>, limits: Arc<ConnectionLimits>) -> Self {
        Connection {
            codec: ServerCodec::new(limits.max_frame_len.min(MAX_HELLO_LEN)),
            serving,
            limits,
            read_buf: BytesMut::new(),
            read_chunk: HELLO_READ_CHUNK,
            write_buf: BytesMut::new(),
            pending: None,
            greeted: false,
            closing: None,
            counts: None,
            in_flight_reported: 0,
            peer_closed: false,
        }
    }

    /// Answers waiting on the log.
    fn pending_len(&self) -> usize {
        self.pending.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn record(&mut self, op: Op, outcome: Outcome) {
        self.counts
            .get_or_insert_with(Box::default)
            .record(op, outcome);
    }

    /// Adds what this connection counted since the last call to the shared
    /// metrics: answers by outcome, and the change in answers waiting on the
    /// log. Called once per pass of the loop, so its cost is shared by every
    /// request of the pass.
    fn flush_metrics(&mut self) {
        if let Some(counts) = &mut self.counts {
            counts.flush(Protocol::Native);
        }
        let pending = self.pending_len();
        if pending != self.in_flight_reported {
            metrics::add_in_flight(
                Protocol::Native,
                pending as f64 - self.in_flight_reported as f64,
            );
            self.in_flight_reported = pending;
        }
    }

    /// The last flush: what is still pending dies with the connection.
    fn finish_metrics(&mut self) {
        self.pending = None;
        self.flush_metrics();
    }

    /// The connection is about to wait for its peer (a read found nothing):
    /// it keeps no memory it does not need meanwhile (see the module docs).
    fn park(&mut self) {
        buffers::shrink_to_fit(&mut self.read_buf);
        if self.write_buf.is_empty() {
            buffers::give(&mut self.write_buf);
        }
        if self.pending_len() == 0 {
            self.pending = None;
        }
        self.flush_metrics();
        self.counts = None;
    }

    fn close(&mut self, error: Option<ErrorFrame>) {
        if self.closing.is_none() {
            self.closing = Some(error);
        }
    }

    fn can_take_more(&self) -> bool {
        self.closing.is_none()
            && self.pending_len() < self.limits.max_in_flight as usize
            && self.write_buf.len() < WRITE_HIGH_WATER
    }

    async fn run(
        &mut self,
        stream: &mut TcpStream,
        shutdown: &CancellationToken,
    ) -> io::Result<()> {
        let (rd, mut wr) = stream.split();
        let idle = sleep(self.limits.idle_timeout);
        tokio::pin!(idle);
        // Boxed, and dropped with the `Welcome`: a welcomed connection does
        // not carry it.
        let mut handshake = Some(Box::pin(sleep(self.limits.handshake_timeout)));
        loop {
            if self.decode_buffered()? {
                idle.as_mut()
                    .reset(Instant::now() + self.limits.idle_timeout);
            }
            if self.greeted {
                handshake = None;
            }
            self.flush_metrics();
            if self.pending_len() == 0 {
                if let Some(last) = self.closing.take() {
                    if let Some(frame) = last {
                        self.encode(ServerFrame::Error(frame))?;
                    }
                    // Bounded: a peer that does not read must not hold
                    // the connection (or a graceful shutdown) open.
                    let flush = wr.write_all_buf(&mut self.write_buf);
                    return match tokio::time::timeout(self.limits.idle_timeout, flush).await {
                        Ok(flushed) => flushed,
                        Err(_) => Err(io::ErrorKind::TimedOut.into()),
                    };
                }
            }
            let can_read = self.can_take_more();
            let waiting = self.pending_len() > 0;
            tokio::select! {
                biased;
                Some((op, frame)) = next_answer(&mut self.pending), if waiting => {
                    self.record(op, Outcome::of(op, &frame.response));
                    self.encode(ServerFrame::Response(frame))?;
                }
                written = wr.write_buf(&mut self.write_buf), if !self.write_buf.is_empty() => {
                    if written? == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    if self.write_buf.is_empty() {
                        buffers::give(&mut self.write_buf);
                    }
                    idle.as_mut().reset(Instant::now() + self.limits.idle_timeout);
                }
                ready = rd.readable(), if can_read => {
                    ready?;
                    self.read_from(&rd)?;
                }
                () = expire(&mut handshake), if !self.greeted && self.closing.is_none() => {
                    self.close(Some(ErrorFrame::new(
                        ErrorCode::IDLE_TIMEOUT,
                        format!("no accepted Hello within {:?}", self.limits.handshake_timeout),
                    )));
                }
                () = shutdown.cancelled(), if self.closing.is_none() => {
                    self.close(Some(ErrorFrame::new(ErrorCode::SHUTTING_DOWN, "the server is shutting down")));
                }
                () = &mut idle => {
                    if self.pending_len() > 0 {
                        // Waiting on the log is not idleness.
                        idle.as_mut().reset(Instant::now() + self.limits.idle_timeout);
                    } else if self.closing.is_some() {
                        // The peer does not read what we have to say.
                        return Err(io::ErrorKind::TimedOut.into());
                    } else {
                        self.close(Some(ErrorFrame::new(
                            ErrorCode::IDLE_TIMEOUT,
                            format!("no request for {:?}", self.limits.idle_timeout),
                        )));
                        idle.as_mut().reset(Instant::now() + self.limits.idle_timeout);
                    }
                }
            }
        }
    }

    /// Reads what the socket has, into a buffer taken for it if the
    /// connection holds none. Nothing to read (the readiness was stale)
    /// means the connection is about to wait: it [parks](Self::park).
    fn read_from(&mut self, rd: &ReadHalf<'_>) -> io::Result<()> {
        self.make_read_room();
        let room = (self.read_buf.capacity() - self.read_buf.len()).min(self.read_chunk);
        match rd.try_read_buf(&mut (&mut self.read_buf).limit(room)) {
            // The peer closed its side: answer what is in flight, then close.
            Ok(0) => {
                self.peer_closed = true;
                self.close(None);
            }
            Ok(read) => {
                if read == room && self.greeted && self.read_chunk < MAX_READ_CHUNK {
                    self.read_chunk *= 2;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.park(),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// At least a quarter of a read's size free in the read buffer. A
    /// connection with no buffer, or only a partial frame kept small while
    /// it waited, takes one from the pool (with the partial frame copied
    /// in); a buffer in use grows.
    fn make_read_room(&mut self) {
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare >= self.read_chunk / 4 {
            return;
        }
        if self.read_buf.capacity() < self.read_chunk {
            let mut taken = buffers::take(self.read_chunk + self.read_buf.len());
            taken.extend_from_slice(&self.read_buf);
            self.read_buf = taken;
        } else {
            self.read_buf.reserve(self.read_chunk);
        }
    }

    /// Decodes and answers every complete frame buffered, within the limits.
    /// Returns whether any frame was taken.
    fn decode_buffered(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        let mut now = None;
        while self.can_take_more() && self.codec.frame_ready(&self.read_buf) {
            let body = match self.codec.decode_body(&mut self.read_buf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(FrameError::Io(e)) => return Err(e),
                Err(e) => {
                    self.refuse_frame(&e);
                    break;
                }
            };
            // A borrowing view: a request's sale id points into `body`
            // instead of being copied into a `String`.
            match encoding::decode::<ClientFrameRef<'_>>(&body) {
                Ok(frame) => {
                    progressed = true;
                    let now = *now.get_or_insert_with(now_ms);
                    self.on_frame(frame, now)?;
                }
                Err(e) => {
                    self.refuse_frame(&FrameError::Malformed(e));
                    break;
                }
            }
        }
        Ok(progressed)
    }

    /// After a frame that cannot be read, nothing after it can be either.
    fn refuse_frame(&mut self, e: &FrameError) {
        let code = match e {
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            _ => ErrorCode::MALFORMED,
        };
        tracing::debug!(error = %e, "bad frame; closing the connection");
        self.close(Some(ErrorFrame::new(code, e.to_string())));
    }

    fn on_frame(&mut self, frame: ClientFrameRef<'_>, now_ms: u64) -> io::Result<()> {
        match (self.greeted, frame) {
            (false, ClientFrameRef::Hello(hello)) => {
                match check_hello(&hello, self.limits.api_key.as_deref()) {
                    Ok(()) => {
                        self.greet();
                        self.encode(ServerFrame::Welcome(Welcome {
                            version: PROTOCOL_VERSION,
                            max_in_flight: self.limits.max_in_flight,
                        }))
                    }
                    Err(refusal) => {
                        self.close(Some(refusal));
                        Ok(())
                    }
                }
            }
            (true, ClientFrameRef::Request(RequestFrameRef { id, request })) => {
                let op = Op::of(&request);
                match self.serving.handle(request, now_ms) {
                    Answer::Now(response) => {
                        self.record(op, Outcome::of(op, &response));
                        self.encode(ServerFrame::Response(ResponseFrame { id, response }))
                    }
                    Answer::Later(fut) => {
                        let pending = self.pending.get_or_insert_with(FuturesUnordered::new);
                        pending.push(Box::pin(async move {
                            let response = fut.await;
                            (op, ResponseFrame { id, response })
                        }));
                        Ok(())
                    }
                }
            }
            (greeted, _) => {
                let message = if greeted {
                    "a second Hello"
                } else {
                    "the first frame must be a Hello"
                };
                self.close(Some(ErrorFrame::new(
                    ErrorCode::HANDSHAKE_REQUIRED,
                    message,
                )));
                Ok(())
            }
        }
    }

    /// The handshake passed: from the next frame on, the configured frame
    /// size and full-size reads. The codec is between frames here (it has
    /// just returned the `Hello`), so replacing it loses nothing.
    fn greet(&mut self) {
        self.greeted = true;
        self.codec = ServerCodec::new(self.limits.max_frame_len);
        self.read_chunk = READ_CHUNK;
    }

    fn encode(&mut self, frame: ServerFrame) -> io::Result<()> {
        if self.write_buf.capacity() == 0 {
            self.write_buf = buffers::take(WRITE_CHUNK);
        }
        self.codec
            .encode(frame, &mut self.write_buf)
            .map_err(|e| match e {
                FrameError::Io(e) => e,
                other => io::Error::other(other),
            })
    }
}

/// The next answer the log has made durable; never, with none pending.
async fn next_answer(pending: &mut Option<Pending>) -> Option<(Op, ResponseFrame)> {
    match pending {
        Some(pending) => pending.next().await,
        None => std::future::pending().await,
    }
}

/// Fires at `deadline`; never, without one.
async fn expire(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.as_mut().await,
        None => std::future::pending().await,
    }
}
