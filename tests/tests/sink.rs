//! The drain into PostgreSQL, against a real PostgreSQL (a throwaway
//! cluster per test; the tests fail, not skip, when it cannot run): every
//! winner reaches the table exactly once, in few statements, through a
//! database outage and through `kill -9` of the server at the worst moments.
//! Also `export` (no database) and `migrate`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flashsale_client::ReserveOutcome;
use flashsale_tests::{
    burst, client_config, export, metric, runtime, workspace_bin, PgCluster, ServerProcess, Told,
};

/// Longest a test waits for the table to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Starts a server with its HTTP front (for `/metrics`) and the drain.
fn start(data: &Path, pg: &PgCluster, sale: &str) -> anyhow::Result<ServerProcess> {
    ServerProcess::start_http(data, &["--demo", "--sale", sale, "--sink", &pg.url()])
}

/// A fresh PostgreSQL and a server draining into it, the drain connected.
struct Drained {
    pg: PgCluster,
    /// Holds `data`, and removes it when dropped.
    _dir: tempfile::TempDir,
    /// The server's data directory.
    data: PathBuf,
    server: ServerProcess,
}

impl Drained {
    /// Starts both, the server selling `sale` (`ID:CAPACITY`).
    fn start(sale: &str) -> anyhow::Result<Drained> {
        let pg = PgCluster::start()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let server = start(&data, &pg, sale)?;
        wait_for_psql(
            &pg,
            "the drain to store its position",
            "SELECT count(*) FROM flashsale_drain",
            "1",
        )?;
        Ok(Drained {
            pg,
            _dir: dir,
            data,
            server,
        })
    }

    /// Sells to users `1..=users` of `sale` (all of them win) and waits
    /// until the table holds them.
    fn sell_drained(&self, sale: &str, users: u64) -> anyhow::Result<BTreeMap<u64, u32>> {
        let won = sell(self.server.addr(), sale, 1, users)?;
        wait_rows(&self.pg, sale, won.len())?;
        Ok(won)
    }
}

/// The winners among what the users were told: user -> ticket.
fn winners(told: &[(u64, Told)]) -> BTreeMap<u64, u32> {
    told.iter()
        .filter_map(|(user, t)| match t {
            Told::Won(ticket) => Some((*user, *ticket)),
            _ => None,
        })
        .collect()
}

/// Every row of `sale` in the table: user -> ticket. Fails on a user or a
/// ticket seen twice.
fn table(pg: &PgCluster, sale: &str) -> anyhow::Result<BTreeMap<u64, u32>> {
    let text = pg.psql(&format!(
        "SELECT user_id, ticket FROM flashsale_tickets WHERE sale = '{sale}' ORDER BY ticket"
    ))?;
    let mut rows = BTreeMap::new();
    let mut tickets = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (user, ticket) = line.split_once('|').context("a row")?;
        let (user, ticket): (u64, u32) = (user.parse()?, ticket.parse()?);
        anyhow::ensure!(tickets.insert(ticket), "ticket {ticket} twice in the table");
        anyhow::ensure!(
            rows.insert(user, ticket).is_none(),
            "user {user} twice in the table"
        );
    }
    Ok(rows)
}

