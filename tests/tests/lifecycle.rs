//! Start, stop, restart and refuse to start: the server's life against its
//! data directory.

use std::time::{SystemTime, UNIX_EPOCH};

use flashsale_client::{ClientError, ErrorCode, ReserveOutcome, SaleState};
use flashsale_tests::{client_config, runtime, ServerProcess};

#[test]
fn restart_gives_the_same_answers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &data,
        &["--sale", "gig:50", "--sale", "later:5:99999999999999"],
    )?;
    let (before, status_before) = runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let mut tickets = Vec::new();
        for user in 1..=30u64 {
            match client.reserve("gig", user * 7).await? {
                ReserveOutcome::Won { ticket } => tickets.push((user * 7, ticket)),
                other => anyhow::bail!("user {user} was told {other:?}"),
            }
        }
        anyhow::Ok((tickets, client.status("gig").await?))
    })?;
    assert_eq!((status_before.sold, status_before.remaining), (30, 20));
    assert!(server.terminate()?.success(), "SIGTERM exits 0");

    // No flags: every stored sale comes back.
    let server = ServerProcess::start(&data, &[])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        assert_eq!(client.status("gig").await?, status_before);
        for &(user, ticket) in &before {
            assert_eq!(client.lookup("gig", user).await?, Some(ticket));
            assert_eq!(
                client.reserve("gig", user).await?,
                ReserveOutcome::AlreadyOwned { ticket }
            );
        }
        let later = client.status("later").await?;
        assert_eq!((later.state, later.capacity), (SaleState::Upcoming, 5));
        assert_eq!(
            client.reserve("later", 1).await?,
            ReserveOutcome::NotOpen {
                opens_at: 99_999_999_999_999
            }
        );
        // The sale continues where it stopped: 20 more tickets, never a used one.
        let mut fresh = Vec::new();
        for user in 1000..1030u64 {
            if let ReserveOutcome::Won { ticket } = client.reserve("gig", user).await? {
                fresh.push(ticket);
            }
        }
        assert_eq!(fresh.len(), 20);
        let mut all: Vec<u32> = before.iter().map(|(_, t)| *t).chain(fresh).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=50).collect::<Vec<_>>());
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}

#[test]
fn contradicting_a_stored_sale_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &["--sale", "gig:50"])?;
    server.stop()?;

    let (status, stderr) = ServerProcess::run_to_exit(&data, &["--sale", "gig:60"])?;
    assert!(!status.success());
    assert!(
        stderr.contains("capacity 50, but 60"),
        "clear error, got: {stderr}"
    );

    // Repeating the stored definition, or adding a sale, is fine.
    let server = ServerProcess::start(&data, &["--sale", "gig:50", "--sale", "more:3"])?;
    server.stop()?;
    Ok(())
}

#[test]
fn one_server_per_data_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[])?;
    let (status, stderr) = ServerProcess::run_to_exit(&data, &[])?;
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another flashsale-server"),
        "clear error, got: {stderr}"
    );
    // kill -9 leaves no stale lock behind.
    server.kill9()?;
    let server = ServerProcess::start(&data, &[])?;
    server.stop()?;
    Ok(())
}

#[test]
fn unusable_data_directory_fails_to_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x")?;
    let (status, stderr) = ServerProcess::run_to_exit(&file, &[])?;
    assert!(!status.success());
    assert!(
        stderr.contains("data directory"),
        "clear error, got: {stderr}"
    );

    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    std::fs::write(data.join("wal.log"), b"this is not a flashsale log at all")?;
    let (status, stderr) = ServerProcess::run_to_exit(&data, &[])?;
    assert!(!status.success());
    assert!(stderr.contains("log"), "clear error, got: {stderr}");
    Ok(())
}

#[test]
fn default_sale_and_request_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ServerProcess::start(&dir.path().join("data"), &[])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let status = client.status("default").await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        assert_eq!(
            (status.capacity, status.remaining, status.state),
            (200, 200, SaleState::Open)
        );
        assert!(status.opens_at <= now);
        assert_eq!(
            client.reserve("nope", 1).await?,
            ReserveOutcome::UnknownSale
        );
        match client.status("nope").await {
            Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::UNKNOWN_SALE),
            other => anyhow::bail!("expected an unknown-sale error, got {other:?}"),
        }
        assert!(client.ping().await.is_ok());
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}
