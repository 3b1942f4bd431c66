//! Rate limits at the door, against the real binaries: a token sending
//! requests in a loop gets its bucket's worth and then 429, while a crowd
//! of buyers with a request or two each never sees one; the same per
//! address; `X-Forwarded-For` believed from a trusted proxy only; the
//! counter in `/metrics`; a table of keys that fills up starts over
//! without shutting newcomers out; and all of it through the gateway too.
//!
//! Counts are bounded by the time measured around the requests, never by a
//! guess at how fast the machine is: a bucket of `burst` refilling at
//! `rate` lets through at most `burst + rate * elapsed` requests in
//! `elapsed`, however slowly they were sent. Where no refill must happen,
//! the rate is one an hour, so the count is exact.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flashsale_metrics::readback::series;
use flashsale_metrics::{RateLimit, RATE_LIMITED, RATE_LIMIT_KEYS, RATE_LIMIT_RESETS};
use flashsale_tests::process::path_str;
use flashsale_tests::token::{bearer, secret_file, start_signed};
use flashsale_tests::{get, http, runtime, HttpConn, HttpReply, ServerProcess};

/// A sale with more buyers than tickets, open since long ago.
const SALE: [&str; 2] = ["--sale", "gig:100:1000"];
/// The per-user limit of the crowd test: 5 a second, 10 at once.
const USER_RATE: &str = "5/s,burst=10";
const USER_PER_S: f64 = 5.0;
const USER_BURST: usize = 10;
/// Requests the abusive token sends.
const ABUSIVE_REQUESTS: usize = 200;
/// Honest buyers, each with a token of their own and two requests (a
/// reservation, then a look at what they got). `FLASHSALE_RATE_LIMIT_USERS`
/// overrides it: `bench/rate_limit.sh` runs this test with 20,000, in
/// release, which takes too long for the suite on two cores in debug.
const HONEST_USERS: u64 = 3_000;
/// Connections the crowd shares.
const CROWD_CONNECTIONS: u64 = 32;
/// The user id of the abusive token, outside the crowd's.
const ABUSER: u64 = 1_000_000;

/// Whether `reply` is exactly the rate limit's answer.
fn is_rate_limited(reply: &HttpReply) -> bool {
    let retry_after = reply
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok());
    reply.status == 429
        && &reply.body[..] == br#"{"error":"rate_limited"}"#
        && reply.header("content-type") == Some("application/json")
        && retry_after.is_some_and(|s| s >= 1)
}

/// `flashsale_rate_limited_total{limit}` on `addr`'s `/metrics`.
async fn limited(addr: SocketAddr, limit: RateLimit) -> anyhow::Result<f64> {
    let text = get(addr, "/metrics").await?.text();
    Ok(series(&text, RATE_LIMITED, &[("limit", limit.label())]).unwrap_or(0.0))
}

/// The most a bucket lets through in `elapsed`: its burst, what it refills
/// meanwhile, and one for the refill under way when the first request came.
fn most_admitted(burst: usize, per_s: f64, elapsed: Duration) -> usize {
    burst + (per_s * elapsed.as_secs_f64()).ceil() as usize + 1
}

