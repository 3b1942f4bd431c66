//! Start, stop, restart and refuse to start: the server's life against its
//! data directory.

use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::Path;

use flashsale_client::{ClientError, ErrorCode, ReserveOutcome, SaleState};
use flashsale_core::clock::now_ms;
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
        let now = now_ms();
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

/// The permission bits of `path`.
fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// One win for user 1 of `gig`, so the log names a user.
fn buy_one(server: &ServerProcess) -> anyhow::Result<()> {
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let outcome = client.reserve("gig", 1).await?;
        anyhow::ensure!(matches!(outcome, ReserveOutcome::Won { .. }), "{outcome:?}");
        anyhow::Ok(())
    })
}

#[test]
fn the_data_directory_and_its_files_are_private() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &["--sale", "gig:5"])?;
    buy_one(&server)?;
    assert_eq!(mode(&data)?, 0o700, "a created data directory");
    for name in ["wal.log", "LOCK"] {
        assert_eq!(mode(&data.join(name))?, 0o600, "{name}");
    }
    server.stop()?;

    // Files an older version left readable by all are made private.
    for name in ["wal.log", "LOCK"] {
        std::fs::set_permissions(data.join(name), Permissions::from_mode(0o644))?;
    }
    let server = ServerProcess::start(&data, &[])?;
    for name in ["wal.log", "LOCK"] {
        assert_eq!(mode(&data.join(name))?, 0o600, "{name} after a restart");
    }
    server.stop()?;
    Ok(())
}

#[test]
fn a_planted_link_is_never_followed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("target");
    std::fs::write(&target, b"precious")?;

    // A link where the new log's temporary file goes: replaced, not followed.
    let data = dir.path().join("data");
    DirBuilder::new().mode(0o700).create(&data)?;
    symlink(&target, data.join("wal.log.tmp"))?;
    let server = ServerProcess::start(&data, &["--sale", "gig:5"])?;
    buy_one(&server)?;
    server.stop()?;
    assert_eq!(std::fs::read(&target)?, b"precious", "the link's target");
    assert!(std::fs::symlink_metadata(data.join("wal.log"))?.is_file());
    assert!(!data.join("wal.log.tmp").exists());

    // A link in place of the log or the lock: refused, naming it.
    for name in ["wal.log", "LOCK"] {
        let data = dir.path().join(format!("data-{name}"));
        DirBuilder::new().mode(0o700).create(&data)?;
        symlink(&target, data.join(name))?;
        let (status, stderr) = ServerProcess::run_to_exit(&data, &[])?;
        assert!(!status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is a symbolic link")),
            "{name}: {stderr}"
        );
        assert_eq!(std::fs::read(&target)?, b"precious", "{name}'s target");
    }
    Ok(())
}

#[test]
fn a_data_directory_others_may_write_to_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    for bits in [0o770, 0o757, 0o1777] {
        std::fs::set_permissions(&data, Permissions::from_mode(bits))?;
        let (status, stderr) = ServerProcess::run_to_exit(&data, &[])?;
        assert!(!status.success(), "mode {bits:o}: {stderr}");
        assert!(
            stderr.contains(&data.display().to_string()) && stderr.contains("chmod 700"),
            "mode {bits:o}: {stderr}"
        );
        assert!(!data.join("wal.log").exists(), "nothing is created");
    }
    // Readable by others is not writable by them: served (the files in it
    // are private anyway).
    std::fs::set_permissions(&data, Permissions::from_mode(0o755))?;
    ServerProcess::start(&data, &[])?.stop()?;

    // Another user's directory, when this test may give it away (as root).
    let theirs = dir.path().join("theirs");
    DirBuilder::new().mode(0o700).create(&theirs)?;
    if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_ok() {
        let (status, stderr) = ServerProcess::run_to_exit(&theirs, &[])?;
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    }
    Ok(())
}
