//! flashsale-token: the bearer token that names a buyer.
//!
//! A token is a JWT signed with HS256 and a secret shared with the identity
//! provider. Only HS256 is accepted, so a token whose header says `none`,
//! `RS256` or `HS384` is refused before any key is used; a header with
//! `crit` is refused too (no extension is understood). Once the signature
//! holds, the claims are checked in [`claims`]:
//!
//! - `sub` is the user id in its one canonical spelling, a decimal `u64` in
//!   a string: digits only, no leading zero, so `"+7"`, `" 7"` or `"007"`
//!   never alias user 7;
//! - `exp` is required; `exp`, `nbf` and `iat` are whole Unix seconds when
//!   present (a string or a fraction is refused, never skipped); `exp` and
//!   `nbf` are checked against the clock with [`LEEWAY_S`] of skew;
//! - a token may live at most [`Rules::max_lifetime`] (a day by default),
//!   so that a leaked token does not open the door for good;
//! - `iss` and `aud` must match [`Rules`] when it names them, and a token
//!   that names an audience is refused when none is configured.
//!
//! The key and the rules are built once; verifying a token costs one HMAC
//! and two small JSON parses.
//!
//! [`Verifier`] is what the HTTP front checks tokens with; [`Minter`] makes
//! the tokens an identity provider would (the demo mode's `/demo/token`, the
//! load generator's HTTP target, the tests). Both live here so that what is
//! minted and what is accepted cannot drift apart.

pub mod claims;

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(test)]
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
#[cfg(test)]
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

pub use claims::{Rules, DEFAULT_MAX_LIFETIME};

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
    #[error("the token's `sub` must be a decimal user id without leading zeros")]
    BadSubject,
    /// A time claim (named) is not whole Unix seconds.
    #[error("the token's `{0}` must be whole seconds since the epoch")]
    BadTime(&'static str),
    /// `exp` is further from `iat` (or now) than the maximum lifetime.
    #[error("the token is valid for longer than this server accepts")]
    TooLongLived,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted here")]
    WrongIssuer,
    /// `aud` does not name the configured audience, or names one when none
    /// is configured.
    #[error("the token's audience is not accepted here")]
    WrongAudience,
    /// The header has `crit`: extensions this verifier must understand,
    /// and understands none.
    #[error("the token's header lists critical extensions, which are not supported")]
    CriticalExtension,
    /// Anything else: not a JWT, bad base64, bad JSON.
    #[error("the token is malformed")]
    Malformed,
}

/// The claims [`Minter`] signs.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: String,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Checks buyers' tokens against one HS256 secret.
pub struct Verifier {
    key: DecodingKey,
    /// Signature and algorithm only: every claim is checked by [`claims`].
    validation: Validation,
    rules: Rules,
}

impl Verifier {
    /// Verification with the HS256 `secret` and the default [`Rules`].
    pub fn new(secret: &[u8]) -> Self {
        Verifier::with_rules(secret, Rules::new())
    }

    /// Verification with the HS256 `secret` and `rules`.
    pub fn with_rules(secret: &[u8], rules: Rules) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
            rules,
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
        let data = jsonwebtoken::decode::<claims::RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    _ => TokenError::Malformed,
                }
            })?;
        claims::check_header(token)?;
        claims::check(&data.claims, &self.rules, unix_s())
    }
}

/// Signs tokens with one HS256 secret, as an identity provider would.
pub struct Minter {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    /// Signing with the HS256 `secret`; the tokens name no issuer and no
    /// audience.
    pub fn new(secret: &[u8]) -> Self {
        Minter {
            key: EncodingKey::from_secret(secret),
            issuer: None,
            audience: None,
        }
    }

    /// Tokens that carry the issuer and the audience `rules` require, so a
    /// [`Verifier`] with the same rules accepts them.
    #[must_use]
    pub fn for_rules(mut self, rules: &Rules) -> Self {
        self.issuer.clone_from(&rules.issuer);
        self.audience.clone_from(&rules.audience);
        self
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
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
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

    /// Any header and claims, as JSON, with an HMAC-SHA256 signature
    /// whatever the header says: for tests of headers the verifier refuses
    /// (`crit`, `alg: none`, an RSA public key used as the HMAC secret).
    ///
    /// # Errors
    ///
    /// When signing fails.
    pub fn mint_raw(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<String, SignError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::HS256)?;
        Ok(format!("{message}.{signature}"))
    }
}