fn honest_users() -> u64 {
    std::env::var("FLASHSALE_RATE_LIMIT_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HONEST_USERS)
}

/// `requests` reservations with one token on one keep-alive connection, as
/// fast as they are answered: how many were not 429, how many were exactly
/// the 429 answer, and the time from the first send to the last answer.
async fn abuse(
    addr: SocketAddr,
    user: u64,
    path: &str,
    requests: usize,
) -> anyhow::Result<(usize, usize, Duration)> {
    let auth = bearer(user);
    let mut conn = HttpConn::connect(addr).await?;
    let (mut admitted, mut limited) = (0, 0);
    let started = Instant::now();
    for _ in 0..requests {
        let reply = conn
            .send("POST", path, &[("authorization", &auth)], "")
            .await?;
        if reply.status == 429 {
            anyhow::ensure!(is_rate_limited(&reply), "{reply:?}");
            limited += 1;
        } else {
            admitted += 1;
        }
    }
    Ok((admitted, limited, started.elapsed()))
}

/// Every user in `users` reserves and then looks up their ticket, spread
/// over [`CROWD_CONNECTIONS`] keep-alive connections; returns the answers
/// that were 429 and the answers in all.
async fn crowd(addr: SocketAddr, users: std::ops::Range<u64>) -> anyhow::Result<(u64, u64)> {
    let mut tasks = Vec::new();
    for lane in 0..CROWD_CONNECTIONS {
        let mine: Vec<u64> = users
            .clone()
            .filter(|u| u % CROWD_CONNECTIONS == lane)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(addr).await?;
            let (mut limited, mut answers) = (0u64, 0u64);
            for user in mine {
                let auth = bearer(user);
                for (method, path) in [
                    ("POST", "/api/sales/gig/reserve"),
                    ("GET", "/api/sales/gig/me"),
                ] {
                    let reply = conn
                        .send(method, path, &[("authorization", &auth)], "")
                        .await?;
                    anyhow::ensure!(
                        reply.status != 503,
                        "the crowd was shed, not rate limited: {reply:?}"
                    );
                    limited += u64::from(reply.status == 429);
                    answers += 1;
                }
            }
            anyhow::Ok((limited, answers))
        }));
    }
    let (mut limited, mut answers) = (0, 0);
    for task in tasks {
        let (l, a) = task.await??;
        limited += l;
        answers += a;
    }
    Ok((limited, answers))
}

#[test]
fn one_token_is_limited_while_a_crowd_of_buyers_is_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(
        dir.path(),
        &[&SALE[..], &["--rate-limit-user", USER_RATE]].concat(),
    )?;
    let addr = server.http_addr();
    let users = honest_users();
    runtime().block_on(async {
        let before = limited(addr, RateLimit::User).await?;
        let started = Instant::now();
        let honest = tokio::spawn(crowd(addr, 1..users + 1));
        let (admitted, refused, elapsed) =
            abuse(addr, ABUSER, "/api/sales/gig/reserve", ABUSIVE_REQUESTS).await?;
        let (crowd_limited, crowd_answers) = honest.await??;
        let crowd_elapsed = started.elapsed();
        println!(
            "{users} honest users, {crowd_answers} answers in {crowd_elapsed:.2?}: \
             {crowd_limited} were 429; the abusive token: {admitted} of {ABUSIVE_REQUESTS} \
             admitted in {elapsed:.2?}, {refused} answered 429"
        );
        assert_eq!(crowd_limited, 0, "an honest buyer was rate limited");
        assert_eq!(crowd_answers, users * 2);
        assert!(
            admitted >= USER_BURST,
            "a full bucket lets {USER_BURST} through, {admitted} were"
        );
        let most = most_admitted(USER_BURST, USER_PER_S, elapsed);
        assert!(
            admitted <= most,
            "{admitted} admitted in {elapsed:?}, at most {most} expected"
        );
        assert_eq!(admitted + refused, ABUSIVE_REQUESTS);
        let after = limited(addr, RateLimit::User).await?;
        assert_eq!(after - before, refused as f64, "every 429 is counted");
        assert_eq!(limited(addr, RateLimit::Ip).await?, 0.0);
        anyhow::Ok(())
    })?;
    server.stop()
}

/// Users who each send one request to a server whose per-user table holds
/// [`SMALL_TABLE`] keys: more than twice
/// the 256 checks between two looks at the table (`HOUSEKEEPING_EVERY`), so the
/// table is found over its bound at least twice.
const ROTATING_USERS: u64 = 600;
/// The `--rate-limit-max-keys` of that server.
const SMALL_TABLE: usize = 100;

/// `name{limit}` on `addr`'s `/metrics`, if it is there.
async fn metric(addr: SocketAddr, name: &str, limit: RateLimit) -> anyhow::Result<Option<f64>> {
    let text = get(addr, "/metrics").await?.text();
    Ok(series(&text, name, &[("limit", limit.label())]))
}

