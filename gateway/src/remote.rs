//! The HTTP front's [`Backend`] in the gateway: a remote core, over a pool
//! of pipelined native-protocol connections.

use flashsale_client::{ClientError, Pool};
use flashsale_http::{Backend, BackendError};
use flashsale_protocol::json::LookupBody;
use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, ErrorCode, ErrorFrame, ReleaseOutcome, ReserveOutcome,
    SaleInfo, SaleStatus,
};
use futures_util::future::BoxFuture;

/// A remote core behind the HTTP front.
pub struct RemoteBackend {
    pool: Pool,
}

impl RemoteBackend {
    /// The front's way to the core `pool` is connected to.
    pub fn new(pool: Pool) -> Self {
        RemoteBackend { pool }
    }
}

impl Backend for RemoteBackend {
    fn reserve<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReserveOutcome, BackendError>> {
        Box::pin(async move { self.pool.reserve(sale, user).await.map_err(from_client) })
    }

    fn status<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<SaleStatus, BackendError>> {
        Box::pin(async move { self.pool.status(sale).await.map_err(from_client) })
    }

    fn lookup<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<LookupBody, BackendError>> {
        Box::pin(async move { self.pool.me(sale, user).await.map_err(from_client) })
    }

    fn cancel<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReleaseOutcome, BackendError>> {
        Box::pin(async move { self.pool.cancel(sale, user).await.map_err(from_client) })
    }

    fn confirm<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
        payment_ref: &'a str,
    ) -> BoxFuture<'a, Result<ConfirmOutcome, BackendError>> {
        Box::pin(async move {
            self.pool
                .confirm(sale, user, payment_ref)
                .await
                .map_err(from_client)
        })
    }

    fn draw<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<Option<DrawInfo>, BackendError>> {
        Box::pin(async move { self.pool.draw(sale).await.map_err(from_client) })
    }

    fn draw_page<'a>(
        &'a self,
        sale: &'a str,
        winners: bool,
        from: u32,
    ) -> BoxFuture<'a, Result<DrawPage, BackendError>> {
        Box::pin(async move {
            self.pool
                .draw_page(sale, winners, from)
                .await
                .map_err(from_client)
        })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<SaleInfo>, BackendError>> {
        Box::pin(async move { self.pool.sales().await.map_err(from_client) })
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.pool.ping().await.is_ok() })
    }
}

/// What the client's error means to the front: the core's own answers pass
/// through unchanged (so both deployments answer alike), and only a core
/// that cannot be reached adds answers of the gateway's own.
fn from_client(e: ClientError) -> BackendError {
    match e {
        ClientError::Server(frame) => BackendError::Core(frame),
        ClientError::Busy { retry_after_ms } => BackendError::Busy(retry_after_ms),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cores_answers_pass_through() {
        let frame = ErrorFrame::new(ErrorCode::UNKNOWN_SALE, "no sale");
        assert!(matches!(
            from_client(ClientError::Server(frame.clone())),
            BackendError::Core(f) if f == frame
        ));
        assert!(matches!(
            from_client(ClientError::Busy { retry_after_ms: 10 }),
            BackendError::Busy(10)
        ));
        assert!(matches!(
            from_client(ClientError::Timeout),
            BackendError::Unreachable { timeout: true, .. }
        ));
        assert!(matches!(
            from_client(ClientError::Closed),
            BackendError::Unreachable { timeout: false, .. }
        ));
    }
}
