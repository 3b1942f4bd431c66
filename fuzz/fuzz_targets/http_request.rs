//! Arbitrary HTTP requests, answered in-process by the real router over the
//! real core (the server's `LocalBackend`, a log in a temporary directory).
//!
//! Each input is one request: a method, a path (one of the routes with an
//! arbitrary sale id, or an arbitrary string), a query, headers, an
//! `Authorization` header and a body. The `Authorization` value is either
//! arbitrary text or a token the harness signs itself with the router's
//! secret, possibly with one byte changed: the fuzzer cannot forge a
//! signature, so a token the harness did not sign untouched is never valid.
//!
//! Checked: nothing panics; no answer is a 5xx other than 503; every API
//! answer carries `Cache-Control: no-store`; JSON answers parse; a request to `reserve` or `me` without a
//! valid token is refused with 401 and `WWW-Authenticate: Bearer` (405 for
//! another method), never 2xx; with a valid token, a 201 or 200 from
//! `reserve` names a ticket of the sale that `me` then reports for the same
//! user.

#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use axum::Router;
use flashsale_core::{Registry, Sale, SaleSpec, Sales};
use flashsale_http::auth::Auth;
use flashsale_http::Backend;
use flashsale_server::backend::LocalBackend;
use flashsale_server::service::Service;
use flashsale_wal::{Durability, NoHook, WalConfig};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The router's HS256 key, so the harness can sign real tokens.
const SECRET: &[u8] = b"flashsale fuzzing secret, 32+ bytes long";
/// Open now, small enough that valid tokens sell it out.
const OPEN_SALE: &str = "default";
const OPEN_CAPACITY: u32 = 64;
/// Opens in 2100: reservations are 425.
const LATER_SALE: &str = "later";

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    auth: Auth,
    /// Holds the log's directory for the life of the process.
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (wal, _) = WalConfig::default_for(dir.path())
            .durability(Durability::None)
            .open(Arc::new(NoHook))
            .expect("the log opens");
        let sale = |id: &str, capacity, opens_at_ms| {
            Sale::new(SaleSpec::instant(id, capacity, opens_at_ms)).expect("a valid sale")
        };
        let sales = Sales::new(vec![
            sale(OPEN_SALE, OPEN_CAPACITY, 0),
            sale(LATER_SALE, 10, 4_102_444_800_000),
        ])
        .expect("distinct sales");
        let service = Service::new(Arc::new(Registry::new(sales)), wal, Durability::None);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let backend: Arc<dyn Backend> =
            Arc::new(LocalBackend::new(flashsale_server::serving::Serving::single(service)));
        let router = runtime.block_on(async {
            flashsale_http::router(
                backend,
                Auth::new(SECRET),
                true,
                vec![OPEN_SALE.into(), LATER_SALE.into()],
                64,
                CancellationToken::new(),
            )
        });
        Harness {
            runtime,
            router,
            auth: Auth::new(SECRET),
            _dir: dir,
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: MethodChoice,
    path: PathChoice,
    query: Option<String>,
    authorization: Authorization,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Get,
    Post,
    Head,
    Put,
    Delete,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum SaleChoice {
    Open,
    Later,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Reserve(SaleChoice),
    Me(SaleChoice),
    Status(SaleChoice),
    Events(SaleChoice),
    Fixed(FixedPath),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum FixedPath {
    Page,
    Script,
    Style,
    Config,
    Healthz,
    Metrics,
    DemoToken,
}

#[derive(Arbitrary, Debug)]
enum Authorization {
    None,
    /// Any header value at all.
    Raw(Vec<u8>),
    /// `Bearer ` and arbitrary text.
    Bearer(String),
    /// A token signed with the router's key for this user: valid.
    Signed(u64),
    /// A signed token with one byte replaced: never valid.
    Tampered {
        user: u64,
        at: u16,
        byte: u8,
    },
}

impl SaleChoice {
    fn id(&self) -> &str {
        match self {
            SaleChoice::Open => OPEN_SALE,
            SaleChoice::Later => LATER_SALE,
            SaleChoice::Other(id) => id,
        }
    }
}

impl PathChoice {
    fn path(&self) -> String {
        match self {
            PathChoice::Reserve(sale) => format!("/api/sales/{}/reserve", sale.id()),
            PathChoice::Me(sale) => format!("/api/sales/{}/me", sale.id()),
            PathChoice::Status(sale) => format!("/api/sales/{}", sale.id()),
            PathChoice::Events(sale) => format!("/api/sales/{}/events", sale.id()),
            PathChoice::Fixed(fixed) => match fixed {
                FixedPath::Page => "/",
                FixedPath::Script => "/app.js",
                FixedPath::Style => "/style.css",
                FixedPath::Config => "/api/config",
                FixedPath::Healthz => "/healthz",
                FixedPath::Metrics => "/metrics",
                FixedPath::DemoToken => "/demo/token",
            }
            .to_owned(),
            PathChoice::Raw(path) => path.clone(),
        }
    }
}

impl MethodChoice {
    fn method(&self) -> Option<Method> {
        Some(match self {
            MethodChoice::Get => Method::GET,
            MethodChoice::Post => Method::POST,
            MethodChoice::Head => Method::HEAD,
            MethodChoice::Put => Method::PUT,
            MethodChoice::Delete => Method::DELETE,
            MethodChoice::Options => Method::OPTIONS,
            MethodChoice::Other(name) => Method::from_bytes(name.as_bytes()).ok()?,
        })
    }
}

/// The `Authorization` value to send, and the user it validly names.
fn authorization(auth: &Auth, choice: &Authorization) -> (Option<Vec<u8>>, Option<u64>) {
    let signed = |user| auth.issue(user, 3600).expect("HS256 signs").0;
    match choice {
        Authorization::None => (None, None),
        Authorization::Raw(value) => (Some(value.clone()), None),
        Authorization::Bearer(token) => (Some(format!("Bearer {token}").into_bytes()), None),
        Authorization::Signed(user) => (
            Some(format!("Bearer {}", signed(*user)).into_bytes()),
            Some(*user),
        ),
        Authorization::Tampered { user, at, byte } => {
            let mut token = signed(*user).into_bytes();
            let at = usize::from(*at) % token.len();
            if token[at] == *byte {
                return (None, None);
            }
            token[at] = *byte;
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&token);
            (Some(value), None)
        }
    }
}

fuzz_target!(|input: Input| {
    let harness = harness();
    let Some(method) = input.method.method() else {
        return;
    };
    let mut path = input.path.path();
    if let Some(query) = &input.query {
        path.push('?');
        path.push_str(query);
    }
    let mut builder = Request::builder().method(method.clone()).uri(path.as_str());
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if name == AUTHORIZATION {
            continue;
        }
        builder = builder.header(name, value);
    }
    let (auth_value, user) = authorization(&harness.auth, &input.authorization);
    if let Some(value) = auth_value {
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return;
        };
        builder = builder.header(AUTHORIZATION, value);
    }
    let Ok(request) = builder.body(Body::from(input.body.clone())) else {
        return;
    };
    let request_path = request.uri().path().to_owned();

    harness.runtime.block_on(async {
        let response = send(&harness.router, request).await;
        let (status, body) = check_response(&method, &request_path, response).await;
        let buying = buying_route(&request_path);
        match (buying, user) {
            (Some(route), None) => check_refused(route, &method, status),
            (Some(Route::Reserve(sale)), Some(user)) if method == Method::POST => {
                check_reserve(&harness.router, sale, user, status, &body).await;
            }
            _ => {}
        }
    });
});

