//! The gateway passes the core's `Busy` through as the front inside the
//! server does: a `Lookup` answered `Response::Busy` becomes 503
//! `{"outcome":"busy"}` with `Retry-After`, never a 502 "core unavailable"
//! (the server's test, `server/tests/busy.rs`, checks the same answer from
//! its own front).
//!
//! The core here is a stand-in speaking the real codec that answers every
//! `Lookup` with `Busy`, so the test needs no way to hold a real ticket on
//! its way to disk.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use flashsale_gateway::{Gateway, GatewayConfig};
use flashsale_http::HttpConfig;
use flashsale_protocol::handshake::{accept, check_hello};
use flashsale_protocol::{
    ClientFrame, Request, RequestFrame, Response, ResponseFrame, ServerCodec, ServerFrame,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const SECRET: &[u8] = b"the gateway busy test's secret, 32+ bytes";

/// Serves native connections on a thread of its own: `Welcome`, then
/// `Busy` for every `Lookup` and `Pong` for anything else.
fn busy_core() -> SocketAddr {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("a listener");
    let addr = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        runtime.block_on(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, ServerCodec::default());
                    let welcomed = accept(&mut framed, 64, |hello| check_hello(hello, None));
                    if welcomed.await.is_err() {
                        return;
                    }
                    while let Some(Ok(ClientFrame::Request(RequestFrame { id, request }))) =
                        framed.next().await
                    {
                        let response = match request {
                            Request::Lookup { .. } => Response::Busy { retry_after_ms: 10 },
                            _ => Response::Pong,
                        };
                        let frame = ServerFrame::Response(ResponseFrame { id, response });
                        if framed.send(frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    addr
}

/// One HTTP/1.1 request on a fresh connection; the whole answer as text.
fn get(addr: SocketAddr, path: &str, token: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
    .expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    answer
}

#[test]
fn a_busy_lookup_is_503_busy_through_the_gateway() {
    let core = busy_core();
    let http = HttpConfig::new("127.0.0.1:0".parse().expect("an address")).jwt_secret(SECRET);
    let gateway = Gateway::start(GatewayConfig::new(core.to_string(), http)).expect("starts");
    let (token, _) = flashsale_token::Minter::new(SECRET)
        .mint(7, 60)
        .expect("a token");

    let answer = get(gateway.local_addr(), "/api/sales/gig/me", &token);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    assert_eq!(body, r#"{"outcome":"busy"}"#);
    gateway.shutdown();
}
