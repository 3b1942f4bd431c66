//! `flashsale-torture`: kills the server with `kill -9` in the middle of
//! bursts, again and again on one data directory, and checks after every
//! restart that the clients' record still holds.
//!
//! Sales alternate between sales whose wins are final and sales with holds
//! (a 1 s payment window, created through the admin API), the first of a
//! run with holds. Each trial:
//!
//! 1. a burst of users reserves on the current sale over a pool of
//!    pipelined connections; some users reserve twice at once, some again
//!    after their answer, some come back from earlier trials. In a sale
//!    with holds, a quarter of the users arrive later in the burst, and each
//!    winner then pays, cancels, pays and cancels at once, or walks away;
//!    users of earlier trials pay holds just after their deadline, and the
//!    operator sometimes releases a ticket;
//! 2. the server is killed a drawn delay into the burst (from a few hundred
//!    microseconds to tens of milliseconds, so that kills land in the middle
//!    of batches and of `fdatasync`; in a sale with holds also up to beyond
//!    the hold's length, amid payments, cancels and expiries, or right at
//!    the deadline of an earlier trial's hold);
//! 3. sometimes a torn record is left at the end of the log (what a power
//!    cut during an unacknowledged write leaves), and sometimes the server
//!    is restarted and killed again within its first moments, while it
//!    recovers the log, once or several times in a row;
//! 4. the server is restarted cleanly and checked: every `Won` and
//!    `AlreadyOwned` a client received is there with the same ticket, every
//!    earlier holder still holds its ticket, no ticket has two holders, and
//!    `sold` is at most the capacity and exactly the number of holders. In a
//!    sale with holds: every acknowledged payment is still confirmed with
//!    its ticket; every acknowledged hold is still held with the same ticket
//!    and deadline, or confirmed if a payment was sent, or gone once its
//!    deadline passed or if a cancel or release may have acted; nothing
//!    cancelled, released, refused as expired or paid after its deadline is
//!    confirmed; and the held and confirmed counters agree with the lookups.
//!
//! A sale is followed by a new one on the same directory once sold out (a
//! sale with holds also after a drawn number of trials, once the rest of it
//! is sold and paid, its open holds expired, and the server killed and
//! checked once more); now and then a trial starts on a fresh directory. A
//! directory ends, as does the run, by selling the rest of its current sale
//! (exactly the tickets left, each once) and one more kill and check.
//!
//! Every decision follows from `--seed`, printed at the start, so a failing
//! run can be replayed (the timing of the server itself cannot be, nor what
//! depends on it: which holds are open when a trial is drawn).
//!
//! With `--cluster`, the trials run on three nodes of a cluster instead:
//! each kills the leader mid-burst (sometimes a follower, or a node that
//! restarted on an empty data directory and is still catching up), checks
//! the clients' record on the next leader, and starts the killed node again
//! (sometimes empty); the run ends by selling the rest of the sale. It also
//! reports how long each leader's loss left the sale without an
//! acknowledged win (`torture/cluster.rs`).
//!
//! Usage: `flashsale-torture [--trials N] [--seed S] [--users U] [--capacity C] [--cluster]`

#[path = "../torture/mod.rs"]
mod torture;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use torture::run::{Report, Settings};

/// Crash-tests flashsale-server: kill -9 mid-burst and mid-recovery, then
/// check that no acknowledged ticket is lost and none is sold twice.
#[derive(Debug, Parser)]
#[command(name = "flashsale-torture")]
struct Cli {
    /// Trials to run (burst, kill, restart, check).
    #[arg(long, default_value_t = 20)]
    trials: u64,
    /// Seed of every decision [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Fresh users per burst.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Tickets per sale.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,
    /// Where the data directories and the server's log go; must not hold
    /// an earlier run [default: a temporary directory, kept on failure].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The flashsale-server binary [default: the one next to this program].
    #[arg(long)]
    server: Option<PathBuf>,
    /// Bound on the whole run, in seconds.
    #[arg(long, default_value_t = 1800)]
    deadline: u64,

