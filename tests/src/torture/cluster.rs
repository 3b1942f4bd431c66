//! Cluster trials (`flashsale-torture --cluster`): three nodes, and in each
//! trial a burst on the leader with one node killed by `kill -9` in its
//! middle: mostly the leader, sometimes a follower, sometimes a node that
//! was started on an empty data directory and is still catching up.
//!
//! After each trial, once the surviving nodes agree on a leader, the
//! clients' record is checked on it exactly as the single-node trials check
//! a restarted server ([`Book::check`]): every `Won` and `AlreadyOwned` a
//! client was told is held by the same user with the same ticket, no ticket
//! has two holders, and `sold` is exactly the number of holders. The killed
//! node is started again before the next trial (on an empty directory, one
//! trial in [`WIPE_ONE_IN`]), so it rejoins from the log or from a snapshot.
//! The run ends by selling the rest of the sale on the leader: exactly the
//! tickets left, each once.
//!
//! The burst's clients are given every node's address and follow
//! `NOT_LEADER` themselves, as a shop's would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale_client::{ClientConfig, Pool, ReserveOutcome};
use flashsale_tests::cluster::{loopback_cluster, node_args, serving};
use flashsale_tests::ServerProcess;
use tokio::sync::watch;

use super::ledger::{Ack, Book};
use super::record::Record;
use super::rng::{self, Draws};
use super::run::{Report, Settings};
use super::script::{play, Ctx};
use super::sellout;
use super::tally::Tally;

/// The nodes of the cluster.
const NODES: u64 = 3;
/// The cluster key the nodes present to each other (and clients to them).
const KEY: &str = "flashsale-torture-cluster-key";
/// The sale every trial sells.
const SALE: &str = "drop";
/// Connections the burst's users share.
const CONNECTIONS: usize = 8;
/// How long one request may wait: longer than an election.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the surviving nodes may take to agree on a leader.
const ELECTION_BOUND: Duration = Duration::from_secs(30);
/// How long the burst's users may take to finish after the kill.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One trial in this many starts the node killed in the previous trial on
/// an empty data directory (and may kill it again while it catches up).
const WIPE_ONE_IN: u32 = 4;
/// One trial in this many kills a follower rather than the leader.
const FOLLOWER_ONE_IN: u32 = 5;
/// The users that time each failover, one per trial, far from the bursts'.
const PROBE_USERS: u64 = 1 << 40;

/// What a cluster run found, besides the single-node [`Report`].
#[derive(Debug, Default)]
pub struct ClusterReport {
    /// The trials and the record's checks.
    pub report: Report,
    /// Kills of the leader, of a follower, and of a node catching up.
    pub kills: (u64, u64, u64),
    /// For each leader kill before the sale sold out, how long until a node
    /// acknowledged a win.
    pub failovers: Vec<Duration>,
}

/// Which node a trial kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Leader,
    Follower,
    CatchingUp,
}

/// The three nodes, their directories and their processes.
struct Nodes {
    spec: String,
    dirs: BTreeMap<u64, PathBuf>,
    running: BTreeMap<u64, ServerProcess>,
    capacity: u32,
    server: PathBuf,
}

impl Nodes {
    fn new(settings: &Settings) -> anyhow::Result<Nodes> {
        let (root, capacity) = (&settings.root, settings.capacity);
        let spec = loopback_cluster(NODES)?;
        Ok(Nodes {
            spec,
            dirs: (1..=NODES)
                .map(|id| (id, root.join(format!("node{id}"))))
                .collect(),
            running: BTreeMap::new(),
            capacity,
            server: settings.server.clone(),
        })
    }

    fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let sale = format!("{SALE}:{}", self.capacity);
        let args = node_args(id, &self.spec, KEY, &sale);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = ServerProcess::start_program(&self.server, &self.dirs[&id], &args)
            .with_context(|| format!("starting node {id}"))?;
        self.running.insert(id, process);
        Ok(())
    }

    /// Empties node `id`'s data directory (it is not running).
    fn wipe(&self, id: u64) -> anyhow::Result<()> {
        let dir = &self.dirs[&id];
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("wiping {}", dir.display()))?;
        }
        Ok(())
    }

    fn config(&self, first: u64) -> ClientConfig {
        let addrs: Vec<String> = self
            .running
            .values()
            .map(|p| p.addr().to_string())
            .collect();
        let first = self.running[&first].addr().to_string();
        ClientConfig::new(first)
            .nodes(addrs)
            .api_key(KEY)
            .request_timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
    }

    /// The one running node that serves the sale, once there is one and
    /// every other running node says it does not lead.
    async fn leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + ELECTION_BOUND;
        let addrs: Vec<(u64, std::net::SocketAddr)> =
            self.running.iter().map(|(id, p)| (*id, p.addr())).collect();
        loop {
            let serving = serving(&addrs, KEY, SALE).await;
            if let [leader] = serving[..] {
                return Ok(leader);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no single leader within {ELECTION_BOUND:?} (serving: {serving:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stop_all(&mut self) {
        for (_, process) in std::mem::take(&mut self.running) {
            let _ = process.stop();
        }
    }
}

/// Runs `settings.trials` cluster trials, then sells the rest of the sale.
///
/// # Errors
///
/// The harness itself failed (a node that does not start, no leader within
/// the bound, the deadline). Broken promises are in the report's tally.
pub fn run(settings: &Settings) -> anyhow::Result<ClusterReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut nodes = Nodes::new(settings)?;
    let result = rt.block_on(trials(settings, &mut nodes));
    nodes.stop_all();
    result
}

async fn trials(settings: &Settings, nodes: &mut Nodes) -> anyhow::Result<ClusterReport> {
    let deadline = Instant::now() + settings.deadline;
    for id in 1..=NODES {
        nodes.start(id)?;
    }
    let mut report = ClusterReport::default();
    let mut tally = Tally::default();
    let mut record = Record::Instant(Book::new(SALE.to_owned(), settings.capacity));
    let mut next_user = 1;
    let mut down: Option<u64> = None;
    for trial in 0..settings.trials {
        anyhow::ensure!(Instant::now() < deadline, "the run's deadline passed");
        let mut rng = rng::derive(settings.seed, trial);
        let leader = nodes.leader().await?;
        // The node killed last time comes back, sometimes empty: then,
        // instead of a follower, it may be the one killed, while it is
        // still catching up from the leader's snapshot or log.
        let mut victim = if rng.one_in(FOLLOWER_ONE_IN) {
            Victim::Follower
        } else {
            Victim::Leader
        };
        let mut wiped = None;
        if let Some(id) = down.take() {
            if rng.one_in(WIPE_ONE_IN) {
                nodes.wipe(id)?;
                wiped = Some(id);
            }
            nodes.start(id)?;
        }
        let leader = if nodes.running.contains_key(&leader) {
            leader
        } else {
            nodes.leader().await?
        };
        let target = match (victim, wiped) {
            (Victim::Follower, Some(id)) if id != leader => {
                victim = Victim::CatchingUp;
                id
            }
            (Victim::Follower, _) => *nodes
                .running
                .keys()
                .find(|id| **id != leader)
                .context("a follower")?,
            _ => {
                victim = Victim::Leader;
                leader
            }
        };
        let users = record.plan(&mut rng, &mut next_user, settings.users);
        let kill_after = rng.log_uniform(Duration::from_millis(1), Duration::from_millis(150));
        let pool = Pool::connect(nodes.config(leader), CONNECTIONS)
            .await
            .context("connecting the burst's pool")?;
        let process = nodes.running.remove(&target).context("the victim runs")?;
        let probe_user = PROBE_USERS + trial;
        if let Record::Instant(book) = &mut record {
            book.tried_by(probe_user, true);
        }
        let probed = burst(
            &pool,
            users,
            process,
            kill_after,
            probe_user,
            &mut record,
            &mut tally,
        )
        .await?;
        down = Some(target);
        let found = nodes.leader().await?;
        eprintln!(
            "trial {trial}: leader {leader}, killed node {target} ({victim:?}) {kill_after:.1?} into the burst; \
             first win after it {probed:.1?}; node {found} leads"
        );
        match victim {
            Victim::Leader => {
                report.kills.0 += 1;
                // Not timed once the sale is sold out: nothing left to win.
                report.failovers.extend(probed);
            }
            Victim::Follower => report.kills.1 += 1,
            Victim::CatchingUp => report.kills.2 += 1,
        }
        let checker = Pool::connect(nodes.config(found), 2).await?;
        if let Record::Instant(book) = &mut record {
            book.check(&checker, &mut tally).await?;
        }
        report.report.trials += 1;
        if tally.failed() {
            break;
        }
    }
    if let Some(id) = down.take() {
        nodes.start(id)?;
    }
    let leader = nodes.leader().await?;
    let pool = Pool::connect(nodes.config(leader), CONNECTIONS).await?;
    if let Record::Instant(book) = &mut record {
        sellout::sell_rest(&pool, book, next_user, &mut tally).await?;
        book.check(&pool, &mut tally).await?;
    }
    report.report.tally = tally;
    Ok(report)
}

/// Plays `users` on `pool` and kills `victim` `kill_after` in; records what
/// every user was told. From the kill on, `probe_user` reserves on `pool`
/// every few milliseconds until it wins: how long the sale went without
/// acknowledging a win, which this returns.
async fn burst(
    pool: &Pool,
    users: Vec<(u64, super::script::Script)>,
    victim: ServerProcess,
    kill_after: Duration,
    probe_user: u64,
    record: &mut Record,
    tally: &mut Tally,
) -> anyhow::Result<Option<Duration>> {
    // The users never hear of the kill: they go on to the new leader, as a
    // shop's clients would.
    let (tell, killed) = watch::channel(None::<Instant>);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(kill_after);
        let at = Instant::now();
        let result = victim.kill9().map(|()| at);
        let _ = tell.send(Some(at));
        result
    });
    let (_users_told, users_killed) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (user, script) in users {
        let ctx = Ctx {
            pool: pool.clone(),
            sale: SALE.to_owned(),
            killed: users_killed.clone(),
        };
        tasks.spawn(async move { (user, play(ctx, user, script).await) });
    }
    let probe = probe(pool.clone(), probe_user, killed);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT + kill_after, async {
        let mut told = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (user, waves) = joined.context("a user task panicked")?;
            told.push((user, waves?));
        }
        anyhow::Ok(told)
    });
    let (drained, probed) = tokio::join!(drained, probe);
    tasks.abort_all();
    tokio::task::spawn_blocking(move || killer.join())
        .await
        .context("joining the killer")?
        .map_err(|_| anyhow::anyhow!("the killer thread panicked"))?
        .context("kill -9 during the burst")?;
    let told = drained.context("the burst's users did not finish")??;
    if let Record::Instant(book) = record {
        for (user, waves) in &told {
            book.told_all(*user, waves, tally);
        }
        if let Some((ack, _)) = probed {
            book.told(probe_user, ack, tally);
        }
    }
    Ok(probed.map(|(_, after)| after))
}

/// Waits for the kill, then reserves for `user` every few milliseconds
/// until a node acknowledges it; its answer and how long after the kill.
/// `None` if nothing acknowledged it within [`ELECTION_BOUND`].
async fn probe(
    pool: Pool,
    user: u64,
    mut killed: watch::Receiver<Option<Instant>>,
) -> Option<(Ack, Duration)> {
    let at = *killed.wait_for(Option::is_some).await.ok()?.as_ref()?;
    while at.elapsed() < ELECTION_BOUND {
        match pool.reserve(SALE, user).await {
            Ok(ReserveOutcome::Won { ticket }) => return Some((Ack::Won(ticket), at.elapsed())),
            Ok(ReserveOutcome::AlreadyOwned { ticket }) => {
                return Some((Ack::AlreadyOwned(ticket), at.elapsed()))
            }
            // Sold out: nothing more to win, and nothing to time.
            Ok(ReserveOutcome::SoldOut) => return None,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    None
}
