//! flashsale-token: the bearer token that names a buyer.
//!
//! A token is a JWT signed with HS256 and a secret shared with the identity
//! provider. Its `sub` is the user id (a decimal `u64` in a string: digits
//! only, so `+7` or ` 7` never alias user 7) and `exp` is required; `nbf` is
//! checked when present. Only HS256 is accepted, so a token whose header
//! says `none`, `RS256` or `HS384` is refused before any key is used. The
//! key and the validation rules are built once; verifying a token costs one
//! HMAC and a small JSON parse.
//!
//! [`Verifier`] is what the HTTP front checks tokens with; [`Minter`] makes
//! the tokens an identity provider would (the demo mode's `/demo/token`, the
//! load generator's HTTP target, the tests). Both live here so that what is
//! minted and what is accepted cannot drift apart.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Why a token could not be signed.
pub use jsonwebtoken::errors::Error as SignError;

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: u64 = 30;

/// Why a token was refused; [`Display`](std::fmt::Display) says it for
/// people (the 401 body's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is too long")]
    TooLong,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The HMAC does not match.
    #[error("the token's signature is wrong")]
    BadSignature,
    /// The header names another algorithm than HS256.
    #[error("the token must be signed with HS256")]
    WrongAlgorithm,
    /// `sub` or `exp` is missing.
    #[error("the token must carry `sub` and `exp`")]
    MissingClaim,
    /// `sub` is not a canonical decimal user id.
    #[error("the token's `sub` must be a decimal user id")]
    BadSubject,
    /// Anything else: not a JWT, bad base64, bad JSON.
    #[error("the token is malformed")]
    Malformed,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The claims [`Minter`] signs.
#[derive(Serialize)]
struct IssuedClaims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Checks buyers' tokens against one HS256 secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Verification with the HS256 `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The user a bearer `token` names.
    ///
    /// # Errors
    ///
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<u64, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
                    _ => TokenError::Malformed,
                }
            })?;
        parse_user(&data.claims.sub).ok_or(TokenError::BadSubject)
    }
}

/// Signs tokens with one HS256 secret, as an identity provider would.
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    /// Signing with the HS256 `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Minter {
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A token for `user` that expires `ttl_s` seconds from now; returns it
    /// with its `exp` (Unix seconds).
    ///
    /// # Errors
    ///
    /// When signing fails (it does not with an HMAC key; the error is
    /// passed on rather than assumed away).
    pub fn mint(&self, user: u64, ttl_s: u64) -> Result<(String, u64), SignError> {
        let now = unix_s();
        let exp = now.saturating_add(ttl_s);
        let token = self.mint_claims(&IssuedClaims {
            sub: user.to_string(),
            exp,
            iat: now,
        })?;
        Ok((token, exp))
    }

    /// Any claims, signed with HS256: for tests of what the verifier
    /// refuses (a `sub` of `"+7"`, a missing `exp`, ...).
    ///
    /// # Errors
    ///
    /// When `claims` cannot be serialized.
    pub fn mint_claims<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
    }
}

/// Now, in Unix seconds.
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_user(sub: &str) -> Option<u64> {
    // `u64::from_str` takes a leading `+`; a user id is digits only.
    if sub.is_empty() || !sub.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    sub.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_verify_with_the_same_secret_only() {
        let (token, exp) = Minter::new(SECRET).mint(42, 60).unwrap();
        assert!(exp > unix_s());
        assert_eq!(Verifier::new(SECRET).verify(&token), Ok(42));
        let other = Verifier::new(b"another secret, just as long....");
        assert_eq!(other.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_and_missing_claims_are_refused() {
        let minter = Minter::new(SECRET);
        let verifier = Verifier::new(SECRET);
        let old = minter
            .mint_claims(&IssuedClaims {
                sub: "1".into(),
                exp: unix_s() - LEEWAY_S - 60,
                iat: 0,
            })
            .unwrap();
        assert_eq!(verifier.verify(&old), Err(TokenError::Expired));
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let no_exp = minter.mint_claims(&NoExp { sub: "1".into() }).unwrap();
        assert_eq!(verifier.verify(&no_exp), Err(TokenError::MissingClaim));
        assert_eq!(verifier.verify("not.a.jwt"), Err(TokenError::Malformed));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verifier.verify(&long), Err(TokenError::TooLong));
    }

    #[test]
    fn user_ids_are_digits() {
        assert_eq!(parse_user("7"), Some(7));
        for bad in ["", "+7", "-7", " 7", "7a", "18446744073709551616"] {
            assert_eq!(parse_user(bad), None, "{bad:?}");
        }
    }
}
