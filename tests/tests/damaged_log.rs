//! Recovery from a torn last record and from a flipped byte, through the
//! real binary: every whole record before the damage is kept.

use std::path::Path;

use flashsale_client::ReserveOutcome;
use flashsale_tests::{client_config, runtime, ServerProcess};
use flashsale_wal::record::{decode_record, FILE_HEADER_LEN, RECORD_HEADER_LEN};

/// Byte offsets where each record starts, walked with the log's own decoder.
fn record_starts(log: &[u8]) -> anyhow::Result<Vec<usize>> {
    let mut starts = Vec::new();
    let mut at = FILE_HEADER_LEN;
    while at < log.len() {
        starts.push(at);
        let (_, len) = decode_record(&log[at..])?;
        at += len;
    }
    Ok(starts)
}

/// Sells tickets to users 1..=10 (ticket n to user n) and stops the server.
fn sell_ten(data: &Path) -> anyhow::Result<()> {
    let server = ServerProcess::start(data, &["--sale", "s:20"])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        for user in 1..=10u64 {
            assert_eq!(
                client.reserve("s", user).await?,
                ReserveOutcome::Won {
                    ticket: user as u32
                }
            );
        }
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}

/// Users 1..=10 who still hold their ticket after a restart.
fn holders(data: &Path) -> anyhow::Result<Vec<u64>> {
    let server = ServerProcess::start(data, &[])?;
    let held = runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let mut held = Vec::new();
        for user in 1..=10u64 {
            if let Some(ticket) = client.lookup("s", user).await? {
                assert_eq!(ticket, user as u32);
                held.push(user);
            }
        }
        // The sale goes on after the damage: one more sale is logged fine.
        assert!(matches!(
            client.reserve("s", 99).await?,
            ReserveOutcome::Won { .. }
        ));
        anyhow::Ok(held)
    })?;
    assert!(
        server.log().contains("WARN") || held.len() == 10,
        "damage is reported"
    );
    server.stop()?;
    Ok(held)
}

#[test]
fn torn_last_record_is_truncated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    sell_ten(&data)?;
    let log_path = data.join("wal.log");
    let log = std::fs::read(&log_path)?;
    let starts = record_starts(&log)?;
    assert_eq!(starts.len(), 11, "one sale definition and ten tickets");
    // Cut the last record in half.
    let last = starts[10];
    std::fs::write(&log_path, &log[..last + (log.len() - last) / 2])?;
    assert_eq!(holders(&data)?, (1..=9).collect::<Vec<_>>());
    Ok(())
}

#[test]
fn flipped_byte_keeps_the_records_before_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    sell_ten(&data)?;
    let log_path = data.join("wal.log");
    let mut log = std::fs::read(&log_path)?;
    let starts = record_starts(&log)?;
    // Flip the 4th payload byte of the 6th ticket (record 7: after the
    // definition).
    log[starts[6] + RECORD_HEADER_LEN + 3] ^= 0x40;
    std::fs::write(&log_path, &log)?;
    assert_eq!(holders(&data)?, (1..=5).collect::<Vec<_>>());
    let side_files = std::fs::read_dir(&data)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .count();
    assert_eq!(
        side_files, 1,
        "the discarded bytes are kept aside for inspection"
    );
    Ok(())
}