#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Reserve(&'a str),
    Me,
}

/// The buying route `path` names, if any: `/api/sales/{sale}/reserve` or
/// `/api/sales/{sale}/me` with a non-empty sale.
fn buying_route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/api/sales/")?;
    let (sale, action) = rest.split_once('/')?;
    if sale.is_empty() {
        return None;
    }
    match action {
        "reserve" => Some(Route::Reserve(sale)),
        "me" => Some(Route::Me),
        _ => None,
    }
}

async fn send(router: &Router, request: Request<Body>) -> Response<Body> {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Checks what every answer must satisfy; returns the status and, unless it
/// is an event stream, the body (empty for `HEAD`).
async fn check_response(
    method: &Method,
    path: &str,
    response: Response<Body>,
) -> (StatusCode, Vec<u8>) {
    let status = response.status();
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status} for {path:?}"
    );
    let headers = response.headers().clone();
    if path.starts_with("/api/") {
        assert!(
            headers.get(CACHE_CONTROL).is_some_and(|v| v == "no-store"),
            "{status} for {path:?} without Cache-Control: no-store: {headers:?}"
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            headers.get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
    let content_type = headers.get(CONTENT_TYPE).map(|v| v.as_bytes().to_vec());
    if content_type.as_deref() == Some(b"text/event-stream") {
        // Endless by design: dropping it ends the stream.
        return (status, Vec::new());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .expect("an in-memory body is read")
        .to_bytes()
        .to_vec();
    if content_type.as_deref() == Some(b"application/json") && *method != Method::HEAD {
        serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|e| {
            panic!(
                "{status} for {path:?}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
    }
    (status, body)
}

/// A buying request without a valid token.
fn check_refused(route: Route<'_>, method: &Method, status: StatusCode) {
    let allowed = match route {
        Route::Reserve(_) => *method == Method::POST,
        Route::Me => *method == Method::GET || *method == Method::HEAD,
    };
    assert!(
        !status.is_success(),
        "{status} for {method} {route:?} without a valid token"
    );
    if allowed {
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {route:?} without a valid token"
        );
    } else {
        assert!(
            status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::UNAUTHORIZED,
            "{status} for {method} {route:?} without a valid token"
        );
    }
}

/// A reservation with a valid token: a ticket it names is the one `me` reports.
async fn check_reserve(router: &Router, sale: &str, user: u64, status: StatusCode, body: &[u8]) {
    let expected = [
        StatusCode::CREATED,
        StatusCode::OK,
        StatusCode::GONE,
        StatusCode::TOO_EARLY,
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    assert!(
        expected.contains(&status),
        "{status} for a reservation of {sale:?}"
    );
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return;
    }
    let answer: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    let ticket = answer["ticket"]
        .as_u64()
        .expect("a won reservation names its ticket");
    assert!(
        (1..=u64::from(OPEN_CAPACITY)).contains(&ticket),
        "ticket {ticket} of {sale:?}"
    );
    let token = Auth::new(SECRET).issue(user, 3600).expect("HS256 signs").0;
    let lookup = Request::get(format!("/api/sales/{sale}/me"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("a valid request");
    let path = lookup.uri().path().to_owned();
    let (status, body) = check_response(&Method::GET, &path, send(router, lookup).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "me after a won reservation of {sale:?}"
    );
    let held: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        held["ticket"].as_u64(),
        Some(ticket),
        "me after reserve of {sale:?}"
    );
}
