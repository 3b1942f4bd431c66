//! An event stream on the wire, read byte by byte from a raw socket: one
//! ordinary chunked HTTP/1.1 response, whoever writes which part of it
//! (hyper the head and first event, the connection's task the rest; see
//! `http/src/events/detached.rs`).
//!
//! - every event is one whole chunk, updates included, and the stream ends
//!   with the last chunk when its lifetime is up, the connection kept;
//! - a request sent behind a stream ends it cleanly and is answered on the
//!   same connection;
//! - a client that closes its stream gives its place under
//!   `--http-max-streams` back;
//! - an HTTP/1.0 client, whom hyper answers without chunks, still gets
//!   its stream.
//!
//! Every read is bounded by [`READ_TIMEOUT`]; no assertion is on time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use flashsale_tests::poll::poll_async;
use flashsale_tests::token::{bearer, start_signed};
use flashsale_tests::{reserve_as, runtime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any one read may wait.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw HTTP/1.1 connection and what it has read and not yet consumed.
struct Wire {
    socket: TcpStream,
    buffer: Vec<u8>,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Wire> {
        Ok(Wire {
            socket: TcpStream::connect(addr).await?,
            buffer: Vec::new(),
        })
    }

    async fn get(&mut self, path: &str, version: &str) -> anyhow::Result<()> {
        let request = format!("GET {path} {version}\r\nHost: test\r\n\r\n");
        self.socket.write_all(request.as_bytes()).await?;
        Ok(())
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(READ_TIMEOUT, self.socket.read(&mut chunk))
            .await
            .context("nothing read in time")??;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The bytes up to and including the first `end`.
    async fn until(&mut self, end: &[u8]) -> anyhow::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buffer.windows(end.len()).position(|w| w == end) {
                return Ok(self.buffer.drain(..at + end.len()).collect());
            }
            ensure!(
                self.fill().await?,
                "closed before {:?}",
                String::from_utf8_lossy(end)
            );
        }
    }

    /// A response head: its status and its lowercased header lines.
    async fn head(&mut self) -> anyhow::Result<(u16, Vec<String>)> {
        let head = String::from_utf8(self.until(b"\r\n\r\n").await?)?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        Ok((status, headers))
    }

    /// The next chunk of a chunked body; empty for the last one.
    async fn chunk(&mut self) -> anyhow::Result<Vec<u8>> {
        let size_line = String::from_utf8(self.until(b"\r\n").await?)?;
        let size = usize::from_str_radix(size_line.trim_end(), 16)
            .with_context(|| format!("not a chunk size: {size_line:?}"))?;
        while self.buffer.len() < size + 2 {
            ensure!(self.fill().await?, "closed inside a chunk");
        }
        let data: Vec<u8> = self.buffer.drain(..size).collect();
        ensure!(
            self.buffer.drain(..2).as_slice() == b"\r\n",
            "a chunk not ended by CRLF"
        );
        Ok(data)
    }

    /// The stock of the next event (keep-alive comments skipped); `None`
    /// at the last chunk. Each event must be whole in its chunk.
    async fn event(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            let chunk = String::from_utf8(self.chunk().await?)?;
            if chunk.is_empty() {
                return Ok(None);
            }
            ensure!(
                chunk.ends_with("\n\n"),
                "an event split over chunks: {chunk:?}"
            );
            if let Some(data) = chunk.lines().find_map(|l| l.strip_prefix("data: ")) {
                return Ok(Some(serde_json::from_str(data)?));
            }
        }
    }

    /// Whether the server closed the connection (no byte left to read).
    async fn closed(&mut self) -> anyhow::Result<bool> {
        Ok(self.buffer.is_empty() && !self.fill().await?)
    }
}

fn has(headers: &[String], line: &str) -> bool {
    headers.iter().any(|h| h == line)
}