/// Polls until the table holds `n` rows of `sale` (bounded), and returns them.
fn wait_rows(pg: &PgCluster, sale: &str, n: usize) -> anyhow::Result<BTreeMap<u64, u32>> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let rows = table(pg, sale).unwrap_or_default();
        if rows.len() == n {
            return Ok(rows);
        }
        if rows.len() > n {
            bail!(
                "the table holds {} rows of {sale}, expected {n}",
                rows.len()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the table holds {} rows of {sale} after {CATCH_UP:?}, expected {n}",
                rows.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `probe` every 50 ms until it returns true, for at most `timeout`.
fn wait_until(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !probe().unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Polls until `sql` answers `expected` (bounded by [`CATCH_UP`]).
fn wait_for_psql(pg: &PgCluster, what: &str, sql: &str, expected: &str) -> anyhow::Result<()> {
    wait_until(what, CATCH_UP, || Ok(pg.psql(sql)? == expected))
}

/// The text `/metrics` serves.
fn metrics_text(rt: &tokio::runtime::Runtime, http: SocketAddr) -> anyhow::Result<String> {
    let reply = rt.block_on(flashsale_tests::http(http, "GET", "/metrics", &[], ""))?;
    anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
    Ok(reply.text())
}

fn sink_metric(rt: &tokio::runtime::Runtime, http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let text = metrics_text(rt, http)?;
    metric(&text, name).with_context(|| format!("no {name} in /metrics"))
}

/// Sells to `users` new users (all of them win: the sale is big enough).
fn sell(
    addr: SocketAddr,
    sale: &str,
    first: u64,
    users: u64,
) -> anyhow::Result<BTreeMap<u64, u32>> {
    let told = burst(addr, sale, first, users, 1, 4)?;
    let won = winners(&told);
    anyhow::ensure!(
        won.len() == users as usize,
        "every user wins: {} of {users}",
        won.len()
    );
    Ok(won)
}

/// The log and the table agree, row for row, and both hold `expected`.
fn assert_table_is_the_log(
    pg: &PgCluster,
    data: &Path,
    sale: &str,
    expected: &BTreeMap<u64, u32>,
) -> anyhow::Result<()> {
    let rows = wait_rows(pg, sale, expected.len())?;
    assert_eq!(&rows, expected, "the table holds exactly the winners");
    let exported: BTreeMap<u64, u32> = export(data, sale)?
        .into_iter()
        .map(|(user, ticket, _)| (user, ticket))
        .collect();
    assert_eq!(exported, rows, "the table is exactly the log");
    Ok(())
}

#[test]
fn a_burst_reaches_the_table_exactly_in_a_few_statements() -> anyhow::Result<()> {
    let drained = Drained::start("drop:200")?;
    let rt = runtime();
    let before = sink_metric(
        &rt,
        drained.server.http_addr(),
        "flashsale_sink_statements_total",
    )?;

    let told = burst(drained.server.addr(), "drop", 1, 20_000, 4, 16)?;
    assert_eq!(told.len(), 20_000, "every user is answered");
    let won = winners(&told);
    assert_eq!(won.len(), 200, "exactly 200 wins");

    let rows = wait_rows(&drained.pg, "drop", 200)?;
    assert_eq!(
        rows, won,
        "the table holds the very winners the clients were told"
    );
    let after = sink_metric(
        &rt,
        drained.server.http_addr(),
        "flashsale_sink_statements_total",
    )?;
    let sent = after - before;
    println!("statements sent by the drain for the 20,000-user burst: {sent}");
    assert!(
        sent <= 12.0,
        "{sent} statements for 200 winners; expected at most 3 batches of 4"
    );
    assert_eq!(
        sink_metric(&rt, drained.server.http_addr(), "flashsale_sink_rows_total")?,
        200.0
    );
    drained.server.stop()
}

#[test]
fn an_outage_of_postgres_delays_the_table_but_not_the_sale() -> anyhow::Result<()> {
    let drained = Drained::start("o:100000")?;
    let rt = runtime();
    let mut all = drained.sell_drained("o", 500)?;

    // Every user still wins with the database down: a reserve that waited
    // for it would time out, and `sell` would fail.
    drained.pg.stop()?;
    all.extend(sell(drained.server.addr(), "o", 10_001, 2_000)?);
    let lag = |at_least: f64| {
        let mut seen = 0.0;
        wait_until(
            "the lag to show in /metrics",
            Duration::from_secs(30),
            || {
                seen = sink_metric(
                    &rt,
                    drained.server.http_addr(),
                    "flashsale_sink_lag_records",
                )?;
                Ok(seen >= at_least)
            },
        )
        .map(|()| seen)
    };
    let first = lag(2_000.0)?;
    let more = sell(drained.server.addr(), "o", 20_001, 1_000)?;
    all.extend(&more);
    let second = lag(3_000.0)?;
    assert!(second > first, "the lag grows: {first} then {second}");
    let seconds = sink_metric(
        &rt,
        drained.server.http_addr(),
        "flashsale_sink_lag_seconds",
    )?;
    assert!(seconds > 0.0, "the lag in seconds shows: {seconds}");
    assert!(
        sink_metric(
            &rt,
            drained.server.http_addr(),
            "flashsale_sink_errors_total"
        )? >= 1.0
    );
    assert_eq!(table(&drained.pg, "o").ok(), None, "the database is down");
    println!("lag while PostgreSQL was down: {first} then {second} records, {seconds} s");
    assert!(
        drained.server.log().contains("cannot write to PostgreSQL"),
        "the outage is logged"
    );

    drained.pg.start_again()?;
    assert_table_is_the_log(&drained.pg, &drained.data, "o", &all)?;
    wait_until("the lag to fall to 0", CATCH_UP, || {
        Ok(sink_metric(
            &rt,
            drained.server.http_addr(),
            "flashsale_sink_lag_records",
        )? == 0.0)
    })?;
    drained.server.stop()
}

#[test]
fn kill_9_between_insert_and_commit_leaves_one_row_per_winner() -> anyhow::Result<()> {
    let drained = Drained::start("k:100000")?;
    let mut all = drained.sell_drained("k", 300)?;

    // Hold the position table, so the drain's UPDATE waits after its INSERT.
    let mut holder = drained.pg.psql_pipe()?;
    let mut stdin = holder.stdin.take().context("psql stdin")?;
    stdin.write_all(b"BEGIN;\nLOCK TABLE flashsale_drain IN EXCLUSIVE MODE;\n")?;
    stdin.flush()?;
    wait_for_psql(
        &drained.pg,
        "the lock",
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'flashsale_drain' AND l.mode = 'ExclusiveLock' AND l.granted",
        "1",
    )?;
    all.extend(sell(drained.server.addr(), "k", 10_001, 400)?);
    wait_for_psql(
        &drained.pg,
        "the drain to wait on its UPDATE",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flashsale-sink' \
         AND wait_event_type = 'Lock' AND query LIKE 'UPDATE flashsale_drain%'",
        "1",
    )?;
    assert_eq!(
        table(&drained.pg, "k")?.len(),
        300,
        "the batch is not committed"
    );
    drained.server.kill9()?;

    stdin.write_all(b"ROLLBACK;\n")?;
    drop(stdin);
    let _ = holder.wait();
    // The dead drain's transaction ends without its COMMIT: rolled back.
    wait_for_psql(
        &drained.pg,
        "the killed drain's connection to end",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flashsale-sink'",
        "0",
    )?;
    assert_eq!(
        table(&drained.pg, "k")?.len(),
        300,
        "the uncommitted batch is gone"
    );

    let server = start(&drained.data, &drained.pg, "k:100000")?;
    assert_table_is_the_log(&drained.pg, &drained.data, "k", &all)?;
    assert!(!server.log().contains("STOPPED"), "{}", server.log());
    server.stop()
}

#[test]
fn kill_9_right_after_a_commit_duplicates_nothing() -> anyhow::Result<()> {
    let drained = Drained::start("c:100000")?;
    let mut all = drained.sell_drained("c", 300)?;
    drained.server.kill9()?;

    let server = start(&drained.data, &drained.pg, "c:100000")?;
    all.extend(sell(server.addr(), "c", 10_001, 200)?);
    assert_table_is_the_log(&drained.pg, &drained.data, "c", &all)?;
    server.stop()?;
    assert!(
        !server_log(&drained.data).contains("STOPPED"),
        "{}",
        server_log(&drained.data)
    );
    let offset: u64 = drained
        .pg
        .psql("SELECT log_offset FROM flashsale_drain")?
        .parse()?;
    assert_eq!(
        offset,
        std::fs::metadata(drained.data.join("wal.log"))?.len(),
        "the stored position is the end of the log"
    );
    Ok(())
}

fn server_log(data: &Path) -> String {
    std::fs::read_to_string(data.with_extension("server.log")).unwrap_or_default()
}

#[test]
fn export_prints_exactly_the_winners_even_while_the_server_runs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &["--sale", "e:300"])?;
    let won = winners(&burst(server.addr(), "e", 1, 2_000, 2, 8)?);
    assert_eq!(won.len(), 300);
    let check = |rows: Vec<(u64, u32, String)>| {
        for (_, _, at) in &rows {
            assert_eq!(at.len(), 24, "ISO 8601 to the millisecond: {at}");
            assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        }
        let exported: BTreeMap<u64, u32> = rows.iter().map(|(u, t, _)| (*u, *t)).collect();
        assert_eq!(exported.len(), rows.len(), "no user twice");
        assert_eq!(exported, won, "exactly the winners");
    };
    check(export(&data, "e")?);
    server.stop()?;
    check(export(&data, "e")?);
    assert!(
        export(&data, "nope").is_err(),
        "an unknown sale is an error"
    );
    Ok(())
}

fn migrate(url: &str) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(workspace_bin("flashsale-server"))
        .args(["migrate", "--sink", url])
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn migrate_creates_the_schema_idempotently() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    for _ in 0..2 {
        let output = migrate(&pg.url())?;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        pg.psql(
            "SELECT string_agg(constraint_type, ',' ORDER BY constraint_type) \
             FROM information_schema.table_constraints \
             WHERE table_name = 'flashsale_tickets' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        )?,
        "PRIMARY KEY,UNIQUE"
    );
    assert_eq!(
        pg.psql("SELECT to_regclass('flashsale_drain') IS NOT NULL")?,
        "t"
    );
    let refused = migrate(&format!("postgres://postgres@127.0.0.1:{}/flashsale", 1))?;
    assert!(
        !refused.status.success(),
        "an unreachable database is an error"
    );
    Ok(())
}

#[test]
fn a_stored_position_past_the_end_of_the_log_stops_the_drain_loudly() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    assert!(migrate(&pg.url())?.status.success());
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let id = "0123456789abcdef0123456789abcdef";
    std::fs::write(data.join("sink.id"), format!("{id}\n"))?;
    pg.psql(&format!(
        "INSERT INTO flashsale_drain VALUES ('{id}', 1000000, now())"
    ))?;
    let server = start(&data, &pg, "p:100")?;
    wait_until("the drain to stop loudly", CATCH_UP, || {
        Ok(server.log().contains("STOPPED"))
    })?;
    assert!(
        server.log().contains("not inside the log"),
        "{}",
        server.log()
    );
    // The sale goes on: every one of ten users wins.
    sell(server.addr(), "p", 1, 10)?;
    assert_eq!(table(&pg, "p")?.len(), 0);
    server.stop()
}

