//! The operator's API from the tests: the key the test servers are started
//! with, and one call per admin route over a fresh connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http_client::{http, HttpReply};
use crate::poll::poll_async;
use crate::process::{path_str, ServerProcess};
use crate::token::secret_file;

/// The operator key of the test servers: 32 bytes and more.
pub const ADMIN_KEY: &str = "an operator key of at least 32 bytes, for tests";

/// Writes [`ADMIN_KEY`] to a file in `dir`, for `--admin-key-file`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn admin_key_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("admin-key");
    std::fs::write(&path, format!("{ADMIN_KEY}\n"))?;
    Ok(path)
}

/// Starts a server with its HTTP front (verifying buyers with the test
/// secret, or in demo mode when `args` has `--demo`, which signs with its
/// own) and its admin API, both on `127.0.0.1:0`, data in `dir/data`, then
/// `args`.
///
/// # Errors
///
/// When a file cannot be written or the server does not start.
pub fn start_with_admin(dir: &Path, args: &[&str]) -> anyhow::Result<ServerProcess> {
    let secret = secret_file(dir)?;
    let key = admin_key_file(dir)?;
    let mut all = vec![
        "--admin",
        "127.0.0.1:0",
        "--admin-key-file",
        path_str(&key)?,
    ];
    if !args.contains(&"--demo") {
        all.extend(["--jwt-secret-file", path_str(&secret)?]);
    }
    all.extend_from_slice(args);
    ServerProcess::start_http(&dir.join("data"), &all)
}

/// The admin API of one server.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    /// Its address.
    pub addr: SocketAddr,
}

impl Admin {
    /// The admin API of `server` (started with `--admin`).
    pub fn of(server: &ServerProcess) -> Admin {
        Admin {
            addr: server.admin_addr(),
        }
    }

    /// `method path` with the operator's key and a JSON `body`.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn call(&self, method: &str, path: &str, body: &str) -> anyhow::Result<HttpReply> {
        let bearer = format!("Bearer {ADMIN_KEY}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ];
        http(self.addr, method, path, &headers, body).await
    }

    /// `POST /admin/sales` with `body`.
    ///
    /// # Errors
    ///
    /// As [`Admin::call`].
    pub async fn create(&self, body: &str) -> anyhow::Result<HttpReply> {
        self.call("POST", "/admin/sales", body).await
    }

    /// `GET /admin/sales`.
    ///
    /// # Errors
    ///
    /// As [`Admin::call`].
    pub async fn list(&self) -> anyhow::Result<HttpReply> {
        self.call("GET", "/admin/sales", "").await
    }

    /// `POST /admin/sales/{sale}/{action}` with `body`.
    ///
    /// # Errors
    ///
    /// As [`Admin::call`].
    pub async fn act(&self, sale: &str, action: &str, body: &str) -> anyhow::Result<HttpReply> {
        self.call("POST", &format!("/admin/sales/{sale}/{action}"), body)
            .await
    }

    /// Confirms `user`'s hold in `sale` with `payment_ref`.
    ///
    /// # Errors
    ///
    /// As [`Admin::call`].
    pub async fn confirm(
        &self,
        sale: &str,
        user: u64,
        payment_ref: &str,
    ) -> anyhow::Result<HttpReply> {
        let body = serde_json::json!({"user": user, "payment_ref": payment_ref}).to_string();
        self.act(sale, "confirm", &body).await
    }

    /// The sale `sale` as `GET /admin/sales` lists it.
    ///
    /// # Errors
    ///
    /// When the list cannot be read or has no such sale.
    pub async fn sale(&self, sale: &str) -> anyhow::Result<serde_json::Value> {
        let list = self.list().await?;
        anyhow::ensure!(list.status == 200, "GET /admin/sales: {}", list.text());
        list.json()
            .as_array()
            .and_then(|sales| sales.iter().find(|s| s["sale"] == sale).cloned())
            .ok_or_else(|| anyhow::anyhow!("no sale {sale:?} in {}", list.text()))
    }

    /// Waits until `sale` lists `remaining` tickets on sale, polling every
    /// 100 ms for at most `tries` times, and returns the sale as
    /// [`Admin::sale`] gives it.
    ///
    /// # Errors
    ///
    /// As [`Admin::sale`], or when the count is never reached.
    pub async fn until_remaining(
        &self,
        sale: &str,
        remaining: u32,
        tries: u32,
    ) -> anyhow::Result<serde_json::Value> {
        poll_async(tries, Duration::from_millis(100), || async move {
            let listed = self.sale(sale).await?;
            Ok((listed["remaining"] == remaining).then_some(listed))
        })
        .await?
        .ok_or_else(|| anyhow::anyhow!("{sale} never had {remaining} tickets on sale"))
    }
}
