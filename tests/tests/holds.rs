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
use flashsale_core::clock::now_ms;
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
    admin.until_remaining(SALE, remaining, tries).await
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
    std::thread::sleep(Duration::from_millis(
        expires_at.saturating_sub(now_ms()) + 200,
    ));
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

#[test]
fn the_lifecycle_over_the_native_protocol() -> anyhow::Result<()> {
    use flashsale_client::{ConfirmOutcome, ReleaseOutcome, SaleState};
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &["--sale", "plain:2"])?;
    runtime().block_on(async {
        let admin = Admin::of(&server);
        let body = json!({"sale": SALE, "capacity": 2, "hold_seconds": 600}).to_string();
        ensure!(admin.create(&body).await?.status == 201);
        let client = client_config(server.addr()).connect().await?;

        let sales = client.sales().await?;
        let names: Vec<&str> = sales.iter().map(|s| s.sale.as_str()).collect();
        ensure!(
            names == ["plain", SALE],
            "a sale created live is listed: {names:?}"
        );
        ensure!(sales[1].hold_seconds == Some(600) && sales[0].hold_seconds.is_none());

        let ReserveOutcome::Held { ticket, expires_at } = client.reserve(SALE, 1).await? else {
            anyhow::bail!("no hold");
        };
        ensure!(
            client.reserve(SALE, 1).await?
                == ReserveOutcome::AlreadyHeld {
                    ticket,
                    expires_at: Some(expires_at)
                }
        );
        ensure!(client.confirm(SALE, 1, "pi").await? == ConfirmOutcome::Confirmed { ticket });
        ensure!(client.confirm(SALE, 1, "pi").await? == ConfirmOutcome::Confirmed { ticket });
        ensure!(
            client.confirm(SALE, 1, "other").await? == ConfirmOutcome::OtherReference { ticket }
        );
        ensure!(client.confirm(SALE, 2, "pi").await? == ConfirmOutcome::NoHold);
        ensure!(client.cancel(SALE, 1).await? == ReleaseOutcome::Confirmed { ticket });
        ensure!(
            client.reserve(SALE, 1).await?
                == ReserveOutcome::AlreadyHeld {
                    ticket,
                    expires_at: None
                },
            "a paid ticket answers without a deadline"
        );
        ensure!(client.release(SALE, 1).await? == ReleaseOutcome::Released { ticket });
        ensure!(client.confirm(SALE, 1, "pi").await? == ConfirmOutcome::Expired);
        ensure!(client.confirm("plain", 1, "pi").await? == ConfirmOutcome::NoHolds);
        ensure!(client.cancel("nope", 1).await? == ReleaseOutcome::UnknownSale);
        let long_ref = "x".repeat(129);
        ensure!(
            client.confirm(SALE, 1, &long_ref).await.is_err(),
            "a 129-byte reference"
        );

        ensure!(admin.act("plain", "pause", "").await?.status == 200);
        ensure!(client.reserve("plain", 5).await? == ReserveOutcome::Paused);
        ensure!(client.status("plain").await?.state == SaleState::Paused);
        ensure!(admin.act("plain", "close", "").await?.status == 200);
        ensure!(client.reserve("plain", 5).await? == ReserveOutcome::Closed);
        ensure!(client.status("plain").await?.state == SaleState::Closed);
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn a_gateway_serves_sales_created_after_it_started() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let core = start_with_admin(dir.path(), &["--sale", "plain:2"])?;
    let secret = dir.path().join("jwt-secret");
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        core.addr(),
        &[
            "--jwt-secret-file",
            flashsale_tests::process::path_str(&secret)?,
        ],
    )?;
    runtime().block_on(async {
        let addr = gateway.http_addr();
        let config = flashsale_tests::get(addr, "/api/config").await?.json();
        ensure!(config["sales"] == json!(["plain"]), "{config}");
        let body = json!({"sale": SALE, "capacity": 1, "hold_seconds": 600}).to_string();
        ensure!(Admin::of(&core).create(&body).await?.status == 201);
        let config = flashsale_tests::get(addr, "/api/config").await?.json();
        ensure!(config["sales"] == json!(["plain", SALE]), "{config}");
        let held = http_as(
            addr,
            "POST",
            &format!("/api/sales/{SALE}/reserve"),
            &bearer(3),
        )
        .await?;
        ensure!(
            held.status == 201 && held.json()["outcome"] == "held",
            "{}",
            held.text()
        );
        let mine = http_as(addr, "GET", &format!("/api/sales/{SALE}/me"), &bearer(3)).await?;
        ensure!(mine.json()["status"] == "held", "{}", mine.text());
        anyhow::Ok(())
    })?;
    gateway.stop()?;
    core.stop()
}

