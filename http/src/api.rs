//! The routes, and the mapping of the core's answers to status codes and
//! JSON bodies. `docs/HTTP.md` is the reference for every one of them.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flashsale_core::clock::now_ms;
use flashsale_metrics::{self as metrics, Op, Outcome, Protocol};
use flashsale_protocol::json::{
    ApiError, ConfigBody, DemoPayRequest, DemoTokenBody, DemoTokenRequest, DrawBody, Health,
    HealthBody, HoldOutcomeBody, ReserveBody, SaleBody,
};
use flashsale_protocol::{ErrorCode, OutcomeKind, ReleaseOutcome, ReserveOutcome, MAX_SALE_ID_LEN};

use super::auth::User;
use super::backend::BackendError;
use super::{api_error, draw, events, page, shed, AppState, State as Shared};

/// Lifetime of a demo token.
const DEMO_TOKEN_TTL_S: u64 = 3600;
/// Largest request body read (only `POST /demo/token` reads one).
const MAX_BODY: usize = 4096;
/// How long `/healthz` waits for a remote core's pong.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Every route. Event streams stay outside the in-flight bound: they are
/// long-lived by design and cost no core work of their own, so they have a
/// bound and a lifetime of their own (`events`). The routes that read a
/// body read it whole, under a deadline, before they take an in-flight
/// permit: a body trickled in slowly must not hold one.
///
/// The reservation is also reachable around the router, by [`Hot`]: the
/// router and the hot path share one in-flight bound.
pub fn router(state: AppState) -> (Router, Hot) {
    let limiter = shed::Limiter::new(state.max_in_flight);
    let hot = Hot {
        state: state.clone(),
        limiter: limiter.clone(),
    };
    let mut bounded = Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/api/config", get(config))
        .route("/api/sales/{sale}", get(status))
        .route("/api/sales/{sale}/reserve", post(reserve))
        .route("/api/sales/{sale}/me", get(me))
        .route("/api/sales/{sale}/cancel", post(cancel))
        .route("/api/sales/{sale}/draw", get(draw::document))
        .route("/healthz", get(healthz));
    if state.metrics {
        bounded = bounded.route("/metrics", get(metrics_text));
    }
    let bounded = bounded
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            limiter.clone(),
            shed::limit,
        ));
    let mut router = Router::new()
        .route("/api/sales/{sale}/events", get(events::stream))
        .merge(bounded);
    if state.demo {
        let with_body = Router::new()
            .route("/demo/token", post(demo_token))
            .route("/demo/pay", post(demo_pay))
            .layer(axum::middleware::from_fn_with_state(limiter, shed::limit))
            .layer(axum::middleware::from_fn_with_state(
                state.body_timeout,
                read_body,
            ));
        router = router.merge(with_body);
    }
    let router = router
        .layer(axum::middleware::map_response(common_headers))
        .with_state(state);
    (router, hot)
}

/// `POST /api/sales/{sale}/reserve` answered without the router: the one
/// route a rush is made of. In a profile of the front under a sold-out rush
/// the router's share (matching, the middleware's boxed futures, the
/// extractors' allocations) was as large as the reservation itself; here a
/// reservation costs a prefix match, the in-flight permit, the token and
/// the core. What it answers is what the route answers, by the same
/// functions: the in-flight bound (`shed::Limiter::run`), the token and
/// the user's rate limit ([`User::admitted`]), [`reserve_answer`], and
/// [`set_common_headers`]. The per-address rate limit is checked before
/// either (in the connection's service).
#[derive(Clone)]
pub struct Hot {
    state: AppState,
    limiter: shed::Limiter,
}

impl Hot {
    /// The sale a request reserves in, when it is a reservation this path
    /// answers exactly as the router would: `POST`, and a sale id that
    /// needs no percent-decoding. Anything else (another method, a `%`)
    /// is the router's, with its 405s and its decoding.
    pub fn sale<B>(request: &axum::http::Request<B>) -> Option<&str> {
        if request.method() != axum::http::Method::POST {
            return None;
        }
        let sale = request
            .uri()
            .path()
            .strip_prefix("/api/sales/")?
            .strip_suffix("/reserve")?;
        let plain = !sale.is_empty() && !sale.contains(['/', '%']);
        plain.then_some(sale)
    }

