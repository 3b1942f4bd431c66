//! The phases of a sale whose disk fills up while it runs: what the server
//! tells buyers before and after the log fails, what it says on its way
//! out, and what a restart on a copy of the log finds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, ensure, Context};
use flashsale_client::{Client, ClientError, ErrorCode, ReserveOutcome};
use flashsale_tests::{client_config, http, runtime, HttpReply, ServerProcess};

use super::confined::{last_line, Confined, Setup};
use super::{side_files, LogSizes, SALE};

/// Pages left free on the tmpfs when the server starts.
const FREE_PAGES: u64 = 2;
/// Native users tried, one at a time, before the disk must be full.
const MAX_USERS: u64 = 5_000;
/// The user who wins over HTTP while there is room.
const WEB_USER: u64 = 1_000_000;
/// The user who tries over HTTP once the log has failed.
const LATE_WEB_USER: u64 = 2_000_000;
/// The user who buys after the restart.
const USER_AFTER_RESTART: u64 = 3_000_000;

/// Acknowledged wins, in order: (user, ticket).
pub(super) type Wins = Vec<(u64, u32)>;

/// A server whose tmpfs has [`FREE_PAGES`] pages left when it starts.
pub(super) struct FillingDisk {
    server: Confined,
    /// Bytes the log may grow by before the disk is full.
    headroom: u64,
    sizes: LogSizes,
}

impl FillingDisk {
    /// Starts the server, with its HTTP front and `--demo` tokens, on a
    /// tmpfs at `mnt` whose data directory is copied to `copy` at exit.
    pub(super) fn start(mnt: &Path, copy: &Path, sizes: LogSizes) -> anyhow::Result<FillingDisk> {
        let mut server = Confined::spawn(
            mnt,
            &Setup {
                size: "1m",
                free_pages: Some(FREE_PAGES),
                copy_out: Some(copy),
                ..Setup::default()
            },
            &["--sale", "gig:100000", "--http", "127.0.0.1:0", "--demo"],
        )?;
        server.listening(true)?;
        let headroom = FREE_PAGES * server.page_size;
        Ok(FillingDisk {
            server,
            headroom,
            sizes,
        })
    }

    /// The native protocol's address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The HTTP front's address.
    pub(super) fn web(&self) -> SocketAddr {
        self.server.http_addr()
    }

    /// One win over HTTP, then distinct users one at a time until the first
    /// is refused for want of disk; no more bytes were acknowledged than
    /// the free space could hold. Returns the wins and the refused user.
    pub(super) async fn sell_until_full(&self, client: &Client) -> anyhow::Result<(Wins, u64)> {
        let web = self.web();
        let healthz = http(web, "GET", "/healthz", &[], "").await?;
        assert_eq!(healthz.status, 200, "healthy before: {}", healthz.text());

        let reply = reserve_over_http(web, WEB_USER).await?;
        assert_eq!(reply.status, 201, "HTTP win: {}", reply.text());
        let ticket = reply.json()["ticket"].as_u64().context("ticket")?;
        let mut won = vec![(WEB_USER, u32::try_from(ticket)?)];

        let mut first_refused = None;
        for user in 1..=MAX_USERS {
            match client.reserve(SALE, user).await {
                Ok(ReserveOutcome::Won { ticket }) => won.push((user, ticket)),
                answer if is_log_unavailable(&answer) => {
                    first_refused = Some(user);
                    break;
                }
                other => bail!("user {user} was told {other:?}"),
            }
        }
        let first_refused = first_refused.context("the disk never filled up")?;
        ensure!(
            won.len() > 10,
            "only {} wins before the disk was full",
            won.len()
        );
        let logged = self.sizes.with_wins(won.len());
        let page = self.server.page_size;
        ensure!(
            logged <= self.headroom && logged + self.sizes.sold > self.headroom - page,
            "{} wins acknowledged with {} bytes free",
            won.len(),
            self.headroom
        );
        Ok((won, first_refused))
    }

    /// The log failure is logged with its cause.
    pub(super) fn failure_is_logged(&self) {
        let log = self.server.log();
        assert!(
            log.contains("write-ahead log failed") && log.contains("No space left on device"),
            "the failure is logged with its cause: {log}"
        );
    }

