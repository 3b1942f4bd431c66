//! The socket under hyper, and how a keep-alive connection waits between
//! requests without hyper's buffers.
//!
//! hyper's HTTP/1 connection holds a read buffer and a buffer for response
//! heads, 8 KiB each, for as long as it lives, idle or not; and nearly every
//! keep-alive connection of a crowd is idle nearly all the time. So the
//! front does not keep hyper while a connection is idle: when a read would
//! block between two requests, [`Tracked`] reports the end of the stream,
//! hyper ends the connection cleanly (a client leaving between requests)
//! and hands the socket back (`without_shutdown`), the connection's task
//! waits for the socket to become readable holding no buffer at all, and a
//! fresh hyper connection serves the next request.
//!
//! "Between two requests" has to be certain, or hyper would take a pause
//! in the middle of a request for a client hanging up. [`Tracked`] reports
//! the end only when all of these hold:
//! - every request hyper handed the service has had its response body
//!   dropped, which hyper does once it has written it ([`InProgress`]; the
//!   last one to go wakes the task, since hyper would not read again by
//!   itself);
//! - no request of this hyper connection had a body: hyper may still be
//!   reading or draining it, and a body may end in anything;
//! - the last write did not block: hyper ends a connection without
//!   flushing what it still holds;
//! - the bytes read so far end with the blank line that ends a head, so
//!   hyper holds no part of a next request (a head read in part, or
//!   pipelined behind the last one, leaves other bytes last; a complete
//!   one hyper parses from its buffer before it reads again).
//!
//! Otherwise the read blocks as usual and hyper keeps the connection until
//! the next chance.
//!
//! An event stream is a response in progress for as long as it is open, so
//! hyper would keep its buffers for the stream's whole life. Instead, hyper
//! writes the head and the first event, and then lets go mid-response: the
//! stream's body, asked for its second chunk, [`park`](Activity::park)s
//! what the stream needs in the [`Activity`] and never answers; once
//! [`Tracked`] has seen hyper flush everything it wrote, the connection is
//! [`detachable`](Activity::detachable), its task takes the socket back
//! ([`Tracked::resume`]) and writes the rest of the stream itself, chunk by
//! chunk, in the same HTTP/1.1 chunked framing (`events::write_rest`).
//! hyper flushes with nothing left to write only after its buffer is
//! empty, so no byte hyper took is lost.
//!
//! The same wrapper notes when a byte last moved either way, for the idle
//! timeout: hyper owns the socket, the connection's task watches the clock.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::events::Parked;

/// What a connection's task and its service share with its socket: the
/// clock of the last byte moved, and the requests in progress.
#[derive(Clone)]
pub(crate) struct Activity {
    shared: Arc<Shared>,
}

struct Shared {
    opened: Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_ms: AtomicU64,
    /// Requests handed to the service whose response body hyper has not
    /// dropped yet.
    in_progress: AtomicUsize,
    /// A request of the current hyper connection had a body.
    had_body: AtomicBool,
    /// The connection's task, as of its last read that would block: hyper
    /// does not read again by itself once a response is out, so the end
    /// of the last request wakes it to find the connection idle.
    reader: AtomicWaker,
    /// hyper's last call on the socket was a flush that completed: it
    /// holds nothing unwritten.
    flushed: AtomicBool,
    /// An event stream that hyper started and the connection's task is to
    /// go on with (see the module docs).
    parked: Mutex<Option<Parked>>,
    /// `parked` holds a stream: read on every pending poll of hyper, where
    /// the lock would be a cost for nothing.
    has_parked: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.shared.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When a byte last moved, either way.
    pub(crate) fn last(&self) -> Instant {
        self.shared.opened + Duration::from_millis(self.shared.last_ms.load(Ordering::Relaxed))
    }

    /// Notes a request handed to the service; it is in progress until the
    /// returned guard (moved into its response body) is dropped.
    pub(crate) fn begin<B: Body>(&self, request: &hyper::Request<B>) -> InProgress {
        if !request.body().is_end_stream() {
            self.shared.had_body.store(true, Ordering::Relaxed);
        }
        self.shared.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress {
            activity: self.clone(),
        }
    }

    /// Leaves `stream` for the connection's task, which takes the socket
    /// from hyper once hyper has flushed what it wrote.
    pub(crate) fn park(&self, stream: Parked) {
        *self.parked() = Some(stream);
        self.shared.has_parked.store(true, Ordering::Release);
    }

    /// The stream hyper started, once hyper holds no byte of it unwritten:
    /// the socket can be taken back and the stream written on from there.
    pub(crate) fn detachable(&self) -> bool {
        self.shared.has_parked.load(Ordering::Acquire)
            && self.shared.flushed.load(Ordering::Relaxed)
    }

