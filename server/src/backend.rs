//! The HTTP front's [`Backend`] in the server: this process's
//! [`Service`](crate::service::Service), called directly, without a socket
//! or an encoding in between.

use std::sync::Arc;

use flashsale_core::clock::now_ms;
use flashsale_http::{Backend, BackendError};
use flashsale_protocol::json::LookupBody;
use flashsale_protocol::{
    ConfirmOutcome, DrawInfo, DrawPage, ErrorCode, ErrorFrame, ReleaseOutcome, RequestRef,
    ReserveOutcome, Response, SaleInfo, SaleStatus,
};
use futures_util::future::BoxFuture;

use crate::service::Answer;
use crate::serving::Serving;

/// The reservation core of this process, behind the HTTP front.
pub struct LocalBackend {
    serving: Arc<Serving>,
}

impl LocalBackend {
    /// The front's way into the service `serving` holds.
    pub fn new(serving: Arc<Serving>) -> Self {
        LocalBackend { serving }
    }

    /// The operator releases `user`'s held or confirmed ticket of `sale`.
    ///
    /// # Errors
    ///
    /// As [`Backend::cancel`].
    pub async fn release(&self, sale: &str, user: u64) -> Result<ReleaseOutcome, BackendError> {
        self.released(RequestRef::Release { sale, user }).await
    }

    /// The answer to a cancel or a release.
    async fn released(&self, request: RequestRef<'_>) -> Result<ReleaseOutcome, BackendError> {
        match self.answer(request).await {
            Response::Release(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn answer(&self, request: RequestRef<'_>) -> Response {
        match self.serving.handle(request, now_ms()) {
            Answer::Now(response) => response,
            Answer::Later(future) => future.await,
        }
    }
}

impl Backend for LocalBackend {
    fn reserve<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReserveOutcome, BackendError>> {
        Box::pin(async move {
            match self.answer(RequestRef::Reserve { sale, user }).await {
                Response::Reserve(outcome) => Ok(outcome),
                other => Err(unexpected(other)),
            }
        })
    }

    fn status<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<SaleStatus, BackendError>> {
        Box::pin(async move {
            match self.answer(RequestRef::Status { sale }).await {
                Response::Status(status) => Ok(status),
                other => Err(unexpected(other)),
            }
        })
    }

    fn lookup<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<LookupBody, BackendError>> {
        Box::pin(async move {
            let response = self.answer(RequestRef::Lookup { sale, user }).await;
            LookupBody::of(&response).ok_or_else(|| unexpected(response))
        })
    }

    fn cancel<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReleaseOutcome, BackendError>> {
        Box::pin(self.released(RequestRef::Cancel { sale, user }))
    }

    fn confirm<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
        payment_ref: &'a str,
    ) -> BoxFuture<'a, Result<ConfirmOutcome, BackendError>> {
        Box::pin(async move {
            let request = RequestRef::Confirm {
                sale,
                user,
                payment_ref,
            };
            match self.answer(request).await {
                Response::Confirm(outcome) => Ok(outcome),
                other => Err(unexpected(other)),
            }
        })
    }

    fn draw<'a>(&'a self, sale: &'a str) -> BoxFuture<'a, Result<Option<DrawInfo>, BackendError>> {
        Box::pin(async move {
            match self.answer(RequestRef::Draw { sale }).await {
                Response::Draw(info) => Ok(info.map(|info| *info)),
                other => Err(unexpected(other)),
            }
        })
    }

    fn draw_page<'a>(
        &'a self,
        sale: &'a str,
        winners: bool,
        from: u32,
    ) -> BoxFuture<'a, Result<DrawPage, BackendError>> {
        Box::pin(async move {
            let request = RequestRef::DrawPage {
                sale,
                winners,
                from,
            };
            match self.answer(request).await {
                Response::DrawPage(page) => Ok(page),
                other => Err(unexpected(other)),
            }
        })
    }

    fn sales(&self) -> BoxFuture<'_, Result<Vec<SaleInfo>, BackendError>> {
        Box::pin(async move {
            match self.answer(RequestRef::ListSales).await {
                Response::Sales(sales) => Ok(sales),
                other => Err(unexpected(other)),
            }
        })
    }

    fn healthy(&self) -> BoxFuture<'_, bool> {
        let healthy = match self.serving.current() {
            Some(service) => service.wal().is_healthy(),
            // A follower is healthy while it follows; `/healthz` says so.
            None => self.serving.cluster_role().is_some(),
        };
        Box::pin(std::future::ready(healthy))
    }

    fn cluster_role(&self) -> Option<flashsale_protocol::json::ClusterRole> {
        self.serving.cluster_role()
    }

    fn refresh_metrics(&self) {
        if let Some(service) = self.serving.current() {
            crate::gauges::refresh(&service);
        }
    }
}

/// A request-level error, `Busy`, or an answer of the wrong kind (a bug,
/// reported as such rather than hidden).
fn unexpected(response: Response) -> BackendError {
    match response {
        Response::Error(e) => BackendError::Core(e),
        Response::Busy { retry_after_ms } => BackendError::Busy(retry_after_ms),
        other => BackendError::Core(ErrorFrame::new(
            ErrorCode::INTERNAL,
            format!("unexpected answer from the core: {other:?}"),
        )),
    }
}