#[test]
fn every_change_of_a_held_ticket_reaches_the_table_once() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let dir = tempfile::tempdir()?;
    let server = flashsale_tests::start_with_admin(dir.path(), &["--sink", &pg.url()])?;
    let rt = runtime();
    rt.block_on(async {
        let admin = flashsale_tests::Admin::of(&server);
        let body = r#"{"sale":"h","capacity":2,"hold_seconds":600}"#;
        anyhow::ensure!(admin.create(body).await?.status == 201);
        let client = client_config(server.addr()).connect().await?;
        for user in [1, 2] {
            let held = client.reserve("h", user).await?;
            anyhow::ensure!(matches!(held, ReserveOutcome::Held { .. }), "{held:?}");
        }
        anyhow::ensure!(admin.confirm("h", 1, "pi_1").await?.status == 200);
        let cancelled = client.cancel("h", 2).await?;
        anyhow::ensure!(
            matches!(cancelled, flashsale_client::ReleaseOutcome::Released { .. }),
            "{cancelled:?}"
        );
        let again = client.reserve("h", 3).await?;
        anyhow::ensure!(matches!(again, ReserveOutcome::Held { .. }), "{again:?}");
        anyhow::Ok(())
    })?;
    wait_for_psql(
        &pg,
        "five changes of held tickets",
        "SELECT string_agg(event || ':' || user_id || coalesce(':' || payment_ref, '') \
         || coalesce(':' || reason, ''), ',' ORDER BY log_offset) FROM flashsale_hold_events",
        "held:1,held:2,confirmed:1:pi_1,released:2:cancelled,held:3",
    )?;
    wait_for_psql(
        &pg,
        "the current holders",
        "SELECT string_agg(user_id || ':' || status, ',' ORDER BY user_id) FROM flashsale_holds",
        "1:confirmed,3:held",
    )?;
    let sold: i64 = pg.psql("SELECT count(*) FROM flashsale_tickets")?.parse()?;
    anyhow::ensure!(sold == 0, "a sale with holds has no final rows");
    server.stop()
}