    /// The parked stream, if any.
    pub(crate) fn take_parked(&self) -> Option<Parked> {
        self.shared.has_parked.store(false, Ordering::Release);
        self.parked().take()
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Option<Parked>> {
        self.shared
            .parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn quiet(&self) -> bool {
        self.shared.in_progress.load(Ordering::Relaxed) == 0
            && !self.shared.had_body.load(Ordering::Relaxed)
    }
}

/// A request in progress, until dropped.
pub(crate) struct InProgress {
    activity: Activity,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let shared = &self.activity.shared;
        if shared.in_progress.fetch_sub(1, Ordering::Relaxed) == 1 {
            shared.reader.wake();
        }
    }
}

/// A response body that keeps its request [`InProgress`] until hyper
/// drops it, after its last byte.
pub(crate) struct Guarded<B> {
    body: B,
    _in_progress: InProgress,
}

impl<B> Guarded<B> {
    pub(crate) fn new(body: B, in_progress: InProgress) -> Self {
        Guarded {
            body,
            _in_progress: in_progress,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The last four bytes read, to tell whether they end a request head.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Tail(u32);

/// The blank line after a head's last header line.
const HEAD_END: Tail = Tail(u32::from_be_bytes(*b"\r\n\r\n"));

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let start = bytes.len().saturating_sub(4);
        for &b in &bytes[start..] {
            self.0 = (self.0 << 8) | u32::from(b);
        }
    }

    fn ends_head(self) -> bool {
        self == HEAD_END
    }
}

/// The socket as hyper sees it: it records progress in an [`Activity`],
/// serves first what an earlier hyper connection had read, and reports the
/// end of the stream when the connection is between requests (see the
/// module docs).
pub(crate) struct Tracked {
    inner: TcpStream,
    activity: Activity,
    /// Bytes read by the previous hyper connection and not yet parsed.
    prefix: Bytes,
    tail: Tail,
    write_blocked: bool,
    /// The end of the stream was reported to hyper though the socket is
    /// open.
    released: bool,
}

impl Tracked {
    pub(crate) fn new(inner: TcpStream) -> (Tracked, Activity) {
        let activity = Activity {
            shared: Arc::new(Shared {
                opened: Instant::now(),
                last_ms: AtomicU64::new(0),
                in_progress: AtomicUsize::new(0),
                had_body: AtomicBool::new(false),
                reader: AtomicWaker::new(),
                flushed: AtomicBool::new(false),
                parked: Mutex::new(None),
                has_parked: AtomicBool::new(false),
            }),
        };
        let io = Tracked {
            inner,
            activity: activity.clone(),
            prefix: Bytes::new(),
            tail: Tail::default(),
            write_blocked: false,
            released: false,
        };
        (io, activity)
    }

    /// Takes the socket back from a hyper connection that has ended: `Ok`
    /// with what hyper had read and not parsed, to serve the next one, if
    /// it ended because the connection went idle; `Err` if it ended for
    /// good (the client closed, or asked to close).
    pub(crate) fn take_back(self, unparsed: Bytes) -> Result<Tracked, Tracked> {
        if !self.released {
            return Err(self);
        }
        Ok(self.resume(unparsed))
    }

    /// Takes the socket back from a hyper connection in the middle of a
    /// response it has flushed ([`Activity::detachable`]), with what hyper
    /// had read and not parsed, to serve after the response.
    pub(crate) fn resume(mut self, unparsed: Bytes) -> Tracked {
        self.released = false;
        self.activity
            .shared
            .had_body
            .store(false, Ordering::Relaxed);
        // `unparsed` shares hyper's whole read buffer, even when empty: keep
        // a copy of its bytes, not the buffer.
        self.prefix = if unparsed.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&unparsed)
        };
        self
    }

    /// Waits until the client sends something or closes, without taking
    /// it: the number of bytes waiting (at least 1), or 0 at the end of
    /// the stream.
    pub(crate) async fn client_moved(&self) -> std::io::Result<usize> {
        if !self.prefix.is_empty() {
            return Ok(self.prefix.len());
        }
        self.inner.peek(&mut [0u8; 1]).await
    }

    /// Waits until the next request can be read. Holds no buffer.
    pub(crate) async fn readable(&self) -> std::io::Result<()> {
        if self.prefix.is_empty() {
            self.inner.readable().await
        } else {
            Ok(())
        }
    }

    /// Closes the sending side, as hyper would have.
    pub(crate) async fn close(mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }

    fn between_requests(&self) -> bool {
        self.tail.ends_head() && !self.write_blocked && self.activity.quiet()
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.between_requests() => {
                this.released = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.activity.shared.reader.register(cx.waker());
                Poll::Pending
            }
            result => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.tail.push(read);
                    this.activity.touch();
                }
                result
            }
        }
    }
}

impl Tracked {
    /// Notes a write's result. Once a blocked response is out, the task is
    /// woken to read again: hyper would not, and the connection would keep
    /// hyper until the next request.
    fn wrote(&mut self, cx: &Context<'_>, result: &Poll<std::io::Result<usize>>) {
        self.activity.shared.flushed.store(false, Ordering::Relaxed);
        let was_blocked = self.write_blocked;
        self.write_blocked = result.is_pending();
        if was_blocked && !self.write_blocked {
            cx.waker().wake_by_ref();
        }
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, &result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, &result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        // hyper flushes the socket only once its own buffer is written out.
        if matches!(result, Poll::Ready(Ok(()))) && !this.write_blocked {
            this.activity.shared.flushed.store(true, Ordering::Relaxed);
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(chunks: &[&[u8]]) -> Tail {
        let mut tail = Tail::default();
        for chunk in chunks {
            tail.push(chunk);
        }
        tail
    }

    #[test]
    fn only_a_blank_line_last_ends_a_head() {
        assert!(!Tail::default().ends_head(), "nothing read yet");
        assert!(tail_of(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).ends_head());
        assert!(
            tail_of(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"\r", b"\n"]).ends_head(),
            "the blank line split over reads"
        );
        assert!(!tail_of(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]).ends_head());
        assert!(
            !tail_of(&[b"GET / HTTP/1.1\r\n\r\nGET /b HT"]).ends_head(),
            "a pipelined head read in part"
        );
        assert!(!tail_of(&[b"GET / HTTP/1.1\r\n\r\n", b"G"]).ends_head());
        assert!(
            tail_of(&[b"GET / HTTP/1.1\r\n\r\n", b""]).ends_head(),
            "an empty read changes nothing"
        );
    }
}
