//! Every token case of the HTTP front, in one place: forgeries, algorithm
//! confusion, time bounds, oversized tokens and headers, where a token may
//! come from, and that a token's `sub` is the only user a request acts for.

use std::net::SocketAddr;
use std::path::Path;

use flashsale_tests::token::{bearer, signed_claims, start_signed, token, SECRET};
use flashsale_tests::{get, http, me_as, reserve_as, runtime, HttpReply, ServerProcess};
use flashsale_token::{unix_s, Minter, TokenError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// What an RS256 server would publish: the attacker's HMAC key in the
/// "public key as HMAC secret" confusion.
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n\
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n\
-----END PUBLIC KEY-----\n";

fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
    start_signed(dir, &["--sale", "gig:10"])
}

/// A token whose header says `header`, signed with HMAC-SHA256 and `key`
/// whatever the header claims (the algorithm-confusion attack).
fn token_with_header(header: &Value, claims: &Value, key: &str) -> String {
    Minter::new(key.as_bytes())
        .mint_raw(header, claims)
        .expect("signing works")
}

/// `claims` under the header `{"alg":"none"}`, with no signature.
fn unsigned(claims: &Value) -> String {
    let signed = token_with_header(&json!({ "alg": "none", "typ": "JWT" }), claims, SECRET);
    let (message, _signature) = signed.rsplit_once('.').expect("three parts");
    format!("{message}.")
}

/// `claims` signed with the right secret under another HMAC algorithm,
/// honestly named in the header.
fn signed_with(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing works")
}

fn as_bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts a 401 `invalid_token` answer, as documented.
fn assert_refused(reply: &HttpReply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
    assert_eq!(reply.json()["error"], "invalid_token", "{what}");
    assert!(reply.json()["message"].is_string(), "{what}");
}

async fn sold(addr: SocketAddr) -> anyhow::Result<Value> {
    Ok(get(addr, "/api/sales/gig").await?.json()["sold"].clone())
}

/// Every `Authorization` value that must be refused, by what it tries;
/// `None` sends no header at all.
fn forgeries() -> Vec<(&'static str, Option<String>)> {
    let exp = unix_s() + 600;
    let claims = json!({ "sub": "5", "exp": exp });
    let signed = |claims: Value| Some(as_bearer(&signed_claims(SECRET, &claims)));
    let confused = |alg: &str, key: &str| {
        Some(as_bearer(&token_with_header(
            &json!({ "alg": alg, "typ": "JWT" }),
            &claims,
            key,
        )))
    };
    let padding = "p".repeat(6000);
    vec![
        ("no header", None),
        (
            "wrong key",
            Some(as_bearer(&signed_claims(
                "another secret, also quite long....",
                &claims,
            ))),
        ),
        ("alg none", Some(as_bearer(&unsigned(&claims)))),
        ("alg None, signed", confused("None", SECRET)),
        // Algorithm confusion: another algorithm in the header, an HMAC of
        // the right secret as the signature.
        ("RS256 header", confused("RS256", SECRET)),
        ("ES256 header", confused("ES256", SECRET)),
        ("HS384 header", confused("HS384", SECRET)),
        ("HS512 header", confused("HS512", SECRET)),
        (
            "HS384, really",
            Some(as_bearer(&signed_with(Algorithm::HS384, &claims))),
        ),
        (
            "HS512, really",
            Some(as_bearer(&signed_with(Algorithm::HS512, &claims))),
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
            signed(json!({ "sub": "5", "exp": unix_s() - 3600 })),
        ),
        (
            "not valid yet",
            signed(json!({ "sub": "5", "exp": exp, "nbf": unix_s() + 3600 })),
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
        // Finding 12 of the hardening review: each was accepted.
        (
            "sub with a leading zero",
            signed(json!({ "sub": "05", "exp": exp })),
        ),
        (
            "nbf as a string",
            signed(json!({ "sub": "5", "exp": exp, "nbf": (unix_s() + 3600).to_string() })),
        ),
        (
            "crit header",
            Some(as_bearer(&token_with_header(
                &json!({ "alg": "HS256", "typ": "JWT", "crit": ["exp"] }),
                &claims,
                SECRET,
            ))),
        ),
        (
            "exp at u64::MAX",
            signed(json!({ "sub": "5", "exp": u64::MAX })),
        ),
        (
            "over 4 KiB, correctly signed",
            signed(json!({ "sub": "5", "exp": exp, "pad": padding })),
        ),
        ("garbage", Some("Bearer not.a.token".to_owned())),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("basic scheme", Some("Basic NTpwYXNzd29yZA==".to_owned())),
        ("bare token", Some(token(5))),
    ]
}

/// Both routes that act for a buyer.
const BUYER_ROUTES: [(&str, &str); 2] = [("POST", "reserve"), ("GET", "me")];

#[test]
fn forged_tokens_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path())?;
    let addr = server.http_addr();
    runtime().block_on(async {
        // The control: the same claims, correctly signed, pass.
        assert_eq!(me_as(addr, "gig", &bearer(5)).await?.status, 404);
        for (what, header) in forgeries() {
            let headers: Vec<(&str, &str)> = header
                .iter()
                .map(|h| ("authorization", h.as_str()))
                .collect();
            for (method, route) in BUYER_ROUTES {
                let path = format!("/api/sales/gig/{route}");
                let reply = http(addr, method, &path, &headers, "").await?;
                assert_refused(&reply, &format!("{what}: {method} {path}"));
            }
        }
        assert_eq!(sold(addr).await?, 0, "nothing was sold to anyone");
        anyhow::Ok(())
    })?;
    server.stop()
}

