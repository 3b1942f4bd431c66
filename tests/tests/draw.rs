//! A sale with a draw window, through the real binary: entries over HTTP and
//! the native protocol, the draw at the close, its publication, every
//! entrant's result, the published document audited, drawn holds paid or
//! lapsed, and the same draw after `kill -9` during the window and around
//! the draw.
//!
//! Windows here last a couple of seconds, so the tests wait for real
//! closes; every wait is a bounded poll, so a slow machine makes them
//! slower, never flaky.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use flashsale_client::{Client, ReserveOutcome};
use flashsale_core::clock::now_ms;
use flashsale_draw::{audit, to_hex, Document};
use flashsale_protocol::json::EntryResult;
use flashsale_tests::poll::poll_async;
use flashsale_tests::{bearer, client_config, get, me_as, reserve_as, runtime, start_with_admin};
use flashsale_tests::{Admin, ServerProcess};
use std::net::SocketAddr;

const SALE: &str = "drop";

/// Waits (bounded) until the wall clock reaches `at_ms`.
async fn until(at_ms: u64) -> anyhow::Result<()> {
    let tries = u32::try_from(at_ms.saturating_sub(now_ms()) / 20 + 100)?;
    poll_async(tries, Duration::from_millis(20), || async {
        Ok((now_ms() >= at_ms).then_some(()))
    })
    .await?
    .with_context(|| format!("the clock never reached {at_ms}"))
}

/// Every one of `users` reserving at once over `client`: those answered
/// `Entered`.
async fn enter(client: &Client, users: impl Iterator<Item = u64>) -> BTreeSet<u64> {
    let answers = futures_util::future::join_all(
        users.map(|user| async move { (user, client.reserve(SALE, user).await) }),
    )
    .await;
    answers
        .into_iter()
        .filter(|(_, a)| matches!(a, Ok(ReserveOutcome::Entered { .. })))
        .map(|(user, _)| user)
        .collect()
}

/// The sale's status, as `GET /api/sales/{sale}` gives it.
async fn status(http: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let reply = get(http, &format!("/api/sales/{SALE}")).await?;
    ensure!(reply.status == 200, "status: {}", reply.text());
    Ok(reply.json())
}

/// Creates the sale through the admin API with the other `fields` of its
/// definition, and returns the commitment the answer publishes.
async fn create(admin: Admin, mut fields: serde_json::Value) -> anyhow::Result<String> {
    fields["sale"] = SALE.into();
    let created = admin.create(&fields.to_string()).await?;
    ensure!(created.status == 201, "create: {}", created.text());
    commitment_of(&created.json())
}

/// The commitment in a sale's status or in the admin API's answer.
fn commitment_of(sale: &serde_json::Value) -> anyhow::Result<String> {
    let commitment = sale["draw"]["commitment"]
        .as_str()
        .with_context(|| format!("no commitment in {sale}"))?;
    ensure!(commitment.len() == 64, "{sale}");
    Ok(commitment.to_owned())
}

/// Waits (bounded) until the draw is published, and returns its document.
async fn published(http: SocketAddr, draws_at: u64) -> anyhow::Result<(Document, String)> {
    let wait_ms = draws_at.saturating_sub(now_ms()) + 30_000;
    let tries = u32::try_from(wait_ms / 50)?;
    let seed = poll_async(tries, Duration::from_millis(50), || async move {
        let status = status(http).await?;
        Ok(status["draw"]["seed"].as_str().map(str::to_owned))
    })
    .await?
    .context("the draw was never published")?;
    let reply = get(http, &format!("/api/sales/{SALE}/draw")).await?;
    ensure!(
        reply.status == 200,
        "draw: {} {}",
        reply.status,
        reply.text()
    );
    ensure!(reply.header("content-type") == Some("application/json"));
    let document: Document = serde_json::from_slice(&reply.body)
        .with_context(|| format!("the draw is not a document: {}", reply.text()))?;
    ensure!(document.seed == seed, "the status and the document differ");
    Ok((document, reply.text()))
}

