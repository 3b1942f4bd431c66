//! A keep-alive connection across the front's hand-backs: between two
//! requests the front drops its hyper connection and starts a fresh one
//! when the next request arrives. Byte-level, over the real binary: what
//! a client sends in pieces, pipelined, or after a pause must be answered
//! in order and in full, and a connection quiet past the header timeout
//! is still closed.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use flashsale_tests::ServerProcess;

const FLAGS: &[&str] = &["--sale", "s:10", "--demo", "--http-header-timeout", "2s"];
/// The longest wait for any one answer, on a slow machine.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
const OK: &[u8] = b"{\"status\":\"ok\"}";

/// A fresh server (and its data directory), and a connection to its HTTP
/// front.
fn started() -> anyhow::Result<(tempfile::TempDir, ServerProcess, TcpStream)> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(&dir.path().join("data"), FLAGS)?;
    let s = TcpStream::connect(server.http_addr())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok((dir, server, s))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// One read: `Some(bytes)` (none at the end of the stream), or `None`
/// when nothing came within the socket's read timeout.
fn read_some<'a>(s: &mut TcpStream, buf: &'a mut [u8]) -> std::io::Result<Option<&'a [u8]>> {
    match s.read(buf) {
        Ok(k) => Ok(Some(&buf[..k])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads until `received` holds `n` copies of `needle`; fails on a close
/// or after [`ANSWER_TIMEOUT`].
fn read_until(
    s: &mut TcpStream,
    received: &mut Vec<u8>,
    needle: &[u8],
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut buf = [0u8; 4096];
    while count(received, needle) < n {
        ensure!(
            Instant::now() < deadline,
            "no full answer in time: {:?}",
            String::from_utf8_lossy(received)
        );
        match read_some(s, &mut buf)? {
            Some([]) => bail!("closed after {:?}", String::from_utf8_lossy(received)),
            Some(bytes) => received.extend_from_slice(bytes),
            None => {}
        }
    }
    Ok(())
}

#[test]
fn requests_after_pauses_in_pieces_and_pipelined_are_all_answered() -> anyhow::Result<()> {
    let (_dir, server, mut s) = started()?;
    let mut got = Vec::new();
    // One at a time, with pauses: each finds the connection between requests.
    for i in 1..=3 {
        s.write_all(HEALTH)?;
        read_until(&mut s, &mut got, OK, i)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    // A head in pieces: the first piece must not end the connection.
    s.write_all(b"GET /heal")?;
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"thz HTTP/1.1\r\nHost: t\r\n")?;
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"\r\n")?;
    read_until(&mut s, &mut got, OK, 4)?;
    // Two whole heads and a third in part, then the rest of the third.
    let mut burst = [HEALTH, HEALTH].concat();
    burst.extend_from_slice(b"GET /healthz HT");
    s.write_all(&burst)?;
    read_until(&mut s, &mut got, OK, 6)?;
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"TP/1.1\r\nHost: t\r\n\r\n")?;
    read_until(&mut s, &mut got, OK, 7)?;
    // A request with a body, then one without, on the same connection.
    let body = b"{\"user\": 7}";
    let post = format!(
        "POST /demo/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(post.as_bytes())?;
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(body)?;
    read_until(&mut s, &mut got, b"\"token\"", 1)?;
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(HEALTH)?;
    read_until(&mut s, &mut got, OK, 8)?;
    ensure!(
        count(&got, b"HTTP/1.1 200 OK\r\n") == 9,
        "answers: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(s);
    server.stop()
}

#[test]
fn a_connection_quiet_past_the_header_timeout_is_closed() -> anyhow::Result<()> {
    let (_dir, server, mut s) = started()?;
    let mut got = Vec::new();
    s.write_all(HEALTH)?;
    read_until(&mut s, &mut got, OK, 1)?;
    // Quiet between requests: closed once the 2 s header timeout passes.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut buf = [0u8; 64];
    loop {
        ensure!(
            Instant::now() < deadline,
            "still open long past the header timeout"
        );
        match read_some(&mut s, &mut buf) {
            Ok(Some([])) => break,
            Ok(Some(bytes)) => bail!("unasked bytes: {:?}", String::from_utf8_lossy(bytes)),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).context("reading a quiet connection"),
        }
    }
    server.stop()
}