/// Trials of `kill -9` in the middle of holds, payments and cancels.
const CRASH_TRIALS: u64 = 8;

/// What one user was told, and when it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// A hold of this ticket until this deadline.
    Held(u32, u64),
    /// The hold of this ticket was confirmed.
    Paid(u32),
    /// The hold was given up.
    Cancelled,
}

/// Holds, payments and cancels from `users`: what each user was
/// acknowledged, in order (a `kill -9` may cut it short).
async fn acts_until_killed(
    client: &Client,
    users: std::ops::Range<u64>,
    seed: u64,
) -> BTreeMap<u64, Vec<Told>> {
    let acts = users.map(|user| async move {
        let mut told = Vec::new();
        let Ok(ReserveOutcome::Held { ticket, expires_at }) = client.reserve(SALE, user).await
        else {
            return (user, told);
        };
        told.push(Told::Held(ticket, expires_at));
        // A fixed pattern per user and trial: pay, cancel, or leave it.
        match (user ^ seed) % 3 {
            0 => {
                if let Ok(flashsale_client::ConfirmOutcome::Confirmed { ticket: t }) =
                    client.confirm(SALE, user, &format!("pay-{user}")).await
                {
                    told.push(Told::Paid(t));
                }
            }
            1 => {
                if let Ok(flashsale_client::ReleaseOutcome::Released { .. }) =
                    client.cancel(SALE, user).await
                {
                    told.push(Told::Cancelled);
                }
            }
            _ => {}
        }
        (user, told)
    });
    futures_util::future::join_all(acts)
        .await
        .into_iter()
        .collect()
}

/// After a restart: every acknowledged payment stands, every acknowledged
/// hold not given up is still the user's with its deadline (or ran out),
/// every acknowledged cancel stuck, and no ticket is anyone's twice.
async fn check_after_restart(
    client: &Client,
    told: &BTreeMap<u64, Vec<Told>>,
) -> anyhow::Result<()> {
    let mut owners: BTreeMap<u32, u64> = BTreeMap::new();
    for (&user, acks) in told {
        let me = client.me(SALE, user).await?;
        if let Some(ticket) = me.ticket {
            if let Some(other) = owners.insert(ticket, user) {
                anyhow::bail!("ticket {ticket} belongs to users {other} and {user}");
            }
        }
        match acks.last() {
            Some(Told::Paid(ticket)) => ensure!(
                me.ticket == Some(*ticket) && me.expires_at.is_none(),
                "user {user} paid for {ticket}, and after the crash {me:?}"
            ),
            Some(Told::Held(ticket, expires_at)) => ensure!(
                me.ticket.is_none()
                    || (me.ticket == Some(*ticket)
                        && me.expires_at.is_none_or(|at| at == *expires_at)),
                "user {user} held {ticket} until {expires_at}, and after the crash {me:?}"
            ),
            Some(Told::Cancelled) => {
                ensure!(me.ticket.is_none(), "user {user} cancelled, and {me:?}")
            }
            None => {}
        }
    }
    Ok(())
}

#[test]
fn kill_9_amid_holds_payments_and_cancels_loses_no_acknowledged_change() -> anyhow::Result<()> {
    use rand::{Rng as _, SeedableRng as _};
    let seed = rand::random::<u64>();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let rt = runtime();
    let mut server = start_with_admin(dir.path(), &[])?;
    let body = json!({"sale": SALE, "capacity": 100, "hold_seconds": 3}).to_string();
    ensure!(rt.block_on(Admin::of(&server).create(&body))?.status == 201);
    for trial in 0..CRASH_TRIALS {
        let users = trial * 100..trial * 100 + 30;
        let kill_after = Duration::from_micros(rng.random_range(200..60_000));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid())?);
        let told = rt.block_on(async {
            let client = client_config(server.addr()).connect().await?;
            let acting = acts_until_killed(&client, users, seed ^ trial);
            tokio::pin!(acting);
            // Kill mid-flight, then collect what was acknowledged before it.
            tokio::select! {
                told = &mut acting => anyhow::Ok(told),
                () = tokio::time::sleep(kill_after) => {
                    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
                    anyhow::Ok(acting.await)
                }
            }
        });
        server.kill9()?;
        let told = told.with_context(|| format!("seed {seed}, trial {trial}"))?;
        server = start_with_admin(dir.path(), &[])?;
        rt.block_on(async {
            let client = client_config(server.addr()).connect().await?;
            check_after_restart(&client, &told).await
        })
        .with_context(|| format!("seed {seed}, trial {trial}, killed after {kill_after:?}"))?;
    }
    server.stop()
}