    /// Run three nodes as a cluster and kill the leader (sometimes a
    /// follower, or a node catching up) mid-burst instead; see
    /// `torture/cluster.rs`.
    #[arg(long)]
    cluster: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(clock_seed);
    println!("flashsale-torture: seed {seed}");
    match torture_run(cli, seed) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("flashsale-torture failed (seed {seed}): {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs and reports; `Ok(false)` when the server broke a promise.
fn torture_run(cli: Cli, seed: u64) -> anyhow::Result<bool> {
    let (root, temp) = match &cli.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("flashsale-torture-")
                .tempdir()?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let settings = Settings {
        trials: cli.trials,
        seed,
        users: cli.users,
        capacity: cli.capacity,
        root: root.clone(),
        server: match cli.server {
            Some(path) => path,
            None => next_to_this_program("flashsale-server")?,
        },
        deadline: Duration::from_secs(cli.deadline),
    };
    let started = Instant::now();
    if cli.cluster {
        return cluster_run(&settings, temp, seed, started);
    }
    let result = torture::run::run(&settings);
    let passed = matches!(&result, Ok(report) if !report.tally.failed());
    if !passed {
        // Keep the evidence: the logs, the side files, the data.
        let _kept = temp.map(tempfile::TempDir::keep);
        eprintln!(
            "the data directories and the server's log are in {}",
            root.display()
        );
    }
    let report = result?;
    print_report(&report, seed, started.elapsed());
    Ok(passed)
}

fn print_report(report: &Report, seed: u64, took: Duration) {
    let (tally, holds) = (&report.tally, &report.tally.holds);
    println!(
        "trials: {}, acknowledged wins checked: {}, lost: {}, oversold: {}, duplicates: {}, \
         confirmed lost: {}, confirmed late: {}, other: {}",
        report.trials,
        tally.checked,
        tally.lost,
        tally.oversold,
        tally.duplicates,
        tally.confirmed_lost,
        tally.late_confirmed,
        tally.other
    );
    println!(
        "hold trials: {}, holds checked: {}, confirms checked: {}, cancels checked: {}, \
         releases checked: {}, expiries checked: {}, late confirms refused: {}",
        report.hold_trials,
        holds.holds,
        holds.confirms,
        holds.cancels,
        holds.releases,
        holds.expiries,
        holds.late_refused
    );
    eprintln!("took {took:.1?}");
    if tally.failed() {
        eprintln!("FAILED with seed {seed} (replay: --seed {seed}); first problems:");
        for problem in &tally.problems {
            eprintln!("  {problem}");
        }
    }
}

/// The cluster trials, reported like the single-node ones plus the kills
/// and how long each leader's loss left the sale without an acknowledged
/// win.
fn cluster_run(
    settings: &Settings,
    temp: Option<tempfile::TempDir>,
    seed: u64,
    started: Instant,
) -> anyhow::Result<bool> {
    let result = torture::cluster::run(settings);
    let passed = matches!(&result, Ok(report) if !report.report.tally.failed());
    if !passed {
        let _kept = temp.map(tempfile::TempDir::keep);
        eprintln!(
            "the data directories and the nodes' logs are in {}",
            settings.root.display()
        );
    }
    let cluster = result?;
    print_report(&cluster.report, seed, started.elapsed());
    let mut failovers = cluster.failovers.clone();
    failovers.sort();
    let ms = |d: Option<&Duration>| d.map_or(0, |d| d.as_millis());
    // From a leader's kill to the first win a node acknowledged after it
    // (a client reserving every few milliseconds from the kill on).
    println!(
        "cluster kills: {}, leader kills: {}, follower kills: {}, catching-up kills: {}, \
         failovers timed: {}, failover p50 ms: {}, failover max ms: {}",
        cluster.kills.0 + cluster.kills.1 + cluster.kills.2,
        cluster.kills.0,
        cluster.kills.1,
        cluster.kills.2,
        failovers.len(),
        ms(failovers.get(failovers.len() / 2)),
        ms(failovers.last()),
    );
    Ok(passed)
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn next_to_this_program(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let dir = exe.parent().context("this program has no directory")?;
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_defaults() {
        let cli = Cli::parse_from(["flashsale-torture"]);
        assert_eq!((cli.trials, cli.users, cli.capacity), (20, 3000, 500));
        assert!(cli.seed.is_none() && cli.data_dir.is_none() && cli.server.is_none());
        let cli = Cli::parse_from([
            "flashsale-torture",
            "--trials",
            "3",
            "--seed",
            "42",
            "--users",
            "10",
            "--capacity",
            "5",
            "--data-dir",
            "/tmp/x",
        ]);
        assert_eq!(
            (cli.trials, cli.seed, cli.users, cli.capacity),
            (3, Some(42), 10, 5)
        );
        assert_eq!(cli.data_dir, Some(PathBuf::from("/tmp/x")));
        assert!(Cli::try_parse_from(["flashsale-torture", "--capacity", "0"]).is_err());
    }
}
