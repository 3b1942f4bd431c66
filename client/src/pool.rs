//! [`Pool`]: several connections behind one handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashsale_protocol::json::LookupBody;
use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, ReleaseOutcome, ReserveOutcome, SaleInfo, SaleStatus,
};
use futures_util::future::try_join_all;

use crate::{Client, ClientConfig, ClientError};

/// A fixed set of [`Client`]s, each with its own connection, used as one.
///
/// Each call goes to the client with the fewest calls in progress; ties are
/// broken round-robin, so an idle pool spreads requests evenly and a
/// connection held up by slow answers (winning reservations wait for the
/// disk) gets fewer new ones. Each connection reconnects on its own.
///
/// One connection already pipelines many requests; a pool helps when one
/// connection's limit ([`max_in_flight`](Client::max_in_flight)) or one
/// server core is the bottleneck.
///
/// # Examples
///
/// ```no_run
/// use flashsale_client::{ClientConfig, Pool};
///
/// # async fn example() -> Result<(), flashsale_client::ClientError> {
/// let pool = Pool::connect(ClientConfig::new("127.0.0.1:7070"), 4).await?;
/// let outcome = pool.reserve("concert", 42).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Pool {
    /// Opens `connections` connections (at least one) concurrently.
    ///
    /// # Errors
    ///
    /// The first error of [`Client::connect`]; connections already open are
    /// closed.
    pub async fn connect(config: ClientConfig, connections: usize) -> Result<Pool, ClientError> {
        let clients =
            try_join_all((0..connections.max(1)).map(|_| Client::connect(config.clone()))).await?;
        Ok(Pool {
            inner: Arc::new(PoolInner {
                clients,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The pool's clients, one per connection.
    pub fn clients(&self) -> &[Client] {
        &self.inner.clients
    }

    /// The client the next call should use.
    pub fn pick(&self) -> &Client {
        let clients = &self.inner.clients;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % clients.len();
        let mut best = &clients[start];
        let mut best_load = best.in_flight();
        for offset in 1..clients.len() {
            if best_load == 0 {
                break;
            }
            let candidate = &clients[(start + offset) % clients.len()];
            let load = candidate.in_flight();
            if load < best_load {
                best = candidate;
                best_load = load;
            }
        }
        best
    }

    /// [`Client::reserve`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::reserve`].
    pub async fn reserve(&self, sale: &str, user: u64) -> Result<ReserveOutcome, ClientError> {
        self.pick().reserve(sale, user).await
    }

    /// [`Client::status`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::status`].
    pub async fn status(&self, sale: &str) -> Result<SaleStatus, ClientError> {
        self.pick().status(sale).await
    }

    /// [`Client::lookup`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::lookup`].
    pub async fn lookup(&self, sale: &str, user: u64) -> Result<Option<u32>, ClientError> {
        self.pick().lookup(sale, user).await
    }

    /// [`Client::me`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::me`].
    pub async fn me(&self, sale: &str, user: u64) -> Result<LookupBody, ClientError> {
        self.pick().me(sale, user).await
    }

    /// [`Client::confirm`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::confirm`].
    pub async fn confirm(
        &self,
        sale: &str,
        user: u64,
        payment_ref: &str,
    ) -> Result<ConfirmOutcome, ClientError> {
        self.pick().confirm(sale, user, payment_ref).await
    }

    /// [`Client::cancel`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::cancel`].
    pub async fn cancel(&self, sale: &str, user: u64) -> Result<ReleaseOutcome, ClientError> {
        self.pick().cancel(sale, user).await
    }

    /// [`Client::release`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::release`].
    pub async fn release(&self, sale: &str, user: u64) -> Result<ReleaseOutcome, ClientError> {
        self.pick().release(sale, user).await
    }

    /// [`Client::sales`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::sales`].
    pub async fn sales(&self) -> Result<Vec<SaleInfo>, ClientError> {
        self.pick().sales().await
    }

    /// [`Client::draw`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::draw`].
    pub async fn draw(&self, sale: &str) -> Result<Option<DrawInfo>, ClientError> {
        self.pick().draw(sale).await
    }

    /// [`Client::draw_page`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::draw_page`].
    pub async fn draw_page(
        &self,
        sale: &str,
        winners: bool,
        from: u32,
    ) -> Result<DrawPage, ClientError> {
        self.pick().draw_page(sale, winners, from).await
    }

    /// [`Client::ping`] on the least loaded connection.
    ///
    /// # Errors
    ///
    /// As [`Client::ping`].
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        self.pick().ping().await
    }

    /// The total of the connections' in-flight limits: the most requests
    /// the pool keeps on the wire at once.
    pub fn max_in_flight(&self) -> u64 {
        self.inner
            .clients
            .iter()
            .map(|client| u64::from(client.max_in_flight()))
            .sum()
    }
}
