//! Every token case of the HTTP front, in one place: forgeries, algorithm
//! confusion, time bounds, oversized tokens and headers, where a token may
//! come from, and that a token's `sub` is the only user a request acts for.

mod common;

use common::{now_s, secret_file, token, token_with, SECRET};

use std::net::SocketAddr;
use std::path::Path;

use flashsale_tests::{http, runtime, HttpReply, ServerProcess};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// What an RS256 server would publish: the attacker's HMAC key in the
/// "public key as HMAC secret" confusion.
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n\
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n\
-----END PUBLIC KEY-----\n";

fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
    let secret = secret_file(dir)?;
    ServerProcess::start_http(
        &dir.join("data"),
        &[
            "--jwt-secret-file",
            secret.to_str().unwrap_or_default(),
            "--sale",
            "gig:10",
        ],
    )
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A token whose header says `header`, signed with HMAC-SHA256 and `key`
/// whatever the header claims (the algorithm-confusion attack).
fn token_with_header(header: &Value, claims: &Value, key: &str) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key.as_bytes()),
        Algorithm::HS256,
    )
    .expect("signing works");
    format!("{message}.{signature}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<HttpReply> {
    http(addr, method, path, headers, body).await
}

/// Asserts a 401 `invalid_token` answer, as documented.
fn assert_refused(reply: &HttpReply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
    assert_eq!(reply.json()["error"], "invalid_token", "{what}");
    assert!(reply.json()["message"].is_string(), "{what}");
}

async fn sold(addr: SocketAddr) -> anyhow::Result<Value> {
    Ok(send(addr, "GET", "/api/sales/gig", &[], "").await?.json()["sold"].clone())
}

#[test]
fn forged_tokens_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path())?;
    let addr = server.http_addr();
    let exp = now_s() + 600;
    let claims = json!({ "sub": "5", "exp": exp });
    let signed = |claims: Value| Some(bearer(&token_with(SECRET, &claims, Algorithm::HS256)));
    let confused = |alg: &str, key: &str| {
        Some(bearer(&token_with_header(
            &json!({ "alg": alg, "typ": "JWT" }),
            &claims,
            key,
        )))
    };
    let padding = "p".repeat(6000);
    let forged: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "wrong key",
            Some(bearer(&token_with(
                "another secret, also quite long....",
                &claims,
                Algorithm::HS256,
            ))),
        ),
        (
            "alg none",
            Some(bearer(&format!(
                "{}.{}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                b64url(claims.to_string().as_bytes())
            ))),
        ),
        ("alg None, signed", confused("None", SECRET)),
        // Algorithm confusion: another algorithm in the header, an HMAC of
        // the right secret as the signature.
        ("RS256 header", confused("RS256", SECRET)),
        ("ES256 header", confused("ES256", SECRET)),
        ("HS384 header", confused("HS384", SECRET)),
        ("HS512 header", confused("HS512", SECRET)),
        (
            "HS384, really",
            Some(bearer(&token_with(SECRET, &claims, Algorithm::HS384))),
        ),
        (
            "HS512, really",
            Some(bearer(&token_with(SECRET, &claims, Algorithm::HS512))),
        ),
        // The public key used as an HMAC secret.
        (
            "RS256 header, public key as HMAC key",
            confused("RS256", PUBLIC_KEY),
        ),
        (
            "HS256, public key as HMAC key",
            confused("HS256", PUBLIC_KEY),
        ),
        (
            "expired",
            signed(json!({ "sub": "5", "exp": now_s() - 3600 })),
        ),
        (
            "not valid yet",
            signed(json!({ "sub": "5", "exp": exp, "nbf": now_s() + 3600 })),
        ),
        (
            "with an audience",
            signed(json!({ "sub": "5", "exp": exp, "aud": "elsewhere" })),
        ),
        (
            "non-numeric sub",
            signed(json!({ "sub": "alice", "exp": exp })),
        ),
        ("signed sub", signed(json!({ "sub": "+5", "exp": exp }))),
        ("numeric sub", signed(json!({ "sub": 5, "exp": exp }))),
        ("missing exp", signed(json!({ "sub": "5" }))),
        ("missing sub", signed(json!({ "exp": exp }))),
        (
            "over 4 KiB, correctly signed",
            signed(json!({ "sub": "5", "exp": exp, "pad": padding })),
        ),
        ("garbage", Some("Bearer not.a.token".to_owned())),
        ("empty bearer", Some("Bearer ".to_owned())),
        (
            "basic scheme",
            Some(format!("Basic {}", b64url(b"5:password"))),
        ),
        ("bare token", Some(token(5))),
    ];
    runtime().block_on(async {
        // The control: the same claims, correctly signed, pass.
        let control = send(
            addr,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &bearer(&token(5)))],
            "",
        )
        .await?;
        assert_eq!(control.status, 404);
        for (what, header) in &forged {
            for (method, path) in [
                ("POST", "/api/sales/gig/reserve"),
                ("GET", "/api/sales/gig/me"),
            ] {
                let headers: Vec<(&str, &str)> = header
                    .iter()
                    .map(|h| ("authorization", h.as_str()))
                    .collect();
                let reply = send(addr, method, path, &headers, "").await?;
                assert_refused(&reply, &format!("{what}: {method} {path}"));
            }
        }
        assert_eq!(sold(addr).await?, 0, "nothing was sold to anyone");
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn oversized_authorization_headers_are_refused_whole() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path())?;
    let addr = server.http_addr();
    runtime().block_on(async {
        for size in [64 << 10, 1 << 20] {
            let header = format!("Bearer {}", "a".repeat(size));
            // A head over 16 KiB is answered 431 and closed before any
            // handler runs; a client still sending it may see only the close.
            match send(
                addr,
                "POST",
                "/api/sales/gig/reserve",
                &[("authorization", &header)],
                "",
            )
            .await
            {
                Ok(reply) => assert_eq!(reply.status, 431, "{size} bytes"),
                Err(e) => eprintln!("{size}-byte header: the connection closed ({e:#})"),
            }
        }
        let health = send(addr, "GET", "/healthz", &[], "").await?;
        assert_eq!(health.status, 200, "the server is still up");
        assert_eq!(sold(addr).await?, 0);
        anyhow::Ok(())
    })?;
    let peak = server.peak_rss()?;
    assert!(
        peak < 256 * 1024 * 1024,
        "the server's memory peaked at {peak} bytes"
    );
    server.stop()
}