    /// The answer to a reservation in `sale` by the buyer `headers` name.
    pub async fn reserve(&self, headers: &HeaderMap, sale: &str) -> Response {
        let answer = self.limiter.run(async {
            match User::admitted(headers, &self.state) {
                Ok(user) => reserve_answer(&self.state, user, sale).await,
                Err(refused) => *refused,
            }
        });
        let mut response = answer.await;
        set_common_headers(response.headers_mut());
        response
    }
}

/// What every answer carries. API answers are about this moment and, for
/// some, this user: never cached (the page's assets set their own
/// `Cache-Control`). No answer is to be sniffed into another type, framed
/// by another site, or named in a `Referer`.
pub(crate) async fn common_headers(mut response: Response) -> Response {
    set_common_headers(response.headers_mut());
    response
}

/// [`common_headers`] on `headers`.
pub(crate) fn set_common_headers(headers: &mut HeaderMap) {
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Reads a request's whole body, at most [`MAX_BODY`] bytes within
/// `timeout`, before the rest of the stack sees the request: 408 when it
/// does not arrive in time, 413 when it is too long, both with a close
/// (the rest of the body is never read).
async fn read_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let refused = match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if too_large(&e) => api_error(
            ApiError::TooLarge,
            format!("the request body is over {MAX_BODY} bytes"),
        ),
        Ok(Err(e)) => api_error(
            ApiError::InvalidRequest,
            format!("cannot read the request body: {e}"),
        ),
        Err(_) => api_error(
            ApiError::RequestTimeout,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(timeout)
            ),
        ),
    };
    let mut refused = refused;
    refused
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    refused
}

/// Whether reading a body failed on its length limit.
fn too_large(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

async fn not_found() -> Response {
    api_error(ApiError::NotFound, "no such route")
}

/// The sales the page may show: the configured list, or else every sale the
/// core runs now (so sales created while the front runs appear at once).
async fn config(State(state): State<AppState>) -> Response {
    let sales = if state.sales.is_empty() {
        match state.backend.sales().await {
            Ok(sales) => sales.into_iter().map(|s| s.sale).collect(),
            Err(e) => return status_error(&e),
        }
    } else {
        state.sales.clone()
    };
    Json(ConfigBody {
        demo: state.demo,
        sales,
    })
    .into_response()
}

/// A sale id the core would refuse, refused here with the same words in
/// both deployments (the native client checks it before sending).
pub(crate) fn invalid_sale(sale: &str) -> Option<Response> {
    (sale.len() > MAX_SALE_ID_LEN).then(|| {
        api_error(
            ApiError::InvalidRequest,
            format!("sale id longer than {MAX_SALE_ID_LEN} bytes"),
        )
    })
}

async fn reserve(State(state): State<AppState>, user: User, Path(sale): Path<String>) -> Response {
    reserve_answer(&state, user, &sale).await
}

/// The reservation of `user` in `sale`, answered and counted: the route's
/// handler and [`Hot`] both.
async fn reserve_answer(state: &Shared, user: User, sale: &str) -> Response {
    if let Some(refused) = invalid_sale(sale) {
        metrics::count(Protocol::Http, Op::Reserve, ApiError::InvalidRequest);
        return refused;
    }
    let (outcome, response) = match state.backend.reserve(sale, user.0).await {
        Ok(outcome) => (Outcome::Sale(outcome.kind()), outcome_response(&outcome)),
        Err(e) => backend_error(&e, Some(sale)),
    };
    metrics::count(Protocol::Http, Op::Reserve, outcome);
    response
}

/// The answer to a reservation the core settled: [`OutcomeKind::http_status`]
/// and [`ReserveBody`], with `Retry-After` where the kind asks to wait.
fn outcome_response(outcome: &ReserveOutcome) -> Response {
    let wait_s = match *outcome {
        ReserveOutcome::NotOpen { opens_at } => Some(opens_at.saturating_sub(now_ms())),
        ReserveOutcome::Busy { retry_after_ms } => Some(u64::from(retry_after_ms)),
        _ => None,
    }
    .map(|ms| ms.div_ceil(1000).max(1));
    let status = status_of(outcome.kind());
    let mut response = (status, Json(ReserveBody::from(outcome))).into_response();
    if let Some(wait_s) = wait_s {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(wait_s));
    }
    response
}

