//! The gateway: an HTTP front in its own process, in front of a remote
//! core, answers exactly as the front inside the server does.

use std::net::SocketAddr;

use anyhow::Context as _;
use flashsale_metrics::readback::series;
use flashsale_metrics::{Op, Protocol, REQUESTS};
use flashsale_tests::process::path_str;
use flashsale_tests::token::{bearer, secret_file};
use flashsale_tests::{get, http, reserve_as, runtime, EventStream, ServerProcess};
use serde_json::{json, Value};

/// Sales with fixed opening times, so both cores report the same status.
const SALES: [&str; 4] = ["--sale", "gig:3:1000", "--sale", "later:5:99999999999999"];

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
        let auth = user.map(bearer);
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

#[test]
fn the_gateway_answers_like_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let secret = path_str(&secret)?;
    let mut args = vec!["--jwt-secret-file", secret];
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
            secret,
            "--connections",
            "2",
            "--sale",
            "gig",
            "--sale",
            "later",
        ],
    )?;
    let rt = runtime();
    rt.block_on(both_fronts_answer_the_script_alike(
        server.http_addr(),
        gateway.http_addr(),
    ))?;
    let addr = gateway.http_addr();
    let metrics = rt.block_on(get(addr, "/metrics"))?.text();
    let http_series = [("protocol", Protocol::Http.label())];
    assert!(
        series(&metrics, REQUESTS, &http_series).is_some(),
        "{metrics}"
    );
    core.stop()?;
    rt.block_on(without_its_core_the_gateway_says_so(addr))?;
    gateway.stop()?;
    server.stop()
}

async fn both_fronts_answer_the_script_alike(
    direct: SocketAddr,
    through: SocketAddr,
) -> anyhow::Result<()> {
    let direct = script(direct).await?;
    let through = script(through).await?;
    for ((what, a), (_, b)) in direct.iter().zip(&through) {
        assert_eq!(a, b, "{what}");
    }
    // The script covered what it means to.
    let statuses: Vec<u16> = direct.iter().map(|(_, s)| s.0).collect();
    for code in [200, 201, 400, 401, 404, 410, 425] {
        assert!(statuses.contains(&code), "no {code} in {statuses:?}");
    }
    Ok(())
}

/// Once the core is gone, the gateway says so instead of guessing.
async fn without_its_core_the_gateway_says_so(addr: SocketAddr) -> anyhow::Result<()> {
    assert_eq!(
        get(addr, "/healthz").await?.status_json(),
        (503, json!({ "status": "unavailable" }))
    );
    let lost = reserve_as(addr, "gig", &bearer(50)).await?;
    assert!(matches!(lost.status, 502 | 504), "{lost:?}");
    assert!(lost.json()["message"]
        .as_str()
        .unwrap_or_default()
        .contains("/me"));
    Ok(())
}

/// Status requests the core has answered over its native port.
async fn native_status_requests(core_http: SocketAddr) -> anyhow::Result<f64> {
    let metrics = get(core_http, "/metrics").await?.text();
    let labels = [
        ("protocol", Protocol::Native.label()),
        ("op", Op::Status.label()),
    ];
    Ok(series(&metrics, REQUESTS, &labels).unwrap_or(0.0))
}

/// While a sale has open pages, the gateway's event poller reads its status
/// a few times a second, and `GET /api/sales/{sale}` is answered from that
/// instead of from the core: a crowd refreshing the page costs the core
/// nothing more.
#[test]
fn open_pages_make_the_gateway_answer_the_status_itself() -> anyhow::Result<()> {
    const GETS: u32 = 200;
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let secret = path_str(&secret)?;
    let mut args = vec!["--jwt-secret-file", secret];
    args.extend(SALES);
    // The core's own HTTP front only serves its /metrics here.
    let core = ServerProcess::start_http(&dir.path().join("core"), &args)?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        core.addr(),
        &["--jwt-secret-file", secret],
    )?;
    let addr = gateway.http_addr();
    runtime().block_on(async {
        let mut page = EventStream::open(addr, "/api/sales/gig/events").await?;
        let first = page.next_data().await?.context("a first event")?;
        assert!(first.contains("\"remaining\":3"), "{first}");

        let before = native_status_requests(core.http_addr()).await?;
        let started = std::time::Instant::now();
        for _ in 0..GETS {
            let (status, body) = get(addr, "/api/sales/gig").await?.status_json();
            assert_eq!((status, &body["remaining"]), (200, &json!(3)), "{body}");
        }
        let elapsed = started.elapsed();
        let asked = native_status_requests(core.http_addr()).await? - before;
        // The poller asks every 100 ms; the page's GETs add nothing.
        let polls = (elapsed.as_millis() / 100) as f64 + 2.0;
        assert!(
            asked <= polls,
            "{GETS} GETs in {elapsed:?} made the core answer {asked} status requests"
        );

        // A bought ticket shows within a few polls.
        let won = reserve_as(addr, "gig", &bearer(5)).await?;
        assert_eq!(won.status, 201, "{won:?}");
        let mut seen = json!(null);
        for _ in 0..100 {
            seen = get(addr, "/api/sales/gig").await?.json()["remaining"].clone();
            if seen == json!(2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(seen, json!(2));
        drop(page);
        anyhow::Ok(())
    })?;
    gateway.stop()?;
    core.stop()
}

#[test]
fn the_old_gateway_subcommand_still_runs_the_gateway() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let core = ServerProcess::start(&dir.path().join("core"), &SALES)?;
    let gateway = ServerProcess::start_gateway_alias(
        &dir.path().join("gateway"),
        core.addr(),
        &["--jwt-secret-file", path_str(&secret)?, "--sale", "gig"],
    )?;
    runtime().block_on(async {
        let addr = gateway.http_addr();
        let config = get(addr, "/api/config").await?;
        assert_eq!(config.json()["sales"], json!(["gig"]));
        let won = reserve_as(addr, "gig", &bearer(7)).await?;
        assert_eq!(won.status, 201, "{won:?}");
        anyhow::Ok(())
    })?;
    let log = std::fs::read_to_string(dir.path().join("gateway.server.log"))?;
    assert!(log.contains("deprecated"), "the alias says so: {log}");
    gateway.stop()?;
    core.stop()
}
