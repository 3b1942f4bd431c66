//! [`Client`]: a cheap, cloneable handle on one connection that reconnects.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flashsale_protocol::json::LookupBody;
use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, ReleaseOutcome, Request, ReserveOutcome, Response,
    SaleInfo, SaleStatus,
};

use crate::connection::{self, CallError, Connection};
use crate::{ClientConfig, ClientError};
use flashsale_protocol::ErrorCode;

/// Pause before asking the next node when a node of a cluster knows no
/// leader (an election is under way).
const NO_LEADER_PAUSE: Duration = Duration::from_millis(50);

/// A handle on one connection to a flashsale server.
///
/// Clones share the connection, and every method takes `&self`, so one client
/// can serve many tasks at once: their requests are pipelined on the
/// connection and each gets its own answer, in whatever order the server
/// sends them. At most [`max_in_flight`](Self::max_in_flight) requests are on
/// the wire at a time; further callers wait for a slot (within their request
/// timeout).
///
/// When the connection is lost, the requests waiting on it fail (they never
/// hang), and the next call reconnects following
/// [`ClientConfig::reconnect`]. Requests are never re-sent automatically;
/// see the [crate documentation](crate#lost-answers) for what to do after
/// [`ClientError::outcome_unknown`].
///
/// # Examples
///
/// ```no_run
/// use flashsale_client::{Client, ClientConfig, ReserveOutcome};
///
/// # async fn example() -> Result<(), flashsale_client::ClientError> {
/// let client = Client::connect(ClientConfig::new("127.0.0.1:7070")).await?;
/// match client.reserve("concert", 42).await? {
///     ReserveOutcome::Won { ticket } => println!("ticket {ticket}"),
///     other => println!("no ticket: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// A std `Mutex`, held only to clone or replace the `Arc`.
    current: Mutex<Current>,
    /// Held by the one task that reconnects, so that a lost connection is
    /// replaced once, not once per waiting caller.
    reconnecting: tokio::sync::Mutex<()>,
    /// Request ids, unique across this client's successive connections, so
    /// that a request refused by a dead connection can be sent on the next
    /// one unchanged.
    next_id: AtomicU64,
    /// Calls in progress, for [`Pool`](crate::Pool)'s choice of connection.
    in_flight: AtomicUsize,
    /// The limit announced by the most recent welcome.
    max_in_flight: AtomicU32,
}

#[derive(Debug, Default)]
struct Current {
    connection: Option<Arc<Connection>>,
    /// The node the next connection goes to: the leader a node named, or
    /// the one that answered last; `None`, the configured address.
    target: Option<String>,
    /// Counts connection attempts, so that callers who waited for a
    /// reconnect that failed share its error instead of each trying again.
    generation: u64,
    last_error: Option<ClientError>,
    /// When the last reconnect failed, while its error stands.
    failed_at: Option<Instant>,
}

