//! The HTTP front of the real server binary, over real HTTP/1.1: every
//! route's status codes and bodies, demo mode, event streams and shedding
//! past the in-flight bound. Every token case is in `tokens.rs`.
//!
//! Tests that share one server run their checks as named phases, in order:
//! a later phase may rely on what an earlier one sold.

use std::net::SocketAddr;
use std::time::Duration;

use flashsale_metrics::readback::series;
use flashsale_metrics::{Protocol, REQUESTS};
use flashsale_tests::poll::poll_async;
use flashsale_tests::token::{bearer, start_signed};
use flashsale_tests::{
    get, http, me_as, reserve_as, runtime, EventStream, HttpConn, HttpReply, ServerProcess,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LATER: &str = "later:5:99999999999999";

async fn reserve(addr: SocketAddr, sale: &str, user: u64) -> anyhow::Result<(u16, Value)> {
    Ok(reserve_as(addr, sale, &bearer(user)).await?.status_json())
}

async fn me(addr: SocketAddr, sale: &str, user: u64) -> anyhow::Result<(u16, Value)> {
    Ok(me_as(addr, sale, &bearer(user)).await?.status_json())
}

#[test]
fn every_route_answers_as_documented() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(dir.path(), &["--sale", "gig:2", "--sale", LATER])?;
    let addr = server.http_addr();
    runtime().block_on(async {
        status_has_its_shape_and_states(addr).await?;
        reserve_wins_then_owns_then_sells_out(addr).await?;
        both_reservation_paths_answer_alike(addr).await?;
        early_unknown_and_overlong_sales_are_refused(addr).await?;
        health_config_and_metrics(addr).await?;
        pages_are_served_and_other_routes_refused(addr).await?;
        keep_alive_serves_many_requests(addr).await
    })?;
    server.stop()
}

async fn status_has_its_shape_and_states(addr: SocketAddr) -> anyhow::Result<()> {
    let gig = get(addr, "/api/sales/gig").await?;
    assert_eq!(gig.status, 200);
    assert_eq!(gig.header("content-type"), Some("application/json"));
    let body = gig.json();
    assert_eq!(
        (
            &body["sale"],
            &body["capacity"],
            &body["remaining"],
            &body["sold"],
            &body["state"]
        ),
        (
            &json!("gig"),
            &json!(2),
            &json!(2),
            &json!(0),
            &json!("open")
        )
    );
    assert!(body["opens_at"].is_u64());
    let later = get(addr, "/api/sales/later").await?.json();
    assert_eq!(later["state"], "upcoming");
    assert_eq!(later["opens_at"], json!(99_999_999_999_999u64));
    let nope = get(addr, "/api/sales/nope").await?;
    assert_eq!(
        (nope.status, &nope.json()["error"]),
        (404, &json!("unknown_sale"))
    );
    Ok(())
}

async fn reserve_wins_then_owns_then_sells_out(addr: SocketAddr) -> anyhow::Result<()> {
    assert_eq!(me(addr, "gig", 1).await?, (404, json!({ "ticket": null })));
    let (status, won) = reserve(addr, "gig", 1).await?;
    assert_eq!((status, &won["outcome"]), (201, &json!("won")));
    let ticket = won["ticket"].as_u64().unwrap_or_default();
    assert!((1..=2).contains(&ticket));
    assert_eq!(
        reserve(addr, "gig", 1).await?,
        (200, json!({ "outcome": "already_owned", "ticket": ticket }))
    );
    assert_eq!(
        me(addr, "gig", 1).await?,
        (200, json!({ "ticket": ticket }))
    );
    let (status, second) = reserve(addr, "gig", 2).await?;
    assert_eq!((status, &second["outcome"]), (201, &json!("won")));
    assert_ne!(second["ticket"], json!(ticket));
    assert_eq!(
        reserve(addr, "gig", 3).await?,
        (410, json!({ "outcome": "sold_out" }))
    );
    let sold = get(addr, "/api/sales/gig").await?.json();
    assert_eq!(
        (&sold["state"], &sold["remaining"], &sold["sold"]),
        (&json!("sold_out"), &json!(0), &json!(2))
    );
    Ok(())
}

