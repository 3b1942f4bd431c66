//! The load generator against the real server, and against deliberately
//! broken fake servers that it must catch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use flashsale_protocol::{
    ClientFrame, Request, ReserveOutcome, Response, ResponseFrame, SaleState, SaleStatus,
    ServerCodec, ServerFrame, Welcome, PROTOCOL_VERSION,
};
use flashsale_tests::{workspace_bin, ServerProcess};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

/// Runs the load generator with `args`; returns its exit code, stdout and
/// JSON report.
fn loadgen(dir: &Path, args: &[&str]) -> anyhow::Result<(i32, String, Value)> {
    let json = dir.join(format!(
        "report-{}.json",
        std::process::id() as u64 ^ rand_tag()
    ));
    let out = Command::new(workspace_bin("flashsale-loadgen"))
        .args(args)
        .args([
            "--quiet",
            "--deadline",
            "60s",
            "--start-in",
            "200ms",
            "--json",
        ])
        .arg(&json)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let code = out.status.code().unwrap_or(-1);
    anyhow::ensure!(
        json.exists(),
        "no report (exit {code}); stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&std::fs::read(&json)?)?;
    Ok((code, stdout, report))
}

fn rand_tag() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn count(report: &Value, kind: &str) -> u64 {
    report["counts"][kind].as_u64().unwrap_or(0)
}

fn failed_invariants(report: &Value) -> Vec<String> {
    report["invariants"]
        .as_array()
        .expect("invariants")
        .iter()
        .filter(|v| v["held"] == Value::Bool(false))
        .map(|v| v["invariant"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_all_held(report: &Value) {
    for v in report["invariants"].as_array().expect("invariants") {
        assert_eq!(v["held"], Value::Bool(true), "{v}");
        assert_eq!(v["inconclusive"], Value::Bool(false), "{v}");
    }
    assert_eq!(report["ok"], Value::Bool(true));
}

#[test]
fn burst_with_retries_over_pipelined_connections() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "s:100"])?;
    let addr = server.addr().to_string();
    let (code, stdout, report) = loadgen(
        dir.path(),
        &[
            "--addr",
            &addr,
            "--sale",
            "s",
            "--users",
            "3000",
            "--connections",
            "4",
            "--retry-fraction",
            "0.3",
        ],
    )?;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(count(&report, "won"), 100);
    assert!(
        count(&report, "already_owned") > 0,
        "winners' retries are answered AlreadyOwned"
    );
    assert_eq!(
        count(&report, "timeout") + count(&report, "connection_error"),
        0
    );
    assert_eq!(report["remaining_after"], 0);
    assert!(report["time_to_sell_out_ms"].as_f64().is_some());
    assert!(report["latency_ms"]["sold_out"]["p99"].as_f64().is_some());
    assert_all_held(&report);
    assert!(stdout.contains("ok   one_ticket_per_user"), "{stdout}");

    // The same users again, hammering the sold-out sale for a moment.
    let (code, stdout, report) = loadgen(
        dir.path(),
        &[
            "--addr",
            &addr,
            "--sale",
            "s",
            "--users",
            "3000",
            "--connections",
            "2",
            "--duration",
            "300ms",
        ],
    )?;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(count(&report, "won"), 0);
    assert!(
        count(&report, "already_owned") >= 100,
        "every winner is told its ticket again"
    );
    assert!(report["answers"].as_u64().unwrap_or(0) >= 3000);
    server.stop()?;
    Ok(())
}

#[test]
fn connection_storm_over_several_processes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "s:50"])?;
    let addr = server.addr().to_string();
    let (code, stdout, report) = loadgen(
        dir.path(),
        &[
            "--addr",
            &addr,
            "--sale",
            "s",
            "--users",
            "1000",
            "--connect-per-user",
            "--concurrency",
            "64",
            "--processes",
            "2",
            "--retry-fraction",
            "0.2",
        ],
    )?;
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(count(&report, "won"), 50);
    assert_eq!(count(&report, "connection_error"), 0);
    assert_all_held(&report);
    server.stop()?;
    Ok(())
}

#[test]
fn open_model_arrivals() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &["--sale", "s:20"])?;
    let addr = server.addr().to_string();
    for (arrival, base) in [("rate:4000", "1000"), ("ramp:100ms", "2000")] {
        let (code, stdout, report) = loadgen(
            dir.path(),
            &[
                "--addr",
                &addr,
                "--sale",
                "s",
                "--users",
                "200",
                "--user-base",
                base,
                "--arrival",
                arrival,
            ],
        )?;
        assert_eq!(code, 0, "{stdout}");
        // The second run meets a sold-out sale: its users are all refused.
        assert_eq!(
            count(&report, "won") + count(&report, "sold_out"),
            200,
            "{arrival}"
        );
        assert_all_held(&report);
    }
    server.stop()?;
    Ok(())
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
                    while let Some(Ok(frame)) = framed.next().await {
                        let reply = match frame {
                            ClientFrame::Hello(_) => ServerFrame::Welcome(Welcome {
                                version: PROTOCOL_VERSION,
                                max_in_flight: 1024,
                            }),
                            ClientFrame::Request(r) => {
                                let response = answer(fault, &state, r.request);
                                ServerFrame::Response(ResponseFrame { id: r.id, response })
                            }
                        };
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
        let (code, stdout, report) = loadgen(
            dir.path(),
            &[
                "--addr",
                &addr,
                "--users",
                "40",
                "--connections",
                "2",
                "--retry-fraction",
                "1",
            ],
        )?;
        assert_eq!(code, 1, "{fault:?} must fail the run:\n{stdout}");
        assert!(
            failed_invariants(&report).contains(&invariant.to_owned()),
            "{fault:?}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("FAIL {invariant}")),
            "{fault:?}: {stdout}"
        );
        assert_eq!(report["ok"], Value::Bool(false));
    }
    Ok(())
}
