//! The buyer's page, compiled into the binary: one HTML file, its script
//! and its stylesheet. `no-cache` makes browsers revalidate, so a new
//! server version is picked up on the next load.
//!
//! The page and its assets carry a Content-Security-Policy that allows
//! only this origin's script, style and API (no inline script, no `eval`,
//! no plugin, no form posting elsewhere) and no framing at all, so the Buy
//! button cannot be laid under another site's page (clickjacking). Every
//! answer also carries `X-Frame-Options: DENY` for older browsers, with
//! `nosniff` and `Referrer-Policy: no-referrer` (`api::common_headers`).
//!
//! The page signs in only from demo mode's `/demo/token`, or from a token
//! this origin's own login put in `sessionStorage`; never from its URL, so
//! a link cannot sign a visitor into someone else's account (login CSRF).

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// What the page may load and who may frame it. `img-src data:` is the
/// inline favicon.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
