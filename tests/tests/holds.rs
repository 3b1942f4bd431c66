//! The sale lifecycle through the real binary: a sale created live through
//! the admin API, won as holds, paid, expired, resold, paused, closed, and
//! the same state after `kill -9` and a restart.
//!
//! Holds here last 2 s, so the tests wait for real expiries; every wait is a
//! bounded poll, so a slow machine makes them slower, never flaky.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use flashsale_client::{Client, HoldInfo, ReserveOutcome};
use flashsale_tests::poll::poll_async;
use flashsale_tests::{bearer, client_config, http_as, runtime, start_with_admin};
use flashsale_tests::{Admin, ServerProcess};
use serde_json::json;

const SALE: &str = "drop";
const CAPACITY: u32 = 5;
const HOLD_SECONDS: u64 = 2;

/// Every `users` reserving at once over the native protocol: who holds what.
async fn rush(
    client: &Client,
    users: impl Iterator<Item = u64>,
) -> anyhow::Result<BTreeMap<u64, u32>> {
    let answers = futures_util::future::join_all(
        users.map(|user| async move { (user, client.reserve(SALE, user).await) }),
    )
    .await;
    let mut held = BTreeMap::new();
    for (user, answer) in answers {
        match answer.with_context(|| format!("user {user}"))? {
            ReserveOutcome::Held { ticket, expires_at } => {
                ensure!(expires_at > 0, "user {user}: a hold without a deadline");
                held.insert(user, ticket);
            }
            ReserveOutcome::SoldOut => {}
            other => anyhow::bail!("user {user}: {other:?}"),
        }
    }
    Ok(held)
}

/// Waits (bounded) until the sale lists `remaining` tickets on sale.
async fn until_remaining(admin: Admin, remaining: u32) -> anyhow::Result<serde_json::Value> {
    let tries = u32::try_from(HOLD_SECONDS * 20 + 100)?;
    poll_async(tries, Duration::from_millis(100), || async move {
        let sale = admin.sale(SALE).await?;
        Ok((sale["remaining"] == remaining).then_some(sale))
    })
    .await?
    .with_context(|| format!("the sale never had {remaining} tickets on sale"))
}

/// What every confirmed user holds, by lookup.
async fn confirmed_tickets(
    client: &Client,
    users: &BTreeSet<u64>,
) -> anyhow::Result<BTreeMap<u64, u32>> {
    let mut tickets = BTreeMap::new();
    for &user in users {
        let me = client.me(SALE, user).await?;
        ensure!(
            me.expires_at.is_none(),
            "user {user} is still only holding: {me:?}"
        );
        tickets.insert(
            user,
            me.ticket
                .with_context(|| format!("user {user} holds nothing"))?,
        );
    }
    Ok(tickets)
}

