//! An event stream written by the connection's task rather than by hyper,
//! so that an open stream costs its socket, its place in the hub and a few
//! timers, not hyper's two 8 KiB buffers (README "Memory per connection").
//!
//! hyper writes the head and the first event, as chunked HTTP/1.1 like any
//! streamed response; the body, asked for its second chunk, parks the
//! stream on the connection's [`Activity`] and never answers; the
//! connection's task takes the socket back once hyper has flushed (see
//! `idle`) and calls [`write_rest`], which goes on in the same framing:
//! each event or keep-alive comment one chunk, and the last chunk when the
//! stream ends. The client sees one ordinary chunked response.
//!
//! Only a request that hyper answers chunked can go on like this: HTTP/1.1
//! without `Connection: close` ([`can_detach`]). Any other is streamed by
//! hyper to the end, as before.
//!
//! While the task writes, it watches the socket without reading it: the
//! client closing ends the connection; a request sent behind the stream
//! ends the stream cleanly, and the connection goes on to serve it. A
//! client that stops reading is given up on once a chunk has waited
//! longer than the idle timeout to be written.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::CONNECTION;
use axum::http::{HeaderMap, Version};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{latest, Open, KEEP_ALIVE, MIN_INTERVAL, RECONNECT};
use crate::idle::{Activity, Tracked};

/// The connection an event stream's request came on: put on the request by
/// the front, for the stream to park itself on.
#[derive(Clone)]
pub(crate) struct Connection(pub(crate) Activity);

/// A stream parked by its body, for the connection's task to go on with.
pub(crate) struct Parked {
    open: Open,
}

/// Whether hyper answers a request of `version` with `headers` in chunks,
/// and keeps the connection after: what [`write_rest`] goes on with.
pub(super) fn can_detach(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && !headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// The response body of a stream that will be detached: its first event,
/// then, asked for more, it parks the stream and waits for ever (hyper is
/// dropped before it asks again). Its length is unknown, so hyper sends it
/// in chunks.
pub(super) struct Detaching {
    first: Option<Bytes>,
    open: Option<Open>,
    connection: Activity,
}

impl Detaching {
    pub(super) fn new(mut open: Open, connection: Connection) -> Detaching {
        let first = event(&mut open, true);
        Detaching {
            first: Some(first),
            open: Some(open),
            connection: connection.0,
        }
    }
}

impl Body for Detaching {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some(open) = this.open.take() {
            this.connection.park(Parked { open });
        }
        // Never woken: the connection's task takes the stream from here.
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

/// How a detached stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The last chunk is out: the connection may serve another request.
    Cleanly,
    /// The client went away, stopped reading, or the socket failed: close.
    Closed,
}

/// Writes the rest of `parked` to `io` (the socket hyper let go of after
/// the first event) until the stream's lifetime ends, `shutdown`, the hub
/// stops, or the client moves; each write must finish within
/// `write_within`.
pub(crate) async fn write_rest(
    io: &mut Tracked,
    parked: Parked,
    write_within: Duration,
    shutdown: &CancellationToken,
) -> Ended {
    let Parked { mut open } = parked;
    let mut next_at = Instant::now() + MIN_INTERVAL;
    let mut quiet_until = Instant::now() + KEEP_ALIVE;
    loop {
        let data = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(open.ends_at) => break,
            moved = io.client_moved() => match moved {
                // A request behind the stream: end it, then serve that.
                Ok(n) if n > 0 => break,
                _ => return Ended::Closed,
            },
            () = tokio::time::sleep_until(quiet_until) => Bytes::from_static(b":\n\n"),
            changed = async {
                tokio::time::sleep_until(next_at).await;
                open.rx.changed().await
            } => match changed {
                Ok(()) => {
                    next_at = Instant::now() + MIN_INTERVAL;
                    event(&mut open, false)
                }
                Err(_) => break,
            },
        };
        if write_within_or_close(io, &chunk(&data), write_within).await == Ended::Closed {
            return Ended::Closed;
        }
        quiet_until = Instant::now() + KEEP_ALIVE;
    }
    write_within_or_close(io, b"0\r\n\r\n", write_within).await
}

async fn write_within_or_close(io: &mut Tracked, bytes: &[u8], within: Duration) -> Ended {
    match tokio::time::timeout(within, io.write_all(bytes)).await {
        Ok(Ok(())) => Ended::Cleanly,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "event stream lost");
            Ended::Closed
        }
        Err(_) => {
            tracing::debug!(timeout = ?within, "event stream not read; closing it");
            Ended::Closed
        }
    }
}

/// `data` as one chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The latest stock as one event; the first also carries the `retry:`
/// hint.
fn event(open: &mut Open, first: bool) -> Bytes {
    event_bytes(&latest(open), first)
}

/// An event of `data` (one line of JSON), as axum's `Event` writes it for
/// the streams hyper writes to the end (a test holds the two equal).
fn event_bytes(data: &str, first: bool) -> Bytes {
    let retry = if first {
        format!("retry: {}\n", RECONNECT.as_millis())
    } else {
        String::new()
    };
    Bytes::from(format!("{retry}data: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_kept_http_1_1_connection_is_detached() {
        let mut headers = HeaderMap::new();
        assert!(can_detach(Version::HTTP_11, &headers));
        assert!(!can_detach(Version::HTTP_10, &headers));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        assert!(!can_detach(Version::HTTP_11, &headers));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(can_detach(Version::HTTP_11, &headers));
    }

    /// Both writers of a stream send an event as the same bytes.
    #[tokio::test]
    async fn events_are_the_bytes_axum_makes() {
        use axum::response::sse::{Event, Sse};
        use axum::response::IntoResponse;
        let data = r#"{"remaining":3,"sold":0,"state":"open"}"#;
        for first in [true, false] {
            let mut event = Event::default();
            if first {
                event = event.retry(RECONNECT);
            }
            let events =
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(event.data(data))]);
            let body = Sse::new(events).into_response().into_body();
            let axum_bytes = axum::body::to_bytes(body, 1024).await.unwrap();
            assert_eq!(event_bytes(data, first), axum_bytes, "first: {first}");
        }
    }

    #[test]
    fn a_chunk_is_framed_by_its_length_in_hex() {
        assert_eq!(chunk(b":\n\n"), b"3\r\n:\n\n\r\n");
        let data = vec![b'x'; 300];
        let framed = chunk(&data);
        assert!(framed.starts_with(b"12c\r\nxxx"));
        assert!(framed.ends_with(b"x\r\n"));
        assert_eq!(framed.len(), 5 + 300 + 2);
    }
}