#[test]
fn a_stream_is_one_chunked_response_and_a_request_behind_it_ends_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(dir.path(), &["--sale", "gig:3"])?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let mut wire = Wire::connect(addr).await?;
        wire.get("/api/sales/gig/events", "HTTP/1.1").await?;
        let (status, headers) = wire.head().await?;
        ensure!(status == 200, "answered {status}");
        ensure!(has(&headers, "transfer-encoding: chunked"), "{headers:?}");
        ensure!(
            has(&headers, "content-type: text/event-stream"),
            "{headers:?}"
        );
        let first = String::from_utf8(wire.chunk().await?)?;
        ensure!(
            first.starts_with("retry: "),
            "no retry hint first: {first:?}"
        );
        ensure!(
            first.contains(r#"data: {"remaining":3,"sold":0,"state":"open"}"#),
            "{first:?}"
        );

        // Updates, written after hyper has let go, each a whole chunk.
        for user in 1..=3 {
            let reply = reserve_as(addr, "gig", &bearer(user)).await?;
            ensure!(reply.status == 201, "user {user}: {reply:?}");
        }
        loop {
            let event = wire.event().await?.context("the stream ended early")?;
            if event["state"] == "sold_out" {
                ensure!(event == json!({ "remaining": 0, "sold": 3, "state": "sold_out" }));
                break;
            }
        }

        // A request behind the stream: the last chunk, then its answer.
        wire.get("/healthz", "HTTP/1.1").await?;
        while let Some(event) = wire.event().await? {
            ensure!(event["state"] == "sold_out", "{event}");
        }
        let (status, headers) = wire.head().await?;
        ensure!(status == 200, "healthz behind a stream answered {status}");
        let length: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .context("no content-length")?;
        while wire.buffer.len() < length {
            ensure!(wire.fill().await?, "closed inside the body");
        }
        let body: Value = serde_json::from_slice(&wire.buffer[..length])?;
        ensure!(body["status"] == "ok", "{body}");
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn a_closed_stream_gives_its_place_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Streams outlive the test: only the client's close can free a place.
    let flags = [
        "--sale",
        "gig:3",
        "--http-max-streams",
        "1",
        "--http-stream-lifetime",
        "10m",
    ];
    let server = start_signed(dir.path(), &flags)?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let mut held = Wire::connect(addr).await?;
        held.get("/api/sales/gig/events", "HTTP/1.1").await?;
        ensure!(held.head().await?.0 == 200);
        held.event().await?.context("no first event")?;
        let mut refused = Wire::connect(addr).await?;
        refused.get("/api/sales/gig/events", "HTTP/1.1").await?;
        let (status, _) = refused.head().await?;
        ensure!(status == 503, "a stream past the bound answered {status}");

        drop(held);
        let again = poll_async(50, Duration::from_millis(100), || async {
            let mut wire = Wire::connect(addr).await?;
            wire.get("/api/sales/gig/events", "HTTP/1.1").await?;
            Ok((wire.head().await?.0 == 200).then_some(()))
        })
        .await?;
        ensure!(again.is_some(), "a closed stream kept its place");
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn a_stream_ends_with_its_lifetime_chunked_or_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = ["--sale", "gig:3", "--http-stream-lifetime", "2s"];
    let server = start_signed(dir.path(), &flags)?;
    let addr = server.http_addr();
    runtime().block_on(async {
        // HTTP/1.1: the last chunk, and the connection stays open.
        let mut chunked = Wire::connect(addr).await?;
        chunked.get("/api/sales/gig/events", "HTTP/1.1").await?;
        ensure!(chunked.head().await?.0 == 200);
        // HTTP/1.0, answered by hyper without chunks: the body ends where
        // the connection does.
        let mut plain = Wire::connect(addr).await?;
        plain.get("/api/sales/gig/events", "HTTP/1.0").await?;
        let (status, headers) = plain.head().await?;
        ensure!(status == 200, "answered {status}");
        if headers.iter().any(|h| h.starts_with("transfer-encoding")) {
            bail!("chunks to an HTTP/1.0 client: {headers:?}");
        }
        let first = String::from_utf8(plain.until(b"\n\n").await?)?;
        ensure!(first.contains(r#""remaining":3"#), "{first:?}");

        while chunked.event().await?.is_some() {}
        chunked.get("/healthz", "HTTP/1.1").await?;
        ensure!(
            chunked.head().await?.0 == 200,
            "the connection after a stream"
        );
        while !plain.closed().await? {
            plain.buffer.clear();
        }
        anyhow::Ok(())
    })?;
    server.stop()
}