/// The native address of whichever of `nodes` serves `sale`, once one does.
fn cluster_leader(
    rt: &tokio::runtime::Runtime,
    nodes: &BTreeMap<u64, ServerProcess>,
    sale: &str,
) -> anyhow::Result<u64> {
    let addrs: Vec<(u64, SocketAddr)> = nodes.iter().map(|(id, n)| (*id, n.addr())).collect();
    let mut found = None;
    wait_until("a leader", CATCH_UP, || {
        found = rt
            .block_on(flashsale_tests::cluster::serving(&addrs, CLUSTER_KEY, sale))
            .first()
            .copied();
        Ok(found.is_some())
    })?;
    found.context("no leader")
}

const CLUSTER_KEY: &str = "sink-cluster-test-key-0123456789";

#[test]
fn a_cluster_drains_every_win_once_across_a_failover() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let dir = tempfile::tempdir()?;
    let spec = flashsale_tests::cluster::loopback_cluster(3)?;
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let mut args = flashsale_tests::cluster::node_args(id, &spec, CLUSTER_KEY, "gig:1000");
        args.extend(["--sink".to_owned(), pg.url()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = dir.path().join(format!("node{id}"));
        nodes.insert(id, ServerProcess::start(&data, &args)?);
    }
    let rt = runtime();
    let first = cluster_leader(&rt, &nodes, "gig")?;
    let all: Vec<String> = nodes.values().map(|n| n.addr().to_string()).collect();
    let client = rt.block_on(
        client_config(nodes[&first].addr())
            .api_key(CLUSTER_KEY)
            .nodes(all)
            .connect(),
    )?;
    // Reserving again is safe: a purchase cut by the kill is asked again
    // and comes back with its ticket, or sells it now.
    let buy = |user: u64| -> anyhow::Result<u32> {
        rt.block_on(async {
            for _ in 0..200 {
                match client.reserve("gig", user).await {
                    Ok(outcome) => return outcome.ticket().context("a win in a sale of 1,000"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            bail!("user {user} was never answered")
        })
    };
    let mut won = BTreeMap::new();
    for user in 1..=40 {
        won.insert(user, buy(user)?);
    }
    wait_rows(&pg, "gig", 40)?;
    // The leader, and its drain, die; the next leader's drain goes on from
    // the stored position.
    if let Some(node) = nodes.remove(&first) {
        node.kill9()?;
    }
    for user in 41..=80 {
        won.insert(user, buy(user)?);
    }
    let rows = wait_rows(&pg, "gig", 80)?;
    assert_eq!(rows, won, "the table holds exactly the wins");
    let positions = pg.psql("SELECT count(*) FROM flashsale_drain")?;
    assert_eq!(
        positions, "1",
        "one position for the cluster's log, whoever drains"
    );
    for node in nodes.into_values() {
        node.stop()?;
    }
    Ok(())
}