impl Client {
    /// Connects to the server and performs the handshake.
    ///
    /// Each attempt is bounded by [`ClientConfig::connect_timeout`], and
    /// failures that may pass are retried per [`ClientConfig::reconnect`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Handshake`] when the server refuses the API key or the
    /// protocol version (not retried); otherwise the last attempt's error:
    /// [`ClientError::Io`], [`ClientError::ConnectTimeout`],
    /// [`ClientError::Closed`] or [`ClientError::Protocol`].
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client {
            inner: Arc::new(Inner {
                config,
                current: Mutex::new(Current::default()),
                reconnecting: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicU32::new(0),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// Tries to buy one ticket of `sale` for `user`.
    ///
    /// Every outcome the server can give, including
    /// [`ReserveOutcome::Busy`], is an `Ok`; nothing is retried.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] when the server answers with an error (for
    /// example `LOG_UNAVAILABLE`). When [`ClientError::outcome_unknown`] is
    /// true the reservation may have succeeded: call
    /// [`lookup`](Self::lookup), or `reserve` again (which answers
    /// [`ReserveOutcome::AlreadyOwned`] with the same ticket if it did).
    pub async fn reserve(&self, sale: &str, user: u64) -> Result<ReserveOutcome, ClientError> {
        let request = Request::Reserve {
            sale: sale.to_owned(),
            user,
        };
        match self.call(request).await? {
            Response::Reserve(outcome) => Ok(outcome),
            other => Err(unexpected("reserve", other)),
        }
    }

    /// The state of `sale`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with code `UNKNOWN_SALE` for an unknown sale,
    /// or any connection error.
    pub async fn status(&self, sale: &str) -> Result<SaleStatus, ClientError> {
        let request = Request::Status {
            sale: sale.to_owned(),
        };
        match self.call(request).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("status", other)),
        }
    }

    /// The ticket `user` durably holds in `sale`, if any: the way to learn
    /// the outcome of a reservation whose answer was lost.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with code `UNKNOWN_SALE` for an unknown sale,
    /// [`ClientError::Busy`] while the ticket is still being written (rare:
    /// ask again), or any connection error.
    pub async fn lookup(&self, sale: &str, user: u64) -> Result<Option<u32>, ClientError> {
        Ok(self.me(sale, user).await?.ticket)
    }

    /// What `user` holds in `sale`: the ticket, and in a sale with holds its
    /// status and payment deadline.
    ///
    /// # Errors
    ///
    /// As [`lookup`](Self::lookup).
    pub async fn me(&self, sale: &str, user: u64) -> Result<LookupBody, ClientError> {
        let request = Request::Lookup {
            sale: sale.to_owned(),
            user,
        };
        let response = self.call(request).await?;
        LookupBody::of(&response).ok_or_else(|| unexpected("lookup", response))
    }

    /// In a sale with holds, confirms `user`'s hold as paid with
    /// `payment_ref` (the shop's backend calls this once the payment
    /// provider has told it). Idempotent by user and reference.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with `LOG_UNAVAILABLE` when the confirmation
    /// cannot be made durable, `INVALID_REQUEST` for a reference outside
    /// 1..=128 bytes; or any connection error. Every outcome of the
    /// confirmation itself (expired, no hold, ...) is an `Ok`.
    pub async fn confirm(
        &self,
        sale: &str,
        user: u64,
        payment_ref: &str,
    ) -> Result<ConfirmOutcome, ClientError> {
        let request = Request::Confirm {
            sale: sale.to_owned(),
            user,
            payment_ref: payment_ref.to_owned(),
        };
        match self.call(request).await? {
            Response::Confirm(outcome) => Ok(outcome),
            other => Err(unexpected("confirm", other)),
        }
    }

    /// In a sale with holds, the buyer `user` gives up their unpaid hold.
    ///
    /// # Errors
    ///
    /// As [`confirm`](Self::confirm).
    pub async fn cancel(&self, sale: &str, user: u64) -> Result<ReleaseOutcome, ClientError> {
        let request = Request::Cancel {
            sale: sale.to_owned(),
            user,
        };
        match self.call(request).await? {
            Response::Release(outcome) => Ok(outcome),
            other => Err(unexpected("cancel", other)),
        }
    }

    /// In a sale with holds, the operator releases `user`'s held or
    /// confirmed ticket back to stock (a void or a refund).
    ///
    /// # Errors
    ///
    /// As [`confirm`](Self::confirm).
    pub async fn release(&self, sale: &str, user: u64) -> Result<ReleaseOutcome, ClientError> {
        let request = Request::Release {
            sale: sale.to_owned(),
            user,
        };
        match self.call(request).await? {
            Response::Release(outcome) => Ok(outcome),
            other => Err(unexpected("release", other)),
        }
    }

    /// Every sale the server runs, with its counters and options.
    ///
    /// # Errors
    ///
    /// Any connection error.
    pub async fn sales(&self) -> Result<Vec<SaleInfo>, ClientError> {
        match self.call(Request::ListSales).await? {
            Response::Sales(sales) => Ok(sales),
            other => Err(unexpected("list sales", other)),
        }
    }

    /// The public facts of `sale`'s draw (its commitment, when it is made,
    /// the entrants so far, and its seed once published); `None` for a sale
    /// without a draw.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with `UNKNOWN_SALE` for an unknown sale, or
    /// any connection error.
    pub async fn draw(&self, sale: &str) -> Result<Option<DrawInfo>, ClientError> {
        let request = Request::Draw {
            sale: sale.to_owned(),
        };
        match self.call(request).await? {
            Response::Draw(info) => Ok(info.map(|info| *info)),
            other => Err(unexpected("draw", other)),
        }
    }

    /// One page of `sale`'s published draw: up to `DRAW_PAGE_LEN` entrants
    /// (ascending) or winners (in ticket order) from index `from`. Empty
    /// before the draw is published.
    ///
    /// # Errors
    ///
    /// As [`draw`](Self::draw).
    pub async fn draw_page(
        &self,
        sale: &str,
        winners: bool,
        from: u32,
    ) -> Result<DrawPage, ClientError> {
        let request = Request::DrawPage {
            sale: sale.to_owned(),
            winners,
            from,
        };
        match self.call(request).await? {
            Response::DrawPage(page) => Ok(page),
            other => Err(unexpected("draw page", other)),
        }
    }

    /// Sends a ping and returns the round-trip time.
    ///
    /// # Errors
    ///
    /// Any connection error.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(start.elapsed()),
            other => Err(unexpected("ping", other)),
        }
    }

    /// The server's limit on requests in flight per connection, as announced
    /// in the latest handshake.
    pub fn max_in_flight(&self) -> u32 {
        self.inner.max_in_flight.load(Ordering::Relaxed)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Calls in progress on this client (all its clones together).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Sends one request and returns its answer, a request-level error
    /// turned into [`ClientError::Server`].
    ///
    /// A node of a cluster that does not lead answers `NOT_LEADER` without
    /// acting on the request, naming the leader: the request goes there, on
    /// a new connection, within the same request timeout. While no leader
    /// is known, the next node is asked after a short pause.
    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let _counted = InFlight::enter(&self.inner.in_flight);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = connection::encode(id, request)?;
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let (connection, response) = self.send(id, &frame, deadline).await?;
            match response {
                Response::Error(error)
                    if error.code == ErrorCode::NOT_LEADER && self.inner.config.follow_leader =>
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ClientError::Server(error));
                    }
                    self.follow(&connection, &error.message);
                    if error.message.is_empty() {
                        tokio::time::sleep(NO_LEADER_PAUSE.min(left)).await;
                        if Instant::now() >= deadline {
                            return Err(ClientError::Server(error));
                        }
                    }
                }
                Response::Error(error) => return Err(ClientError::Server(error)),
                Response::Busy { retry_after_ms } => {
                    return Err(ClientError::Busy { retry_after_ms })
                }
                response => return Ok(response),
            }
        }
    }

    /// Sends the encoded request `id` and waits for its answer until
    /// `deadline`; returns the connection it went on with the answer.
    async fn send(
        &self,
        id: u64,
        frame: &bytes::Bytes,
        deadline: Instant,
    ) -> Result<(Arc<Connection>, Response), ClientError> {
        // A connection can fail between being handed out and taking the
        // request. The request was not sent then, so one more try on a fresh
        // connection is safe; a second stale connection is reported.
        let mut stale_once = false;
        loop {
            let connection = self.connection().await?;
            let timeout = deadline.saturating_duration_since(Instant::now());
            match connection.call(id, frame, timeout).await {
                Ok(response) => return Ok((connection, response)),
                Err(CallError::Failed(e)) => return Err(e),
                Err(CallError::Stale) if !stale_once => stale_once = true,
                Err(CallError::Stale) => return Err(ClientError::Closed),
            }
        }
    }

    /// `connection`'s node does not lead: the next connection goes to
    /// `leader`, or, if it is empty (no leader known), to the next node.
    /// Requests already on `connection` finish there.
    fn follow(&self, connection: &Arc<Connection>, leader: &str) {
        let mut current = self.inner.lock();
        let on_it = current
            .connection
            .as_ref()
            .is_some_and(|live| Arc::ptr_eq(live, connection));
        if !on_it {
            // Another request already moved the client on.
            return;
        }
        let next = if leader.is_empty() {
            let addresses = self.inner.config.addresses();
            let at = current.target.as_deref().unwrap_or(addresses[0]);
            let i = addresses.iter().position(|a| *a == at).map_or(0, |i| i + 1);
            addresses[i % addresses.len()].to_owned()
        } else {
            leader.to_owned()
        };
        tracing::debug!(from = ?current.target, to = %next, "following the cluster's leader");
        current.connection = None;
        current.target = Some(next);
    }

    /// The live connection, reconnecting first if it failed, unless a
    /// reconnect failed less than the policy's cooldown ago: then its error.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let seen = {
            let current = self.inner.lock();
            if let Some(live) = current.live() {
                return Ok(live);
            }
            if let Some(error) = current.cooling_down(self.inner.config.reconnect.cooldown) {
                return Err(error);
            }
            current.generation
        };
        let _reconnecting = self.inner.reconnecting.lock().await;
        {
            let current = self.inner.lock();
            if let Some(live) = current.live() {
                return Ok(live);
            }
            if current.generation != seen {
                if let Some(error) = &current.last_error {
                    return Err(error.clone());
                }
            }
        }
        let target = self.inner.lock().target.clone();
        let result = establish(&self.inner.config, target.as_deref()).await;
        let mut current = self.inner.lock();
        current.generation += 1;
        match result {
            Ok((connection, address)) => {
                current.target = Some(address);
                let connection = Arc::new(connection);
                self.inner
                    .max_in_flight
                    .store(connection.max_in_flight(), Ordering::Relaxed);
                current.connection = Some(Arc::clone(&connection));
                current.last_error = None;
                current.failed_at = None;
                Ok(connection)
            }
            Err(error) => {
                current.last_error = Some(error.clone());
                current.failed_at = Some(Instant::now());
                Err(error)
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Current {
    fn live(&self) -> Option<Arc<Connection>> {
        self.connection
            .as_ref()
            .filter(|connection| !connection.is_closed())
            .cloned()
    }

    /// The error of a reconnect that failed less than `cooldown` ago.
    fn cooling_down(&self, cooldown: Duration) -> Option<ClientError> {
        let failed_at = self.failed_at?;
        if failed_at.elapsed() < cooldown {
            self.last_error.clone()
        } else {
            None
        }
    }
}

/// Opens a connection to `target` (or the configured address), retrying
/// transient failures per the reconnect policy; each retry goes to the next
/// of the server's addresses, so a node that is down is passed over.
/// Returns the connection and the address it reached.
async fn establish(
    config: &ClientConfig,
    target: Option<&str>,
) -> Result<(Connection, String), ClientError> {
    let policy = config.reconnect;
    let mut addresses = config.addresses();
    if let Some(target) = target {
        addresses.retain(|a| *a != target);
        addresses.insert(0, target);
    }
    let mut attempt = 0;
    loop {
        let address = addresses[attempt as usize % addresses.len()];
        match Connection::open(config, address).await {
            Ok(connection) => return Ok((connection, address.to_owned())),
            Err(error) if attempt + 1 < policy.attempts && error.is_transient_connect_failure() => {
                let backoff = policy.backoff(attempt);
                tracing::debug!(%address, %error, ?backoff, "connection attempt failed");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn unexpected(what: &str, response: Response) -> ClientError {
    ClientError::Protocol(format!("expected a {what} answer, got {response:?}"))
}

/// Counts a call as in progress for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
