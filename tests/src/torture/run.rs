//! The trial loop: a burst, `kill -9` in its middle, sometimes a torn tail
//! and kills while the log is recovered, then a clean restart checked
//! against what the clients were told.
//!
//! Sales alternate between the two kinds, the first of a run with holds, so
//! that even a short run covers both. A sale without holds is added on the
//! command line (`--sale`, which takes a restart); a sale with holds through
//! the admin API of the running server, durable once answered.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flashsale_client::{ClientConfig, Pool, ReconnectPolicy};
use flashsale_tests::admin::{admin_key_file, Admin};
use rand::Rng as _;

use super::burst;
use super::hold_ledger::HoldLedger;
use super::ledger::Book;
use super::process::{KilledAt, Launcher, Running};
use super::record::Record;
use super::rng::{self, Draws, Rng};
use super::sellout;
use super::tally::Tally;

/// The payment window of a sale with holds, in whole seconds (the least
/// the admin API takes), so that holds expire during later trials.
const HOLD_SECONDS: u32 = 1;
/// A sale with holds is sold for a drawn number of trials in this range
/// (unless every ticket is confirmed sooner); then the rest of it is sold
/// and paid, checked after one more kill, and the next sale starts.
const HOLD_SALE_TRIALS: std::ops::RangeInclusive<u32> = 4..=10;
/// One trial in this many kills the server again while it recovers.
const RECOVERY_KILL_ONE_IN: u32 = 4;
/// At most this many kills in a row while recovering.
const RECOVERY_KILLS_MAX: u64 = 3;
/// One trial in this many finds a torn record at the end of the log.
const TORN_TAIL_ONE_IN: u32 = 5;
/// One trial in this many (after the first) starts on a fresh directory.
const FRESH_DIR_ONE_IN: u32 = 10;
/// One trial in this many re-checks the sales already sold out.
const RECHECK_OLD_SALES_ONE_IN: u32 = 8;
/// The rng part (see [`rng::derive`]) of the sales' draws, far from the
/// trials' parts.
const SALES_PART: u64 = u64::MAX / 2;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Trials to run.
    pub trials: u64,
    /// Seed of every decision.
    pub seed: u64,
    /// Fresh users per burst.
    pub users: u64,
    /// Tickets per sale.
    pub capacity: u32,
    /// Directory holding the data directories and the server's log.
    pub root: PathBuf,
    /// The `flashsale-server` binary.
    pub server: PathBuf,
    /// Bound on the whole run.
    pub deadline: Duration,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Trials completed.
    pub trials: u64,
    /// Of them, trials on a sale with holds.
    pub hold_trials: u64,
    /// Checks and violations.
    pub tally: Tally,
}

/// One data directory and everything known about it.
struct Epoch {
    launcher: Launcher,
    /// Every sale on the directory; the last one is being sold.
    records: Vec<Record>,
    /// Sales with holds not yet created through the admin API.
    to_create: Vec<String>,
    /// The server, once checked and ready for the next burst.
    server: Option<Running>,
}

struct Torture<'a> {
    settings: &'a Settings,
    rt: tokio::runtime::Runtime,
    tally: Tally,
    next_user: u64,
    epochs: u64,
    /// Sales started so far in the run.
    sales: u64,
    hold_trials: u64,
    deadline: Instant,
    /// How long a clean start takes, to aim kills at recovery.
    boot: Option<Duration>,
}

/// Runs every trial, then checks that the sale still sells exactly its
/// remaining tickets.
///
/// # Errors
///
/// The harness itself failed (a server that does not start, a lookup that
/// fails after a clean restart, the deadline). Violations of the server's
/// promises are not errors: they are in the report's tally.
pub fn run(settings: &Settings) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut torture = Torture {
        settings,
        rt,
        tally: Tally::default(),
        next_user: 1,
        epochs: 0,
        sales: 0,
        hold_trials: 0,
        deadline: Instant::now() + settings.deadline,
        boot: None,
    };
    let mut epoch = torture.new_epoch()?;
    let mut done = 0;
    for trial in 0..settings.trials {
        let mut rng = rng::derive(settings.seed, trial);
        if trial > 0 && rng.one_in(FRESH_DIR_ONE_IN) {
            torture.finish(&mut epoch)?;
            if torture.tally.failed() {
                break;
            }
            epoch = torture.new_epoch()?;
        }
        torture
            .trial(trial, &mut rng, &mut epoch)
            .with_context(|| format!("trial {trial}"))?;
        done += 1;
        if torture.tally.failed() {
            break;
        }
    }
    if !torture.tally.failed() {
        torture.finish(&mut epoch)?;
    }
    Ok(Report {
        trials: done,
        hold_trials: torture.hold_trials,
        tally: torture.tally,
    })
}