    /// SIGTERM: the server stops, but the log cannot be flushed, so shutdown
    /// reports the failure and the exit code is 1, not 0. The log copied out
    /// holds no more than the free space, nor a whole record beyond the
    /// `wins`; returns its length.
    pub(super) fn shutdown_reports_the_failed_log(
        mut self,
        copy: &Path,
        wins: usize,
    ) -> anyhow::Result<u64> {
        let code = self.server.terminate()?;
        let log = self.server.log();
        assert_eq!(code, 1, "exit code after a failed log; log:\n{log}");
        assert!(
            last_line(&log).starts_with("flashsale-server: cannot flush the log")
                && last_line(&log).contains("No space left on device"),
            "the exit names the failed log: {log}"
        );
        drop(self.server);
        let wal_len = std::fs::metadata(copy.join("wal.log"))?.len();
        assert!(
            wal_len <= self.headroom && wal_len < self.sizes.with_wins(wins) + self.sizes.sold,
            "log of {wal_len} bytes"
        );
        Ok(wal_len)
    }

    /// Bytes the log could grow by.
    pub(super) fn headroom(&self) -> u64 {
        self.headroom
    }
}

/// Whether `answer` is the error for a failed log.
fn is_log_unavailable<T>(answer: &Result<T, ClientError>) -> bool {
    matches!(answer, Err(ClientError::Server(e)) if e.code == ErrorCode::LOG_UNAVAILABLE)
}

/// `Authorization` for `user`, from the demo token endpoint.
async fn bearer(web: SocketAddr, user: u64) -> anyhow::Result<String> {
    let body = format!(r#"{{"user":{user}}}"#);
    let reply = http(web, "POST", "/demo/token", &[], &body).await?;
    ensure!(
        reply.status == 200,
        "token: {} {}",
        reply.status,
        reply.text()
    );
    let token = reply.json()["token"]
        .as_str()
        .context("a token")?
        .to_owned();
    Ok(format!("Bearer {token}"))
}

/// `user` reserves a ticket of [`SALE`] over HTTP.
async fn reserve_over_http(web: SocketAddr, user: u64) -> anyhow::Result<HttpReply> {
    let auth = bearer(web, user).await?;
    let path = format!("/api/sales/{SALE}/reserve");
    http(web, "POST", &path, &[("authorization", &auth)], "").await
}

/// From the first refusal on, every new user is refused: some one at a
/// time, some at once; the refused user's retry too, and Lookup does not
/// name a ticket it does not know to be durable. Returns the users refused.
pub(super) async fn every_new_user_is_refused(
    client: &Client,
    first_refused: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut refused = vec![first_refused];
    for user in first_refused + 1..first_refused + 10 {
        let answer = client.reserve(SALE, user).await;
        ensure!(
            is_log_unavailable(&answer),
            "user {user} after the failure: {answer:?}"
        );
        refused.push(user);
    }
    let burst: Vec<u64> = (10_000..10_050).collect();
    let answers =
        futures_util::future::join_all(burst.iter().map(|&u| client.reserve(SALE, u))).await;
    for (&user, answer) in burst.iter().zip(&answers) {
        ensure!(
            is_log_unavailable(answer),
            "user {user} after the failure: {answer:?}"
        );
    }
    refused.extend(&burst);
    let retry = client.reserve(SALE, first_refused).await;
    ensure!(
        is_log_unavailable(&retry),
        "retry of user {first_refused}: {retry:?}"
    );
    let lookup = client.lookup(SALE, first_refused).await;
    ensure!(
        matches!(lookup, Ok(None)) || is_log_unavailable(&lookup),
        "lookup of the refused user {first_refused}: {lookup:?}"
    );
    Ok(refused)
}

/// Acknowledged wins are still known, answered without the log; a winner
/// retrying never gets another ticket; and the server stays up for
/// everything that does not write.
pub(super) async fn wins_are_still_served(client: &Client, won: &Wins) -> anyhow::Result<()> {
    for &(user, ticket) in won {
        assert_eq!(
            client.lookup(SALE, user).await?,
            Some(ticket),
            "user {user}"
        );
    }
    // Reserve checks the log first and refuses everyone once it has failed.
    let (user, ticket) = won[1];
    match client.reserve(SALE, user).await {
        Ok(ReserveOutcome::AlreadyOwned { ticket: t }) => assert_eq!(t, ticket),
        answer => ensure!(
            is_log_unavailable(&answer),
            "winner {user} retrying: {answer:?}"
        ),
    }
    client.ping().await?;
    let status = client.status(SALE).await?;
    ensure!(
        status.sold as usize >= won.len(),
        "status after the failure: {status:?}"
    );
    Ok(())
}

/// The HTTP front says the same: a reserve is refused with 503 and a
/// reason, `/healthz` turns 503, and reads still answer. Returns the user
/// it refused.
pub(super) async fn http_front_reports_the_failure(
    web: SocketAddr,
    won: &Wins,
) -> anyhow::Result<u64> {
    let reply = reserve_over_http(web, LATE_WEB_USER).await?;
    assert_eq!(
        reply.status,
        503,
        "HTTP reserve after the failure: {}",
        reply.text()
    );
    assert_eq!(reply.json()["error"], "log_unavailable", "{}", reply.text());
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text()
    );
    let healthz = http(web, "GET", "/healthz", &[], "").await?;
    assert_eq!(
        healthz.status,
        503,
        "healthz after the failure: {}",
        healthz.text()
    );
    let auth = bearer(web, WEB_USER).await?;
    let me_path = format!("/api/sales/{SALE}/me");
    let me = http(web, "GET", &me_path, &[("authorization", &auth)], "").await?;
    assert_eq!(
        (me.status, me.json()["ticket"].as_u64()),
        (200, Some(u64::from(won[0].1)))
    );
    let sale = http(web, "GET", &format!("/api/sales/{SALE}"), &[], "").await?;
    assert_eq!(sale.status, 200, "{}", sale.text());
    Ok(LATE_WEB_USER)
}