fn status_of(kind: OutcomeKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// 503 `{"outcome":"busy"}` with `Retry-After` in whole seconds (at least 1).
pub(crate) fn busy(retry_after_ms: u32) -> Response {
    outcome_response(&ReserveOutcome::Busy { retry_after_ms })
}

/// The outcome and answer for a request the core could not answer; `sale`
/// is set for a reservation, whose outcome may then be unknown.
fn backend_error(e: &BackendError, sale: Option<&str>) -> (Outcome, Response) {
    let (error, message) = match e {
        BackendError::Busy(ms) => return (OutcomeKind::Busy.into(), busy(*ms)),
        BackendError::Core(frame) => {
            let error = match frame.code {
                ErrorCode::UNKNOWN_SALE => ApiError::UnknownSale,
                ErrorCode::INVALID_REQUEST => ApiError::InvalidRequest,
                ErrorCode::LOG_UNAVAILABLE => ApiError::LogUnavailable,
                ErrorCode::NOT_LEADER => ApiError::NotLeader,
                _ => ApiError::Internal,
            };
            (error, frame.message.clone())
        }
        BackendError::Unreachable { timeout, message } => {
            let error = if *timeout {
                ApiError::CoreTimeout
            } else {
                ApiError::CoreUnavailable
            };
            let message = match sale {
                Some(sale) => format!(
                    "{message}; the purchase may or may not have been made: GET /api/sales/{sale}/me tells"
                ),
                None => message.clone(),
            };
            (error, message)
        }
    };
    (error.into(), api_error(error, message))
}

/// The answer to a status-like request the core could not answer.
pub(crate) fn status_error(e: &BackendError) -> Response {
    backend_error(e, None).1
}

async fn status(State(state): State<AppState>, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::count(Protocol::Http, Op::Status, ApiError::InvalidRequest);
        return refused;
    }
    let answer = match events::recent(&state, &sale, state.status_max_age) {
        Some(snapshot) => Ok(snapshot),
        None => events::read(&state, &sale).await,
    };
    let (outcome, response) = match answer {
        Ok(snapshot) => (
            Outcome::Ok,
            Json(SaleBody {
                draw: snapshot.draw.as_ref().map(DrawBody::from),
                status: snapshot.status,
            })
            .into_response(),
        ),
        Err(e) => backend_error(&e, None),
    };
    metrics::count(Protocol::Http, Op::Status, outcome);
    response
}

async fn me(State(state): State<AppState>, user: User, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::count(Protocol::Http, Op::Lookup, ApiError::InvalidRequest);
        return refused;
    }
    let (outcome, response) = match state.backend.lookup(&sale, user.0).await {
        // An entrant's answer is their entry, even without a ticket.
        Ok(body) if body.ticket.is_some() || body.draw.is_some() => {
            (Outcome::Found, Json(body).into_response())
        }
        Ok(body) => (
            Outcome::None,
            (StatusCode::NOT_FOUND, Json(body)).into_response(),
        ),
        Err(e) => backend_error(&e, None),
    };
    metrics::count(Protocol::Http, Op::Lookup, outcome);
    response
}

/// The buyer gives up their hold: `{"outcome":"released","ticket":N}`.
async fn cancel(State(state): State<AppState>, user: User, Path(sale): Path<String>) -> Response {
    if let Some(refused) = invalid_sale(&sale) {
        metrics::count(Protocol::Http, Op::Cancel, ApiError::InvalidRequest);
        return refused;
    }
    let (outcome, response) = match state.backend.cancel(&sale, user.0).await {
        Ok(ReleaseOutcome::UnknownSale) => {
            let error = ApiError::UnknownSale;
            (error.into(), api_error(error, format!("no sale {sale:?}")))
        }
        Ok(released) => (
            Outcome::Ok,
            hold_outcome(released.http_status(), released.into()),
        ),
        Err(e) => backend_error(&e, None),
    };
    metrics::count(Protocol::Http, Op::Cancel, outcome);
    response
}

