//! A sale with a draw window on the buyer's page, in Chromium
//! (`tests/browser/draw.mjs`): the rule told before the opening, an entry
//! during the window that pressing again or reloading does not change, the
//! count of entrants rising live as others enter over HTTP, and the result
//! shown without a reload once the draw is published. The result on the
//! page must be the published draw's, and the draw must pass the audit
//! against the commitment seen before the opening.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use flashsale_draw::{audit, Document};
use flashsale_tests::poll::poll_async;
use flashsale_tests::{get, http, reserve_as, runtime, Admin, ServerProcess};

use super::{browser_ready, now_ms, run_script, target_dir};

const SALE: &str = "lottery";
/// The sale opens this long after the browser is up: time to load the page
/// and show the rule before the opening.
const OPENS_IN_MS: u64 = 2_500;
/// Entries are taken for this long after the opening.
const WINDOW_MS: u64 = 6_000;
/// Tickets: fewer than the entrants, so the draw picks.
const CAPACITY: u32 = 2;
/// The users who enter over HTTP once the page's user is in.
const OTHERS: [u64; 3] = [9_001, 9_002, 9_003];
/// How often the test looks again, and how many times at most.
const POLL_PAUSE: Duration = Duration::from_millis(50);
const POLL_TRIES: u32 = 600;

#[test]
fn a_draw_entry_and_its_result_show_live_in_chromium() -> anyhow::Result<()> {
    let browser_dir = browser_ready()?;
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::start_with_admin(dir.path(), &["--demo"])?;
    let ready = dir.path().join("browser-ready");
    let shot = target_dir()
        .join("screenshots")
        .join("browser-draw-result-desktop.png");
    let _ = std::fs::remove_file(&shot);
    let entrants = OTHERS.len() + 1;
    let args = [
        format!("http://{}/?sale={SALE}", server.http_addr()).into(),
        ready.clone().into_os_string(),
        entrants.to_string().into(),
        shot.clone().into_os_string(),
    ];
    let rt = runtime();

    let (driven, report) = std::thread::scope(|scope| {
        let browser = scope.spawn(|| run_script(&browser_dir.join("draw.mjs"), &args, &server));
        let driven = rt.block_on(drive(&server, &ready));
        let report = browser
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the browser thread panicked")));
        (driven, report)
    });
    let (commitment, report) = match (driven, report) {
        (Ok(commitment), Ok(report)) => (commitment, report),
        (Ok(_), Err(e)) => return Err(e),
        (Err(e), Ok(report)) => bail!("{e:#}\nthe browser said: {report}"),
        (Err(e), Err(browser)) => bail!("{e:#}\nthe browser: {browser:#}"),
    };

    // The published draw checks out against the commitment seen before the
    // opening, and has every entrant.
    let doc = rt.block_on(published(server.http_addr()))?;
    let checked = audit(&doc, Some(&commitment)).map_err(|e| anyhow::anyhow!("audit: {e}"))?;
    let user = report["user"].as_u64().context("no user")?;
    let mut expected: Vec<u64> = OTHERS.iter().copied().chain([user]).collect();
    expected.sort_unstable();
    ensure!(doc.entrants == expected, "entrants {:?}", doc.entrants);
    ensure!(checked.winners == CAPACITY as usize, "{checked:?}");

    // The page told the draw's own result.
    let drawn = doc.winners.iter().find(|w| w.user == user);
    match (report["result"].as_str(), drawn) {
        (Some("won"), Some(winner)) => ensure!(
            report["ticket"].as_u64() == Some(u64::from(winner.ticket)),
            "the page says ticket {}, the draw {}",
            report["ticket"],
            winner.ticket
        ),
        (Some("lost"), None) => {}
        (said, drawn) => bail!("the page says {said:?}, the draw gives {drawn:?}"),
    }

    // The count rose on the page while it was open, and the rest is there.
    let first_others = report["first_others"].as_u64().context("no first count")?;
    ensure!(first_others < OTHERS.len() as u64, "{report}");
    let link = report["draw_link"].as_str().unwrap_or_default();
    ensure!(link.ends_with(&format!("/api/sales/{SALE}/draw")), "{link}");
    let bytes =
        std::fs::read(&shot).with_context(|| format!("no screenshot {}", shot.display()))?;
    ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    server.stop()
}

/// The server side of the run: creates the sale once the browser is up,
/// waits for the page's user to enter, then enters [`OTHERS`]. Returns the
/// commitment published before the opening.
async fn drive(server: &ServerProcess, ready: &Path) -> anyhow::Result<String> {
    let up = poll_async(POLL_TRIES, POLL_PAUSE, || async {
        Ok(ready.exists().then_some(()))
    })
    .await?;
    up.context("the browser never came up")?;

    let opens_at = now_ms() + OPENS_IN_MS;
    let body = format!(
        r#"{{"sale":"{SALE}","capacity":{CAPACITY},"opens_at":{opens_at},"draw_window_ms":{WINDOW_MS}}}"#
    );
    let created = Admin::of(server).create(&body).await?;
    ensure!(created.status == 201, "create: {}", created.text());
    let http_addr = server.http_addr();
    let status = get(http_addr, &format!("/api/sales/{SALE}")).await?.json();
    let commitment = status["draw"]["commitment"]
        .as_str()
        .with_context(|| format!("no commitment: {status}"))?
        .to_owned();

    // The page's user enters first: then the page must see the others come.
    let first = poll_async(POLL_TRIES, POLL_PAUSE, || async {
        let status = get(http_addr, &format!("/api/sales/{SALE}")).await?.json();
        Ok((status["draw"]["entrants"].as_u64() >= Some(1)).then_some(()))
    })
    .await?;
    first.context("the page never entered the draw")?;
    ensure!(now_ms() < opens_at + WINDOW_MS, "the page entered too late");

    for user in OTHERS {
        let token = http(
            http_addr,
            "POST",
            "/demo/token",
            &[("content-type", "application/json")],
            &format!(r#"{{"user":{user}}}"#),
        )
        .await?;
        let token = token.json()["token"]
            .as_str()
            .with_context(|| format!("demo token: {}", token.text()))?
            .to_owned();
        let entered = reserve_as(http_addr, SALE, &format!("Bearer {token}")).await?;
        ensure!(
            entered.status == 202 && entered.json()["outcome"] == "entered",
            "user {user}: {} {}",
            entered.status,
            entered.text()
        );
    }
    Ok(commitment)
}

/// The published draw document.
async fn published(addr: std::net::SocketAddr) -> anyhow::Result<Document> {
    let path = format!("/api/sales/{SALE}/draw");
    let reply = get(addr, &path).await?;
    ensure!(
        reply.status == 200,
        "GET {path}: {} {}",
        reply.status,
        reply.text()
    );
    Ok(serde_json::from_slice(&reply.body)?)
}