/// Restarted on a roomy file system with the copy of the log, every
/// acknowledged win is there with its ticket; a refused user may be there
/// (an error means "not known to be durable") but never on a sold ticket;
/// and the sale goes on where it stopped. Returns the server's log.
pub(super) fn restart_keeps_every_win(
    copy: &Path,
    won: &Wins,
    refused: &[u64],
) -> anyhow::Result<String> {
    let restarted = ServerProcess::start(copy, &[])?;
    runtime().block_on(async {
        let client = client_config(restarted.addr()).connect().await?;
        let mut tickets = HashSet::new();
        for &(user, ticket) in won {
            assert_eq!(
                client.lookup(SALE, user).await?,
                Some(ticket),
                "winner {user}"
            );
            assert_eq!(
                client.reserve(SALE, user).await?,
                ReserveOutcome::AlreadyOwned { ticket }
            );
            assert!(tickets.insert(ticket), "ticket {ticket} twice");
        }
        let mut present = 0;
        for &user in refused {
            if let Some(ticket) = client.lookup(SALE, user).await? {
                assert!(
                    tickets.insert(ticket),
                    "refused user {user} holds a sold ticket {ticket}"
                );
                present += 1;
            }
        }
        let status = client.status(SALE).await?;
        assert_eq!(status.sold as usize, won.len() + present, "{status:?}");
        match client.reserve(SALE, USER_AFTER_RESTART).await? {
            ReserveOutcome::Won { ticket } => assert!(tickets.insert(ticket)),
            other => bail!("after the restart: {other:?}"),
        }
        anyhow::Ok(())
    })?;
    let log = restarted.log();
    restarted.stop()?;
    Ok(log)
}

/// A record cut short by the full disk (the log is longer than its `whole`
/// records) is cut off at the restart, reported, and kept in one side file.
pub(super) fn a_torn_tail_is_set_aside(
    copy: &Path,
    restart_log: &str,
    wal_len: u64,
    whole: u64,
) -> anyhow::Result<()> {
    if wal_len > whole {
        assert!(
            restart_log.contains("ends in damage"),
            "torn tail not reported: {restart_log}"
        );
        let side = side_files(copy)?;
        assert_eq!(side.len(), 1, "one side file");
        assert_eq!(side[0].len() as u64, wal_len - whole);
    }
    Ok(())
}
