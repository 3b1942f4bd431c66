//! Rate limits at the door: a token bucket per client address
//! (`--rate-limit-ip`) and per user (`--rate-limit-user`). Off unless set.
//!
//! The bounds in `shed` protect the server (requests in progress,
//! connections); these protect buyers from each other: one client sending
//! requests in a loop, from one address or with one token, gets its share
//! and then `429 {"error":"rate_limited"}` with `Retry-After`, while a
//! crowd of buyers sending a request or two each never meets the limit.
//!
//! Where each applies, and why there:
//!
//! - **Per address**: every API request (`/api/...`, `/demo/...`), checked
//!   as the request arrives, before the router, the reservation's fast path
//!   and any token is looked at, so a flood is refused for the price of a
//!   hash lookup, not an HMAC. The page's assets, `/healthz` and `/metrics`
//!   are not limited: a page load is several of them, and probes must
//!   always be answered. The address is the client's as `client_ip` finds
//!   it (a trusted proxy's `X-Forwarded-For`), grouped as the bound on
//!   connections per client groups it (an IPv6 /64 is one client).
//! - **Per user**: requests that carry a valid token, checked right after
//!   the token is verified (`reserve`, `me`, `cancel`, `/demo/pay`, and an
//!   event stream opened with a token), so that a token cannot dodge the
//!   limit by changing address.
//!
//! The buckets are governor's GCRA: a bucket holds `burst` requests and
//! refills at the rate, one request at a time. What the key tables may
//! hold is bounded (`buckets`).

mod buckets;
mod rate;

use std::net::IpAddr;
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flashsale_metrics::{self as metrics, RateLimit};
use flashsale_protocol::json::{ApiError, ErrorCodeBody};

use crate::client_ip::{client_ip, client_of, TrustedProxies};

use buckets::Buckets;
pub use rate::Rate;

/// Default bound on the keys each limit remembers.
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;

/// The limits to enforce (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Requests per user (the verified token's `sub`); `None`: no limit.
    pub user: Option<Rate>,
    /// Requests per client address (IPv6: per /64); `None`: no limit.
    pub ip: Option<Rate>,
    /// Keys (users, addresses) each limit remembers at most; past it, the
    /// ones whose bucket is full are forgotten, and if that is not enough
    /// the table starts over (`buckets` says why).
    pub max_keys: usize,
}

impl RateLimitConfig {
    /// No limits.
    pub const fn new() -> Self {
        RateLimitConfig {
            user: None,
            ip: None,
            max_keys: DEFAULT_RATE_LIMIT_MAX_KEYS,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig::new()
    }
}

/// The buckets of a running front.
pub(crate) struct RateLimits {
    user: Option<Buckets<u64>>,
    ip: Option<Buckets<IpAddr>>,
    proxies: TrustedProxies,
}

impl RateLimits {
    /// The buckets `config` asks for, with client addresses read through
    /// `proxies`.
    ///
    /// # Errors
    ///
    /// A rate governor cannot express (see [`Rate::quota`]).
    pub(crate) fn new(config: &RateLimitConfig, proxies: TrustedProxies) -> anyhow::Result<Self> {
        Ok(RateLimits {
            user: buckets(RateLimit::User, config.user, config.max_keys)?,
            ip: buckets(RateLimit::Ip, config.ip, config.max_keys)?,
            proxies,
        })
    }

    /// No limits at all.
    pub(crate) fn off() -> Self {
        RateLimits {
            user: None,
            ip: None,
            proxies: TrustedProxies::default(),
        }
    }

    /// Whether there is a per-address limit.
    pub(crate) fn limits_ip(&self) -> bool {
        self.ip.is_some()
    }

    /// Whether there is a per-user limit.
    pub(crate) fn limits_user(&self) -> bool {
        self.user.is_some()
    }

    /// The 429 for `request`, from the TCP peer `peer`, if it is an API
    /// request and its client's bucket is empty.
    pub(crate) fn ip<B>(&self, peer: IpAddr, request: &Request<B>) -> Option<Response> {
        let buckets = self.ip.as_ref()?;
        if !is_api(request.uri().path()) {
            return None;
        }
        let client = client_of(client_ip(peer, request.headers(), &self.proxies));
        buckets
            .check(&client)
            .err()
            .map(|wait| rate_limited(RateLimit::Ip, wait))
    }

