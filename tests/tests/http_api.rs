//! The HTTP front of the real server binary, over real HTTP/1.1: every
//! route's status codes and bodies, demo mode, event streams and shedding
//! past the in-flight bound. Every token case is in `tokens.rs`.

mod common;

use common::{now_s, secret_file, token};

use std::net::SocketAddr;
use std::time::Duration;

use flashsale_tests::{http, runtime, EventStream, HttpConn, ServerProcess};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LATER: &str = "later:5:99999999999999";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn reserve(addr: SocketAddr, sale: &str, user: u64) -> anyhow::Result<(u16, Value)> {
    let auth = bearer(&token(user));
    let reply = http(
        addr,
        "POST",
        &format!("/api/sales/{sale}/reserve"),
        &[("authorization", &auth)],
        "",
    )
    .await?;
    Ok((reply.status, reply.json()))
}

async fn me(addr: SocketAddr, sale: &str, user: u64) -> anyhow::Result<(u16, Value)> {
    let auth = bearer(&token(user));
    let reply = http(
        addr,
        "GET",
        &format!("/api/sales/{sale}/me"),
        &[("authorization", &auth)],
        "",
    )
    .await?;
    Ok((reply.status, reply.json()))
}

#[test]
fn every_route_answers_as_documented() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap_or_default(),
            "--sale",
            "gig:2",
            "--sale",
            LATER,
        ],
    )?;
    let addr = server.http_addr();
    runtime().block_on(async {
        // Status: shape and states.
        let gig = http(addr, "GET", "/api/sales/gig", &[], "").await?;
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
        let later = http(addr, "GET", "/api/sales/later", &[], "").await?.json();
        assert_eq!(later["state"], "upcoming");
        assert_eq!(later["opens_at"], json!(99_999_999_999_999u64));
        let nope = http(addr, "GET", "/api/sales/nope", &[], "").await?;
        assert_eq!(
            (nope.status, &nope.json()["error"]),
            (404, &json!("unknown_sale"))
        );

        // Reserve: won, already owned, sold out.
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
        let sold = http(addr, "GET", "/api/sales/gig", &[], "").await?.json();
        assert_eq!(
            (&sold["state"], &sold["remaining"], &sold["sold"]),
            (&json!("sold_out"), &json!(0), &json!(2))
        );

        // Not open yet, unknown sale, a sale id over 64 bytes.
        let auth = bearer(&token(4));
        let early = http(
            addr,
            "POST",
            "/api/sales/later/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
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

        // The rest of the routes.
        let health = http(addr, "GET", "/healthz", &[], "").await?;
        assert_eq!(
            (health.status, health.json()),
            (200, json!({ "status": "ok" }))
        );
        let config = http(addr, "GET", "/api/config", &[], "").await?.json();
        assert_eq!(config["demo"], false);
        let mut sales: Vec<String> = serde_json::from_value(config["sales"].clone())?;
        sales.sort();
        assert_eq!(sales, ["gig", "later"]);
        let metrics = http(addr, "GET", "/metrics", &[], "").await?;
        assert_eq!(metrics.status, 200);
        let text = metrics.text();
        assert!(
            text.lines()
                .any(|l| l.starts_with("flashsale_requests_total")
                    && l.contains(r#"protocol="http""#)
                    && l.contains(r#"outcome="won""#)),
            "{text}"
        );
        for (path, kind) in [
            ("/", "text/html"),
            ("/app.js", "text/javascript"),
            ("/style.css", "text/css"),
        ] {
            let page = http(addr, "GET", path, &[], "").await?;
            assert_eq!(page.status, 200, "{path}");
            assert!(
                page.header("content-type")
                    .unwrap_or_default()
                    .starts_with(kind),
                "{path}"
            );
            assert_eq!(page.header("cache-control"), Some("no-cache"), "{path}");
        }
        assert!(http(addr, "GET", "/", &[], "")
            .await?
            .text()
            .contains("<title>"));
        assert_eq!(
            http(addr, "POST", "/demo/token", &[], "").await?.status,
            404
        );
        assert_eq!(
            http(addr, "GET", "/no/such/route", &[], "").await?.status,
            404
        );
        assert_eq!(
            http(addr, "GET", "/api/sales/gig/reserve", &[], "")
                .await?
                .status,
            405
        );

        // Keep-alive: many requests on one connection.
        let mut conn = HttpConn::connect(addr).await?;
        for _ in 0..5 {
            assert_eq!(
                conn.send("GET", "/api/sales/gig", &[], "").await?.status,
                200
            );
        }
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn demo_mode_hands_out_tokens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server =
        ServerProcess::start_http(&dir.path().join("data"), &["--demo", "--sale", "gig:10"])?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let config = http(addr, "GET", "/api/config", &[], "").await?.json();
        assert_eq!(config, json!({ "demo": true, "sales": ["gig"] }));
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
        assert!(body["expires_at"].as_i64().unwrap_or_default() > now_s());
        let auth = bearer(body["token"].as_str().unwrap_or_default());
        let won = http(
            addr,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(won.status, 201);
        let mine = http(
            addr,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(mine.json()["ticket"], won.json()["ticket"]);

        // An empty body: a random user, whose token works too.
        let random = http(addr, "POST", "/demo/token", &[], "").await?.json();
        assert!(random["user"].as_u64().unwrap_or_default() > 0);
        let auth = bearer(random["token"].as_str().unwrap_or_default());
        let mine = http(
            addr,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(mine.status, 404);

        // The random secret is not a well-known one.
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
    let secret = secret_file(dir.path())?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap_or_default(),
            "--sale",
            "gig:3",
        ],
    )?;
    let addr = server.http_addr();
    let mut stream = runtime().block_on(async {
        let unknown = http(addr, "GET", "/api/sales/nope/events", &[], "").await?;
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
        // reaches the sold-out state.
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

#[test]
fn past_the_in_flight_bound_requests_are_shed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &["--demo", "--http-max-in-flight", "1", "--sale", "gig:3"],
    )?;
    let addr = server.http_addr();
    runtime().block_on(async {
        // Hold the one permit: a request whose body has not all arrived. If
        // one of our probes held the permit at the moment the held request
        // arrived, the held request is the one shed: start over with a new one.
        let mut held = None;
        let mut shed = None;
        'attempt: for _ in 0..20 {
            let mut conn = tokio::net::TcpStream::connect(addr).await?;
            conn.write_all(
                b"POST /demo/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"user\"",
            )
            .await?;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let reply = http(addr, "GET", "/api/sales/gig", &[], "").await?;
                if reply.status == 503 {
                    shed = Some(reply);
                    held = Some(conn);
                    break 'attempt;
                }
            }
        }
        let mut held = held.ok_or_else(|| anyhow::anyhow!("no request could hold the permit"))?;
        let shed = shed.ok_or_else(|| anyhow::anyhow!("no request was shed"))?;
        assert_eq!(shed.json(), json!({ "outcome": "busy" }));
        assert_eq!(shed.header("retry-after"), Some("1"));
        // Event streams do not count against the bound.
        let mut stream = EventStream::open(addr, "/api/sales/gig/events").await?;
        assert_eq!(stream.status, 200);
        assert!(stream.next_data().await?.is_some());

        // The held request completes, and the permit comes back.
        held.write_all(b": 5}\r\n").await?;
        let mut answer = vec![0u8; 12];
        held.read_exact(&mut answer).await?;
        assert_eq!(&answer, b"HTTP/1.1 200");
        let mut ok = false;
        for _ in 0..500 {
            if http(addr, "GET", "/api/sales/gig", &[], "").await?.status == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ok, "the bound frees up once requests finish");
        let metrics = http(addr, "GET", "/metrics", &[], "").await?.text();
        assert!(metrics.contains("flashsale_shed_total"), "{metrics}");
        anyhow::Ok(())
    })?;
    server.stop()
}
