//! The trial loop: a burst, `kill -9` in its middle, sometimes a torn tail
//! and kills while the log is recovered, then a clean restart checked
//! against what the clients were told.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flashsale_client::{ClientConfig, Pool, ReconnectPolicy};
use rand::Rng as _;

use super::burst::{self, Behaviour};
use super::ledger::{Book, Tally};
use super::process::{KilledAt, Launcher, Running};
use super::rng::{self, Draws, Rng};
use super::sellout;

/// Shortest and longest wait between the burst's start and the kill.
const KILL_AFTER: (Duration, Duration) = (Duration::from_micros(300), Duration::from_millis(40));
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
/// One user in this many sends two reservations at once; as many reserve
/// again after their answer.
const DOUBLE_ONE_IN: u64 = 10;
/// Returning users (who reserved in an earlier trial): one per this many
/// fresh ones.
const RETURNING_ONE_PER: u64 = 20;

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
#[derive(Debug)]
pub struct Report {
    /// Trials completed.
    pub trials: u64,
    /// Checks and violations.
    pub tally: Tally,
}

/// One data directory and everything known about it.
struct Epoch {
    launcher: Launcher,
    /// Every sale on the directory; the last one is being sold.
    books: Vec<Book>,
    /// The server, once checked and ready for the next burst.
    server: Option<Running>,
}

struct Torture<'a> {
    settings: &'a Settings,
    rt: tokio::runtime::Runtime,
    tally: Tally,
    next_user: u64,
    epochs: u64,
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
        let capacity = self.settings.capacity;
        Ok(Epoch {
            launcher: Launcher {
                bin: self.settings.server.clone(),
                data_dir,
                log: self.settings.root.join("server.log"),
                sales: vec![format!("s:{capacity}")],
            },
            books: vec![Book::new("s".into(), capacity)],
            server: None,
        })
    }

    fn trial(&mut self, trial: u64, rng: &mut Rng, epoch: &mut Epoch) -> anyhow::Result<()> {
        let server = match epoch.server.take() {
            Some(server) => server,
            None => self.start(&epoch.launcher)?,
        };
        let book = epoch.books.last_mut().context("an epoch has a sale")?;
        let users = self.plan_users(rng, book);
        let kill_after = rng.log_uniform(KILL_AFTER.0, KILL_AFTER.1);
        let burst = self.block_on(burst::run(server, &book.sale, users, kill_after))?;
        let acks = burst.acks.len();
        for (user, ack) in burst.acks {
            book.told(user, ack, &mut self.tally);
        }
        let mut story = format!(
            "trial {trial}: sale {}, killed {:.2?} into the burst ({acks} tickets told, {} no ticket, {} cut)",
            book.sale, burst.killed_after, burst.other_answers, burst.cut
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
            &mut epoch.books,
        )?;
        let book = epoch.books.last().context("an epoch has a sale")?;
        eprintln!("{story}; sold {}/{}", book.sold, book.capacity);

        if book.sold_out() && !self.tally.failed() {
            // The next burst needs stock: add a sale, which takes a restart.
            let sale = format!("s{}", epoch.books.len() + 1);
            epoch
                .launcher
                .sales
                .push(format!("{sale}:{}", self.settings.capacity));
            epoch.books.push(Book::new(sale, self.settings.capacity));
            server.kill9()?;
        } else {
            epoch.server = Some(server);
        }
        Ok(())
    }

    /// Fresh users, each with a behaviour, plus a few who reserved on this
    /// sale before (they must get their old ticket back, if they hold one),
    /// in a shuffled order.
    fn plan_users(&mut self, rng: &mut Rng, book: &mut Book) -> Vec<(u64, Behaviour)> {
        let mut users = Vec::new();
        for _ in 0..self.settings.users {
            let user = self.next_user;
            self.next_user += 1;
            let behaviour = match rng.random_range(0..DOUBLE_ONE_IN) {
                0 => Behaviour::Twice,
                1 => Behaviour::Again,
                _ => Behaviour::Once,
            };
            book.tried_by(user, true);
            users.push((user, behaviour));
        }
        let returning = (self.settings.users / RETURNING_ONE_PER).min(book.tried().len() as u64);
        for _ in 0..returning {
            let tried = book.tried();
            let user = tried[rng.random_range(0..tried.len())];
            book.tried_by(user, false);
            users.push((user, Behaviour::Once));
        }
        for i in (1..users.len()).rev() {
            users.swap(i, rng.random_range(0..=i));
        }
        users
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
    fn check(&mut self, all: bool, server: &Running, books: &mut [Book]) -> anyhow::Result<()> {
        let addr = server.addr();
        let tally = &mut self.tally;
        let last = books.len().saturating_sub(1);
        let deadline = self.deadline;
        self.rt.block_on(bounded(deadline, async {
            let pool = connect(addr).await?;
            for (i, book) in books.iter_mut().enumerate() {
                if all || i == last {
                    book.check(&pool, tally).await?;
                }
            }
            anyhow::Ok(())
        }))
    }

    /// Ends a data directory: sells the rest of the current sale, kills the
    /// server once more, and checks every sale on it after a restart.
    fn finish(&mut self, epoch: &mut Epoch) -> anyhow::Result<()> {
        let server = match epoch.server.take() {
            Some(server) => server,
            None => self.start(&epoch.launcher)?,
        };
        let book = epoch.books.last_mut().context("an epoch has a sale")?;
        let first = self.next_user;
        self.next_user += u64::from(self.settings.capacity) + sellout::SLACK;
        let (addr, deadline, tally) = (server.addr(), self.deadline, &mut self.tally);
        self.rt.block_on(bounded(deadline, async {
            let pool = connect(addr).await?;
            sellout::sell_rest(&pool, book, first, tally).await
        }))?;
        eprintln!(
            "data directory {}: the rest of sale {} sold, {}/{}",
            epoch.launcher.data_dir.display(),
            book.sale,
            book.sold,
            book.capacity
        );
        server.kill9()?;
        let server = self.start(&epoch.launcher)?;
        self.check(true, &server, &mut epoch.books)?;
        server.stop()
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
