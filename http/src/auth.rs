//! Who is buying: the bearer token of every buying request.
//!
//! The token rules (HS256 only, no `crit`, `sub` a canonical decimal user
//! id, `exp` required, time claims in whole seconds, a capped lifetime,
//! `iss` and `aud` as configured) are [`flashsale_token`]'s. This module adds what is HTTP's:
//! the scheme name is case-insensitive (`Bearer`, `bearer`), as HTTP's
//! authentication schemes are; a request with more than one `Authorization`
//! header is refused whatever they hold (a proxy in front and this server
//! could otherwise each read a different one); a refusal is a 401 with
//! `WWW-Authenticate: Bearer`. The front refuses a request head over 16 KiB
//! before any handler runs.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use flashsale_metrics::{self as metrics, Op, Protocol};
use flashsale_protocol::json::ApiError;
use flashsale_token::{Minter, Rules, Verifier};

use super::{api_error, AppState, State};

pub use flashsale_token::MAX_TOKEN_LEN;

/// Verifies (and in demo mode, issues) buyers' tokens.
pub struct Auth {
    verifier: Verifier,
    minter: Minter,
}

impl Auth {
    /// Verification (and signing) with the HS256 `secret` and the default
    /// [`Rules`].
    pub fn new(secret: &[u8]) -> Self {
        Auth::with_rules(secret, &Rules::new())
    }

    /// Verification with the HS256 `secret` under `rules`; the demo mode's
    /// tokens carry the issuer and audience they require.
    pub fn with_rules(secret: &[u8], rules: &Rules) -> Self {
        Auth {
            verifier: Verifier::with_rules(secret, rules.clone()),
            minter: Minter::new(secret).for_rules(rules),
        }
    }

    /// The user a bearer `token` names.
    ///
    /// # Errors
    ///
    /// Why the token is refused, for the 401 body.
    pub fn verify(&self, token: &str) -> Result<u64, flashsale_token::TokenError> {
        self.verifier.verify(token)
    }

    /// A token for `user`, valid for `ttl_s` seconds, and its `exp` (demo
    /// mode only).
    ///
    /// # Errors
    ///
    /// When signing fails.
    pub fn issue(
        &self,
        user: u64,
        ttl_s: u64,
    ) -> Result<(String, u64), flashsale_token::SignError> {
        self.minter.mint(user, ttl_s)
    }
}

/// The authenticated buyer of a request.
#[derive(Debug, Clone, Copy)]
pub struct User(pub u64);

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        User::admitted(&parts.headers, state).map_err(|refused| *refused)
    }
}

impl User {
    /// The buyer `headers` name, verified and within their rate limit, or
    /// the answer to give instead: 401 for the token, 429 for the rate.
    /// The extractor and the reservation's fast path (`api::Hot`) both
    /// come here. (Boxed: a refusal is the rare, slow case.)
    pub(crate) fn admitted(headers: &HeaderMap, state: &State) -> Result<User, Box<Response>> {
        let user = User::of(headers, &state.auth).map_err(|message| Box::new(refused(message)))?;
        match state.limits.user(user.0) {
            Some(limited) => Err(Box::new(limited)),
            None => Ok(user),
        }
    }

    /// The 429 for a request that needs no token but counts against its
    /// user's rate when it carries a valid one (an event stream), if that
    /// user is over it. A missing or invalid token is no refusal here,
    /// only no user.
    pub(crate) fn over_rate(headers: &HeaderMap, state: &State) -> Option<Response> {
        if !state.limits.limits_user() || !headers.contains_key(AUTHORIZATION) {
            return None;
        }
        let user = User::of(headers, &state.auth).ok()?;
        state.limits.user(user.0)
    }

    /// The buyer `headers` name, verified with `auth`, or why not (for
    /// [`refused`]). The extractor and the reservation's fast path
    /// (`api::Hot`) both come here.
    pub(crate) fn of(headers: &HeaderMap, auth: &Auth) -> Result<User, String> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let user = match (values.next().map(HeaderValue::to_str), values.next()) {
            (_, Some(_)) => Err("a request carries one Authorization header, not several".into()),
            (None, None) => Err("an `Authorization: Bearer <token>` header is required".into()),
            (Some(Err(_)), None) => Err("the Authorization header is not text".into()),
            (Some(Ok(value)), None) => match bearer(value) {
                Some(token) => auth.verify(token).map_err(|e| e.to_string()),
                None => Err("the Authorization scheme must be Bearer".into()),
            },
        };
        user.map(User)
    }
}

/// The 401 answer to a request whose token is refused for `message`,
/// counted.
pub(crate) fn refused(message: String) -> Response {
    metrics::count(Protocol::Http, Op::Auth, ApiError::InvalidToken);
    let mut response = api_error(ApiError::InvalidToken, message);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
