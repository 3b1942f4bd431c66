//! A server that runs out of file descriptors degrades and recovers: it
//! stays up, the connections it has keep being served, new ones wait in the
//! backlog (they are not refused, and the accept loop does not spin or
//! flood the log), and once descriptors free up, the waiting connection and
//! new ones are served.
//!
//! The server runs under `prlimit --nofile` (util-linux) with a limit small
//! enough to reach with a few dozen connections. Raising the limit at
//! startup is not this test's business (`file_limit` tests it); the
//! clamping of each front's limit to what the process may open is: native
//! connections alone stop at their clamped limit, so the server runs out
//! only when HTTP connections take the rest.

use std::time::{Duration, Instant};

use anyhow::ensure;
use flashsale_protocol::{
    handshake, ErrorCode, Request, ReserveOutcome, Response, ResponseFrame, ServerFrame,
};
use flashsale_tests::poll::poll;
use flashsale_tests::{runtime, HttpConn, RawConn, ServerProcess};
use tokio::runtime::Runtime;

/// The server's open-file limit: a few dozen of its own files (listeners,
/// runtimes, the log) and the rest for connections.
const NOFILE: u64 = 96;

/// Sends `request` as `id` on `conn` and returns the answer.
fn ask(conn: &mut RawConn, id: u64, request: Request) -> anyhow::Result<Response> {
    conn.request(id, request)?;
    match conn.recv()? {
        Some(ServerFrame::Response(ResponseFrame { id: got, response })) if got == id => {
            Ok(response)
        }
        other => anyhow::bail!("expected the answer to {id}, got {other:?}"),
    }
}

/// `/healthz` over `conn`, an HTTP connection kept alive on `rt`.
fn healthz(rt: &Runtime, conn: &mut HttpConn) -> anyhow::Result<u16> {
    rt.block_on(async { Ok(conn.send("GET", "/healthz", &[], "").await?.status) })
}

#[test]
fn running_out_of_file_descriptors_degrades_and_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::start_with_open_files(
        &dir.path().join("data"),
        NOFILE,
        &[
            "--sale",
            "s:1000",
            "--http",
            "127.0.0.1:0",
            "--demo",
            // The kept-alive HTTP connection must outlive the test.
            "--http-header-timeout",
            "10m",
            "--http-idle-timeout",
            "10m",
        ],
    )?;
    let rt = runtime();
    let addr = server.addr();
    let web = server.http_addr();
    let mut http = rt.block_on(HttpConn::connect(web))?;
    ensure!(healthz(&rt, &mut http)? == 200, "healthy at first");

    // Native connections up to their limit, then HTTP ones, until the
    // server holds as many files as it may.
    let mut held = Vec::new();
    let mut kept_alive = Vec::new();
    for _ in 0..NOFILE {
        if server.open_files_below(NOFILE)? >= NOFILE {
            break;
        }
        let mut conn = RawConn::connect(addr)?;
        match conn.hello(None)? {
            ServerFrame::Welcome(_) => held.push(conn),
            ServerFrame::Error(e) if e.code == ErrorCode::OVERLOADED => break,
            other => anyhow::bail!("a Hello was answered {other:?}"),
        }
    }
    for _ in 0..NOFILE {
        if server.open_files_below(NOFILE)? >= NOFILE {
            break;
        }
        let mut conn = rt.block_on(HttpConn::connect(web))?;
        ensure!(healthz(&rt, &mut conn)? == 200, "healthy");
        kept_alive.push(conn);
    }
    ensure!(
        server.open_files_below(NOFILE)? >= NOFILE,
        "the server did not run out of descriptors"
    );
    ensure!(held.len() >= 8, "only {} connections fit", held.len());

    // One more connects (the kernel completes it) but cannot be accepted:
    // its Hello waits, unanswered, in the backlog.
    let exhausted = Instant::now();
    let mut waiting = RawConn::connect(addr)?;
    waiting.send(&handshake::hello(None))?;
    waiting.set_read_timeout(Duration::from_secs(1))?;
    let answer = waiting.recv();
    ensure!(
        answer.is_err(),
        "a Hello was answered with no descriptor to accept it: {answer:?} ({} files open)",
        server.open_files_below(NOFILE)?
    );
    let logged = poll(100, Duration::from_millis(100), || {
        Ok(server.log().contains("accept failed").then_some(()))
    })?;
    ensure!(logged.is_some(), "the failing accept is logged");

    // Meanwhile the server is up and serves what it has.
    ensure!(server.is_running(), "the server stays up");
    for (i, conn) in held.iter_mut().enumerate() {
        let id = i as u64;
        ensure!(
            ask(conn, id, Request::Ping)? == Response::Pong,
            "ping on {i}"
        );
    }
    let bought = ask(
        &mut held[0],
        1_000,
        Request::Reserve {
            sale: "s".into(),
            user: 7,
        },
    )?;
    ensure!(
        matches!(bought, Response::Reserve(ReserveOutcome::Won { .. })),
        "a reservation while out of descriptors: {bought:?}"
    );
    ensure!(
        healthz(&rt, &mut http)? == 200,
        "healthz on a kept-alive connection"
    );

    // The failing accept backs off and is logged at a bounded rate: the
    // first failure, then at most one line per 10 s.
    let lines = server.log().matches("accept failed").count() as u64;
    let allowed = 2 + 2 * (exhausted.elapsed().as_secs() / 10 + 1);
    ensure!(lines <= allowed, "{lines} lines about failed accepts");

    // Descriptors free up: the waiting connection is served, and new ones.
    held.truncate(held.len() / 2);
    waiting.set_read_timeout(Duration::from_secs(10))?;
    match waiting.recv()? {
        Some(ServerFrame::Welcome(_)) => {}
        other => anyhow::bail!("the waiting Hello was answered {other:?}"),
    }
    ensure!(
        ask(&mut waiting, 1, Request::Ping)? == Response::Pong,
        "the waiting connection is served"
    );
    let mut fresh = RawConn::welcomed(addr, None)?;
    ensure!(ask(&mut fresh, 1, Request::Ping)? == Response::Pong);
    let status = rt.block_on(async {
        let mut conn = HttpConn::connect(web).await?;
        anyhow::Ok(conn.send("GET", "/healthz", &[], "").await?.status)
    })?;
    ensure!(status == 200, "healthz on a new connection: {status}");
    ensure!(
        server.log().contains("accepting connections again"),
        "the recovery is logged"
    );
    drop((held, kept_alive, waiting, fresh, http));
    server.stop()?;
    Ok(())
}
