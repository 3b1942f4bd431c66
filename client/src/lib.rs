//! An async client for the flashsale binary protocol.
//!
//! # Layout
//!
//! - [`config`] holds [`ClientConfig`] (address, API key, timeouts, frame limit)
//!   and [`ReconnectPolicy`].
//! - `connection` (private): one TCP connection. A writer task batches the
//!   encoded frames queued by callers into few syscalls; a reader task
//!   matches answers to requests by id, so requests are pipelined and answers
//!   may come back in any order. A semaphore sized to the server's
//!   `max_in_flight` keeps the client from pushing the server into
//!   backpressure.
//! - [`Client`]: a cloneable handle on one connection, with typed methods
//!   ([`reserve`](Client::reserve), [`status`](Client::status),
//!   [`lookup`](Client::lookup), [`ping`](Client::ping)), per-request
//!   timeouts, and reconnection on the next call after a loss.
//! - [`Pool`]: several clients used as one, least-loaded first.
//! - [`error`] holds [`ClientError`].
//!
//! The wire format is specified in `docs/PROTOCOL.md`; the message types come
//! from [`flashsale_protocol`] and are re-exported here.
//!
//! # A cluster
//!
//! A node of a cluster that does not lead it answers `NOT_LEADER` with the
//! leader's address, having done nothing. The client then sends the same
//! request there, on a new connection, within the request's timeout; while
//! no leader is known (an election), it asks the next of the addresses it
//! was given ([`ClientConfig::nodes`]) after a short pause. When a node
//! cannot be reached, reconnecting tries the others. So a client given the
//! list of nodes finds the leader, and finds the next one after a failover;
//! a request cut by the leader's death is reported like any lost answer
//! ([`ClientError::outcome_unknown`]). See `docs/CLUSTER.md`.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use flashsale_client::{ClientConfig, ReserveOutcome};
//!
//! # async fn example() -> Result<(), flashsale_client::ClientError> {
//! let client = ClientConfig::new("127.0.0.1:7070")
//!     .api_key("secret")
//!     .request_timeout(Duration::from_secs(2))
//!     .connect()
//!     .await?;
//!
//! // Many tasks may share one client; their requests are pipelined.
//! let mut tasks = Vec::new();
//! for user in 0..100 {
//!     let client = client.clone();
//!     tasks.push(tokio::spawn(async move { client.reserve("concert", user).await }));
//! }
//! for task in tasks {
//!     if let Ok(Ok(ReserveOutcome::Won { ticket })) = task.await {
//!         println!("won ticket {ticket}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Writes and flow control
//!
//! Callers encode their own frame and queue it on a channel; one writer task
//! per connection takes everything already queued and writes it with a single
//! `write_all`. Under load, many pipelined requests share one syscall; when
//! idle, a lone request goes out at once (`TCP_NODELAY` is set). This was
//! preferred to a `FramedWrite` behind a lock because no caller ever waits for
//! another caller's write or flush, and an encoding error stays with the
//! request that caused it.
//!
//! Each connection holds a semaphore with the `max_in_flight` permits the
//! server announced. A request takes a permit before it is queued and gives it
//! back when its answer arrives or it times out, so the server never has to
//! stop reading the connection because of this client. (A timed-out request
//! may still be at the server when its permit is reused; the server then
//! stops reading for a moment, which is harmless.)
//!
//! # Lost answers
//!
//! A request can fail after it reached the server: a timeout, a dropped
//! connection, a server that closes with an error.
//! [`ClientError::outcome_unknown`] tells these apart from failures where
//! nothing happened. For a reservation, the server's answer is the only place
//! the ticket number is given, so after such a failure ask again:
//!
//! - [`Client::lookup`] returns the ticket the user durably holds, if any; or
//! - [`Client::reserve`] again: the server never sells a user a second
//!   ticket, and answers [`ReserveOutcome::AlreadyOwned`] with the number of
//!   the first one.
//!
//! The client does **not** re-send requests by itself. Re-sending a
//! reservation would be safe, but doing it silently would hide from the
//! caller that the first answer was lost, multiply load exactly when the
//! server is slowest (timeouts) and stretch the caller's deadline by an
//! unknown amount. The one exception is a request that a connection refused
//! *before* sending it (the connection had just failed): it is sent once on
//! a new connection.
//!
//! ```no_run
//! use flashsale_client::{Client, ClientError, ReserveOutcome};
//!
//! async fn buy(client: &Client, user: u64) -> Result<Option<u32>, ClientError> {
//!     match client.reserve("concert", user).await {
//!         Ok(ReserveOutcome::Won { ticket } | ReserveOutcome::AlreadyOwned { ticket }) => Ok(Some(ticket)),
//!         Ok(_) => Ok(None),
//!         Err(e) if e.outcome_unknown() => client.lookup("concert", user).await,
//!         Err(e) => Err(e),
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
pub mod config;
mod connection;
pub mod error;
mod pool;

pub use client::Client;
pub use config::{ClientConfig, ReconnectPolicy};
pub use error::ClientError;
pub use flashsale_protocol::json::LookupBody;
pub use flashsale_protocol::{
    ConfirmOutcome, ErrorCode, ErrorFrame, HoldInfo, ReleaseOutcome, ReserveOutcome, SaleInfo,
    SaleState, SaleStatus,
};
pub use pool::Pool;