/// Now, in Unix seconds.
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verify(claims: &Value) -> Result<u64, TokenError> {
        verify_with(Rules::new(), claims)
    }

    fn verify_with(rules: Rules, claims: &Value) -> Result<u64, TokenError> {
        let token = Minter::new(SECRET).mint_claims(claims).unwrap();
        Verifier::with_rules(SECRET, rules).verify(&token)
    }

    /// Claims valid for a minute, for `sub`.
    fn fresh(sub: &str) -> Value {
        let now = unix_s();
        json!({"sub": sub, "iat": now, "exp": now + 60})
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

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
        let old = fresh("1");
        let old = with(old, "exp", json!(unix_s() - LEEWAY_S - 60));
        assert_eq!(verify(&old), Err(TokenError::Expired));
        let no_exp = minter.mint_claims(&json!({"sub": "1"})).unwrap();
        assert_eq!(verifier.verify(&no_exp), Err(TokenError::MissingClaim));
        let mut no_sub = fresh("1");
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(verify(&no_sub), Err(TokenError::MissingClaim));
        assert_eq!(verifier.verify("not.a.jwt"), Err(TokenError::Malformed));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verifier.verify(&long), Err(TokenError::TooLong));
    }

    #[test]
    fn only_the_canonical_spelling_of_a_user_id_is_accepted() {
        assert_eq!(verify(&fresh("7")), Ok(7));
        assert_eq!(verify(&fresh("0")), Ok(0));
        assert_eq!(verify(&fresh(&u64::MAX.to_string())), Ok(u64::MAX));
        for bad in [
            "0001",
            "00",
            "07",
            "",
            "+7",
            "-7",
            " 7",
            "7 ",
            "7a",
            "0x7",
            "7.0",
            "1e3",
            "٧",
            "18446744073709551616",
        ] {
            assert_eq!(verify(&fresh(bad)), Err(TokenError::BadSubject), "{bad:?}");
        }
        for bad in [json!(7), json!(null), json!(true)] {
            let claims = with(fresh("7"), "sub", bad.clone());
            assert_eq!(verify(&claims), Err(TokenError::BadSubject), "{bad}");
        }
        // jsonwebtoken's own pass over the claims stops at a list or an
        // object where it expects a string: refused before the checks here.
        for bad in [json!(["7"]), json!({"id": "7"})] {
            let claims = with(fresh("7"), "sub", bad.clone());
            assert_eq!(verify(&claims), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn time_claims_must_be_whole_seconds() {
        let now = unix_s();
        for claim in ["exp", "nbf", "iat"] {
            for bad in [
                json!(now.to_string()),
                json!("0"),
                json!(null),
                json!(-1),
                json!(now as f64 + 0.5),
                json!(true),
            ] {
                let claims = with(fresh("1"), claim, bad.clone());
                assert_eq!(
                    verify(&claims),
                    Err(TokenError::BadTime(claim)),
                    "{claim}: {bad}"
                );
            }
        }
        // A list stops jsonwebtoken's own pass over `exp` and `nbf` first.
        for claim in ["exp", "nbf", "iat"] {
            let claims = with(fresh("1"), claim, json!([now]));
            let refusal = verify(&claims);
            assert!(
                matches!(refusal, Err(TokenError::Malformed | TokenError::BadTime(_))),
                "{claim}: {refusal:?}"
            );
        }
        // The finding: a string `nbf` far ahead was skipped, not refused.
        let later = with(fresh("1"), "nbf", json!((now + 3600).to_string()));
        assert_eq!(verify(&later), Err(TokenError::BadTime("nbf")));
        let later = with(fresh("1"), "nbf", json!(now + 3600));
        assert_eq!(verify(&later), Err(TokenError::NotYetValid));
        let within_skew = with(fresh("1"), "nbf", json!(now + 1));
        assert_eq!(verify(&within_skew), Ok(1));
        let message = TokenError::BadTime("nbf").to_string();
        assert_eq!(
            message,
            "the token's `nbf` must be whole seconds since the epoch"
        );
    }

    #[test]
    fn a_claim_given_twice_is_malformed() {
        let now = unix_s();
        let twice = format!(r#"{{"sub":"1","sub":"2","exp":{}}}"#, now + 60);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(twice));
        let key = EncodingKey::from_secret(SECRET);
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256);
        let token = format!("{message}.{}", signature.unwrap());
        assert_eq!(
            Verifier::new(SECRET).verify(&token),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn any_crit_header_is_refused() {
        let minter = Minter::new(SECRET);
        let verifier = Verifier::new(SECRET);
        let claims = fresh("1");
        let plain = minter
            .mint_raw(&json!({"alg": "HS256", "typ": "JWT"}), &claims)
            .unwrap();
        assert_eq!(verifier.verify(&plain), Ok(1));
        for crit in [
            json!(["exp"]),
            json!(["b64"]),
            json!([]),
            json!(null),
            json!("x"),
        ] {
            let header = json!({"alg": "HS256", "typ": "JWT", "crit": crit, "b64": true});
            let token = minter.mint_raw(&header, &claims).unwrap();
            assert_eq!(
                verifier.verify(&token),
                Err(TokenError::CriticalExtension),
                "{header}"
            );
        }
        // A forged crit token is a bad signature, as any forgery is.
        let header = json!({"alg": "HS256", "crit": ["x"]});
        let forged = Minter::new(b"not the secret, but long enough!!")
            .mint_raw(&header, &claims)
            .unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn lifetime_is_capped() {
        let now = unix_s();
        let day = DEFAULT_MAX_LIFETIME.as_secs();
        let forever = json!({"sub": "1", "exp": u64::MAX});
        assert_eq!(verify(&forever), Err(TokenError::TooLongLived));
        let forever = with(forever, "iat", json!(now));
        assert_eq!(verify(&forever), Err(TokenError::TooLongLived));
        // exp - iat when iat is present: a day is fine, a day and an hour is
        // not, even with most of it already gone.
        let day_long = json!({"sub": "1", "iat": now, "exp": now + day});
        assert_eq!(verify(&day_long), Ok(1));
        let old = json!({"sub": "1", "iat": now - 3600, "exp": now + day});
        assert_eq!(verify(&old), Err(TokenError::TooLongLived));
        // exp - now without iat, and when iat is ahead of the clock.
        let no_iat = json!({"sub": "1", "exp": now + day});
        assert_eq!(verify(&no_iat), Ok(1));
        let no_iat = json!({"sub": "1", "exp": now + day + 3600});
        assert_eq!(verify(&no_iat), Err(TokenError::TooLongLived));
        let ahead = json!({"sub": "1", "iat": now + day, "exp": now + day + 60});
        assert_eq!(verify(&ahead), Err(TokenError::TooLongLived));
        // The cap is configurable.
        let short = Rules::new().max_lifetime(Duration::from_secs(600));
        assert_eq!(verify_with(short.clone(), &fresh("1")), Ok(1));
        let hour = json!({"sub": "1", "iat": now, "exp": now + 3600});
        assert_eq!(verify_with(short, &hour), Err(TokenError::TooLongLived));
        let (token, _) = Minter::new(SECRET).mint(1, day * 2).unwrap();
        let verifier = Verifier::new(SECRET);
        assert_eq!(verifier.verify(&token), Err(TokenError::TooLongLived));
    }

    #[test]
    fn issuer_and_audience_are_pinned_when_configured() {
        let rules = Rules::new()
            .issuer(Some("https://id.example".into()))
            .audience(Some("flashsale".into()));
        let good = with(fresh("1"), "iss", json!("https://id.example"));
        let good = with(good, "aud", json!("flashsale"));
        assert_eq!(verify_with(rules.clone(), &good), Ok(1));
        let among = with(good.clone(), "aud", json!(["shop", "flashsale"]));
        assert_eq!(verify_with(rules.clone(), &among), Ok(1));
        for (claim, bad, error) in [
            (
                "iss",
                json!("https://evil.example"),
                TokenError::WrongIssuer,
            ),
            (
                "iss",
                json!(["https://id.example"]),
                TokenError::WrongIssuer,
            ),
            ("iss", json!(null), TokenError::WrongIssuer),
            ("aud", json!("shop"), TokenError::WrongAudience),
            ("aud", json!(["shop"]), TokenError::WrongAudience),
            ("aud", json!([]), TokenError::WrongAudience),
            ("aud", json!(null), TokenError::WrongAudience),
        ] {
            let claims = with(good.clone(), claim, bad.clone());
            assert_eq!(
                verify_with(rules.clone(), &claims),
                Err(error),
                "{claim}: {bad}"
            );
        }
        for claim in ["iss", "aud"] {
            let mut missing = good.clone();
            missing.as_object_mut().unwrap().remove(claim);
            assert!(verify_with(rules.clone(), &missing).is_err(), "{claim}");
        }
        // Unpinned: any issuer, and no audience at all.
        assert_eq!(verify(&with(fresh("1"), "iss", json!("anyone"))), Ok(1));
        let aimed = with(fresh("1"), "aud", json!("flashsale"));
        assert_eq!(verify(&aimed), Err(TokenError::WrongAudience));
        // What a minter for the rules signs, a verifier with them accepts.
        let (token, _) = Minter::new(SECRET).for_rules(&rules).mint(9, 60).unwrap();
        assert_eq!(Verifier::with_rules(SECRET, rules).verify(&token), Ok(9));
    }

    #[test]
    fn refusals_do_not_echo_the_token_or_the_rules() {
        let errors = [
            TokenError::BadSubject,
            TokenError::BadTime("iat"),
            TokenError::TooLongLived,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::CriticalExtension,
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with("the token"), "{message}");
            assert!(!message.contains("example") && !message.contains("flashsale"));
        }
    }
}
