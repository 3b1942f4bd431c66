//! Where the HTTP handlers send their questions: the [`Backend`] trait.
//!
//! The server implements it over the reservation core of its own process;
//! the gateway over a pool of native-protocol connections to a remote core.
//! Both answer in the protocol's own types, so the handlers (and with them
//! every status code and body) are the same in both deployments, and this
//! crate depends on neither.

use flashsale_protocol::json::LookupBody;
use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, ErrorFrame, ReleaseOutcome, ReserveOutcome, SaleInfo,
    SaleStatus,
};
use futures_util::future::BoxFuture;

/// The core behind the HTTP front.
pub trait Backend: Send + Sync + 'static {
    /// Reserves a ticket of `sale` for `user`.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn reserve<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReserveOutcome, BackendError>>;

    /// The status of `sale`.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn status<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<SaleStatus, BackendError>>;

    /// The ticket `user` durably holds in `sale`, if any (in a sale with
    /// holds, with its status and deadline).
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn lookup<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<LookupBody, BackendError>>;

    /// In a sale with holds, the buyer `user` gives up their hold.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn cancel<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReleaseOutcome, BackendError>>;

    /// In a sale with holds, confirms `user`'s hold as paid (the admin API,
    /// and the demo mode's pay button).
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn confirm<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
        payment_ref: &'a str,
    ) -> BoxFuture<'a, Result<ConfirmOutcome, BackendError>>;

    /// The public facts of `sale`'s draw; `None` for a sale without one.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn draw<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<Option<DrawInfo>, BackendError>>;

    /// One page of `sale`'s published draw: its entrants (ascending) or its
    /// winners (in ticket order), from index `from`.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn draw_page<'a>(
        &'a self,
        sale: &'a str,
        winners: bool,
        from: u32,
    ) -> BoxFuture<'a, Result<DrawPage, BackendError>>;

    /// Every sale the core runs.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    fn sales(&self) -> BoxFuture<'_, Result<Vec<SaleInfo>, BackendError>>;

    /// Whether the core can sell right now.
    fn healthy(&self) -> BoxFuture<'_, bool>;

    /// On a node of a cluster, its role, reported by `/healthz`; `None` for
    /// a single node and a remote core.
    fn cluster_role(&self) -> Option<flashsale_protocol::json::ClusterRole> {
        None
    }

    /// Brings the gauges that are read rather than pushed (stock, log
    /// health) up to date; `/metrics` calls it before rendering. A remote
    /// core has nothing to refresh here.
    fn refresh_metrics(&self) {}
}

/// Why the core gave no answer of the expected kind.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// The core answered with a request-level error (unknown sale, invalid
    /// request, log unavailable, ...).
    Core(ErrorFrame),
    /// The core is shedding load, or could not settle the answer yet; retry
    /// after this many milliseconds.
    Busy(u32),
    /// The core could not be reached or did not answer in time: for a
    /// reservation, the outcome is unknown.
    Unreachable {
        /// Whether the request timed out (rather than failed to connect).
        timeout: bool,
        /// What went wrong, for people.
        message: String,
    },
}
