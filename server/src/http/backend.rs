//! Where the HTTP handlers send their questions: the reservation core in
//! this process, or a remote core through the native client.
//!
//! Both answer in the protocol's own types, so the handlers (and with them
//! every status code and body) are the same in the server and the gateway.

use std::sync::Arc;

use flashsale_client::{ClientError, Pool};
use flashsale_protocol::{ErrorCode, ErrorFrame, RequestRef, ReserveOutcome, Response, SaleStatus};

use crate::service::{now_ms, Answer, Service};

/// The core behind the HTTP front.
#[derive(Clone)]
pub enum Backend {
    /// The core of this process, called directly.
    Local(Arc<Service>),
    /// A remote core, over pipelined native-protocol connections.
    Remote(Pool),
}

/// Why the core gave no answer of the expected kind.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// The core answered with a request-level error (unknown sale, invalid
    /// request, log unavailable, ...).
    Core(ErrorFrame),
    /// The core is shedding load; retry after this many milliseconds.
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

impl Backend {
    /// Reserves a ticket of `sale` for `user`.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    pub async fn reserve(&self, sale: &str, user: u64) -> Result<ReserveOutcome, BackendError> {
        match self {
            Backend::Local(service) => {
                match answer(service, RequestRef::Reserve { sale, user }).await {
                    Response::Reserve(outcome) => Ok(outcome),
                    other => Err(unexpected(other)),
                }
            }
            Backend::Remote(pool) => pool.reserve(sale, user).await.map_err(from_client),
        }
    }

    /// The status of `sale`.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    pub async fn status(&self, sale: &str) -> Result<SaleStatus, BackendError> {
        match self {
            Backend::Local(service) => match answer(service, RequestRef::Status { sale }).await {
                Response::Status(status) => Ok(status),
                other => Err(unexpected(other)),
            },
            Backend::Remote(pool) => pool.status(sale).await.map_err(from_client),
        }
    }

    /// The ticket `user` durably holds in `sale`, if any.
    ///
    /// # Errors
    ///
    /// See [`BackendError`].
    pub async fn lookup(&self, sale: &str, user: u64) -> Result<Option<u32>, BackendError> {
        match self {
            Backend::Local(service) => {
                match answer(service, RequestRef::Lookup { sale, user }).await {
                    Response::Lookup { ticket } => Ok(ticket),
                    other => Err(unexpected(other)),
                }
            }
            Backend::Remote(pool) => pool.lookup(sale, user).await.map_err(from_client),
        }
    }

    /// Whether the core can sell: its log is healthy (here), or it answers a
    /// ping (remote).
    pub async fn healthy(&self) -> bool {
        match self {
            Backend::Local(service) => service.wal().is_healthy(),
            Backend::Remote(pool) => pool.ping().await.is_ok(),
        }
    }
}

async fn answer(service: &Arc<Service>, request: RequestRef<'_>) -> Response {
    match service.handle(request, now_ms()) {
        Answer::Now(response) => response,
        Answer::Later(future) => future.await,
    }
}

fn unexpected(response: Response) -> BackendError {
    match response {
        Response::Error(e) => BackendError::Core(e),
        // A lookup whose ticket stayed on its way to disk for too long.
        Response::Reserve(ReserveOutcome::Busy { retry_after_ms }) => {
            BackendError::Busy(retry_after_ms)
        }
        other => BackendError::Core(ErrorFrame::new(
            ErrorCode::INTERNAL,
            format!("unexpected answer from the core: {other:?}"),
        )),
    }
}

fn from_client(e: ClientError) -> BackendError {
    match e {
        ClientError::Server(frame) => BackendError::Core(frame),
        ClientError::InvalidRequest(message) => {
            BackendError::Core(ErrorFrame::new(ErrorCode::INVALID_REQUEST, message))
        }
        ClientError::Timeout => BackendError::Unreachable {
            timeout: true,
            message: e.to_string(),
        },
        other => BackendError::Unreachable {
            timeout: false,
            message: other.to_string(),
        },
    }
}
