//! Hostile and broken clients, byte by byte, while a well-behaved client
//! keeps buying on another connection.

use std::time::Duration;

use flashsale_protocol::{codec, handshake};
use flashsale_protocol::{
    ClientFrame, ErrorCode, Hello, Request, ReserveOutcome, Response, ResponseFrame, ServerFrame,
    DEFAULT_MAX_FRAME_LEN, MAX_API_KEY_LEN, MAX_HELLO_LEN, PROTOCOL_VERSION,
};
use flashsale_tests::raw::request_frame;
use flashsale_tests::{client_config, runtime, RawConn, ServerProcess};

fn expect_error(conn: &mut RawConn, code: ErrorCode) {
    match conn.recv() {
        Ok(Some(ServerFrame::Error(e))) => assert_eq!(e.code, code, "got {e}"),
        other => panic!("expected an error frame {}, got {other:?}", code.name()),
    }
    assert!(
        conn.is_closed(),
        "the server closes after a connection error"
    );
}

#[test]
fn garbage_never_harms_other_clients() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "s:100000"])?;
    let addr = server.addr();
    let rt = runtime();

    // A good client buying throughout.
    let good = rt.spawn(async move {
        let client = client_config(addr).connect().await?;
        let mut wins = 0;
        for user in 0..2000u64 {
            match client.reserve("s", user).await? {
                ReserveOutcome::Won { .. } => wins += 1,
                other => anyhow::bail!("good client told {other:?}"),
            }
        }
        anyhow::Ok(wins)
    });

    for round in 0..20 {
        // Text where a length prefix belongs: "GET " is a 1.2 GB length.
        let mut c = RawConn::connect(addr)?;
        c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
        expect_error(&mut c, ErrorCode::FRAME_TOO_LARGE);

        // A 4 GiB length prefix.
        let mut c = RawConn::connect(addr)?;
        c.send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])?;
        expect_error(&mut c, ErrorCode::FRAME_TOO_LARGE);

        // A well-sized frame holding garbage.
        let mut c = RawConn::connect(addr)?;
        c.send_bytes(&[0, 0, 0, 6, 0xde, 0xad, 0xbe, 0xef, round, 0])?;
        expect_error(&mut c, ErrorCode::MALFORMED);

        // A valid Hello, then garbage.
        let mut c = RawConn::connect(addr)?;
        assert!(matches!(c.hello(None)?, ServerFrame::Welcome(_)));
        c.send_bytes(&[0, 0, 0, 4, 0x09, 0, 0, 0])?;
        expect_error(&mut c, ErrorCode::MALFORMED);

        // Wrong protocol version.
        let mut c = RawConn::connect(addr)?;
        c.send(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION + 1,
            api_key: None,
        }))?;
        expect_error(&mut c, ErrorCode::UNSUPPORTED_VERSION);

        // A request before the handshake.
        let mut c = RawConn::connect(addr)?;
        c.request(1, Request::Ping)?;
        expect_error(&mut c, ErrorCode::HANDSHAKE_REQUIRED);

        // An over-long sale id is a request error; the connection stays up.
        let mut c = RawConn::connect(addr)?;
        c.hello(None)?;
        c.request(
            5,
            Request::Status {
                sale: "x".repeat(1000),
            },
        )?;
        match c.recv()? {
            Some(ServerFrame::Response(ResponseFrame {
                id: 5,
                response: Response::Error(e),
            })) => {
                assert_eq!(e.code, ErrorCode::INVALID_REQUEST)
            }
            other => panic!("expected a request error, got {other:?}"),
        }
        c.request(
            7,
            Request::Reserve {
                sale: "y".repeat(65),
                user: 1,
            },
        )?;
        match c.recv()? {
            Some(ServerFrame::Response(ResponseFrame {
                id: 7,
                response: Response::Error(e),
            })) => assert_eq!(e.code, ErrorCode::INVALID_REQUEST),
            other => panic!("expected a request error, got {other:?}"),
        }
        c.request(6, Request::Ping)?;
        assert_eq!(
            c.recv()?,
            Some(ServerFrame::Response(ResponseFrame {
                id: 6,
                response: Response::Pong
            }))
        );
    }

    assert_eq!(
        rt.block_on(good)??,
        2000,
        "the good client was served throughout"
    );
    server.stop()?;
    Ok(())
}

#[test]
fn a_client_that_never_reads_is_contained() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--idle-timeout", "2s"])?;
    let mut hog = RawConn::connect(server.addr())?;
    hog.hello(None)?;
    hog.set_write_timeout(Duration::from_secs(1))?;
    // Pipeline pings and never read an answer: at some point the server stops
    // reading (its buffers are bounded) and our writes block until timeout.
    let frame = request_frame(1, Request::Ping).repeat(4096);
    let mut blocked = false;
    for _ in 0..2000 {
        if hog.send_bytes(&frame).is_err() {
            blocked = true;
            break;
        }
    }
    assert!(
        blocked,
        "the server stopped reading a client that does not read"
    );
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        assert!(matches!(
            client.reserve("default", 1).await?,
            ReserveOutcome::Won { .. }
        ));
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}

