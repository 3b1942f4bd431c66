//! The routes, and the mapping of the core's answers to status codes and
//! JSON bodies. `docs/HTTP.md` is the reference for every one of them.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashsale_protocol::{ErrorCode, ReserveOutcome, SaleState, SaleStatus, MAX_SALE_ID_LEN};
use serde::Deserialize;
use serde_json::json;

use super::auth::User;
use super::backend::{Backend, BackendError};
use super::{error_response, events, page, shed, AppState};
use crate::metrics::{self, Protocol};
use crate::service::now_ms;

/// Lifetime of a demo token.
const DEMO_TOKEN_TTL_S: u64 = 3600;
/// Largest request body read (only `POST /demo/token` reads one).
const MAX_BODY: usize = 4096;
/// How long `/healthz` waits for a remote core's pong.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Every route. Event streams stay outside the in-flight bound: they are
/// long-lived by design and cost no core work of their own.
pub fn router(state: AppState, max_in_flight: usize) -> Router {
    let mut bounded = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/api/config", get(config))
        .route("/api/sales/{sale}", get(status))
        .route("/api/sales/{sale}/reserve", post(reserve))
        .route("/api/sales/{sale}/me", get(me))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text));
    if state.demo {
        bounded = bounded.route("/demo/token", post(demo_token));
    }
    let bounded = bounded
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(no_store))
        .layer(axum::middleware::from_fn_with_state(
            shed::Limiter::new(max_in_flight),
            shed::limit,
        ));
    Router::new()
        .route(
            "/api/sales/{sale}/events",
            get(events::stream).layer(axum::middleware::map_response(no_store)),
        )
        .merge(bounded)
        .with_state(state)
}

/// API answers are about this moment and, for some, this user: never cached.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

async fn config(State(state): State<AppState>) -> Response {
    Json(json!({ "demo": state.demo, "sales": state.sales })).into_response()
}

/// A sale id the core would refuse, refused here with the same words in
/// both deployments (the native client checks it before sending).
pub(crate) fn invalid_sale(sale: &str) -> Option<Response> {
    (sale.len() > MAX_SALE_ID_LEN).then(|| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("sale id longer than {MAX_SALE_ID_LEN} bytes"),
        )
        .into_response()
    })
}

async fn reserve(State(state): State<AppState>, user: User, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::add_outcomes(Protocol::Http, "reserve", "invalid_request", 1);
        return refused;
    }
    let (label, response) = match state.backend.reserve(&sale, user.0).await {
        Ok(outcome) => outcome_response(outcome),
        Err(e) => backend_error(&e, Some(&sale)),
    };
    metrics::add_outcomes(Protocol::Http, "reserve", label, 1);
    response
}

fn outcome_response(outcome: ReserveOutcome) -> (&'static str, Response) {
    match outcome {
        ReserveOutcome::Won { ticket } => (
            "won",
            (
                StatusCode::CREATED,
                Json(json!({ "outcome": "won", "ticket": ticket })),
            )
                .into_response(),
        ),
        ReserveOutcome::AlreadyOwned { ticket } => (
            "already_owned",
            Json(json!({ "outcome": "already_owned", "ticket": ticket })).into_response(),
        ),
        ReserveOutcome::SoldOut => (
            "sold_out",
            (StatusCode::GONE, Json(json!({ "outcome": "sold_out" }))).into_response(),
        ),
        ReserveOutcome::NotOpen { opens_at } => {
            let wait_s = opens_at.saturating_sub(now_ms()).div_ceil(1000).max(1);
            (
                "not_open",
                (
                    StatusCode::TOO_EARLY,
                    [(RETRY_AFTER, HeaderValue::from(wait_s))],
                    Json(json!({ "outcome": "not_open", "opens_at": opens_at })),
                )
                    .into_response(),
            )
        }
        ReserveOutcome::UnknownSale => (
            "unknown_sale",
            (
                StatusCode::NOT_FOUND,
                Json(json!({ "outcome": "unknown_sale" })),
            )
                .into_response(),
        ),
        ReserveOutcome::Busy { retry_after_ms } => ("busy", busy(retry_after_ms)),
    }
}

/// 503 `{"outcome":"busy"}` with `Retry-After` in whole seconds (at least 1).
pub(crate) fn busy(retry_after_ms: u32) -> Response {
    let wait_s = u64::from(retry_after_ms).div_ceil(1000).max(1);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, HeaderValue::from(wait_s))],
        Json(json!({ "outcome": "busy" })),
    )
        .into_response()
}