#[test]
fn a_live_sale_with_holds_ends_with_every_ticket_confirmed_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let rt = runtime();
    let (confirmed, tickets) = rt.block_on(async {
        let admin = Admin::of(&server);
        let created = admin
            .create(
                &json!({"sale": SALE, "capacity": CAPACITY, "hold_seconds": HOLD_SECONDS})
                    .to_string(),
            )
            .await?;
        ensure!(created.status == 201, "create: {}", created.text());
        let client = client_config(server.addr()).connect().await?;

        // The first rush: 50 users for 5 tickets; 3 winners pay.
        let first = rush(&client, 1..=50).await?;
        ensure!(
            first.len() == CAPACITY as usize,
            "{} holds: {first:?}",
            first.len()
        );
        let tickets: BTreeSet<u32> = first.values().copied().collect();
        ensure!(tickets == (1..=CAPACITY).collect(), "tickets {tickets:?}");
        let (payers, abandoners): (Vec<u64>, Vec<u64>) = {
            let users: Vec<u64> = first.keys().copied().collect();
            (users[..3].to_vec(), users[3..].to_vec())
        };
        for &user in &payers {
            let paid = admin.confirm(SALE, user, &format!("pay-{user}")).await?;
            ensure!(paid.status == 200, "confirm {user}: {}", paid.text());
            ensure!(paid.json()["ticket"] == first[&user]);
        }

        // One expiry cycle: the two unpaid holds come back.
        let sale = until_remaining(admin, 2).await?;
        ensure!(sale["confirmed"] == 3 && sale["held"] == 0, "{sale}");
        for &user in &abandoners {
            let late = admin.confirm(SALE, user, "too-late").await?;
            ensure!(
                late.status == 410,
                "a late confirm of {user}: {}",
                late.text()
            );
            ensure!(late.json()["outcome"] == "expired");
        }

        // The second rush, by everyone who has no ticket: 2 more holds, paid.
        let second = rush(&client, (1..=50).filter(|u| !payers.contains(u))).await?;
        ensure!(second.len() == 2, "second rush: {second:?}");
        for &user in second.keys() {
            let paid = admin.confirm(SALE, user, &format!("pay-{user}")).await?;
            ensure!(paid.status == 200, "confirm {user}: {}", paid.text());
        }
        let again = admin
            .confirm(SALE, payers[0], &format!("pay-{}", payers[0]))
            .await?;
        ensure!(
            again.status == 200,
            "the same confirm again: {}",
            again.text()
        );
        let other = admin.confirm(SALE, payers[0], "another-ref").await?;
        ensure!(other.status == 409, "another reference: {}", other.text());

        let sale = admin.sale(SALE).await?;
        ensure!(
            sale["confirmed"] == CAPACITY && sale["remaining"] == 0 && sale["held"] == 0,
            "{sale}"
        );
        let confirmed: BTreeSet<u64> = payers.iter().chain(second.keys()).copied().collect();
        let tickets = confirmed_tickets(&client, &confirmed).await?;
        anyhow::Ok((confirmed, tickets))
    })?;
    let distinct: BTreeSet<u32> = tickets.values().copied().collect();
    ensure!(
        distinct.len() == CAPACITY as usize,
        "a ticket confirmed twice: {tickets:?}"
    );

    // kill -9, restart: the same confirmed tickets, nothing held, sold out.
    server.kill9()?;
    let server = start_with_admin(dir.path(), &[])?;
    rt.block_on(async {
        let client = client_config(server.addr()).connect().await?;
        ensure!(confirmed_tickets(&client, &confirmed).await? == tickets);
        let sale = Admin::of(&server).sale(SALE).await?;
        ensure!(
            sale["confirmed"] == CAPACITY
                && sale["remaining"] == 0
                && sale["hold_seconds"] == HOLD_SECONDS,
            "after restart: {sale}"
        );
        ensure!(client.reserve(SALE, 999).await? == ReserveOutcome::SoldOut);
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn holds_keep_their_deadline_across_a_crash_and_expire_when_down() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let rt = runtime();
    let held = rt.block_on(async {
        let admin = Admin::of(&server);
        let body = json!({"sale": SALE, "capacity": 2, "hold_seconds": HOLD_SECONDS}).to_string();
        ensure!(admin.create(&body).await?.status == 201);
        let client = client_config(server.addr()).connect().await?;
        let ReserveOutcome::Held { ticket, expires_at } = client.reserve(SALE, 7).await? else {
            anyhow::bail!("user 7 holds nothing");
        };
        anyhow::Ok(HoldInfo {
            ticket,
            expires_at: Some(expires_at),
        })
    })?;
    server.kill9()?;

    // Restarted at once: the hold is there, with its original deadline.
    let server = start_with_admin(dir.path(), &[])?;
    let expires_at = rt.block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let me = client.me(SALE, 7).await?;
        ensure!(
            (me.ticket, me.expires_at) == (Some(held.ticket), held.expires_at),
            "after restart {me:?}, before {held:?}"
        );
        anyhow::Ok(me.expires_at.unwrap_or_default())
    })?;
    server.kill9()?;

    // Down past the deadline: released at startup, the ticket on sale again.
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    std::thread::sleep(Duration::from_millis(expires_at.saturating_sub(now) + 200));
    let server = start_with_admin(dir.path(), &[])?;
    rt.block_on(async {
        let admin = Admin::of(&server);
        let sale = until_remaining(admin, 2).await?;
        ensure!(sale["held"] == 0, "{sale}");
        let late = admin.confirm(SALE, 7, "late").await?;
        ensure!(late.status == 410, "{}", late.text());
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn buyers_and_the_operator_over_http() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    runtime().block_on(async {
        let admin = Admin::of(&server);
        let http = server.http_addr();
        operator_key_is_required(&server).await?;
        definitions_are_idempotent_and_conflicts_name_the_field(admin).await?;
        a_buyer_holds_sees_and_cancels(http).await?;
        pause_resume_and_close(admin, http).await?;
        anyhow::Ok(())
    })?;
    server.stop()
}

async fn operator_key_is_required(server: &ServerProcess) -> anyhow::Result<()> {
    let addr = server.admin_addr();
    for authorization in [
        "",
        "Bearer wrong",
        "Bearer an operator key of at least 32 bytes, for test",
    ] {
        let reply = flashsale_tests::http(
            addr,
            "GET",
            "/admin/sales",
            &[("authorization", authorization)],
            "",
        )
        .await?;
        ensure!(reply.status == 401, "{authorization:?}: {}", reply.text());
    }
    let metrics = Admin { addr }.call("GET", "/metrics", "").await?;
    ensure!(metrics.status == 200 && metrics.text().contains("flashsale_requests_total"));
    let on_buyers_port = flashsale_tests::get(server.http_addr(), "/admin/sales").await?;
    ensure!(
        on_buyers_port.status == 404,
        "the admin API is not on the buyers' port"
    );
    Ok(())
}

async fn definitions_are_idempotent_and_conflicts_name_the_field(
    admin: Admin,
) -> anyhow::Result<()> {
    let body =
        json!({"sale": SALE, "capacity": 3, "opens_at": null, "hold_seconds": 600}).to_string();
    let created = admin.create(&body).await?;
    ensure!(created.status == 201, "{}", created.text());
    let sale = created.json();
    ensure!(
        sale["capacity"] == 3
            && sale["remaining"] == 3
            && sale["hold_seconds"] == 600
            && sale["state"] == "open",
        "{sale}"
    );
    ensure!(
        admin.create(&body).await?.status == 200,
        "the same definition again"
    );
    for (changed, field) in [
        (
            json!({"sale": SALE, "capacity": 4, "hold_seconds": 600}),
            "capacity",
        ),
        (
            json!({"sale": SALE, "capacity": 3, "hold_seconds": null}),
            "hold_seconds",
        ),
    ] {
        let reply = admin.create(&changed.to_string()).await?;
        ensure!(
            reply.status == 409 && reply.text().contains(field),
            "{changed}: {}",
            reply.text()
        );
    }
    for (invalid, field) in [
        (json!({"sale": "x", "capacity": 0}), "capacity"),
        (json!({"sale": "", "capacity": 1}), "sale"),
        (
            json!({"sale": "x", "capacity": 1, "hold_seconds": 0}),
            "hold_seconds",
        ),
        (json!({"sale": "x"}), "capacity"),
    ] {
        let reply = admin.create(&invalid.to_string()).await?;
        ensure!(
            reply.status == 400 && reply.text().contains(field),
            "{invalid}: {}",
            reply.text()
        );
    }
    Ok(())
}

async fn a_buyer_holds_sees_and_cancels(http: std::net::SocketAddr) -> anyhow::Result<()> {
    let me = bearer(41);
    let path = |route: &str| format!("/api/sales/{SALE}/{route}");
    let held = http_as(http, "POST", &path("reserve"), &me).await?;
    let body = held.json();
    ensure!(
        held.status == 201 && body["outcome"] == "held" && body["expires_at"].is_u64(),
        "{body}"
    );
    let again = http_as(http, "POST", &path("reserve"), &me).await?.json();
    ensure!(
        again["outcome"] == "already_owned"
            && again["status"] == "held"
            && again["ticket"] == body["ticket"],
        "{again}"
    );
    let mine = http_as(http, "GET", &path("me"), &me).await?;
    ensure!(
        mine.status == 200 && mine.json()["status"] == "held",
        "{}",
        mine.text()
    );
    let cancelled = http_as(http, "POST", &path("cancel"), &me).await?;
    ensure!(
        cancelled.status == 200 && cancelled.json()["outcome"] == "released",
        "{}",
        cancelled.text()
    );
    let gone = http_as(http, "GET", &path("me"), &me).await?;
    ensure!(gone.status == 404, "{}", gone.text());
    let twice = http_as(http, "POST", &path("cancel"), &me).await?;
    ensure!(
        twice.status == 404 && twice.json()["outcome"] == "no_hold",
        "{}",
        twice.text()
    );
    Ok(())
}

async fn pause_resume_and_close(admin: Admin, http: std::net::SocketAddr) -> anyhow::Result<()> {
    let reserve = |user| async move {
        http_as(
            http,
            "POST",
            &format!("/api/sales/{SALE}/reserve"),
            &bearer(user),
        )
        .await
    };
    let paused = admin.act(SALE, "pause", "").await?;
    ensure!(
        paused.status == 200 && paused.json()["state"] == "paused",
        "{}",
        paused.text()
    );
    let refused = reserve(50).await?;
    ensure!(
        refused.status == 423 && refused.json()["outcome"] == "paused",
        "{}",
        refused.text()
    );
    ensure!(admin.act(SALE, "resume", "").await?.json()["state"] == "open");
    ensure!(reserve(50).await?.status == 201, "open again after resume");
    let closed = admin.act(SALE, "close", "").await?;
    ensure!(
        closed.status == 200 && closed.json()["state"] == "closed",
        "{}",
        closed.text()
    );
    let refused = reserve(51).await?;
    ensure!(
        refused.status == 410 && refused.json()["outcome"] == "closed",
        "{}",
        refused.text()
    );
    let resumed = admin.act(SALE, "resume", "").await?;
    ensure!(resumed.status == 409, "closed is final: {}", resumed.text());
    let paid = admin.confirm(SALE, 50, "pi_50").await?;
    ensure!(
        paid.status == 200,
        "a hold open at the close may still be paid: {}",
        paid.text()
    );
    let unknown = admin.act("nope", "pause", "").await?;
    ensure!(unknown.status == 404, "{}", unknown.text());
    Ok(())
}
