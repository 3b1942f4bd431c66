//! The gateway: an HTTP front in its own process, in front of a remote
//! core, answers exactly as the front inside the server does.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flashsale_tests::{http, runtime, ServerProcess};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "the gateway test's secret, thirty-two bytes or more";
/// Sales with fixed opening times, so both cores report the same status.
const SALES: [&str; 4] = ["--sale", "gig:3:1000", "--sale", "later:5:99999999999999"];

fn token(user: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": user.to_string(), "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing works")
}

/// What a client sees of one answer: the status, the body, and whether
/// `Retry-After` and `WWW-Authenticate` were set.
type Seen = (u16, Value, bool, bool);

/// The same requests, in the same order, against `addr`.
async fn script(addr: SocketAddr) -> anyhow::Result<Vec<(String, Seen)>> {
    let mut steps: Vec<(&str, String, Option<u64>)> = vec![
        ("GET", "/api/sales/gig".into(), None),
        ("GET", "/api/sales/later".into(), None),
        ("GET", "/api/sales/nope".into(), None),
        ("GET", "/api/sales/gig/me".into(), Some(1)),
        ("POST", "/api/sales/gig/reserve".into(), None),
    ];
    for user in [1, 1, 2, 3, 4, 1] {
        steps.push(("POST", "/api/sales/gig/reserve".into(), Some(user)));
    }
    steps.extend([
        ("GET", "/api/sales/gig/me".into(), Some(1)),
        ("GET", "/api/sales/gig/me".into(), Some(9)),
        ("POST", "/api/sales/later/reserve".into(), Some(1)),
        ("POST", "/api/sales/nope/reserve".into(), Some(1)),
        (
            "POST",
            format!("/api/sales/{}/reserve", "x".repeat(65)),
            Some(1),
        ),
        ("GET", "/api/sales/gig".into(), None),
        ("GET", "/api/config".into(), None),
        ("GET", "/healthz".into(), None),
        ("POST", "/demo/token".into(), None),
    ]);
    let mut seen = Vec::new();
    for (method, path, user) in steps {
        let auth = user.map(|u| format!("Bearer {}", token(u)));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = http(addr, method, &path, &headers, "").await?;
        let body = reply.json();
        seen.push((
            format!("{method} {path} as {user:?}"),
            (
                reply.status,
                body,
                reply.header("retry-after").is_some(),
                reply.header("www-authenticate").is_some(),
            ),
        ));
    }
    Ok(seen)
}

fn secret_file(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("jwt-secret");
    std::fs::write(&path, SECRET)?;
    Ok(path.to_str().unwrap_or_default().to_owned())
}

#[test]
fn the_gateway_answers_like_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let mut args = vec!["--jwt-secret-file", &secret];
    args.extend(SALES);

    // The front inside a server.
    let server = ServerProcess::start_http(&dir.path().join("direct"), &args)?;
    // A second core with the same sales, and a gateway in front of it.
    let core = ServerProcess::start(&dir.path().join("core"), &SALES)?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        core.addr(),
        &[
            "--jwt-secret-file",
            &secret,
            "--connections",
            "2",
            "--sale",
            "gig",
            "--sale",
            "later",
        ],
    )?;

    let (direct, through) = runtime().block_on(async {
        let direct = script(server.http_addr()).await?;
        let through = script(gateway.http_addr()).await?;
        anyhow::Ok((direct, through))
    })?;
    assert_eq!(direct.len(), through.len());
    for ((what, a), (_, b)) in direct.iter().zip(&through) {
        assert_eq!(a, b, "{what}");
    }
    // The script covered what it means to.
    let statuses: Vec<u16> = direct.iter().map(|(_, s)| s.0).collect();
    for code in [200, 201, 400, 401, 404, 410, 425] {
        assert!(statuses.contains(&code), "no {code} in {statuses:?}");
    }

    runtime().block_on(async {
        let addr = gateway.http_addr();
        let metrics = http(addr, "GET", "/metrics", &[], "").await?.text();
        assert!(metrics.contains(r#"protocol="http""#), "{metrics}");

        // The core goes away: the gateway says so instead of guessing.
        core.stop()?;
        let health = http(addr, "GET", "/healthz", &[], "").await?;
        assert_eq!(
            (health.status, health.json()),
            (503, json!({ "status": "unavailable" }))
        );
        let auth = format!("Bearer {}", token(50));
        let lost = http(
            addr,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert!(matches!(lost.status, 502 | 504), "{lost:?}");
        assert!(lost.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/me"));
        anyhow::Ok(())
    })?;
    gateway.stop()?;
    server.stop()
}

#[test]
fn the_old_gateway_subcommand_still_runs_the_gateway() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let core = ServerProcess::start(&dir.path().join("core"), &SALES)?;
    let gateway = ServerProcess::start_gateway_alias(
        &dir.path().join("gateway"),
        core.addr(),
        &["--jwt-secret-file", &secret, "--sale", "gig"],
    )?;
    runtime().block_on(async {
        let addr = gateway.http_addr();
        let config = http(addr, "GET", "/api/config", &[], "").await?;
        assert_eq!(config.json()["sales"], json!(["gig"]));
        let auth = format!("Bearer {}", token(7));
        let won = http(
            addr,
            "POST",
            "/api/sales/gig/reserve",
            &[("authorization", &auth)],
            "",
        )
        .await?;
        assert_eq!(won.status, 201, "{won:?}");
        anyhow::Ok(())
    })?;
    let log = std::fs::read_to_string(dir.path().join("gateway.server.log"))?;
    assert!(log.contains("deprecated"), "the alias says so: {log}");
    gateway.stop()?;
    core.stop()
}
