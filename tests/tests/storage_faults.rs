//! Storage faults through the real binary: a read-only data directory and a
//! full disk at startup, and a disk that fills up while the sale runs.
//!
//! Each case runs the server on a private tmpfs of its own (see
//! [`confined`]); this needs root, as on CI, and fails without it, saying so.
//! Record sizes come from the log's own encoder (see [`LogSizes`]), so no
//! byte count of the log format is restated here.

#[path = "storage_faults/confined.rs"]
mod confined;
#[path = "storage_faults/filling.rs"]
mod filling;

use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use flashsale_client::ReserveOutcome;
use flashsale_tests::{client_config, runtime, workspace_bin, ServerProcess};
use flashsale_wal::record::FILE_HEADER_LEN;
use flashsale_wal::Record;

use self::confined::{failed_start, last_line, mount_point, Setup};
use self::filling::FillingDisk;

/// The sale every case runs. Its name's length sets the record sizes.
const SALE: &str = "gig";

/// Builds the server (a no-op when it is up to date), then reads the clock:
/// what a case takes, without the build.
fn built_then_now() -> Instant {
    workspace_bin("flashsale-server");
    Instant::now()
}

/// Sizes of the log the server writes for [`SALE`], in bytes.
#[derive(Debug, Clone, Copy)]
struct LogSizes {
    /// A log that only defines the sale: the file header and `SaleDefined`.
    defined: u64,
    /// One `TicketSold` record.
    sold: u64,
}

impl LogSizes {
    /// The sizes the log's encoder gives [`SALE`]'s records (their numbers
    /// are fixed-width, so any values do).
    fn of_sale() -> anyhow::Result<LogSizes> {
        let defined = Record::SaleDefined {
            sale: SALE.into(),
            capacity: 1,
            opens_at_ms: 0,
        };
        let sold = Record::TicketSold {
            sale: SALE.into(),
            ticket: 1,
            user: 1,
            at_ms: 0,
        };
        Ok(LogSizes {
            defined: (FILE_HEADER_LEN + defined.encode()?.len()) as u64,
            sold: sold.encode()?.len() as u64,
        })
    }

    /// A log that defines the sale and records `wins` sales.
    fn with_wins(self, wins: usize) -> u64 {
        self.defined + self.sold * wins as u64
    }
}

/// A data directory on the host holding a real log with five wins.
struct Seeded {
    /// The log's bytes.
    log: Vec<u8>,
    /// Its sizes, measured as it was written.
    sizes: LogSizes,
}

/// Sells tickets to users 1..=5 of [`SALE`] on a normal host directory and
/// stops the server: a data directory holding a real log, whose length is
/// checked against the encoder's record sizes once the sale is defined and
/// once the five wins are acknowledged (each durable before its answer).
fn seed_with_five_wins(data: &Path) -> anyhow::Result<Seeded> {
    const WINS: u64 = 5;
    let log_len = || std::fs::metadata(data.join("wal.log")).map(|m| m.len());
    let server = ServerProcess::start(data, &["--sale", &format!("{SALE}:100")])?;
    let defined = log_len()?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        for user in 1..=WINS {
            let outcome = client.reserve(SALE, user).await?;
            ensure!(
                matches!(outcome, ReserveOutcome::Won { .. }),
                "user {user}: {outcome:?}"
            );
        }
        anyhow::Ok(())
    })?;
    let written = log_len()?;
    server.stop()?;
    let sizes = LogSizes::of_sale()?;
    ensure!(
        (defined, written) == (sizes.with_wins(0), sizes.with_wins(WINS as usize)),
        "the log was {defined} bytes with the sale defined and {written} after {WINS} wins; the encoder says {sizes:?}"
    );
    let log = std::fs::read(data.join("wal.log"))?;
    ensure!(
        log.len() as u64 == sizes.with_wins(WINS as usize),
        "the stopped server's log is {} bytes, not {sizes:?} with {WINS} wins",
        log.len()
    );
    Ok(Seeded { log, sizes })
}