    /// The 429 for a request of `user`, if their bucket is empty.
    pub(crate) fn user(&self, user: u64) -> Option<Response> {
        self.user
            .as_ref()?
            .check(&user)
            .err()
            .map(|wait| rate_limited(RateLimit::User, wait))
    }
}

/// The buckets of `rate`, if there is one.
fn buckets<K: std::hash::Hash + Eq + Clone>(
    limit: RateLimit,
    rate: Option<Rate>,
    max_keys: usize,
) -> anyhow::Result<Option<Buckets<K>>> {
    rate.map(|rate| {
        let quota = rate.quota().map_err(anyhow::Error::msg)?;
        Ok(Buckets::new(limit, quota, max_keys))
    })
    .transpose()
}

/// Whether the per-address limit applies to a request for `path`.
fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/demo/")
}

/// `429 {"error":"rate_limited"}` with `Retry-After`: `wait` in whole
/// seconds, rounded up, at least 1; counted under `limit`.
fn rate_limited(limit: RateLimit, wait: Duration) -> Response {
    metrics::rate_limited(limit);
    let error = ApiError::RateLimited;
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = (status, Json(ErrorCodeBody { error })).into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn limits(user: Option<&str>, ip: Option<&str>, proxies: TrustedProxies) -> RateLimits {
        let mut config = RateLimitConfig::new();
        config.user = user.map(|r| r.parse().unwrap());
        config.ip = ip.map(|r| r.parse().unwrap());
        RateLimits::new(&config, proxies).unwrap()
    }

    fn get(path: &str, forwarded: Option<&str>) -> Request<Body> {
        let mut builder = Request::builder().uri(path);
        if let Some(f) = forwarded {
            builder = builder.header("x-forwarded-for", f);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn the_answer_is_exact() {
        let answer = rate_limited(RateLimit::Ip, Duration::from_millis(1200));
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()["retry-after"], "2");
        assert_eq!(answer.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"error":"rate_limited"}"#);
        for (wait, seconds) in [(0, "1"), (1, "1"), (999, "1"), (1000, "1"), (1001, "2")] {
            let answer = rate_limited(RateLimit::User, Duration::from_millis(wait));
            assert_eq!(answer.headers()["retry-after"], seconds, "{wait} ms");
        }
    }

    #[test]
    fn only_api_requests_count_against_an_address() {
        let limits = limits(None, Some("1/h"), TrustedProxies::default());
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for free in [
            "/",
            "/app.js",
            "/style.css",
            "/healthz",
            "/metrics",
            "/apis",
        ] {
            for _ in 0..3 {
                assert!(limits.ip(peer, &get(free, None)).is_none(), "{free}");
            }
        }
        assert!(limits.ip(peer, &get("/api/config", None)).is_none());
        assert!(limits.ip(peer, &get("/demo/token", None)).is_some());
        // The same /64 is the same client; another address is not.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(limits.ip(v6, &get("/api/config", None)).is_none());
        let same_64: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert!(limits.ip(same_64, &get("/api/config", None)).is_some());
        assert!(limits.user(1).is_none(), "no user limit");
    }

    #[test]
    fn behind_a_trusted_proxy_each_client_has_its_own_bucket() {
        let proxies =
            TrustedProxies::new(vec![crate::client_ip::parse_cidr("10.0.0.0/8").unwrap()]);
        let limits = limits(Some("1/h"), Some("1/h"), proxies);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        for client in ["203.0.113.1", "203.0.113.2"] {
            let request = get("/api/config", Some(client));
            assert!(limits.ip(proxy, &request).is_none(), "{client}");
            assert!(limits.ip(proxy, &request).is_some(), "{client}");
        }
        // From an untrusted peer the header is ignored: the peer is limited.
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(limits
            .ip(peer, &get("/api/config", Some("203.0.113.3")))
            .is_none());
        assert!(limits
            .ip(peer, &get("/api/config", Some("203.0.113.4")))
            .is_some());
        assert!(limits.user(1).is_none());
        assert!(limits.user(1).is_some());
        assert!(limits.user(2).is_none());
    }
}