#[test]
fn a_full_table_of_keys_starts_over_and_never_refuses_a_newcomer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // One an hour: no bucket refills during the test, so a sweep can
    // drop no key and a full table has to start over.
    let server = start_signed(
        dir.path(),
        &[
            &SALE[..],
            &[
                "--rate-limit-user",
                "1/h,burst=1",
                "--rate-limit-max-keys",
                &SMALL_TABLE.to_string(),
            ],
        ]
        .concat(),
    )?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let mut conn = HttpConn::connect(addr).await?;
        for user in 1..=ROTATING_USERS {
            let reply = conn
                .send(
                    "GET",
                    "/api/sales/gig/me",
                    &[("authorization", &bearer(user))],
                    "",
                )
                .await?;
            assert!(
                !is_rate_limited(&reply),
                "user {user}'s first request was refused: {reply:?}"
            );
        }
        let resets = metric(addr, RATE_LIMIT_RESETS, RateLimit::User).await?;
        assert!(
            resets.is_some_and(|r| r >= 2.0),
            "{ROTATING_USERS} keys in a table of {SMALL_TABLE}: {resets:?} start-overs"
        );
        let keys = metric(addr, RATE_LIMIT_KEYS, RateLimit::User).await?;
        assert!(
            keys.is_some_and(|k| k <= SMALL_TABLE as f64),
            "keys at the last sweep: {keys:?}"
        );
        // The per-address limit is off: it reports nothing.
        assert_eq!(metric(addr, RATE_LIMIT_RESETS, RateLimit::Ip).await?, None);
        anyhow::Ok(())
    })?;
    server.stop()
}

/// `GET /api/config` from the loopback address `from`, with an optional
/// `X-Forwarded-For`.
async fn config_from(
    addr: SocketAddr,
    from: &str,
    forwarded: Option<&str>,
) -> anyhow::Result<HttpReply> {
    let local: IpAddr = from.parse()?;
    let headers: Vec<(&str, &str)> = forwarded
        .map(|f| ("x-forwarded-for", f))
        .into_iter()
        .collect();
    HttpConn::connect_from(addr, local)
        .await?
        .send("GET", "/api/config", &headers, "")
        .await
}

#[test]
fn one_address_is_limited_before_its_token_is_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_signed(
        dir.path(),
        &[&SALE[..], &["--rate-limit-ip", "5/s,burst=10"]].concat(),
    )?;
    let addr = server.http_addr();
    runtime().block_on(async {
        let before = limited(addr, RateLimit::Ip).await?;
        // The reservation's fast path, with a token that would be refused:
        // a flood from one address is answered 429 without reading it.
        let mut conn = HttpConn::connect(addr).await?;
        let (mut admitted, mut refused) = (0, 0);
        let started = Instant::now();
        for _ in 0..100 {
            let reply = conn
                .send(
                    "POST",
                    "/api/sales/gig/reserve",
                    &[("authorization", "Bearer forged")],
                    "",
                )
                .await?;
            if is_rate_limited(&reply) {
                refused += 1;
            } else {
                assert_eq!(reply.status, 401, "{reply:?}");
                admitted += 1;
            }
        }
        let elapsed = started.elapsed();
        assert!(admitted >= 10, "{admitted}");
        let most = most_admitted(10, 5.0, elapsed);
        assert!(
            admitted <= most,
            "{admitted} in {elapsed:?}, at most {most}"
        );
        assert_eq!(admitted + refused, 100);
        // The page and the probes are never limited.
        for path in ["/", "/app.js", "/healthz", "/metrics"] {
            assert_eq!(conn.send("GET", path, &[], "").await?.status, 200, "{path}");
        }
        // Another address has its own bucket.
        assert_eq!(config_from(addr, "127.0.0.2", None).await?.status, 200);
        let after = limited(addr, RateLimit::Ip).await?;
        assert_eq!(after - before, refused as f64, "every 429 is counted");
        anyhow::Ok(())
    })?;
    server.stop()
}