/// Demo mode: confirms the caller's own hold in `{"sale": id}` as if a
/// payment had come in.
async fn demo_pay(State(state): State<AppState>, user: User, body: Bytes) -> Response {
    let sale = match serde_json::from_slice::<DemoPayRequest>(&body) {
        Ok(request) => request.sale,
        Err(e) => {
            return api_error(
                ApiError::InvalidRequest,
                format!("expected {{\"sale\": \"id\"}}: {e}"),
            )
        }
    };
    if let Some(refused) = invalid_sale(&sale) {
        return refused;
    }
    let payment_ref = format!("demo-{}", user.0);
    match state.backend.confirm(&sale, user.0, &payment_ref).await {
        Ok(confirmed) => hold_outcome(confirmed.http_status(), confirmed.into()),
        Err(e) => status_error(&e),
    }
}

/// A confirm, cancel or release answer: its status, and its outcome body.
pub(crate) fn hold_outcome(status: u16, body: HoldOutcomeBody) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let healthy = tokio::time::timeout(HEALTH_TIMEOUT, state.backend.healthy())
        .await
        .unwrap_or(false);
    let cluster = state.backend.cluster_role();
    if healthy {
        Json(HealthBody {
            status: Health::Ok,
            cluster,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthBody {
                status: Health::Unavailable,
                cluster,
            }),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    state.backend.refresh_metrics();
    metrics_response()
}

/// The metrics in Prometheus' text format: `/metrics` on either listener.
pub(crate) fn metrics_response() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(),
    )
        .into_response()
}

async fn demo_token(State(state): State<AppState>, body: Bytes) -> Response {
    let user = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<DemoTokenRequest>(&body) {
            Ok(request) => request.user,
            Err(e) => {
                return api_error(
                    ApiError::InvalidRequest,
                    format!("expected {{\"user\": N}} or an empty body: {e}"),
                )
            }
        }
    };
    let user = user.unwrap_or_else(random_user);
    match state.auth.issue(user, DEMO_TOKEN_TTL_S) {
        Ok((token, expires_at)) => Json(DemoTokenBody {
            token,
            user,
            expires_at,
        })
        .into_response(),
        Err(e) => api_error(ApiError::Internal, format!("cannot sign a token: {e}")),
    }
}

/// A random user id in `1..2^53`, so a browser's numbers hold it exactly.
/// Without the operating system's random source, the clock stands in: a
/// demo id only has to differ between visitors, not be secret.
fn random_user() -> u64 {
    let raw = getrandom::u64().unwrap_or_else(|_| now_ms());
    raw % ((1 << 53) - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale_of(method: &str, uri: &str) -> Option<String> {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .ok()?;
        Hot::sale(&request).map(str::to_owned)
    }

    #[test]
    fn only_plain_reservations_take_the_hot_path() {
        assert_eq!(
            sale_of("POST", "/api/sales/gig/reserve").as_deref(),
            Some("gig")
        );
        assert_eq!(
            sale_of("POST", "/api/sales/gig/reserve?x=1").as_deref(),
            Some("gig")
        );
        for (method, uri) in [
            ("GET", "/api/sales/gig/reserve"),
            ("PUT", "/api/sales/gig/reserve"),
            ("POST", "/api/sales//reserve"),
            ("POST", "/api/sales/a/b/reserve"),
            ("POST", "/api/sales/g%69g/reserve"),
            ("POST", "/api/sales/gig/reserve/"),
            ("POST", "/api/sales/gig/cancel"),
            ("POST", "/api/sales/gig"),
            ("POST", "//api/sales/gig/reserve"),
        ] {
            assert_eq!(sale_of(method, uri), None, "{method} {uri}");
        }
    }
}
