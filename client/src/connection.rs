//! One connection: a handshake, then pipelined requests matched to answers.
//!
//! A connection runs two tasks. The **writer** owns the socket's write half
//! and a channel of encoded frames; it takes every frame already queued,
//! writes the batch with one `write_all`, and waits for more. Under load many
//! requests share one syscall; when idle a lone request goes out at once
//! (`TCP_NODELAY` is set, so nothing waits for Nagle). A channel was chosen
//! over a lock around a `FramedWrite` because a caller then never waits for
//! another caller's write, and the encoding happens in the caller's task,
//! where an error (a sale id too long) belongs to that caller alone.
//!
//! The **reader** owns the read half and matches each answer's id to the
//! `oneshot` sender a caller left in the pending map. Answers may come in any
//! order. Anything that ends the connection (end of stream, a socket error, a
//! frame that does not decode, a connection-level error from the server)
//! fails every pending request with the same error, closes the permit
//! semaphore so that no new request is queued, and stops the writer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flashsale_protocol::handshake::{self, HandshakeError};
use flashsale_protocol::{
    ClientCodec, ClientFrame, FrameError, Request, RequestFrame, Response, ResponseFrame,
    ServerFrame, DEFAULT_MAX_FRAME_LEN, MAX_SALE_ID_LEN,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::{ClientConfig, ClientError};

/// Writes are batched up to about this many bytes per syscall.
const MAX_BATCH_BYTES: usize = 64 * 1024;

type Reply = oneshot::Sender<Result<Response, ClientError>>;

/// A live (or failed) connection. Dropping it stops both tasks.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    /// Encoded frames for the writer task. Unbounded because the permit
    /// semaphore already bounds it: a frame is queued only by a caller that
    /// holds one of `max_in_flight` permits.
    outgoing: mpsc::UnboundedSender<Bytes>,
    max_in_flight: u32,
}

/// State shared by the callers and both tasks.
#[derive(Debug)]
struct Shared {
    /// A std `Mutex`: every critical section inserts, removes or drains map
    /// entries and never awaits, so an async lock would only add cost.
    state: Mutex<State>,
    /// One permit per request the server accepts in flight; a caller holds
    /// one from before its frame is queued until its answer (or timeout), so
    /// the server never has to stop reading because of this client.
    permits: Semaphore,
    /// Cancelled when the connection fails or is dropped; stops both tasks.
    shutdown: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, Reply>,
    /// Set once, by the first failure; the connection is unusable after it.
    failure: Option<ClientError>,
}

/// Why [`Connection::call`] failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The connection had already failed; the request was not sent, so it
    /// may be sent on a new connection.
    Stale,
    /// The request failed; it may have been sent.
    Failed(ClientError),
}

