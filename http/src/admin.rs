//! The operator's API: creating, pausing, resuming and closing sales while
//! the server runs, and confirming or releasing holds.
//!
//! It listens on its own address (`--admin`), never the buyers' port: an
//! operator's network and a buyer's are different places, and a firewall
//! rule can then tell them apart. Every request carries the operator's key
//! as `Authorization: Bearer <key>`, compared in constant time; a missing or
//! wrong key is 401 before anything else is looked at. `docs/HTTP.md`
//! ("Admin API") is the reference for every route.
//!
//! What an operation does lives behind the [`Operator`] trait, implemented
//! by the server over its own core and log; this module only maps HTTP to
//! it and its answers back to status codes and JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashsale_metrics::{self as metrics, Op, Outcome, Protocol};
use flashsale_protocol::json::{AdminSaleBody, ApiError, ConfirmBody, CreateSaleBody, UserBody};
use flashsale_protocol::{
    ConfirmOutcome, ReleaseOutcome, SaleAction, MAX_PAYMENT_REF_LEN, MAX_SALE_ID_LEN,
};
use futures_util::future::BoxFuture;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::api::{common_headers, hold_outcome, metrics_response, status_error};
use crate::backend::BackendError;
use crate::{api_error, serve, shed, ConnLimits, Front};

/// Shortest operator key accepted, in bytes.
pub const MIN_ADMIN_KEY_LEN: usize = 32;
/// Largest request body read.
const MAX_BODY: usize = 4096;
/// Open admin connections beyond which a new one is refused: operators are
/// few, and this listener must not become a way to exhaust the process.
pub const MAX_CONNECTIONS: usize = 256;
/// The admin listener's head and idle deadlines.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the admin API asks of the server.
pub trait Operator: Send + Sync + 'static {
    /// Every sale, in the server's order.
    fn sales(&self) -> BoxFuture<'_, Vec<AdminSaleBody>>;

    /// Creates a sale, durably, or finds the same definition already there.
    ///
    /// # Errors
    ///
    /// [`AdminError`] with `invalid_request` naming the field, or `conflict`
    /// naming the field that differs from the existing sale.
    fn create(&self, sale: CreateSaleBody) -> BoxFuture<'_, Result<Created, AdminError>>;

    /// Pauses, resumes or closes `sale`, durably.
    ///
    /// # Errors
    ///
    /// `unknown_sale`, or `conflict` for a closed sale.
    fn change<'a>(
        &'a self,
        sale: &'a str,
        action: SaleAction,
    ) -> BoxFuture<'a, Result<AdminSaleBody, AdminError>>;

    /// Confirms `user`'s hold as paid.
    ///
    /// # Errors
    ///
    /// As [`crate::Backend::confirm`].
    fn confirm<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
        payment_ref: &'a str,
    ) -> BoxFuture<'a, Result<ConfirmOutcome, BackendError>>;

    /// Releases `user`'s held or confirmed ticket back to stock.
    ///
    /// # Errors
    ///
    /// As [`crate::Backend::cancel`].
    fn release<'a>(
        &'a self,
        sale: &'a str,
        user: u64,
    ) -> BoxFuture<'a, Result<ReleaseOutcome, BackendError>>;

    /// Brings the read-at-render gauges up to date before `/metrics`.
    fn refresh_metrics(&self) {}
}

/// A sale created now, or found already defined the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Created now (201).
    New(AdminSaleBody),
    /// The same definition was already there (200).
    Existing(AdminSaleBody),
}

/// An admin request refused: its code and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The code, with its status.
    pub error: ApiError,
    /// What is wrong, naming the field where there is one.
    pub message: String,
}

impl AdminError {
    /// An error with `error`'s code and status.
    pub fn new(error: ApiError, message: impl Into<String>) -> AdminError {
        AdminError {
            error,
            message: message.into(),
        }
    }
}

struct AdminState {
    operator: Arc<dyn Operator>,
    key: Vec<u8>,
}