/// The status and body for a request the core could not answer; `sale` is
/// set for a reservation, whose outcome may then be unknown.
fn backend_error(e: &BackendError, sale: Option<&str>) -> (&'static str, Response) {
    let (status, code, message) = match e {
        BackendError::Busy(ms) => return ("busy", busy(*ms)),
        BackendError::Core(frame) => match frame.code {
            ErrorCode::UNKNOWN_SALE => {
                (StatusCode::NOT_FOUND, "unknown_sale", frame.message.clone())
            }
            ErrorCode::INVALID_REQUEST => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                frame.message.clone(),
            ),
            ErrorCode::LOG_UNAVAILABLE => (
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                frame.message.clone(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                frame.message.clone(),
            ),
        },
        BackendError::Unreachable { timeout, message } => {
            let (status, code) = if *timeout {
                (StatusCode::GATEWAY_TIMEOUT, "core_timeout")
            } else {
                (StatusCode::BAD_GATEWAY, "core_unavailable")
            };
            let message = match sale {
                Some(sale) => format!(
                    "{message}; the purchase may or may not have been made: GET /api/sales/{sale}/me tells"
                ),
                None => message.clone(),
            };
            (status, code, message)
        }
    };
    (code, error_response(status, code, message).into_response())
}

/// The answer to a status-like request the core could not answer.
pub(crate) fn status_error(e: &BackendError) -> Response {
    backend_error(e, None).1
}

async fn status(State(state): State<AppState>, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::add_outcomes(Protocol::Http, "status", "invalid_request", 1);
        return refused;
    }
    let (label, response) = match state.backend.status(&sale).await {
        Ok(status) => ("ok", Json(status_json(&status)).into_response()),
        Err(e) => backend_error(&e, None),
    };
    metrics::add_outcomes(Protocol::Http, "status", label, 1);
    response
}

/// The JSON of a sale's status.
pub(crate) fn status_json(status: &SaleStatus) -> serde_json::Value {
    json!({
        "sale": status.sale,
        "capacity": status.capacity,
        "remaining": status.remaining,
        "sold": status.sold,
        "state": state_name(status.state),
        "opens_at": status.opens_at,
    })
}

/// The JSON name of a sale state.
pub(crate) fn state_name(state: SaleState) -> &'static str {
    match state {
        SaleState::Upcoming => "upcoming",
        SaleState::Open => "open",
        SaleState::SoldOut => "sold_out",
    }
}

async fn me(State(state): State<AppState>, user: User, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::add_outcomes(Protocol::Http, "lookup", "invalid_request", 1);
        return refused;
    }
    let (label, response) = match state.backend.lookup(&sale, user.0).await {
        Ok(Some(ticket)) => ("found", Json(json!({ "ticket": ticket })).into_response()),
        Ok(None) => (
            "none",
            (StatusCode::NOT_FOUND, Json(json!({ "ticket": null }))).into_response(),
        ),
        Err(e) => backend_error(&e, None),
    };
    metrics::add_outcomes(Protocol::Http, "lookup", label, 1);
    response
}

async fn healthz(State(state): State<AppState>) -> Response {
    let healthy = tokio::time::timeout(HEALTH_TIMEOUT, state.backend.healthy())
        .await
        .unwrap_or(false);
    if healthy {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable" })),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = match &state.backend {
        Backend::Local(service) => metrics::render_with(service.sales()),
        Backend::Remote(_) => metrics::render(),
    };
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoTokenRequest {
    user: Option<u64>,
}

async fn demo_token(State(state): State<AppState>, body: Bytes) -> Response {
    let user = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<DemoTokenRequest>(&body) {
            Ok(request) => request.user,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("expected {{\"user\": N}} or an empty body: {e}"),
                )
                .into_response()
            }
        }
    };
    let user = user.unwrap_or_else(random_user);
    match state.auth.issue(user, DEMO_TOKEN_TTL_S) {
        Ok((token, expires_at)) => {
            Json(json!({ "token": token, "user": user, "expires_at": expires_at })).into_response()
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot sign a token: {e}"),
        )
        .into_response(),
    }
}

/// A random user id below 2^53, so a browser's numbers hold it exactly.
fn random_user() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    hasher.finish() % ((1 << 53) - 1) + 1
}