/// A reservation is answered around the router unless its sale id needs
/// percent-decoding; `g%69g` is `gig` spelled so that the router answers.
/// Both must give the same status, body and headers, for a buyer and for a
/// request without a token.
async fn both_reservation_paths_answer_alike(addr: SocketAddr) -> anyhow::Result<()> {
    let owner = bearer(1);
    let stranger = bearer(5);
    for (who, auth) in [
        ("owner", Some(owner.as_str())),
        ("stranger", Some(&stranger)),
        ("nobody", None),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let hot = http(addr, "POST", "/api/sales/gig/reserve", &headers, "").await?;
        let routed = http(addr, "POST", "/api/sales/g%69g/reserve", &headers, "").await?;
        assert_eq!(hot.status_json(), routed.status_json(), "{who}");
        for name in [
            "content-type",
            "cache-control",
            "x-frame-options",
            "x-content-type-options",
            "referrer-policy",
            "www-authenticate",
        ] {
            assert_eq!(hot.header(name), routed.header(name), "{who}: {name}");
        }
    }
    let owned = http(
        addr,
        "POST",
        "/api/sales/gig/reserve",
        &[("authorization", &owner)],
        "",
    )
    .await?;
    assert_eq!(
        (owned.status, &owned.json()["outcome"]),
        (200, &json!("already_owned"))
    );
    assert_eq!(owned.header("cache-control"), Some("no-store"));
    let nobody = http(addr, "POST", "/api/sales/gig/reserve", &[], "").await?;
    assert_eq!(
        (nobody.status, nobody.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    Ok(())
}

/// Not open yet, an unknown sale, a sale id over 64 bytes.
async fn early_unknown_and_overlong_sales_are_refused(addr: SocketAddr) -> anyhow::Result<()> {
    let early = reserve_as(addr, "later", &bearer(4)).await?;
    assert_eq!(early.status, 425);
    assert_eq!(
        early.json(),
        json!({ "outcome": "not_open", "opens_at": 99_999_999_999_999u64 })
    );
    let retry: u64 = early.header("retry-after").unwrap_or_default().parse()?;
    assert!(retry >= 1);
    assert_eq!(
        reserve(addr, "nope", 4).await?,
        (404, json!({ "outcome": "unknown_sale" }))
    );
    let (status, body) = reserve(addr, &"x".repeat(65), 4).await?;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    assert_eq!(me(addr, "nope", 4).await?.0, 404);
    Ok(())
}

async fn health_config_and_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    assert_eq!(
        get(addr, "/healthz").await?.status_json(),
        (200, json!({ "status": "ok" }))
    );
    let config = get(addr, "/api/config").await?.json();
    assert_eq!(config["demo"], false);
    let mut sales: Vec<String> = serde_json::from_value(config["sales"].clone())?;
    sales.sort();
    assert_eq!(sales, ["gig", "later"]);
    let metrics = get(addr, "/metrics").await?;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let won = [("protocol", Protocol::Http.label()), ("outcome", "won")];
    assert!(series(&text, REQUESTS, &won).is_some(), "{text}");
    Ok(())
}

async fn pages_are_served_and_other_routes_refused(addr: SocketAddr) -> anyhow::Result<()> {
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let page = get(addr, path).await?;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.header("content-type")
                .unwrap_or_default()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(page.header("cache-control"), Some("no-cache"), "{path}");
        let policy = page.header("content-security-policy").unwrap_or_default();
        for directive in ["frame-ancestors 'none'", "script-src 'self'"] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
        assert!(!policy.contains("unsafe-eval"), "{path}: {policy}");
    }
    // Every answer, the page's and the API's, found or not.
    for path in ["/", "/app.js", "/api/sales/gig", "/no/such/route"] {
        let answer = get(addr, path).await?;
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(answer.header(name), Some(value), "{path}: {name}");
        }
    }
    assert!(get(addr, "/").await?.text().contains("<title>"));
    assert_eq!(
        http(addr, "POST", "/demo/token", &[], "").await?.status,
        404
    );
    assert_eq!(get(addr, "/no/such/route").await?.status, 404);
    assert_eq!(get(addr, "/api/sales/gig/reserve").await?.status, 405);
    Ok(())
}

async fn keep_alive_serves_many_requests(addr: SocketAddr) -> anyhow::Result<()> {
    let mut conn = HttpConn::connect(addr).await?;
    for _ in 0..5 {
        assert_eq!(
            conn.send("GET", "/api/sales/gig", &[], "").await?.status,
            200
        );
    }
    Ok(())
}