impl Connection {
    /// Connects to `address` and performs the handshake, all within
    /// `config.connect_timeout`. A single attempt.
    pub(crate) async fn open(
        config: &ClientConfig,
        address: &str,
    ) -> Result<Connection, ClientError> {
        match tokio::time::timeout(config.connect_timeout, handshake(config, address)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::ConnectTimeout),
        }
    }

    fn start(
        reader: FramedRead<OwnedReadHalf, ClientCodec>,
        writer: OwnedWriteHalf,
        max_in_flight: u32,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let permits = usize::try_from(max_in_flight)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            permits: Semaphore::new(permits),
            shutdown: CancellationToken::new(),
        });
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(reader, Arc::clone(&shared)));
        tokio::spawn(write_loop(writer, queue, Arc::clone(&shared)));
        Connection {
            shared,
            outgoing,
            max_in_flight,
        }
    }

    /// The server's limit on requests in flight on this connection.
    pub(crate) fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    /// Whether the connection has failed; a failed connection never recovers.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().failure.is_some()
    }

    /// Sends `request` and waits for its answer, for at most `timeout`
    /// (counting the wait for a free slot). On timeout or cancellation the
    /// request is forgotten, and a late answer is dropped by the reader.
    ///
    /// `frame` is request `id` encoded by [`encode`]; `id` must not be in
    /// flight on this connection already.
    pub(crate) async fn call(
        &self,
        id: u64,
        frame: &Bytes,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let deadline = Instant::now() + timeout;

        let _permit = match tokio::time::timeout_at(deadline, self.shared.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(CallError::Stale),
            Err(_elapsed) => return Err(CallError::Failed(ClientError::Timeout)),
        };
        let (reply, answer) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.failure.is_some() {
                return Err(CallError::Stale);
            }
            state.pending.insert(id, reply);
        }
        let mut slot = Slot {
            shared: &self.shared,
            id,
            settled: false,
        };
        if self.outgoing.send(frame.clone()).is_err() {
            return Err(CallError::Stale);
        }
        let result = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The reader drops a sender only after sending on it, or with the
            // whole map when its task is torn down.
            Ok(Err(_dropped)) => Err(ClientError::Closed),
            Err(_elapsed) => return Err(CallError::Failed(ClientError::Timeout)),
        };
        slot.settled = true;
        result.map_err(CallError::Failed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Removes a request from the pending map when its caller stops waiting
/// (timeout or a dropped future) before the answer came.
struct Slot<'a> {
    shared: &'a Shared,
    id: u64,
    settled: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.lock().pending.remove(&self.id);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No section can leave the map inconsistent, so a panic elsewhere
        // while holding the lock is no reason to stop serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the answer to request `id` to its caller, if it still waits.
    fn complete(&self, id: u64, response: Response) {
        let reply = self.lock().pending.remove(&id);
        match reply {
            Some(reply) => {
                // The caller may have given up since; that is fine.
                let _ = reply.send(Ok(response));
            }
            None => tracing::debug!(id, "dropping an answer nobody waits for"),
        }
    }

    /// Ends the connection: every pending request gets `error`.
    fn fail(&self, error: ClientError) {
        let pending = {
            let mut state = self.lock();
            if state.failure.is_none() {
                state.failure = Some(error.clone());
            }
            std::mem::take(&mut state.pending)
        };
        self.permits.close();
        self.shutdown.cancel();
        if !pending.is_empty() {
            tracing::debug!(pending = pending.len(), %error, "connection failed");
        }
        for (_, reply) in pending {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

async fn handshake(config: &ClientConfig, address: &str) -> Result<Connection, ClientError> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut codec = ClientCodec::new(config.max_frame_len);
    let mut buf = BytesMut::new();
    let welcome = handshake::handshake(&mut stream, config.api_key.clone(), &mut codec, &mut buf)
        .await
        .map_err(|e| match e {
            HandshakeError::Refused(error) => ClientError::Handshake(error),
            HandshakeError::Protocol(message) => ClientError::Protocol(message),
            HandshakeError::Closed => ClientError::Closed,
            HandshakeError::Frame(e) => frame_error(e),
        })?;
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec);
    // Whatever the server sent after its welcome is already buffered here.
    reader.read_buffer_mut().extend_from_slice(&buf);
    Ok(Connection::start(reader, write, welcome.max_in_flight))
}

/// Encodes request `id` as a complete frame, refusing a sale id that the
/// server would refuse.
pub(crate) fn encode(id: u64, request: Request) -> Result<Bytes, ClientError> {
    if let Some(sale) = request.sale() {
        if sale.len() > MAX_SALE_ID_LEN {
            return Err(ClientError::InvalidRequest(format!(
                "sale id of {} bytes exceeds the maximum of {MAX_SALE_ID_LEN}",
                sale.len()
            )));
        }
    }
    let frame = ClientFrame::Request(RequestFrame { id, request });
    let mut out = BytesMut::with_capacity(64);
    ClientCodec::new(DEFAULT_MAX_FRAME_LEN)
        .encode(&frame, &mut out)
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
    Ok(out.freeze())
}

fn frame_error(error: FrameError) -> ClientError {
    match error {
        FrameError::Io(e) => e.into(),
        other => ClientError::Protocol(other.to_string()),
    }
}

async fn read_loop(mut frames: FramedRead<OwnedReadHalf, ClientCodec>, shared: Arc<Shared>) {
    let error = loop {
        let frame = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            frame = frames.next() => frame,
        };
        match frame {
            Some(Ok(ServerFrame::Response(ResponseFrame { id, response }))) => {
                shared.complete(id, response)
            }
            Some(Ok(ServerFrame::Error(error))) => break ClientError::Disconnected(error),
            Some(Ok(ServerFrame::Welcome(_))) => {
                break ClientError::Protocol("a second welcome".into());
            }
            Some(Err(e)) => break frame_error(e),
            None => break ClientError::Closed,
        }
    };
    shared.fail(error);
}

async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
) {
    let mut batch = BytesMut::with_capacity(8 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            frame = queue.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        batch.extend_from_slice(&first);
        while batch.len() < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            written = socket.write_all(&batch) => written,
        };
        if let Err(e) = written {
            shared.fail(e.into());
            return;
        }
        batch.clear();
    }
}