/// A start the server must refuse, and the error its stderr must end with.
struct Refusal<'a> {
    /// How the tmpfs is prepared.
    setup: Setup<'a>,
    /// The server's flags beyond `--data-dir`.
    args: &'a [&'a str],
    /// How the error begins.
    starts_with: &'a str,
    /// What else the error names.
    names: &'a [&'a str],
    /// What a good error says, for the failure message.
    expected: &'a str,
}

impl Refusal<'_> {
    /// Starts a server confined at `mnt` and checks that it exits with 1
    /// and ends with the expected error.
    fn check(&self, mnt: &Path) -> anyhow::Result<()> {
        let (code, log) = failed_start(mnt, &self.setup, self.args)?;
        assert_eq!(code, 1, "exit code; log:\n{log}");
        let error = last_line(&log);
        assert!(
            error.starts_with(self.starts_with) && self.names.iter().all(|n| error.contains(n)),
            "{}, got: {log}",
            self.expected
        );
        Ok(())
    }
}

/// The data directory a confined server uses under the mount point `mnt`.
fn data_dir_under(mnt: &Path) -> String {
    mnt.join("data").to_string_lossy().into_owned()
}

/// Starts a server on `data` (on the host, with room) and looks up users
/// `1..=users` of [`SALE`]: the ticket each holds.
fn tickets_held(data: &Path, users: u64) -> anyhow::Result<Vec<Option<u32>>> {
    let server = ServerProcess::start(data, &[])?;
    let held = runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        let mut held = Vec::new();
        for user in 1..=users {
            held.push(client.lookup(SALE, user).await?);
        }
        anyhow::Ok(held)
    })?;
    server.stop()?;
    Ok(held)
}

/// The contents of every side file recovery set damaged bytes aside in.
fn side_files(data: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("wal.log.damaged-")
        {
            found.push(std::fs::read(entry.path())?);
        }
    }
    Ok(found)
}

