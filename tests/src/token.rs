//! Bearer tokens for the HTTP tests, minted the way the identity provider
//! mints them: with [`flashsale_token::Minter`], the same code the demo
//! mode's `/demo/token` uses, so a token the tests call valid is one the
//! server was built to accept.
//!
//! Tests of what the server refuses (another algorithm in the header, a bad
//! signature) build those tokens by hand, next to the cases they check;
//! claims that are merely odd (a `sub` of `"+5"`, no `exp`) are signed here
//! with [`signed_claims`].

use std::path::{Path, PathBuf};

use crate::process::{path_str, ServerProcess};

/// The HS256 secret the test servers verify with.
pub const SECRET: &str = "a test secret of at least thirty-two bytes";

/// How long a test token stays valid, in seconds: far longer than any test.
pub const TTL_S: u64 = 600;

/// Writes [`SECRET`] to a file in `dir`, for `--jwt-secret-file`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn secret_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("jwt-secret");
    std::fs::write(&path, format!("{SECRET}\n"))?;
    Ok(path)
}

/// A valid token for `user`, signed with [`SECRET`], expiring in
/// [`TTL_S`] seconds.
///
/// # Panics
///
/// If signing fails, which it does not with an HMAC key.
pub fn token(user: u64) -> String {
    let (token, _exp) = flashsale_token::Minter::new(SECRET.as_bytes())
        .mint(user, TTL_S)
        .expect("HS256 signing works");
    token
}

/// `Bearer <token>` for `user`: an `Authorization` header's value.
pub fn bearer(user: u64) -> String {
    format!("Bearer {}", token(user))
}

/// Any `claims`, signed with HS256 and `secret`.
///
/// # Panics
///
/// If signing fails, which it does not with an HMAC key.
pub fn signed_claims(secret: &str, claims: &serde_json::Value) -> String {
    flashsale_token::Minter::new(secret.as_bytes())
        .mint_claims(claims)
        .expect("the claims serialize")
}

/// Starts a server whose HTTP front verifies with [`SECRET`]: the secret
/// file in `dir`, the data in `dir/data`, then `args`.
///
/// # Errors
///
/// When the secret cannot be written or the server does not start.
pub fn start_signed(dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
    let secret = secret_file(dir)?;
    let mut all = vec!["--jwt-secret-file", path_str(&secret)?];
    all.extend_from_slice(args);
    ServerProcess::start_http(&dir.join("data"), &all)
}