#[test]
fn api_key_connection_limit_and_idle_timeout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--api-key",
            "sesame",
            "--max-connections",
            "3",
            "--idle-timeout",
            "500ms",
        ],
    )?;
    let addr = server.addr();

    for api_key in [None, Some("sesam".to_owned())] {
        let mut c = RawConn::connect(addr)?;
        c.send(&handshake::hello(api_key))?;
        expect_error(&mut c, ErrorCode::UNAUTHORIZED);
    }

    // Three connections fill the limit; the fourth is told to come back later.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RawConn::welcomed(addr, Some("sesame"))?);
    }
    let mut extra = RawConn::connect(addr)?;
    expect_error(&mut extra, ErrorCode::OVERLOADED);

    // Silence, or a header and then silence (slowloris), ends in an idle timeout.
    held[1].send_bytes(&[0, 0, 0, 40, 1])?;
    for c in &mut held {
        expect_error(c, ErrorCode::IDLE_TIMEOUT);
    }
    // With the idle ones gone, new connections are welcome again.
    drop(held);
    RawConn::welcomed(addr, Some("sesame"))?;
    server.stop()?;
    Ok(())
}

/// A client may send its first requests right behind its `Hello`, in the
/// same write: they are answered after the `Welcome`. Behind a refused
/// `Hello` they are never acted on.
#[test]
fn requests_behind_the_hello_wait_for_its_judgement() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--api-key", "sesame", "--sale", "p:10"],
    )?;
    let addr = server.addr();
    let reserve = |id, user| {
        request_frame(
            id,
            Request::Reserve {
                sale: "p".into(),
                user,
            },
        )
    };
    let hello_then = |key: &str, requests: &[Vec<u8>]| -> anyhow::Result<Vec<u8>> {
        let mut bytes = codec::frame(&handshake::hello(Some(key.into())))?;
        requests.iter().for_each(|r| bytes.extend_from_slice(r));
        Ok(bytes)
    };

    // Refused: wrong key, with a reservation for user 1 behind it.
    let mut c = RawConn::connect(addr)?;
    c.send_bytes(&hello_then("sesam", &[reserve(1, 1)])?)?;
    expect_error(&mut c, ErrorCode::UNAUTHORIZED);

    // Welcomed: two reservations behind the Hello, one write.
    let mut c = RawConn::connect(addr)?;
    c.send_bytes(&hello_then("sesame", &[reserve(7, 2), reserve(8, 1)])?)?;
    assert!(
        matches!(c.recv()?, Some(ServerFrame::Welcome(_))),
        "the Welcome comes first"
    );
    let mut answers = Vec::new();
    for _ in 0..2 {
        match c.recv()? {
            Some(ServerFrame::Response(ResponseFrame {
                id,
                response: Response::Reserve(outcome),
            })) => answers.push((id, outcome)),
            other => panic!("expected a reservation's answer, got {other:?}"),
        }
    }
    answers.sort_by_key(|(id, _)| *id);
    // User 1's refused request took nothing: it wins now, the second
    // ticket, after user 2's first.
    assert_eq!(
        answers,
        vec![
            (7, ReserveOutcome::Won { ticket: 1 }),
            (8, ReserveOutcome::Won { ticket: 2 })
        ]
    );
    server.stop()?;
    Ok(())
}

#[test]
fn before_the_handshake_a_connection_gets_little() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The idle timeout is far away: only the handshake deadline can close
    // the silent connections below within a read timeout.
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--api-key",
            "sesame",
            "--handshake-timeout",
            "1s",
            "--idle-timeout",
            "10m",
        ],
    )?;
    let addr = server.addr();

    // A first frame longer than a Hello can be, though within the frame
    // maximum: refused on its length prefix, before any body is sent.
    for len in [MAX_HELLO_LEN + 1, DEFAULT_MAX_FRAME_LEN - 1] {
        let mut c = RawConn::connect(addr)?;
        c.send_bytes(&u32::try_from(len)?.to_be_bytes())?;
        expect_error(&mut c, ErrorCode::FRAME_TOO_LARGE);
    }
    // A Hello of exactly the largest size is read (and its key judged).
    let mut c = RawConn::connect(addr)?;
    let longest = handshake::hello(Some("k".repeat(MAX_API_KEY_LEN)));
    assert_eq!(codec::frame(&longest)?.len(), 4 + MAX_HELLO_LEN);
    c.send(&longest)?;
    expect_error(&mut c, ErrorCode::UNAUTHORIZED);
    // Once welcomed, frames up to the configured maximum are read: a
    // 2 KiB request is answered, and the connection stays up.
    let mut c = RawConn::welcomed(addr, Some("sesame"))?;
    c.request(
        3,
        Request::Status {
            sale: "x".repeat(2048),
        },
    )?;
    match c.recv()? {
        Some(ServerFrame::Response(ResponseFrame {
            id: 3,
            response: Response::Error(e),
        })) => assert_eq!(e.code, ErrorCode::INVALID_REQUEST),
        other => panic!("expected a request error, got {other:?}"),
    }

    // Silence, half a Hello, and a Hello trickled a byte at a time: each is
    // closed once the handshake deadline passes, trickling or not.
    let hello = codec::frame(&handshake::hello(Some("sesame".into())))?;
    let mut silent = RawConn::connect(addr)?;
    let mut half = RawConn::connect(addr)?;
    half.send_bytes(&hello[..hello.len() / 2])?;
    let mut trickle = RawConn::connect(addr)?;
    for byte in hello.iter().take(hello.len() - 1).take(8) {
        // A failed write means the server closed already, which the read
        // below checks.
        if trickle.send_bytes(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut silent, &mut half, &mut trickle] {
        expect_error(c, ErrorCode::IDLE_TIMEOUT);
    }
    server.stop()?;

    // A key no Hello could carry is refused at start, not at every client.
    let too_long = "k".repeat(MAX_API_KEY_LEN + 1);
    let (status, stderr) =
        ServerProcess::run_to_exit(&dir.path().join("other"), &["--api-key", &too_long])?;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("API key is 1010 bytes"), "{stderr}");
    Ok(())
}