#[test]
fn a_draw_is_entered_made_published_told_and_audited() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let (http, admin) = (server.http_addr(), Admin::of(&server));
    let rt = runtime();
    let opens_at = now_ms() + 1_500;
    let created = rt.block_on(create(
        admin,
        serde_json::json!({"capacity": 3, "opens_at": opens_at, "draw_window_ms": 4000}),
    ))?;
    let draws_at = opens_at + 4_000;

    // Before opening: the commitment is public, the seed is not.
    let before = rt.block_on(status(http))?;
    let commitment = commitment_of(&before)?;
    ensure!(
        commitment == created,
        "the status and the admin answer differ"
    );
    assert_eq!(before["draw"]["draws_at"], draws_at);
    assert_eq!(before["draw"]["seed"], serde_json::Value::Null);
    assert_eq!(before["draw"]["entrants"], 0);
    let early = rt.block_on(reserve_as(http, SALE, &bearer(1)))?;
    assert_eq!(early.status, 425, "{}", early.text());

    // Inside the window: ten users over HTTP, five over the native
    // protocol; a repeat is the same answer.
    let client = rt.block_on(Client::connect(client_config(server.addr())))?;
    let entered = serde_json::json!({"outcome": "entered", "draws_at": draws_at});
    rt.block_on(async {
        until(opens_at).await?;
        for user in 1..=10 {
            let reply = reserve_as(http, SALE, &bearer(user)).await?;
            assert_eq!(reply.status_json(), (202, entered.clone()), "user {user}");
        }
        for user in 11..=15 {
            let outcome = client.reserve(SALE, user).await?;
            assert_eq!(outcome, ReserveOutcome::Entered { draws_at });
        }
        let again = reserve_as(http, SALE, &bearer(3)).await?;
        assert_eq!(again.status_json(), (202, entered.clone()));
        let pending = me_as(http, SALE, &bearer(4)).await?;
        assert_eq!(
            pending.status_json(),
            (
                200,
                serde_json::json!({"ticket": null, "draw": {"draws_at": draws_at, "result": "pending"}})
            )
        );
        let too_early = get(http, &format!("/api/sales/{SALE}/draw")).await?;
        assert_eq!(too_early.status, 425, "{}", too_early.text());
        assert_eq!(too_early.json()["error"], "draw_pending");
        let wait: u64 = too_early
            .header("retry-after")
            .context("425 without Retry-After")?
            .parse()?;
        ensure!((1..=5).contains(&wait), "Retry-After {wait}");
        let counted = status(http).await?;
        assert_eq!(counted["draw"]["entrants"], 15);
        anyhow::Ok(())
    })?;

    // The close: the draw is made, published, and anyone can check it.
    let (document, text) = rt.block_on(published(http, draws_at))?;
    let checked = audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
    assert_eq!((checked.entrants, checked.winners), (15, 3));
    assert_eq!(document.entrants, (1..=15).collect::<Vec<u64>>());
    assert_eq!(document.sale, SALE);
    let winners: Vec<u64> = document.winners.iter().map(|w| w.user).collect();
    let (code, out, err) = flashsale_tests::poll::run_for_output(
        std::process::Command::new(flashsale_tests::workspace_bin("flashsale-server")).args([
            "audit",
            "--draw",
            &format!("http://{http}/api/sales/{SALE}/draw"),
        ]),
        std::process::Stdio::null(),
        Duration::from_secs(60),
    )?;
    ensure!(code.success(), "audit over HTTP failed: {out} {err}");
    ensure!(out.contains("OK"), "{out}");

    // Every entrant learns their own result, over HTTP and natively.
    rt.block_on(async {
        for user in 1..=15u64 {
            let me = if user <= 10 {
                let reply = me_as(http, SALE, &bearer(user)).await?;
                ensure!(reply.status == 200, "user {user}: {}", reply.text());
                serde_json::from_slice::<flashsale_protocol::json::LookupBody>(&reply.body)?
            } else {
                client.me(SALE, user).await?
            };
            match winners.iter().position(|&w| w == user) {
                Some(i) => assert_eq!(me.ticket, Some(i as u32 + 1), "user {user}"),
                None => {
                    assert_eq!(me.ticket, None, "user {user}");
                    assert_eq!(
                        me.draw.map(|d| d.result),
                        Some(EntryResult::Lost),
                        "user {user}"
                    );
                }
            }
        }
        let late = reserve_as(http, SALE, &bearer(99)).await?;
        assert_eq!(late.status, 410, "{}", late.text());
        let loser = (1..=15)
            .find(|u| !winners.contains(u))
            .context("12 losers")?;
        assert_eq!(client.reserve(SALE, loser).await?, ReserveOutcome::SoldOut);
        let winner = winners[0];
        assert_eq!(
            client.reserve(SALE, winner).await?,
            ReserveOutcome::AlreadyOwned { ticket: 1 }
        );
        anyhow::Ok(())
    })?;
    drop(client);

    // After kill -9 and a restart: the very same document.
    server.kill9()?;
    let server = start_with_admin(dir.path(), &[])?;
    let (_, again) = rt.block_on(published(server.http_addr(), draws_at))?;
    assert_eq!(again, text, "a restart changed the published draw");
    Ok(())
}

