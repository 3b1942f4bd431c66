//! A small HTTP/1.1 client for the HTTP front: one request on a fresh
//! connection ([`http`]), many on one keep-alive connection ([`HttpConn`]),
//! and Server-Sent Events ([`EventStream`]).
//!
//! Built on hyper's low-level connection rather than a full client so that
//! a test controls exactly which connection a request goes out on (keep-alive,
//! connection limits), and every exchange is bounded by [`HTTP_TIMEOUT`].
//! Hand-written bytes, for requests no client would send, stay in the tests
//! that need them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

/// An answer from the HTTP front.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl HttpReply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The status and the JSON body, to compare with an expected answer
    /// in one assertion.
    pub fn status_json(&self) -> (u16, serde_json::Value) {
        (self.status, self.json())
    }
}

/// How long one HTTP exchange may take in a test.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: SocketAddr,
}

impl HttpConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let stream = tokio::time::timeout(HTTP_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        HttpConn::over(stream, addr).await
    }

    /// Connects to `addr` from the address `local` (port chosen by the
    /// system): on loopback, any `127.x.y.z` stands for another client.
    pub async fn connect_from(
        addr: SocketAddr,
        local: std::net::IpAddr,
    ) -> anyhow::Result<HttpConn> {
        let socket = match local {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = tokio::time::timeout(HTTP_TIMEOUT, socket.connect(addr))
            .await
            .context("connect timed out")??;
        HttpConn::over(stream, addr).await
    }

    async fn over(stream: tokio::net::TcpStream, addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(HttpConn { sender, addr })
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<HttpReply> {
        let response = tokio::time::timeout(HTTP_TIMEOUT, async {
            self.sender.ready().await?;
            let request = build_request(self.addr, method, path, headers, body)?;
            anyhow::Ok(self.sender.send_request(request).await?)
        })
        .await
        .context("HTTP request timed out")??;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(HTTP_TIMEOUT, http_body_util::BodyExt::collect(body))
            .await
            .context("HTTP body timed out")??
            .to_bytes();
        Ok(HttpReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

fn build_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<hyper::Request<http_body_util::Full<bytes::Bytes>>> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    Ok(builder.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_owned(),
    )))?)
}

/// One request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpReply> {
    HttpConn::connect(addr)
        .await?
        .send(method, path, headers, body)
        .await
}

/// An open Server-Sent Events stream.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: String,
    /// The answer's status and headers.
    pub status: u16,
    /// The answer's headers.
    pub headers: hyper::HeaderMap,
}

impl EventStream {
    /// Opens `path` on `addr` as an event stream.
    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<EventStream> {
        let conn = HttpConn::connect(addr).await?;
        let mut sender = conn.sender;
        sender.ready().await?;
        let request = build_request(addr, "GET", path, &[("accept", "text/event-stream")], "")?;
        let response = tokio::time::timeout(HTTP_TIMEOUT, sender.send_request(request))
            .await
            .context("no answer to the event stream request")??;
        let (parts, body) = response.into_parts();
        Ok(EventStream {
            body,
            buffer: String::new(),
            status: parts.status.as_u16(),
            headers: parts.headers,
        })
    }

    /// The `data` of the next event (comments skipped); `None` when the
    /// stream ends.
    pub async fn next_data(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return Ok(Some(data.join("\n")));
                }
            }
            let frame =
                tokio::time::timeout(HTTP_TIMEOUT, http_body_util::BodyExt::frame(&mut self.body))
                    .await
                    .context("no event in time")?;
            match frame {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buffer.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
    }
}

/// One request on a fresh connection with `authorization` as the only
/// header and no body: how a signed-in buyer calls the API.
pub async fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: &str,
) -> anyhow::Result<HttpReply> {
    http(addr, method, path, &[("authorization", authorization)], "").await
}

/// `POST /api/sales/{sale}/reserve` with `authorization`.
pub async fn reserve_as(
    addr: SocketAddr,
    sale: &str,
    authorization: &str,
) -> anyhow::Result<HttpReply> {
    let path = format!("/api/sales/{sale}/reserve");
    http_as(addr, "POST", &path, authorization).await
}

/// `GET /api/sales/{sale}/me` with `authorization`.
pub async fn me_as(addr: SocketAddr, sale: &str, authorization: &str) -> anyhow::Result<HttpReply> {
    http_as(addr, "GET", &format!("/api/sales/{sale}/me"), authorization).await
}

/// `GET path` on a fresh connection, no headers.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpReply> {
    http(addr, "GET", path, &[], "").await
}

/// The value of the unlabelled metric `name` in a Prometheus text
/// exposition (`None` when absent).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