impl Torture<'_> {
    fn new_epoch(&mut self) -> anyhow::Result<Epoch> {
        let data_dir = self.settings.root.join(format!("data-{}", self.epochs));
        anyhow::ensure!(
            !data_dir.exists(),
            "{} already exists: give an empty --data-dir",
            data_dir.display()
        );
        self.epochs += 1;
        let mut epoch = Epoch {
            launcher: Launcher {
                bin: self.settings.server.clone(),
                data_dir,
                log: self.settings.root.join("server.log"),
                sales: Vec::new(),
                admin_key: admin_key_file(&self.settings.root)?,
            },
            records: Vec::new(),
            to_create: Vec::new(),
            server: None,
        };
        self.new_sale(&mut epoch);
        Ok(epoch)
    }

    /// Adds the next sale to `epoch`; true if the server must restart to
    /// sell it (a sale on the command line).
    fn new_sale(&mut self, epoch: &mut Epoch) -> bool {
        let capacity = self.settings.capacity;
        let n = epoch.records.len() + 1;
        let holds = self.sales.is_multiple_of(2);
        let mut rng = rng::derive(self.settings.seed, SALES_PART + self.sales);
        self.sales += 1;
        if holds {
            let sale = format!("h{n}");
            let trials = rng.random_range(HOLD_SALE_TRIALS);
            let hold = Duration::from_secs(HOLD_SECONDS.into());
            epoch.to_create.push(sale.clone());
            let ledger = HoldLedger::new(sale, capacity, hold, trials);
            epoch.records.push(Record::Holds(ledger));
            false
        } else {
            let sale = format!("s{n}");
            epoch.launcher.sales.push(format!("{sale}:{capacity}"));
            epoch
                .records
                .push(Record::Instant(Book::new(sale, capacity)));
            true
        }
    }

    /// The epoch's server, started if need be, with every sale created.
    fn ready(&mut self, epoch: &mut Epoch) -> anyhow::Result<Running> {
        let server = match epoch.server.take() {
            Some(server) => server,
            None => self.start(&epoch.launcher)?,
        };
        let admin = Admin {
            addr: server.admin(),
        };
        let capacity = self.settings.capacity;
        for sale in std::mem::take(&mut epoch.to_create) {
            let body = serde_json::json!({
                "sale": sale,
                "capacity": capacity,
                "opens_at": null,
                "hold_seconds": HOLD_SECONDS,
            });
            let reply = self.block_on(admin.create(&body.to_string()))?;
            anyhow::ensure!(
                matches!(reply.status, 200 | 201),
                "creating sale {sale}: {} {}",
                reply.status,
                reply.text()
            );
        }
        Ok(server)
    }

    fn trial(&mut self, trial: u64, rng: &mut Rng, epoch: &mut Epoch) -> anyhow::Result<()> {
        let server = self.ready(epoch)?;
        let record = epoch.records.last_mut().context("an epoch has a sale")?;
        let holds = matches!(record, Record::Holds(_));
        self.hold_trials += u64::from(holds);
        let users = record.plan(rng, &mut self.next_user, self.settings.users);
        let kill_after = record.kill_after(rng);
        let sale = record.sale().to_owned();
        let burst = self.block_on(burst::run(server, &sale, users, kill_after))?;
        record.told(&burst, &mut self.tally);
        let (named, other, cut) = burst.counts();
        let kind = if holds { " (holds)" } else { "" };
        let mut story = format!(
            "trial {trial}: sale {sale}{kind}, killed {:.2?} into the burst ({named} tickets told, {other} no ticket, {cut} cut)",
            burst.killed_after
        );

        if rng.one_in(TORN_TAIL_ONE_IN) {
            let torn = super::torn::tear_tail(&epoch.launcher.data_dir, rng)?;
            story += &format!(", torn tail of {torn} bytes");
        }
        if rng.one_in(RECOVERY_KILL_ONE_IN) {
            story += &self.kill_while_recovering(rng, &epoch.launcher)?;
        }

        let server = self.start(&epoch.launcher)?;
        self.check(
            rng.one_in(RECHECK_OLD_SALES_ONE_IN),
            &server,
            &mut epoch.records,
        )?;
        let record = epoch.records.last().context("an epoch has a sale")?;
        eprintln!("{story}; {}", record.progress());

        let (done, holds) = (record.done(), matches!(record, Record::Holds(_)));
        epoch.server = Some(server);
        if done && holds && !self.tally.failed() {
            // Its open holds are settled before the next sale starts.
            self.close_sale(epoch)?;
        }
        if done && !self.tally.failed() && self.new_sale(epoch) {
            // A sale on the command line takes a restart.
            if let Some(server) = epoch.server.take() {
                server.kill9()?;
            }
        }
        Ok(())
    }

    /// Restarts the server and kills it again within its first moments,
    /// once or several times in a row. Describes what was interrupted.
    fn kill_while_recovering(
        &mut self,
        rng: &mut Rng,
        launcher: &Launcher,
    ) -> anyhow::Result<String> {
        let boot = self.boot.unwrap_or(Duration::from_millis(5));
        let (low, high) = (boot / 20, boot.mul_f64(1.5));
        let kills = rng.random_range(1..=RECOVERY_KILLS_MAX);
        let mut before = 0;
        for _ in 0..kills {
            match launcher.kill_while_starting(rng.log_uniform(low, high))? {
                KilledAt::BeforeListening => before += 1,
                KilledAt::AfterListening => {}
                KilledAt::Exited(status) => bail!(
                    "the server exited by itself ({status}) while recovering; the end of its log:\n{}",
                    launcher.log_tail()
                ),
            }
        }
        Ok(format!(
            ", {kills} kills while starting ({before} before listening)"
        ))
    }

    /// Starts the server cleanly, and learns how long a start takes.
    fn start(&mut self, launcher: &Launcher) -> anyhow::Result<Running> {
        self.check_deadline()?;
        let started = Instant::now();
        let server = launcher.start()?;
        let took = started.elapsed();
        self.boot = Some(self.boot.map_or(took, |b| (b * 3 + took) / 4));
        Ok(server)
    }

    /// Checks the sale being sold and, when `all`, the earlier ones too.
    fn check(&mut self, all: bool, server: &Running, records: &mut [Record]) -> anyhow::Result<()> {
        let addr = server.addr();
        let tally = &mut self.tally;
        let last = records.len().saturating_sub(1);
        let deadline = self.deadline;
        self.rt.block_on(bounded(deadline, async {
            let pool = connect(addr).await?;
            for (i, record) in records.iter_mut().enumerate() {
                if all || i == last {
                    record.check(&pool, tally).await?;
                }
            }
            anyhow::Ok(())
        }))
    }

    /// Ends a data directory: closes its current sale, then stops the
    /// server.
    fn finish(&mut self, epoch: &mut Epoch) -> anyhow::Result<()> {
        self.close_sale(epoch)?;
        match epoch.server.take() {
            Some(server) => server.stop(),
            None => Ok(()),
        }
    }

    /// Sells the rest of the current sale, kills the server once more, and
    /// checks every sale after a restart; the server is left running.
    fn close_sale(&mut self, epoch: &mut Epoch) -> anyhow::Result<()> {
        let server = self.ready(epoch)?;
        let record = epoch.records.last_mut().context("an epoch has a sale")?;
        let first = self.next_user;
        self.next_user += u64::from(self.settings.capacity) + sellout::SLACK;
        let next_user = &mut self.next_user;
        let (addr, deadline, tally) = (server.addr(), self.deadline, &mut self.tally);
        self.rt.block_on(bounded(deadline, async {
            let pool = connect(addr).await?;
            match record {
                Record::Instant(book) => sellout::sell_rest(&pool, book, first, tally).await,
                Record::Holds(ledger) => {
                    sellout::sell_rest_holds(&pool, ledger, next_user, tally).await
                }
            }
        }))?;
        eprintln!(
            "sale {} on {}: the rest sold, {}",
            record.sale(),
            epoch.launcher.data_dir.display(),
            record.progress()
        );
        server.kill9()?;
        let server = self.start(&epoch.launcher)?;
        self.check(true, &server, &mut epoch.records)?;
        epoch.server = Some(server);
        Ok(())
    }

    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.check_deadline()?;
        self.rt.block_on(bounded(self.deadline, future))
    }

    fn check_deadline(&self) -> anyhow::Result<()> {
        if Instant::now() > self.deadline {
            bail!(
                "the run took longer than its deadline of {:?}",
                self.settings.deadline
            );
        }
        Ok(())
    }
}

/// `future`, failing if it is still running at `deadline`.
async fn bounded<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout_at(deadline.into(), future)
        .await
        .context("the run's deadline passed")?
}

/// A pool for checking a freshly started server, patient with a server
/// that is still warming up.
async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Pool> {
    let config = ClientConfig::new(addr.to_string())
        .request_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .reconnect(ReconnectPolicy::new().attempts(10));
    Pool::connect(config, 8)
        .await
        .with_context(|| format!("connecting to the restarted server at {addr}"))
}