#[test]
fn fewer_entrants_than_tickets_all_win_and_the_rest_sells_first_come() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // Opens at once, with a window long enough for a slow start: the flags
    // fix the times before the process is up (and the binary is built
    // first, if need be, outside the window).
    let _ = flashsale_tests::workspace_bin("flashsale-server");
    let secret = flashsale_tests::token::secret_file(dir.path())?;
    let opens_at = now_ms();
    let sale = format!("{SALE}:5:{opens_at}");
    let server = ServerProcess::start_http(
        &data,
        &[
            "--jwt-secret-file",
            secret.to_str().context("path")?,
            "--sale",
            &sale,
            "--draw-window-ms",
            "6000",
        ],
    )?;
    let rt = runtime();
    let client = rt.block_on(Client::connect(client_config(server.addr())))?;
    let draws_at = opens_at + 6_000;
    let commitment = rt.block_on(async {
        until(opens_at).await?;
        for user in [7, 8] {
            assert_eq!(
                client.reserve(SALE, user).await?,
                ReserveOutcome::Entered { draws_at }
            );
        }
        let info = client.draw(SALE).await?.context("a sale with a draw")?;
        assert_eq!((info.entrants, info.seed), (2, None));
        let commitment = to_hex(&info.commitment);
        // After the close, a buyer is answered once the draw is published:
        // the two entrants hold tickets 1 and 2, so this is ticket 3.
        until(draws_at).await?;
        assert_eq!(
            client.reserve(SALE, 100).await?,
            ReserveOutcome::Won { ticket: 3 }
        );
        let mut tickets = BTreeSet::new();
        for user in [7, 8, 100] {
            tickets.insert(client.lookup(SALE, user).await?.context("a ticket")?);
        }
        assert_eq!(tickets, BTreeSet::from([1, 2, 3]));
        let info = client.draw(SALE).await?.context("a sale with a draw")?;
        ensure!(info.seed.is_some() && info.winners == 2, "{info:?}");
        let page = client.draw_page(SALE, true, 0).await?;
        assert_eq!(page.total, 2);
        assert_eq!(page.users.len(), 2);
        anyhow::Ok(commitment)
    })?;
    // The published draw checks out: both entrants won, tickets 1 and 2.
    let (document, _) = rt.block_on(published(server.http_addr(), draws_at))?;
    let checked = audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
    assert_eq!((checked.entrants, checked.winners), (2, 2));
    assert_eq!(document.entrants, [7, 8]);
    assert_eq!(document.capacity, 5);
    // A restart with another window is refused: it would rewrite the rule.
    drop(client);
    server.stop()?;
    let (status, log) =
        ServerProcess::run_to_exit(&data, &["--sale", &sale, "--draw-window-ms", "999"])?;
    ensure!(!status.success(), "a changed window was accepted");
    ensure!(log.contains("draw window"), "{log}");
    Ok(())
}

