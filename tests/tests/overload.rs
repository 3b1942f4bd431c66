//! Offered several times more than the server will take at once: it sheds
//! with `Busy` / 503 + `Retry-After` instead of queueing, the answers it does
//! serve stay prompt, memory stays bounded, and nothing it acknowledged is
//! affected.
//!
//! Bounds here are generous on purpose (this is not a speed test): "prompt"
//! means every served answer arrives well inside the request timeout, so no
//! request ever times out; "bounded memory" means the server's peak RSS
//! stays under a fixed ceiling.

#[path = "loadgen/run.rs"]
mod run;

use std::path::Path;

use flashsale_client::{Client, ReserveOutcome};
use flashsale_tests::{client_config, runtime, ServerProcess};

use self::run::{loadgen, Run};

/// Peak resident memory the server may reach under these loads.
const RSS_CEILING: u64 = 256 * 1024 * 1024;

/// Offers `server` the load in `args` (a target, a sale, users and their
/// shape), which it must shed in part: some answers are `Busy`, yet every
/// request is answered, no invariant is violated, and the server's memory
/// stays under [`RSS_CEILING`]. The win count may be inconclusive: shed
/// users never learnt their fate.
fn shed(server: &ServerProcess, dir: &Path, args: &[&str]) -> anyhow::Result<Run> {
    let run = loadgen(
        dir,
        &[args, &["--timeout", "20s", "--deadline", "90s"]].concat(),
    )?;
    run.assert_passed();
    assert!(run.count("busy") > 0, "nothing was shed:\n{}", run.stdout);
    run.assert_all_answered();
    run.assert_invariants_hold(false);
    let peak = server.peak_rss()?;
    assert!(peak < RSS_CEILING, "peak RSS {peak} bytes");
    Ok(run)
}

/// What was acknowledged stands: the stock `server` reports sold matches
/// the wins `run` was told of. Returns a client for further checks.
async fn sold_matches_the_wins(server: &ServerProcess, run: &Run) -> anyhow::Result<Client> {
    let client = client_config(server.addr()).connect().await?;
    let status = client.status("s").await?;
    assert_eq!(
        u64::from(status.sold),
        run.count("won"),
        "sold matches the wins acknowledged"
    );
    Ok(client)
}

#[test]
fn http_front_sheds_past_its_in_flight_bound() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = flashsale_tests::token::secret_file(dir.path())?;
    let secret_arg = secret.to_string_lossy().into_owned();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--sale",
            "s:300",
            "--http",
            "127.0.0.1:0",
            "--jwt-secret-file",
            &secret_arg,
            "--http-max-in-flight",
            "4",
        ],
    )?;
    // 128 connections, each with a request in flight at all times, against a
    // bound of 4: most requests are shed at once.
    let run = shed(
        &server,
        dir.path(),
        &[
            "--target",
            &format!("http://{}", server.http_addr()),
            "--jwt-secret-file",
            &secret_arg,
            "--sale",
            "s",
            "--users",
            "6000",
            "--connections",
            "128",
            "--arrival",
            "rate:50000",
        ],
    )?;
    assert!(
        run.count("won") > 0,
        "some requests were served:\n{}",
        run.stdout
    );
    runtime().block_on(sold_matches_the_wins(&server, &run))?;
    server.stop()?;
    Ok(())
}

#[test]
fn native_server_sheds_connections_past_its_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--sale", "s:100", "--max-connections", "16"],
    )?;
    // A connection storm: far more connections at once than the limit.
    let run = shed(
        &server,
        dir.path(),
        &[
            "--addr",
            &server.addr().to_string(),
            "--sale",
            "s",
            "--users",
            "3000",
            "--connect-per-user",
            "--concurrency",
            "200",
        ],
    )?;
    // Acknowledged wins are unaffected, and a user who was shed can come
    // back and buy (or learn it is sold out).
    runtime().block_on(async {
        let client = sold_matches_the_wins(&server, &run).await?;
        let again = client.reserve("s", 1_000_000).await?;
        assert!(
            matches!(again, ReserveOutcome::Won { .. } | ReserveOutcome::SoldOut),
            "{again:?}"
        );
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