/// The token rules set by flags (`--jwt-issuer`, `--jwt-audience`,
/// `--jwt-max-lifetime`), and the message each edge of the review's finding
/// 12 is refused with.
#[test]
fn token_rules_from_flags_are_enforced() -> anyhow::Result<()> {
    const ISSUER: &str = "https://id.example";
    const AUDIENCE: &str = "flashsale";
    let dir = tempfile::tempdir()?;
    let args = [
        "--sale",
        "gig:10",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-max-lifetime",
        "1h",
    ];
    let server = start_signed(dir.path(), &args)?;
    let addr = server.http_addr();
    let now = unix_s();
    let claims = |extra: Value| {
        let mut claims =
            json!({ "sub": "5", "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE });
        for (name, value) in extra.as_object().expect("an object") {
            claims[name] = value.clone();
        }
        claims
    };
    let crit = token_with_header(
        &json!({ "alg": "HS256", "crit": ["b64"], "b64": false }),
        &claims(json!({})),
        SECRET,
    );
    let refusals = [
        (
            "leading zero",
            signed_claims(SECRET, &claims(json!({ "sub": "0005" }))),
            TokenError::BadSubject,
        ),
        (
            "string nbf",
            signed_claims(SECRET, &claims(json!({ "nbf": now.to_string() }))),
            TokenError::BadTime("nbf"),
        ),
        (
            "string iat",
            signed_claims(SECRET, &claims(json!({ "iat": now.to_string() }))),
            TokenError::BadTime("iat"),
        ),
        ("crit", crit, TokenError::CriticalExtension),
        (
            "two hours",
            signed_claims(SECRET, &claims(json!({ "exp": now + 7200 }))),
            TokenError::TooLongLived,
        ),
        (
            "forever",
            signed_claims(SECRET, &claims(json!({ "exp": u64::MAX }))),
            TokenError::TooLongLived,
        ),
        (
            "other issuer",
            signed_claims(SECRET, &claims(json!({ "iss": "https://evil.example" }))),
            TokenError::WrongIssuer,
        ),
        (
            "other audience",
            signed_claims(SECRET, &claims(json!({ "aud": "shop" }))),
            TokenError::WrongAudience,
        ),
    ];
    runtime().block_on(async {
        let good = signed_claims(SECRET, &claims(json!({})));
        let reply = me_as(addr, "gig", &as_bearer(&good)).await?;
        assert_eq!(reply.status, 404, "{}", reply.text());
        for (what, token, error) in &refusals {
            for (method, route) in BUYER_ROUTES {
                let path = format!("/api/sales/gig/{route}");
                let headers = [("authorization", as_bearer(token))];
                let headers: Vec<_> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let reply = http(addr, method, &path, &headers, "").await?;
                assert_refused(&reply, &format!("{what}: {method} {path}"));
                assert_eq!(reply.json()["message"], error.to_string(), "{what}");
            }
        }
        assert_eq!(sold(addr).await?, 0);
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
            match reserve_as(addr, "gig", &header).await {
                Ok(reply) => assert_eq!(reply.status, 431, "{size} bytes"),
                Err(e) => eprintln!("{size}-byte header: the connection closed ({e:#})"),
            }
        }
        let health = get(addr, "/healthz").await?;
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
    let (a, b) = (bearer(1), bearer(2));
    runtime().block_on(async {
        let won_b = reserve_as(addr, "gig", &b).await?;
        assert_eq!(won_b.status, 201);
        let ticket_b = won_b.json()["ticket"].clone();

        // A's token never reads B's ticket.
        let mine = me_as(addr, "gig", &a).await?;
        assert_eq!(mine.status_json(), (404, json!({ "ticket": null })));

        // Whatever else names B (the query, the body, another header, B's
        // token in a cookie), A's token buys for A.
        let cookie = format!("token={}", token(2));
        let won_a = http(
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
        assert_eq!(
            reserve_as(addr, "gig", &a).await?.json(),
            json!({ "outcome": "already_owned", "ticket": ticket_a })
        );
        for (auth, ticket) in [(&a, &ticket_a), (&b, &ticket_b)] {
            let mine = me_as(addr, "gig", auth).await?;
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
    runtime().block_on(async {
        a_token_elsewhere_is_ignored(addr).await?;
        the_scheme_is_case_insensitive(addr).await?;
        two_authorization_headers_are_refused(addr).await?;
        assert_eq!(sold(addr).await?, 0);
        anyhow::Ok(())
    })?;
    server.stop()
}

async fn a_token_elsewhere_is_ignored(addr: SocketAddr) -> anyhow::Result<()> {
    let valid = token(7);
    let cookie = format!("token={valid}; access_token={valid}; jwt={valid}");
    let bearer_valid = as_bearer(&valid);
    let query = format!("?access_token={valid}&token={valid}&jwt={valid}");
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
        for (method, route) in BUYER_ROUTES {
            let path = format!("/api/sales/gig/{route}{query}");
            let reply = http(addr, method, &path, headers, "").await?;
            assert_refused(&reply, &format!("token in the {what}: {method} {route}"));
        }
    }
    Ok(())
}

/// The scheme is case-insensitive, as HTTP's are.
async fn the_scheme_is_case_insensitive(addr: SocketAddr) -> anyhow::Result<()> {
    let valid = token(7);
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let reply = me_as(addr, "gig", &format!("{scheme} {valid}")).await?;
        assert_eq!(reply.json(), json!({ "ticket": null }), "{scheme}");
    }
    Ok(())
}

/// Two Authorization headers are refused, whichever is valid.
async fn two_authorization_headers_are_refused(addr: SocketAddr) -> anyhow::Result<()> {
    let (valid, other) = (bearer(7), bearer(8));
    let garbage = "Bearer not.a.token".to_owned();
    for pair in [
        [&valid, &valid],
        [&valid, &other],
        [&valid, &garbage],
        [&garbage, &valid],
    ] {
        let headers = [
            ("authorization", pair[0].as_str()),
            ("authorization", pair[1].as_str()),
        ];
        for (method, route) in BUYER_ROUTES {
            let path = format!("/api/sales/gig/{route}");
            let reply = http(addr, method, &path, &headers, "").await?;
            assert_refused(
                &reply,
                &format!("two Authorization headers: {method} {route}"),
            );
        }
    }
    Ok(())
}
