//! The load generator against the real server, and against deliberately
//! broken fake servers that it must catch.

#[path = "loadgen/run.rs"]
mod run;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use flashsale_protocol::handshake::{accept, check_hello};
use flashsale_protocol::{
    ClientFrame, Request, ReserveOutcome, Response, ResponseFrame, SaleState, SaleStatus,
    ServerCodec, ServerFrame,
};
use flashsale_tests::{runtime, start_with_admin, workspace_bin, Admin, ServerProcess};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use self::run::{loadgen, Run};

/// Bounds every run here shares: on the whole run, and on the time its
/// workers have to connect.
const BOUNDS: &[&str] = &["--deadline", "60s", "--start-in", "200ms"];

/// Runs the load generator against the server at `addr` with `users`
/// users, the load shaped by `flags`; the report goes into `dir`.
fn load(dir: &Path, addr: &str, users: &str, flags: &[&str]) -> anyhow::Result<Run> {
    loadgen(
        dir,
        &[&["--addr", addr, "--users", users], flags, BOUNDS].concat(),
    )
}

/// A real server selling sale `s`, and a directory for its data and the
/// reports.
struct Sale {
    dir: tempfile::TempDir,
    server: ServerProcess,
}

impl Sale {
    /// Starts a server with `tickets` tickets of sale `s`.
    fn start(tickets: u32) -> anyhow::Result<Sale> {
        let dir = tempfile::tempdir()?;
        let sale = format!("s:{tickets}");
        let server = ServerProcess::start(&dir.path().join("data"), &["--sale", &sale])?;
        Ok(Sale { dir, server })
    }

    /// `users` users buy from sale `s`, the load shaped by `flags`.
    fn buy(&self, users: &str, flags: &[&str]) -> anyhow::Result<Run> {
        let addr = self.server.addr().to_string();
        load(
            self.dir.path(),
            &addr,
            users,
            &[&["--sale", "s"], flags].concat(),
        )
    }

    fn stop(self) -> anyhow::Result<()> {
        self.server.stop()
    }
}