/// In a sale with holds, a drawn ticket is a hold from the draw's time: the
/// winner who pays keeps the ticket; the one who does not loses it at the
/// deadline, and it goes back on sale. The published draw stays as it was.
#[test]
fn drawn_winners_of_a_sale_with_holds_pay_or_lose_their_ticket() -> anyhow::Result<()> {
    const HOLD_MS: u64 = 2_000;
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let (http, admin) = (server.http_addr(), Admin::of(&server));
    let rt = runtime();
    let opens_at = now_ms() + 300;
    let fields = serde_json::json!({
        "capacity": 2,
        "opens_at": opens_at,
        "draw_window_ms": 2000,
        "hold_seconds": HOLD_MS / 1_000,
    });
    let commitment = rt.block_on(create(admin, fields))?;
    let draws_at = opens_at + 2_000;
    let client = rt.block_on(Client::connect(client_config(server.addr())))?;
    rt.block_on(async {
        until(opens_at).await?;
        let entered = enter(&client, 1..=5).await;
        ensure!(entered.len() == 5, "{entered:?} entered before the close");
        anyhow::Ok(())
    })?;
    let (document, text) = rt.block_on(published(http, draws_at))?;
    audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
    let [paid, unpaid] = document.winners[..] else {
        anyhow::bail!("two winners: {:?}", document.winners);
    };

    rt.block_on(async {
        // Each winner holds their ticket, due within a hold's length of the
        // draw, over HTTP and natively alike.
        for winner in [paid, unpaid] {
            let me = me_as(http, SALE, &bearer(winner.user)).await?;
            let body = me.json();
            ensure!(
                me.status == 200 && body["ticket"] == winner.ticket && body["status"] == "held",
                "{winner:?}: {}",
                me.text()
            );
            let expires_at = body["expires_at"].as_u64().context("no deadline")?;
            ensure!(
                (draws_at + HOLD_MS..=now_ms() + HOLD_MS).contains(&expires_at),
                "{winner:?}: due at {expires_at}, drawn at {draws_at} or later"
            );
            let native = client.me(SALE, winner.user).await?;
            ensure!(
                (native.ticket, native.expires_at) == (Some(winner.ticket), Some(expires_at)),
                "{winner:?}: {native:?}"
            );
        }

        // Paid: sold for good.
        let confirmed = admin.confirm(SALE, paid.user, "pay-drawn").await?;
        ensure!(confirmed.status == 200, "confirm: {}", confirmed.text());
        let me = me_as(http, SALE, &bearer(paid.user)).await?;
        assert_eq!(
            me.status_json(),
            (
                200,
                serde_json::json!({"ticket": paid.ticket, "status": "confirmed"})
            )
        );

        // Unpaid: released at the deadline, the ticket on sale again.
        let tries = u32::try_from(HOLD_MS / 100 * 2 + 100)?;
        let sale = admin.until_remaining(SALE, 1, tries).await?;
        ensure!(sale["confirmed"] == 1 && sale["held"] == 0, "{sale}");
        let lapsed = me_as(http, SALE, &bearer(unpaid.user)).await?;
        ensure!(
            lapsed.status == 404 && lapsed.json()["ticket"].is_null(),
            "{}",
            lapsed.text()
        );
        let late = admin.confirm(SALE, unpaid.user, "too-late").await?;
        ensure!(late.status == 410, "a late confirm: {}", late.text());
        let next = reserve_as(http, SALE, &bearer(100)).await?;
        let body = next.json();
        ensure!(
            next.status == 201 && body["outcome"] == "held" && body["ticket"] == unpaid.ticket,
            "the released ticket: {}",
            next.text()
        );
        ensure!(
            client.lookup(SALE, paid.user).await? == Some(paid.ticket),
            "the paid ticket moved"
        );
        anyhow::Ok(())
    })?;
    let (_, again) = rt.block_on(published(http, draws_at))?;
    ensure!(again == text, "the published draw changed after the holds");
    server.stop()
}

