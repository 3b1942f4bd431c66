//! Token helpers shared by the HTTP tests: the secret the test servers
//! verify with, and tokens signed with it (or deliberately without it).

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The HS256 secret the test servers are started with.
pub const SECRET: &str = "a test secret of at least thirty-two bytes";

/// Unix time in seconds.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes [`SECRET`] to a file in `dir`, for `--jwt-secret-file`.
pub fn secret_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("jwt-secret");
    std::fs::write(&path, format!("{SECRET}\n"))?;
    Ok(path)
}

/// `claims` signed with `secret` under `alg`'s header.
pub fn token_with(secret: &str, claims: &Value, alg: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing works")
}

/// A valid token for `user`, expiring in ten minutes.
pub fn token(user: u64) -> String {
    token_with(
        SECRET,
        &json!({ "sub": user.to_string(), "exp": now_s() + 600 }),
        Algorithm::HS256,
    )
}
