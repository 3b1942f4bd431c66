//! Who is buying: the bearer token of every buying request.
//!
//! A token is a JWT signed with HS256 and the server's secret. Its `sub` is
//! the user id (a decimal `u64` in a string) and `exp` is required. Nothing
//! else names the user: not the body, the query, a cookie or another
//! header. Only HS256 is accepted, so a token whose header says `none`,
//! `RS256` or `HS384` is refused before any key is used. The key and the
//! validation rules are built once; verifying a token costs one HMAC and a
//! small JSON parse.
//!
//! The scheme name is case-insensitive (`Bearer`, `bearer`), as HTTP's
//! authentication schemes are. A request with more than one
//! `Authorization` header is refused whatever they hold: a proxy in front
//! and this server could otherwise each read a different one. A token over
//! [`MAX_TOKEN_LEN`] bytes is refused unread; the HTTP front refuses a
//! request head over 16 KiB before any handler runs.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{error_response, AppState};
use crate::metrics::{self, Protocol};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 30;

/// Verifies (and in demo mode, issues) buyers' tokens.
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Serialize)]
struct IssuedClaims {
    sub: String,
    exp: u64,
    iat: u64,
}

impl Auth {
    /// Verification (and signing) with the HS256 `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        Auth {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user a bearer `token` names.
    ///
    /// # Errors
    ///
    /// Why the token is refused, for the 401 body.
    pub fn verify(&self, token: &str) -> Result<u64, &'static str> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("the token is too long");
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidSignature => "the token's signature is wrong",
                    ErrorKind::InvalidAlgorithm => "the token must be signed with HS256",
                    ErrorKind::MissingRequiredClaim(_) => "the token must carry `sub` and `exp`",
                    _ => "the token is malformed",
                }
            })?;
        parse_user(&data.claims.sub).ok_or("the token's `sub` must be a decimal user id")
    }

    /// A token for `user`, valid for `ttl_s` seconds (demo mode only).
    ///
    /// # Errors
    ///
    /// When signing fails (it does not with an HMAC key).
    pub fn issue(&self, user: u64, ttl_s: u64) -> anyhow::Result<(String, u64)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = now + ttl_s;
        let claims = IssuedClaims {
            sub: user.to_string(),
            exp,
            iat: now,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, exp))
    }
}

fn parse_user(sub: &str) -> Option<u64> {
    // `u64::from_str` takes a leading `+`; a user id is digits only.
    if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    sub.parse().ok()
}

/// The authenticated buyer of a request.
#[derive(Debug, Clone, Copy)]
pub struct User(pub u64);

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let result = match (values.next().map(HeaderValue::to_str), values.next()) {
            (_, Some(_)) => Err("a request carries one Authorization header, not several"),
            (None, None) => Err("an `Authorization: Bearer <token>` header is required"),
            (Some(Err(_)), None) => Err("the Authorization header is not text"),
            (Some(Ok(value)), None) => match bearer(value) {
                Some(token) => state.auth.verify(token),
                None => Err("the Authorization scheme must be Bearer"),
            },
        };
        result.map(User).map_err(|message| {
            metrics::add_outcomes(Protocol::Http, "auth", "invalid_token", 1);
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, "invalid_token", message).into_response();
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        })
    }
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
    fn issued_tokens_verify() {
        let auth = Auth::new(b"0123456789abcdef0123456789abcdef");
        let (token, _) = auth.issue(42, 60).unwrap();
        assert_eq!(auth.verify(&token), Ok(42));
        let other = Auth::new(b"another secret, just as long....");
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn user_ids_are_digits() {
        assert_eq!(parse_user("7"), Some(7));
        for bad in ["", "+7", "-7", " 7", "7a", "18446744073709551616"] {
            assert_eq!(parse_user(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