#[test]
fn demo_mode_hands_out_tokens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server =
        ServerProcess::start_http(&dir.path().join("data"), &["--demo", "--sale", "gig:10"])?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let config = get(addr, "/api/config").await?.json();
        assert_eq!(config, json!({ "demo": true, "sales": ["gig"] }));
        a_requested_user_gets_a_working_token(addr).await?;
        an_empty_body_gets_a_random_user(addr).await?;
        // The demo secret is drawn at random: a token signed with the
        // tests' well-known secret is refused.
        assert_eq!(reserve(addr, "gig", 8).await?.0, 401);
        let bad = http(addr, "POST", "/demo/token", &[], r#"{"user": "me"}"#).await?;
        assert_eq!(
            (bad.status, &bad.json()["error"]),
            (400, &json!("invalid_request"))
        );
        anyhow::Ok(())
    })?;
    assert!(
        server.log().contains("DEMO MODE"),
        "a loud warning at startup"
    );
    server.stop()
}

/// `Bearer <token>` from a `/demo/token` answer.
fn issued_bearer(issued: &HttpReply) -> String {
    format!(
        "Bearer {}",
        issued.json()["token"].as_str().unwrap_or_default()
    )
}

async fn a_requested_user_gets_a_working_token(addr: SocketAddr) -> anyhow::Result<()> {
    let issued = http(
        addr,
        "POST",
        "/demo/token",
        &[("content-type", "application/json")],
        r#"{"user": 77}"#,
    )
    .await?;
    assert_eq!(issued.status, 200);
    let body = issued.json();
    assert_eq!(body["user"], 77);
    assert!(body["expires_at"].as_u64().unwrap_or_default() > flashsale_token::unix_s());
    let auth = issued_bearer(&issued);
    let won = reserve_as(addr, "gig", &auth).await?;
    assert_eq!(won.status, 201);
    let mine = me_as(addr, "gig", &auth).await?;
    assert_eq!(mine.json()["ticket"], won.json()["ticket"]);
    Ok(())
}

async fn an_empty_body_gets_a_random_user(addr: SocketAddr) -> anyhow::Result<()> {
    let random = http(addr, "POST", "/demo/token", &[], "").await?;
    assert!(random.json()["user"].as_u64().unwrap_or_default() > 0);
    let mine = me_as(addr, "gig", &issued_bearer(&random)).await?;
    assert_eq!(mine.status, 404, "a token that works, for no ticket yet");
    Ok(())
}

#[test]
fn http_without_a_secret_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (status, stderr) =
        ServerProcess::run_to_exit(&dir.path().join("data"), &["--http", "127.0.0.1:0"])?;
    assert!(!status.success());
    assert!(stderr.contains("JWT secret"), "{stderr}");
    Ok(())
}

#[test]
fn events_push_the_stock() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(dir.path(), &["--sale", "gig:3"])?;
    let addr = server.http_addr();
    let mut stream = runtime().block_on(async {
        let unknown = get(addr, "/api/sales/nope/events").await?;
        assert_eq!(unknown.status, 404);

        let mut stream = EventStream::open(addr, "/api/sales/gig/events").await?;
        assert_eq!(stream.status, 200);
        assert!(stream
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        let first: Value = serde_json::from_str(&stream.next_data().await?.unwrap_or_default())?;
        assert_eq!(first, json!({ "remaining": 3, "sold": 0, "state": "open" }));

        for user in 1..=3 {
            assert_eq!(reserve(addr, "gig", user).await?.0, 201);
        }
        // Updates are coalesced: whatever came in between, the stream
        // reaches the sold-out state (each event read is bounded in time,
        // and the stream ends if the server stops sending).
        loop {
            let data = stream.next_data().await?.unwrap_or_default();
            let event: Value = serde_json::from_str(&data)?;
            if event["state"] == "sold_out" {
                assert_eq!(
                    event,
                    json!({ "remaining": 0, "sold": 3, "state": "sold_out" })
                );
                break;
            }
        }
        anyhow::Ok(stream)
    })?;
    // A graceful stop ends open streams instead of waiting for them.
    server.stop()?;
    runtime().block_on(async { while stream.next_data().await.is_ok_and(|d| d.is_some()) {} });
    Ok(())
}