#[test]
fn read_only_file_system_without_a_log_refuses_to_start() -> anyhow::Result<()> {
    let started = built_then_now();
    // No data directory yet, then an empty one: either way the server
    // names the directory it cannot use.
    for with_empty_dir in [false, true] {
        let (tmp, mnt) = mount_point()?;
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty)?;
        let data = data_dir_under(&mnt);
        Refusal {
            setup: Setup {
                size: "1m",
                seed: with_empty_dir.then_some(empty.as_path()),
                read_only: true,
                ..Setup::default()
            },
            args: &["--sale", "gig:10"],
            starts_with: if with_empty_dir {
                ""
            } else {
                "flashsale-server: cannot create data directory"
            },
            names: &[&data, "Read-only file system"],
            expected: "clear error naming the directory",
        }
        .check(&mnt)?;
    }
    eprintln!("read-only cases took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn read_only_log_refuses_to_start_and_stays_as_it_was() -> anyhow::Result<()> {
    let started = built_then_now();
    // A real log with five wins, on a file system remounted read-only: the
    // server refuses, and the log is left exactly as it was.
    let (tmp, mnt) = mount_point()?;
    let seed = tmp.path().join("seed");
    let before = seed_with_five_wins(&seed)?.log;
    let after = tmp.path().join("after");
    let data = data_dir_under(&mnt);
    Refusal {
        setup: Setup {
            size: "1m",
            seed: Some(&seed),
            read_only: true,
            copy_out: Some(&after),
            ..Setup::default()
        },
        args: &[],
        starts_with: "flashsale-server: cannot ",
        names: &[&data, "Read-only file system"],
        expected: "clear error naming the directory",
    }
    .check(&mnt)?;
    assert_eq!(
        std::fs::read(after.join("wal.log"))?,
        before,
        "the log is untouched"
    );

    // The same log still serves its five tickets on a writable file system.
    for (user, held) in (1..).zip(tickets_held(&after, 5)?) {
        assert!(held.is_some(), "user {user}");
    }
    eprintln!("read-only log case took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn full_disk_without_a_log_refuses_to_start_and_leaves_none() -> anyhow::Result<()> {
    let started = built_then_now();
    // No log yet, and no free page for its header.
    let (tmp, mnt) = mount_point()?;
    let after = tmp.path().join("after");
    let data = data_dir_under(&mnt);
    Refusal {
        setup: Setup {
            size: "64k",
            free_pages: Some(0),
            copy_out: Some(&after),
            ..Setup::default()
        },
        args: &["--sale", "gig:10"],
        starts_with: "flashsale-server: cannot open the log in",
        names: &[&data, "wal.log", "No space left on device"],
        expected: "clear error naming the log and the full disk",
    }
    .check(&mnt)?;
    // The log is created atomically: a failed creation leaves no `wal.log`,
    // so the next start (with room) creates it afresh.
    assert!(
        !after.join("wal.log").exists(),
        "no half-made log is left behind"
    );
    let server = ServerProcess::start(&after, &["--sale", "gig:10"])?;
    runtime().block_on(async {
        let client = client_config(server.addr()).connect().await?;
        assert_eq!(
            client.reserve(SALE, 1).await?,
            ReserveOutcome::Won { ticket: 1 }
        );
        anyhow::Ok(())
    })?;
    server.stop()?;
    eprintln!("full-disk case without a log took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn full_disk_with_a_torn_log_refuses_to_discard_the_tail_unseen() -> anyhow::Result<()> {
    /// Bytes cut off the end of the last record.
    const CUT: usize = 10;
    let started = built_then_now();
    // A log whose last record is torn, on a full disk: recovery must keep the
    // torn bytes in a side file before cutting them, cannot, and so refuses
    // to start rather than discard them unseen, leaving the log as it was.
    let (tmp, mnt) = mount_point()?;
    let seed = tmp.path().join("seed");
    let Seeded { log: whole, sizes } = seed_with_five_wins(&seed)?;
    let torn = &whole[..whole.len() - CUT];
    std::fs::write(seed.join("wal.log"), torn)?;
    let after = tmp.path().join("after");
    Refusal {
        setup: Setup {
            size: "64k",
            free_pages: Some(0),
            seed: Some(&seed),
            copy_out: Some(&after),
            ..Setup::default()
        },
        args: &[],
        starts_with: "flashsale-server: cannot open the log in",
        names: &["wal.log.damaged-", "No space left on device"],
        expected: "clear error naming the side file and the full disk",
    }
    .check(&mnt)?;
    assert_eq!(
        std::fs::read(after.join("wal.log"))?,
        torn,
        "the log is untouched"
    );

    // With room again, recovery keeps the four whole wins and sets the torn
    // fifth aside.
    let held = tickets_held(&after, 5)?;
    for (user, held) in (1..).zip(&held[..4]) {
        assert!(held.is_some(), "user {user}");
    }
    assert_eq!(held[4], None);
    let sold = usize::try_from(sizes.sold)?;
    let torn_record = &torn[torn.len() - (sold - CUT)..];
    assert!(
        side_files(&after)?.iter().any(|bytes| bytes == torn_record),
        "the torn record is kept in a side file"
    );
    eprintln!(
        "full-disk case with a torn log took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn disk_filling_up_stops_acknowledging_wins() -> anyhow::Result<()> {
    let started = built_then_now();
    let sizes = LogSizes::of_sale()?;
    let (tmp, mnt) = mount_point()?;
    let copy = tmp.path().join("copy");
    let disk = FillingDisk::start(&mnt, &copy, sizes)?;
    let headroom = disk.headroom();
    let (won, refused) = runtime().block_on(async {
        let client = client_config(disk.addr()).connect().await?;
        let (won, first_refused) = disk.sell_until_full(&client).await?;
        let mut refused = filling::every_new_user_is_refused(&client, first_refused).await?;
        filling::wins_are_still_served(&client, &won).await?;
        refused.push(filling::http_front_reports_the_failure(disk.web(), &won).await?);
        anyhow::Ok((won, refused))
    })?;
    disk.failure_is_logged();
    let wal_len = disk.shutdown_reports_the_failed_log(&copy, won.len())?;
    let restart_log = filling::restart_keeps_every_win(&copy, &won, &refused)?;
    filling::a_torn_tail_is_set_aside(&copy, &restart_log, wal_len, sizes.with_wins(won.len()))?;
    eprintln!(
        "{} wins acknowledged with {headroom} bytes free; log of {wal_len} bytes; took {:?}",
        won.len(),
        started.elapsed()
    );
    Ok(())
}
