//! What a signed token must say: the [`Rules`] a deployment sets, and the
//! checks of the claims and the header once the signature holds.
//!
//! Every claim the verifier reads is checked by hand here rather than by
//! jsonwebtoken's `Validation`, which skips a time claim it cannot parse (a
//! string `nbf` would be ignored, and the token accepted) and ignores header
//! parameters it does not know (`crit`). A claim of the wrong type is a
//! refusal, never a claim left unchecked.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{TokenError, LEEWAY_S};

/// Default longest lifetime of a token: a day.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What a token must say besides its signature, beyond the fixed rules of
/// the [crate docs](crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rules {
    /// The `iss` every token must carry, exactly; `None` leaves `iss`
    /// unchecked.
    pub issuer: Option<String>,
    /// The `aud` every token must name (a string, or one of an array of
    /// strings). `None` refuses any token that carries `aud`: a token meant
    /// for a named audience is not meant for an unnamed server.
    pub audience: Option<String>,
    /// Longest a token may be valid: `exp` minus `iat` (minus now when `iat`
    /// is absent or ahead of the clock), with [`LEEWAY_S`] of slack.
    pub max_lifetime: Duration,
}

impl Rules {
    /// No issuer or audience, and [`DEFAULT_MAX_LIFETIME`].
    pub const fn new() -> Self {
        Rules {
            issuer: None,
            audience: None,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }

    /// Sets [`Rules::issuer`].
    #[must_use]
    pub fn issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Sets [`Rules::audience`].
    #[must_use]
    pub fn audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Sets [`Rules::max_lifetime`].
    #[must_use]
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new()
    }
}

/// The claims the verifier reads, each kept as the JSON it was: `Some` as
/// soon as the name is present, even as `null`. A name given twice is a
/// parse error.
#[derive(Deserialize)]
pub(crate) struct RawClaims {
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<Value>,
}

/// The header parameters the verifier reads beyond `alg`.
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Refuses a header with `crit`, whatever it lists: this verifier
/// understands no extension, and RFC 7515 (4.1.11) says a recipient must
/// then refuse the token.
pub(crate) fn check_header(token: &str) -> Result<(), TokenError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match header.crit {
        Some(_) => Err(TokenError::CriticalExtension),
        None => Ok(()),
    }
}

/// The user the claims name at `now` (Unix seconds), under `rules`.
pub(crate) fn check(claims: &RawClaims, rules: &Rules, now: u64) -> Result<u64, TokenError> {
    let exp = seconds(claims.exp.as_ref(), "exp")?.ok_or(TokenError::MissingClaim)?;
    let nbf = seconds(claims.nbf.as_ref(), "nbf")?;
    let iat = seconds(claims.iat.as_ref(), "iat")?;
    let sub = match &claims.sub {
        None => return Err(TokenError::MissingClaim),
        Some(Value::String(sub)) => parse_user(sub).ok_or(TokenError::BadSubject)?,
        Some(_) => return Err(TokenError::BadSubject),
    };
    if exp.saturating_add(LEEWAY_S) < now {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_S)) {
        return Err(TokenError::NotYetValid);
    }
    // From issue to expiry; a token issued "later" than now is valid from
    // now, so its lifetime counts from now.
    let start = iat.map_or(now, |iat| iat.min(now));
    let longest = rules.max_lifetime.as_secs().saturating_add(LEEWAY_S);
    if exp.saturating_sub(start) > longest {
        return Err(TokenError::TooLongLived);
    }
    if let Some(issuer) = &rules.issuer {
        if claims.iss.as_ref().and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
    }
    if !audience_matches(claims.aud.as_ref(), rules.audience.as_deref()) {
        return Err(TokenError::WrongAudience);
    }
    Ok(sub)
}

/// A time claim: absent, or whole Unix seconds. A string, a fraction, a
/// negative number or `null` is refused, never skipped.
fn seconds(value: Option<&Value>, claim: &'static str) -> Result<Option<u64>, TokenError> {
    match value {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(TokenError::BadTime(claim)),
    }
}

fn audience_matches(aud: Option<&Value>, wanted: Option<&str>) -> bool {
    match (aud, wanted) {
        (None, None) => true,
        (Some(_), None) | (None, Some(_)) => false,
        (Some(Value::String(aud)), Some(wanted)) => aud == wanted,
        (Some(Value::Array(auds)), Some(wanted)) => auds.iter().any(|a| a.as_str() == Some(wanted)),
        (Some(_), Some(_)) => false,
    }
}

/// A user id in its one canonical spelling: decimal digits, no sign, no
/// leading zero (but `"0"` itself), at most `u64::MAX`. Any other spelling
/// would alias the user it parses to (`"0001"` is not user 1).
pub(crate) fn parse_user(sub: &str) -> Option<u64> {
    let canonical = match sub.as_bytes() {
        [] => false,
        [b'0', _, ..] => false,
        digits => digits.iter().all(u8::is_ascii_digit),
    };
    canonical.then(|| sub.parse().ok()).flatten()
}