/// Shedding in a gateway whose core is frozen (SIGSTOP): a request that
/// waits on the core holds the only permit, and meanwhile a request the
/// front answers alone is shed.
#[test]
fn past_the_in_flight_bound_requests_are_shed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = ServerProcess::start(&dir.path().join("core"), &["--sale", "gig:3"])?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        core.addr(),
        &["--demo", "--http-max-in-flight", "1", "--sale", "gig"],
    )?;
    let addr = gateway.http_addr();
    core.pause()?;
    let shed = runtime().block_on(hold_the_only_permit(addr));
    core.resume()?;
    let shed = shed?;
    assert_eq!(shed.json(), json!({ "outcome": "busy" }));
    assert_eq!(shed.header("retry-after"), Some("1"));
    runtime().block_on(async {
        let served = poll_async(500, Duration::from_millis(10), || async {
            Ok((get(addr, "/").await?.status == 200).then_some(()))
        })
        .await?;
        assert!(served.is_some(), "the bound frees up once requests finish");
        let metrics = get(addr, "/metrics").await?.text();
        assert!(metrics.contains("flashsale_shed_total"), "{metrics}");
        anyhow::Ok(())
    })?;
    gateway.stop()?;
    core.stop()
}

/// With the core frozen, a status request holds the only permit (until the
/// gateway gives up on the core); the page, which needs no core, is shed
/// meanwhile. If a probe held the permit at the moment the held request
/// arrived, the held request is the one shed: start over with a new one.
async fn hold_the_only_permit(addr: SocketAddr) -> anyhow::Result<HttpReply> {
    for _ in 0..20 {
        let held = tokio::spawn(get(addr, "/api/sales/gig"));
        let shed = poll_async(50, Duration::from_millis(20), || async {
            let reply = get(addr, "/").await?;
            Ok((reply.status == 503).then_some(reply))
        })
        .await?;
        let held = held.await??;
        if let Some(shed) = shed {
            assert_ne!(held.status, 503, "the held request was shed too");
            return Ok(shed);
        }
    }
    anyhow::bail!("no request could hold the permit, or none was shed")
}

/// A request body trickled in a byte at a time holds no in-flight permit:
/// with a bound of one, other requests are served meanwhile, and the
/// trickler is told 408 once the body deadline passes, and closed.
#[test]
fn a_trickled_body_holds_no_permit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--demo",
            "--http-max-in-flight",
            "1",
            "--http-body-timeout",
            "2s",
            "--sale",
            "gig:3",
        ],
    )?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let mut trickler = tokio::net::TcpStream::connect(addr).await?;
        trickler
            .write_all(b"POST /demo/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
            .await?;
        let (mut reader, mut writer) = trickler.into_split();
        let trickle = tokio::spawn(async move {
            // A byte every 100 ms for a second, then nothing: the rest of
            // the body never comes. (Bytes still arriving when the server
            // closes would turn its close into a reset.)
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
            }
            writer
        });
        for _ in 0..5 {
            let other = get(addr, "/api/sales/gig").await?;
            assert_eq!(other.status, 200, "{}", other.text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut told = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
                Err(_) => anyhow::bail!("the trickler's connection stayed open"),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => told.extend_from_slice(&buf[..n]),
            }
        }
        drop(trickle.await?);
        let told = String::from_utf8_lossy(&told);
        assert!(told.starts_with("HTTP/1.1 408 "), "{told}");
        assert!(told.contains(r#""error":"request_timeout""#), "{told}");
        assert!(told.to_ascii_lowercase().contains("connection: close"), "{told}");
        anyhow::Ok(())
    })?;
    server.stop()
}

/// With an admin listener, `/metrics` is served there and not on the
/// buyers' port.
#[test]
fn metrics_are_on_the_admin_listener_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::start_with_admin(dir.path(), &["--sale", "gig:3"])?;
    let admin = flashsale_tests::Admin::of(&server);
    runtime().block_on(async {
        let public = get(server.http_addr(), "/metrics").await?;
        assert_eq!(public.status, 404, "{}", public.text());
        let private = admin.call("GET", "/metrics", "").await?;
        assert_eq!(private.status, 200);
        assert!(private.text().contains("flashsale_"), "{}", private.text());
        anyhow::Ok(())
    })?;
    server.stop()
}