/// Entrants acknowledged before a `kill -9` in the middle of the window are
/// in the draw the restarted server makes; the draw it publishes checks out.
#[test]
fn kill_9_during_the_window_keeps_every_acknowledged_entry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let rt = runtime();
    let opens_at = now_ms() + 200;
    let commitment = rt.block_on(create(
        Admin::of(&server),
        serde_json::json!({"capacity": 20, "opens_at": opens_at, "draw_window_ms": 8000}),
    ))?;
    let draws_at = opens_at + 8_000;
    let acknowledged = rt.block_on(async {
        until(opens_at).await?;
        let client = Client::connect(client_config(server.addr())).await?;
        anyhow::Ok(enter(&client, 1..=300).await)
    })?;
    ensure!(acknowledged.len() == 300, "{} entered", acknowledged.len());
    // More entries on their way when the process dies: unacknowledged ones
    // may or may not count.
    let in_flight = std::thread::spawn({
        let addr = server.addr();
        move || {
            runtime().block_on(async move {
                if let Ok(client) = Client::connect(client_config(addr)).await {
                    let _ = enter(&client, 1000..1500).await;
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(5));
    server.kill9()?;
    let _ = in_flight.join();

    let server = start_with_admin(dir.path(), &[])?;
    let http = server.http_addr();
    let restarted = commitment_of(&rt.block_on(status(http))?)?;
    ensure!(restarted == commitment, "a restart changed the commitment");
    // Entries still open after the restart.
    if now_ms() + 500 < draws_at {
        let reply = rt.block_on(reserve_as(http, SALE, &bearer(5000)))?;
        ensure!(reply.status == 202, "{}", reply.text());
        ensure!(reply.json()["draws_at"] == draws_at);
    }
    let (document, _) = rt.block_on(published(http, draws_at))?;
    audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
    let entrants: BTreeSet<u64> = document.entrants.iter().copied().collect();
    ensure!(
        acknowledged.is_subset(&entrants),
        "acknowledged entries were lost: {:?}",
        acknowledged.difference(&entrants).collect::<Vec<_>>()
    );
    ensure!(document.winners.len() == 20);
    // And the winners hold their tickets.
    let client = rt.block_on(Client::connect(client_config(server.addr())))?;
    for winner in &document.winners {
        let ticket = rt.block_on(client.lookup(SALE, winner.user))?;
        ensure!(ticket == Some(winner.ticket), "{winner:?}: {ticket:?}");
    }
    Ok(())
}

/// `kill -9` at moments around the close: whatever was published before is
/// published again, identical; and what is published after checks out, with
/// every winner holding their ticket.
#[test]
fn kill_9_around_the_draw_restarts_into_the_same_draw() -> anyhow::Result<()> {
    const ENTRANTS: u64 = 500;
    let rt = runtime();
    for (trial, offset_ms) in [0i64, 15, 40, 120].into_iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let server = start_with_admin(dir.path(), &[])?;
        let opens_at = now_ms() + 200;
        let commitment = rt.block_on(create(
            Admin::of(&server),
            serde_json::json!({"capacity": 50, "opens_at": opens_at, "draw_window_ms": 2500}),
        ))?;
        let draws_at = opens_at + 2_500;
        let http = server.http_addr();
        rt.block_on(async {
            until(opens_at).await?;
            let client = Client::connect(client_config(server.addr())).await?;
            let entered = enter(&client, 1..=ENTRANTS).await.len();
            ensure!(
                entered as u64 == ENTRANTS,
                "trial {trial}: {entered} entered before the close"
            );
            anyhow::Ok(())
        })?;
        let kill_at = draws_at.saturating_add_signed(offset_ms);
        while now_ms() < kill_at {
            std::thread::sleep(Duration::from_millis(1));
        }
        // What was public at the kill, if anything.
        let seen = rt
            .block_on(get(http, &format!("/api/sales/{SALE}/draw")))
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.text());
        server.kill9()?;
        let server = start_with_admin(dir.path(), &[])?;
        let (document, text) = rt.block_on(published(server.http_addr(), draws_at))?;
        audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
        ensure!(document.entrants.len() as u64 == ENTRANTS, "trial {trial}");
        if let Some(seen) = seen {
            ensure!(
                seen == text,
                "trial {trial}: the published draw changed after a restart"
            );
        }
        let client = rt.block_on(Client::connect(client_config(server.addr())))?;
        for winner in &document.winners {
            let ticket = rt.block_on(client.lookup(SALE, winner.user))?;
            ensure!(
                ticket == Some(winner.ticket),
                "trial {trial}: {winner:?} holds {ticket:?}"
            );
        }
        server.stop()?;
    }
    Ok(())
}

/// A draw larger than a page (4 096 users) of entrants and of winners is
/// published whole, and a gateway, which reads it page by page over the
/// native protocol, serves the very same document.
#[test]
fn a_draw_of_many_pages_is_the_same_through_a_gateway() -> anyhow::Result<()> {
    const ENTRANTS: u64 = 5_000;
    const CAPACITY: u32 = 4_500;
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let secret = flashsale_tests::token::secret_file(dir.path())?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        server.addr(),
        &["--jwt-secret-file", secret.to_str().context("path")?],
    )?;
    let rt = runtime();
    let opens_at = now_ms() + 200;
    let created = rt.block_on(Admin::of(&server).create(&format!(
        r#"{{"sale":"{SALE}","capacity":{CAPACITY},"opens_at":{opens_at},"draw_window_ms":5000}}"#
    )))?;
    ensure!(created.status == 201, "create: {}", created.text());
    let commitment = commitment_of(&created.json())?;
    assert_eq!(created.json()["draw_window_ms"], 5000);
    let draws_at = opens_at + 5_000;
    let through_gateway = rt.block_on(status(gateway.http_addr()))?;
    assert_eq!(through_gateway["draw"]["commitment"], commitment.as_str());
    rt.block_on(async {
        until(opens_at).await?;
        let client = Client::connect(client_config(server.addr())).await?;
        let entered = enter(&client, (1..=ENTRANTS).map(|u| u * 3)).await.len();
        ensure!(
            entered as u64 == ENTRANTS,
            "{entered} entered before the close"
        );
        anyhow::Ok(())
    })?;
    let (document, text) = rt.block_on(published(server.http_addr(), draws_at))?;
    let checked = audit(&document, Some(&commitment)).map_err(anyhow::Error::msg)?;
    assert_eq!(
        (checked.entrants as u64, checked.winners),
        (ENTRANTS, 4_500)
    );
    let (_, via_gateway) = rt.block_on(published(gateway.http_addr(), draws_at))?;
    ensure!(
        via_gateway == text,
        "the gateway's document differs from the core's"
    );
    Ok(())
}