#[test]
fn a_token_acts_only_for_its_own_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path())?;
    let addr = server.http_addr();
    let (a, b) = (bearer(&token(1)), bearer(&token(2)));
    runtime().block_on(async {
        let won_b = send(
            addr,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &b)],
            "",
        )
        .await?;
        assert_eq!(won_b.status, 201);
        let ticket_b = won_b.json()["ticket"].clone();

        // A's token never reads B's ticket.
        let mine = send(
            addr,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &a)],
            "",
        )
        .await?;
        assert_eq!((mine.status, mine.json()), (404, json!({ "ticket": null })));

        // Whatever else names B (the query, the body, another header, B's
        // token in a cookie), A's token buys for A.
        let cookie = format!("token={}", token(2));
        let won_a = send(
            addr,
            "POST",
            "/api/sales/gig/reserve?user=2&sub=2",
            &[("authorization", &a), ("x-user", "2"), ("cookie", &cookie)],
            r#"{"user": 2, "sub": "2"}"#,
        )
        .await?;
        assert_eq!(won_a.status, 201, "{}", won_a.text());
        let ticket_a = won_a.json()["ticket"].clone();
        assert_ne!(ticket_a, ticket_b);
        let again = send(
            addr,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &a)],
            "",
        )
        .await?;
        assert_eq!(
            again.json(),
            json!({ "outcome": "already_owned", "ticket": ticket_a })
        );
        for (auth, ticket) in [(&a, &ticket_a), (&b, &ticket_b)] {
            let mine = send(
                addr,
                "GET",
                "/api/sales/gig/me",
                &[("authorization", auth)],
                "",
            )
            .await?;
            assert_eq!(mine.json(), json!({ "ticket": ticket }));
        }
        assert_eq!(sold(addr).await?, 2);
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn only_the_authorization_header_carries_a_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path())?;
    let addr = server.http_addr();
    let valid = token(7);
    let cookie = format!("token={valid}; access_token={valid}; jwt={valid}");
    let bearer_valid = bearer(&valid);
    let query = format!("?access_token={valid}&token={valid}&jwt={valid}");
    runtime().block_on(async {
        let elsewhere: [(&str, Vec<(&str, &str)>); 3] = [
            ("query", vec![]),
            ("cookie", vec![("cookie", cookie.as_str())]),
            (
                "other headers",
                vec![
                    ("x-access-token", valid.as_str()),
                    ("proxy-authorization", bearer_valid.as_str()),
                ],
            ),
        ];
        for (what, headers) in &elsewhere {
            for (method, route) in [("POST", "reserve"), ("GET", "me")] {
                let path = format!("/api/sales/gig/{route}{query}");
                let reply = send(addr, method, &path, headers, "").await?;
                assert_refused(&reply, &format!("token in the {what}: {method} {route}"));
            }
        }

        // The scheme is case-insensitive, as HTTP's are.
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            let auth = format!("{scheme} {valid}");
            let reply = send(
                addr,
                "GET",
                "/api/sales/gig/me",
                &[("authorization", &auth)],
                "",
            )
            .await?;
            assert_eq!(reply.json(), json!({ "ticket": null }), "{scheme}");
        }

        // Two Authorization headers are refused, whichever is valid.
        let (other, garbage) = (bearer(&token(8)), "Bearer not.a.token".to_owned());
        for pair in [
            [&bearer_valid, &bearer_valid],
            [&bearer_valid, &other],
            [&bearer_valid, &garbage],
            [&garbage, &bearer_valid],
        ] {
            let headers = [
                ("authorization", pair[0].as_str()),
                ("authorization", pair[1].as_str()),
            ];
            for (method, route) in [("POST", "reserve"), ("GET", "me")] {
                let path = format!("/api/sales/gig/{route}");
                let reply = send(addr, method, &path, &headers, "").await?;
                assert_refused(
                    &reply,
                    &format!("two Authorization headers: {method} {route}"),
                );
            }
        }
        assert_eq!(sold(addr).await?, 0);
        anyhow::Ok(())
    })?;
    server.stop()
}