/// A running admin listener.
pub struct AdminFront {
    local_addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl AdminFront {
    /// Binds `listen` and serves the admin API, on a runtime of its own,
    /// until `shutdown` is cancelled.
    ///
    /// # Errors
    ///
    /// A key shorter than [`MIN_ADMIN_KEY_LEN`] bytes, or an address that
    /// cannot be bound.
    pub fn start(
        listen: SocketAddr,
        key: Vec<u8>,
        operator: Arc<dyn Operator>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<AdminFront> {
        check_key(&key)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flashsale-admin")
            .enable_all()
            .build()
            .context("cannot start the admin runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("cannot listen for the admin API on {listen}"))?;
        let local_addr = listener.local_addr()?;
        let front = Front {
            router: router(operator, key),
            hot: None,
            door: None,
            limits: ConnLimits::with(HEADER_TIMEOUT, IDLE_TIMEOUT),
        };
        let admission = shed::Admission::new(MAX_CONNECTIONS, MAX_CONNECTIONS);
        let thread = std::thread::Builder::new()
            .name("flashsale-admin-main".into())
            .spawn(move || {
                runtime.block_on(serve(listener, front, &admission, shutdown, grace));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start the admin thread")?;
        tracing::info!(%local_addr, "admin API listening");
        Ok(AdminFront { local_addr, thread })
    }

    /// The address the admin listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the listener to stop (after its shutdown token is cancelled).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the admin thread panicked");
        }
    }
}

/// Refuses an operator key too short to resist guessing.
///
/// # Errors
///
/// The key is shorter than [`MIN_ADMIN_KEY_LEN`] bytes.
pub fn check_key(key: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        key.len() >= MIN_ADMIN_KEY_LEN,
        "the admin key is {} bytes; it must be at least {MIN_ADMIN_KEY_LEN} (for instance 32 random bytes, hex-encoded)",
        key.len()
    );
    Ok(())
}

/// Every admin route over `operator`, guarded by `key`: for serving in
/// process and for tests.
pub fn router(operator: Arc<dyn Operator>, key: Vec<u8>) -> Router {
    let state = Arc::new(AdminState { operator, key });
    Router::new()
        .route("/admin/sales", get(list).post(create))
        .route("/admin/sales/{sale}/{action}", post(act))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(common_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

type AdminShared = Arc<AdminState>;

/// 401 unless the request carries the operator's key.
async fn authorize(State(state): State<AdminShared>, request: Request, next: Next) -> Response {
    if !carries_key(request.headers(), &state.key) {
        metrics::count(Protocol::Http, Op::Admin, ApiError::Unauthorized);
        return api_error(
            ApiError::Unauthorized,
            "the admin API needs `Authorization: Bearer <admin key>`",
        );
    }
    next.run(request).await
}

fn carries_key(headers: &HeaderMap, key: &[u8]) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    // Lengths are not secret (the minimum is documented); contents are.
    given.len() == key.len() && bool::from(given.ct_eq(key))
}

async fn not_found() -> Response {
    api_error(ApiError::NotFound, "no such admin route")
}

async fn list(State(state): State<AdminShared>) -> Response {
    metrics::count(Protocol::Http, Op::Admin, Outcome::Ok);
    Json(state.operator.sales().await).into_response()
}

async fn create(State(state): State<AdminShared>, body: Bytes) -> Response {
    let body: CreateSaleBody = match parse_body(&body) {
        Ok(body) => body,
        Err(e) => return refused(&e),
    };
    let answer = match state.operator.create(body).await {
        Ok(Created::New(info)) => (StatusCode::CREATED, Json(info)).into_response(),
        Ok(Created::Existing(info)) => Json(info).into_response(),
        Err(e) => return refused(&e),
    };
    metrics::count(Protocol::Http, Op::Admin, Outcome::Ok);
    answer
}

/// `POST /admin/sales/{sale}/{action}`: the lifecycle actions, confirm and
/// release.
async fn act(
    State(state): State<AdminShared>,
    Path((sale, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if sale.len() > MAX_SALE_ID_LEN {
        return api_error(
            ApiError::InvalidRequest,
            format!("sale id longer than {MAX_SALE_ID_LEN} bytes"),
        );
    }
    let lifecycle = SaleAction::ALL.into_iter().find(|a| a.label() == action);
    if let Some(lifecycle) = lifecycle {
        return match state.operator.change(&sale, lifecycle).await {
            Ok(info) => {
                metrics::count(Protocol::Http, Op::Admin, Outcome::Ok);
                Json(info).into_response()
            }
            Err(e) => refused(&e),
        };
    }
    match action.as_str() {
        "confirm" => {
            let body = match confirm_body(&body) {
                Ok(body) => body,
                Err(e) => return refused(&e),
            };
            let answer = state
                .operator
                .confirm(&sale, body.user, &body.payment_ref)
                .await;
            metrics::count(Protocol::Http, Op::Confirm, Outcome::Ok);
            match answer {
                Ok(outcome) => hold_outcome(outcome.http_status(), outcome.into()),
                Err(e) => status_error(&e),
            }
        }
        "release" => {
            let body: UserBody = match parse_body(&body) {
                Ok(body) => body,
                Err(e) => return refused(&e),
            };
            let answer = state.operator.release(&sale, body.user).await;
            metrics::count(Protocol::Http, Op::Release, Outcome::Ok);
            match answer {
                Ok(outcome) => hold_outcome(outcome.http_status(), outcome.into()),
                Err(e) => status_error(&e),
            }
        }
        _ => api_error(ApiError::NotFound, format!("no admin action {action:?}")),
    }
}

/// A JSON request body of the admin API ([`CreateSaleBody`],
/// [`UserBody`]), or `invalid_request` with serde's words (which name the
/// field). Pure: the `admin_body` fuzz target calls it as the handlers do.
///
/// # Errors
///
/// The body is not that JSON.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::new(ApiError::InvalidRequest, format!("invalid body: {e}")))
}

/// The body of `POST /admin/sales/{sale}/confirm`: [`parse_body`], then a
/// `payment_ref` of 1..=[`MAX_PAYMENT_REF_LEN`] bytes.
///
/// # Errors
///
/// Not that JSON, or a `payment_ref` out of bounds.
pub fn confirm_body(body: &[u8]) -> Result<ConfirmBody, AdminError> {
    let body: ConfirmBody = parse_body(body)?;
    if body.payment_ref.is_empty() || body.payment_ref.len() > MAX_PAYMENT_REF_LEN {
        return Err(AdminError::new(
            ApiError::InvalidRequest,
            format!("payment_ref must be 1..={MAX_PAYMENT_REF_LEN} bytes"),
        ));
    }
    Ok(body)
}

fn refused(e: &AdminError) -> Response {
    metrics::count(Protocol::Http, Op::Admin, e.error);
    api_error(e.error, e.message.clone())
}

async fn metrics_text(State(state): State<AdminShared>) -> Response {
    state.operator.refresh_metrics();
    metrics_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bodies_are_parsed_and_checked_as_the_fuzz_target_assumes() {
        let ok = confirm_body(br#"{"user":1,"payment_ref":"p"}"#).unwrap();
        assert_eq!((ok.user, ok.payment_ref.as_str()), (1, "p"));
        let long = format!(r#"{{"user":1,"payment_ref":"{}"}}"#, "p".repeat(129));
        for bad in [
            &br#"{"user":1,"payment_ref":""}"#[..],
            long.as_bytes(),
            b"{}",
        ] {
            let e = confirm_body(bad).unwrap_err();
            assert_eq!(e.error, ApiError::InvalidRequest);
        }
        let e = parse_body::<UserBody>(br#"{"user":"1"}"#).unwrap_err();
        assert!(e.message.starts_with("invalid body: "), "{}", e.message);
    }

    #[test]
    fn the_key_is_compared_whole() {
        let key = vec![b'k'; MIN_ADMIN_KEY_LEN];
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        let right = format!("Bearer {}", "k".repeat(MIN_ADMIN_KEY_LEN));
        assert!(carries_key(&with(&right), &key));
        assert!(!carries_key(&with(&right[..right.len() - 1]), &key));
        assert!(!carries_key(&with(&format!("{right}k")), &key));
        assert!(!carries_key(
            &with(&right.replace("Bearer", "bearer")),
            &key
        ));
        assert!(!carries_key(&HeaderMap::new(), &key));
        assert!(check_key(&key).is_ok());
        assert!(check_key(&key[1..]).is_err());
    }
}