/// The invariants the run found broken.
fn failed_invariants(run: &Run) -> Vec<String> {
    run.report["invariants"]
        .as_array()
        .expect("invariants")
        .iter()
        .filter(|v| v["held"] == Value::Bool(false))
        .map(|v| v["invariant"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn burst_with_retries_over_pipelined_connections() -> anyhow::Result<()> {
    let sale = Sale::start(100)?;
    let run = sale.buy("3000", &["--connections", "4", "--retry-fraction", "0.3"])?;
    run.assert_passed();
    assert_eq!(run.count("won"), 100);
    assert!(
        run.count("already_owned") > 0,
        "winners' retries are answered AlreadyOwned"
    );
    run.assert_all_answered();
    assert_eq!(run.report["remaining_after"], 0);
    assert!(run.report["time_to_sell_out_ms"].as_f64().is_some());
    assert!(run.report["latency_ms"]["sold_out"]["p99"]
        .as_f64()
        .is_some());
    run.assert_invariants_hold(true);
    assert!(
        run.stdout.contains("ok   one_ticket_per_user"),
        "{}",
        run.stdout
    );

    // The same users again, hammering the sold-out sale for a moment.
    let run = sale.buy("3000", &["--connections", "2", "--duration", "300ms"])?;
    run.assert_passed();
    assert_eq!(run.count("won"), 0);
    assert!(
        run.count("already_owned") >= 100,
        "every winner is told its ticket again"
    );
    assert!(run.report["answers"].as_u64().unwrap_or(0) >= 3000);
    sale.stop()
}

/// One connection per user, from the kernel's choice of client address
/// and then from four loopback addresses in turn (`--source-addrs`).
#[test]
fn connection_storm_over_several_processes() -> anyhow::Result<()> {
    for sources in [&[][..], &["--source-addrs", "127.0.0.1-127.0.0.4"]] {
        let sale = Sale::start(50)?;
        let flags = [
            &[
                "--connect-per-user",
                "--concurrency",
                "64",
                "--processes",
                "2",
                "--retry-fraction",
                "0.2",
            ][..],
            sources,
        ]
        .concat();
        let run = sale.buy("1000", &flags)?;
        run.assert_passed();
        assert_eq!(run.count("won"), 50, "{sources:?}");
        assert_eq!(run.count("connection_error"), 0, "{sources:?}");
        run.assert_invariants_hold(true);
        sale.stop()?;
    }
    Ok(())
}

#[test]
fn open_model_arrivals() -> anyhow::Result<()> {
    let sale = Sale::start(20)?;
    for (arrival, base) in [("rate:4000", "1000"), ("ramp:100ms", "2000")] {
        let run = sale.buy("200", &["--user-base", base, "--arrival", arrival])?;
        run.assert_passed();
        // The second run meets a sold-out sale: its users are all refused.
        assert_eq!(run.count("won") + run.count("sold_out"), 200, "{arrival}");
        run.assert_invariants_hold(true);
    }
    sale.stop()
}

/// A sale with holds rushed by buyers of whom some pay, some cancel and
/// the rest walk away: tickets change hands until every one is paid for,
/// once; and payments that come after the hold are refused, never
/// accepted late.
#[test]
fn payments_end_with_every_ticket_paid_for_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_with_admin(dir.path(), &[])?;
    let admin = Admin::of(&server);
    let rt = runtime();
    for sale in ["paid", "late"] {
        let body =
            json!({"sale": sale, "capacity": 5, "opens_at": null, "hold_seconds": 1}).to_string();
        let reply = rt.block_on(admin.create(&body))?;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let addr = server.addr().to_string();
    let flags = [
        "--sale",
        "paid",
        "--arrival",
        "rate:300",
        "--processes",
        "2",
        "--retry-fraction",
        "0.2",
        "--pay-fraction",
        "0.3",
        "--pay-after",
        "200ms",
    ];
    let run = load(dir.path(), &addr, "60", &flags)?;
    run.assert_passed();
    run.assert_invariants_hold(true);
    let paid = &run.report["payments"];
    assert_eq!(paid["confirmed_at_end"], 5, "{}", run.stdout);
    assert_eq!(paid["paid_tickets"], 5, "{}", run.stdout);
    assert!(
        paid["holds"].as_u64() > Some(5),
        "tickets changed hands\n{}",
        run.stdout
    );
    assert!(paid["cancelled"].as_u64() > Some(0), "{}", run.stdout);
    let info = rt.block_on(admin.sale("paid"))?;
    assert_eq!(
        (&info["confirmed"], &info["held"], &info["remaining"]),
        (&json!(5), &json!(0), &json!(0)),
        "{info}"
    );

    let flags = [
        "--sale",
        "late",
        "--user-base",
        "1000",
        "--arrival",
        "rate:200",
        "--pay-fraction",
        "1",
        "--pay-after",
        "1500ms",
        "--duration",
        "3s",
    ];
    let run = load(dir.path(), &addr, "40", &flags)?;
    run.assert_passed();
    run.assert_invariants_hold(false);
    let late = &run.report["payments"];
    assert!(
        late["confirms_expired"].as_u64() > Some(0),
        "{}",
        run.stdout
    );
    let ending = run.report["invariants"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|v| v["invariant"] == "every_ticket_ends_confirmed")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(ending["inconclusive"], true, "{}", run.stdout);
    server.stop()
}

/// A server that pins its tokens' issuer and audience and wants an API key
/// is loaded with the key from a file and tokens that carry what it pins;
/// tokens without them are refused, every one.
#[test]
fn keys_from_files_and_pinned_token_rules() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("api-key");
    std::fs::write(&key, "the load test's api key\n")?;
    let key = key.to_string_lossy().into_owned();
    let secret = flashsale_tests::token::secret_file(dir.path())?;
    let secret = secret.to_string_lossy().into_owned();
    let pins = ["--jwt-issuer", "idp", "--jwt-audience", "shop"];
    let server = ServerProcess::start_http(
        &dir.path().join("data"),
        &[
            &[
                "--sale",
                "s:30",
                "--api-key-file",
                &key,
                "--jwt-secret-file",
                &secret,
            ][..],
            &pins,
        ]
        .concat(),
    )?;
    let native = server.addr().to_string();
    let run = load(
        dir.path(),
        &native,
        "20",
        &["--sale", "s", "--api-key-file", &key],
    )?;
    run.assert_passed();
    assert_eq!(run.count("won"), 20);

    let http = format!("http://{}", server.http_addr());
    let over_http = [
        "--target",
        &http,
        "--jwt-secret-file",
        &secret,
        "--sale",
        "s",
    ];
    let run = load(
        dir.path(),
        &native,
        "10",
        &[&over_http[..], &pins, &["--user-base", "100"]].concat(),
    )?;
    run.assert_passed();
    assert_eq!(run.count("won"), 10, "{}", run.stdout);
    let refused = load(
        dir.path(),
        &native,
        "5",
        &[&over_http[..], &["--user-base", "200"]].concat(),
    )?;
    assert_eq!(refused.count("won"), 0, "{}", refused.stdout);
    assert_eq!(refused.count("error"), 5, "{}", refused.stdout);
    server.stop()
}

#[test]
fn an_unknown_sale_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &[])?;
    let out = Command::new(workspace_bin("flashsale-loadgen"))
        .args([
            "--addr",
            &server.addr().to_string(),
            "--sale",
            "nope",
            "--users",
            "10",
            "--quiet",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    server.stop()?;
    Ok(())
}

/// How a fake server misbehaves.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Sells every user a ticket, past the capacity of 5.
    Oversell,
    /// Sells a user who asks twice a second ticket.
    TwoTickets,
    /// Says "sold out" after two sales while its status shows 3 left.
    FalseSoldOut,
}

/// Starts a fake server with `fault` on a thread of its own.
fn fake_server(fault: Fault) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let state = Arc::new(Mutex::new((0u32, HashMap::<u64, u32>::new())));
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let mut framed = tokio_util::codec::Framed::new(stream, ServerCodec::default());
                    let welcomed = accept(&mut framed, 1024, |hello| check_hello(hello, None));
                    if welcomed.await.is_err() {
                        return;
                    }
                    while let Some(Ok(ClientFrame::Request(r))) = framed.next().await {
                        let response = answer(fault, &state, r.request);
                        let reply = ServerFrame::Response(ResponseFrame { id: r.id, response });
                        if framed.send(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    addr
}

fn answer(fault: Fault, state: &Mutex<(u32, HashMap<u64, u32>)>, request: Request) -> Response {
    let mut guard = state.lock().expect("fake server state");
    let (sold, holders) = &mut *guard;
    match request {
        Request::Status { sale } => {
            let remaining = match fault {
                Fault::FalseSoldOut => 5 - *sold,
                _ => 5u32.saturating_sub(*sold),
            };
            Response::Status(SaleStatus {
                sale,
                capacity: 5,
                remaining,
                sold: *sold,
                state: SaleState::Open,
                opens_at: 0,
            })
        }
        Request::Reserve { user, .. } => {
            let owned = holders.get(&user).copied();
            let outcome = match (fault, owned) {
                (Fault::TwoTickets, _) | (Fault::Oversell, None) => {
                    *sold += 1;
                    holders.insert(user, *sold);
                    ReserveOutcome::Won { ticket: *sold }
                }
                (Fault::FalseSoldOut, None) if *sold < 2 => {
                    *sold += 1;
                    holders.insert(user, *sold);
                    ReserveOutcome::Won { ticket: *sold }
                }
                (_, Some(ticket)) => ReserveOutcome::AlreadyOwned { ticket },
                (_, None) => ReserveOutcome::SoldOut,
            };
            Response::Reserve(outcome)
        }
        _ => Response::Pong,
    }
}

#[test]
fn broken_servers_are_caught_and_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        (Fault::Oversell, "wins_match_stock"),
        (Fault::Oversell, "tickets_in_range"),
        (Fault::TwoTickets, "one_ticket_per_user"),
        (Fault::FalseSoldOut, "no_sold_out_with_stock_left"),
    ];
    for (fault, invariant) in cases {
        let addr = fake_server(fault).to_string();
        let run = load(
            dir.path(),
            &addr,
            "40",
            &["--connections", "2", "--retry-fraction", "1"],
        )?;
        let stdout = &run.stdout;
        assert_eq!(run.code, 1, "{fault:?} must fail the run:\n{stdout}");
        assert!(
            failed_invariants(&run).contains(&invariant.to_owned()),
            "{fault:?}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("FAIL {invariant}")),
            "{fault:?}: {stdout}"
        );
        assert_eq!(run.report["ok"], Value::Bool(false));
    }
    Ok(())
}