#[test]
fn forwarded_for_is_believed_from_a_trusted_proxy_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let secret = path_str(&secret)?;
    // One an hour, two at once: no refill during the test, exact counts.
    let base = [
        "--jwt-secret-file",
        secret,
        "--rate-limit-ip",
        "1/h,burst=2",
    ];
    let behind = [&base[..], &["--trusted-proxy", "127.0.0.1/32"]].concat();
    let proxied = ServerProcess::start_http(&dir.path().join("proxied"), &behind)?;
    let direct = ServerProcess::start_http(&dir.path().join("direct"), &base)?;
    runtime().block_on(async {
        // Behind the proxy, each named client has its own bucket.
        let addr = proxied.http_addr();
        for client in ["203.0.113.1", "203.0.113.2"] {
            for _ in 0..2 {
                let reply = config_from(addr, "127.0.0.1", Some(client)).await?;
                assert_eq!(reply.status, 200, "{client}");
            }
            let reply = config_from(addr, "127.0.0.1", Some(client)).await?;
            assert!(is_rate_limited(&reply), "{client}: {reply:?}");
        }
        // A client that writes its own header cannot pick its bucket: the
        // right-most address the proxy did not add is the client.
        let forged = config_from(addr, "127.0.0.1", Some("198.51.100.9, 203.0.113.1")).await?;
        assert!(is_rate_limited(&forged), "{forged:?}");
        // 127.0.0.2 is not a trusted proxy: its header is not read, it is
        // the client.
        let headers = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
        let statuses = statuses_from(addr, "127.0.0.2", &headers).await?;
        assert_eq!(statuses, [200, 200, 429]);

        // Without --trusted-proxy, the header is never read.
        let statuses = statuses_from(direct.http_addr(), "127.0.0.1", &headers).await?;
        assert_eq!(statuses, [200, 200, 429]);
        assert_eq!(limited(direct.http_addr(), RateLimit::Ip).await?, 1.0);
        assert_eq!(limited(addr, RateLimit::Ip).await?, 4.0);
        anyhow::Ok(())
    })?;
    proxied.stop()?;
    direct.stop()
}

/// The statuses of `GET /api/config` from `from`, one request per
/// `X-Forwarded-For` value, in order.
async fn statuses_from(
    addr: SocketAddr,
    from: &str,
    forwarded: &[&str],
) -> anyhow::Result<Vec<u16>> {
    let mut statuses = Vec::new();
    for f in forwarded {
        statuses.push(config_from(addr, from, Some(f)).await?.status);
    }
    Ok(statuses)
}

#[test]
fn the_gateway_limits_users_and_addresses_too() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = secret_file(dir.path())?;
    let secret = path_str(&secret)?;
    let core = ServerProcess::start(&dir.path().join("core"), &SALE)?;
    let gateway = ServerProcess::start_gateway(
        &dir.path().join("gateway"),
        core.addr(),
        &[
            "--jwt-secret-file",
            secret,
            "--rate-limit-user",
            "1/h,burst=3",
            "--rate-limit-ip",
            "1/h,burst=7",
        ],
    )?;
    let addr = gateway.http_addr();
    runtime().block_on(async {
        // One user: three requests (the fast path and the router's), then 429.
        let auth = bearer(7);
        let headers = [("authorization", auth.as_str())];
        let mut statuses = Vec::new();
        for (method, path) in [
            ("POST", "/api/sales/gig/reserve"),
            ("GET", "/api/sales/gig/me"),
            ("POST", "/api/sales/gig/reserve"),
            ("GET", "/api/sales/gig/me"),
            ("POST", "/api/sales/gig/reserve"),
        ] {
            let reply = http(addr, method, path, &headers, "").await?;
            if reply.status == 429 {
                assert!(is_rate_limited(&reply), "{reply:?}");
            }
            statuses.push(reply.status);
        }
        assert_eq!(statuses, [201, 200, 200, 429, 429], "won, found, owned");
        // Another user is served; the address has used 6 of its 7 so far.
        let other = bearer(8);
        let reply = http(
            addr,
            "GET",
            "/api/sales/gig/me",
            &[("authorization", &other)],
            "",
        )
        .await?;
        assert_eq!(reply.status, 404, "no ticket yet: {reply:?}");
        assert_eq!(get(addr, "/api/config").await?.status, 200);
        let reply = get(addr, "/api/config").await?;
        assert!(is_rate_limited(&reply), "{reply:?}");
        assert_eq!(get(addr, "/healthz").await?.status, 200);
        assert_eq!(limited(addr, RateLimit::User).await?, 2.0);
        assert_eq!(limited(addr, RateLimit::Ip).await?, 1.0);
        anyhow::Ok(())
    })?;
    gateway.stop()?;
    core.stop()
}
