//! `flashsale-loadgen`: simulates the users of a flash sale hitting "buy"
//! together, reports what happened, and exits non-zero if the sale's
//! invariants were broken.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use flashsale_loadgen::config::{Arrival, Config, Connections, DrawRun, Payment, Target};
use flashsale_loadgen::crowd::plan::parse_source_addrs;
use flashsale_loadgen::crowd::Crowd;
use flashsale_loadgen::worker::{worker_main, WORKER_ENV};
use indicatif::{ProgressBar, ProgressStyle};

// The load generator shares the cores with the server it measures: the same
// allocator as the server's, so neither pays for the system one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rehearses a flash sale: many users buying at once, then a check of what
/// every one of them was told.
#[derive(Debug, Parser)]
#[command(name = "flashsale-loadgen", version, about)]
struct Cli {
    /// flashsale server to load (`host:port`); or the nodes of a cluster,
    /// comma-separated: the run goes to the one that leads.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,

    /// Load another target instead: `http://host:port` (the HTTP front,
    /// with signed-in users: needs the JWT secret), or `redis://host:port`
    /// (Redis with the reservation Lua script, for comparison).
    #[arg(long)]
    target: Option<String>,

    /// With an HTTP target: the file holding the HS256 secret the front
    /// verifies tokens with (or set FLASHSALE_JWT_SECRET).
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,

    /// With an HTTP target: the `iss` the front requires of tokens
    /// (its --jwt-issuer).
    #[arg(long, env = "FLASHSALE_JWT_ISSUER")]
    jwt_issuer: Option<String>,

    /// With an HTTP target: the `aud` the front requires of tokens (its
    /// --jwt-audience).
    #[arg(long, env = "FLASHSALE_JWT_AUDIENCE")]
    jwt_audience: Option<String>,

    /// API key for the flashsale handshake. Prefer --api-key-file: a flag's
    /// value is in the process list.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// File holding the API key for the flashsale handshake.
    #[arg(long, env = "FLASHSALE_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,

    /// The sale to buy from.
    #[arg(long, default_value = "default")]
    sale: String,

    /// Distinct users.
    #[arg(long, default_value_t = 20_000)]
    users: u64,

    /// First user id: users are BASE..BASE+USERS, so runs can be repeated
    /// against a fresh range.
    #[arg(long, default_value_t = 1)]
    user_base: u64,

    /// Arrival model: `burst` (all at t0), `rate:R` (R new users per second,
    /// latency from each intended start), or `ramp:DURATION` [default:
    /// burst; with --draw, spread evenly over the draw window].
    #[arg(long)]
    arrival: Option<Arrival>,

    /// Users multiplexed over this many pipelined connections (in total).
    #[arg(long, default_value_t = 16)]
    connections: usize,

    /// Give each user its own connection (connect, handshake, reserve,
    /// close): the connection storm.
    #[arg(long)]
    connect_per_user: bool,

    /// With --connect-per-user: connections open at once, per process.
    /// With --hold-streams: streams being opened at once, and buy
    /// connections open at once, per process.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,

    /// Worker processes, each with its own slice of users (one process may
    /// hold only so many open files).
    #[arg(long, default_value_t = 1)]
    processes: usize,

    /// Share of users that send a second reserve after their first answer
    /// (a third of them send both at once).
    #[arg(long, default_value_t = 0.0)]
    retry_fraction: f64,

    /// A request unanswered this long is a timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Keep the load going this long, cycling through the users again
    /// (e.g. to hammer a sold-out sale). Default: each user once.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    /// Hard bound on the run after t0: whatever is unanswered then is a
    /// timeout.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,

    /// Requests in flight per pipelined connection (capped by the server's
    /// limit; 1024 is also the server's default).
    #[arg(long, default_value_t = 1024)]
    window: usize,

    /// Time for the workers to connect before t0.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    start_in: Duration,

    /// With a Redis target: reset the sale to this many tickets (and no
    /// buyers) before the run.
    #[arg(long)]
    reset_capacity: Option<u32>,

    /// In a sale with holds: the share of users who pay for their hold (the
    /// shop confirms it over the native protocol); the others cancel it or
    /// let it expire (--cancel-fraction). Users keep trying while tickets
    /// come back, and the run goes on until every ticket is confirmed (or
    /// --duration, or --deadline).
    #[arg(long)]
    pay_fraction: Option<f64>,

    /// With --pay-fraction: how long after a hold is granted it is paid
    /// for or cancelled.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "pay_fraction")]
    pay_after: Duration,

    /// With --pay-fraction: the share of users who do not pay that cancel
    /// their hold; the rest abandon it.
    #[arg(long, default_value_t = 0.5, requires = "pay_fraction")]
    cancel_fraction: f64,

    /// Every user holds the sale's event stream open from before t0, buys
    /// at t0 over a second connection, and waits for its stream to say
    /// sold out (HTTP targets; see README, "A crowd of open pages").
    #[arg(long)]
    hold_streams: bool,

    /// With --hold-streams: the fronts to deal users out over, in turn
    /// (comma-separated `http://HOST:PORT`), instead of --target.
    #[arg(
        long,
        value_delimiter = ',',
        requires = "hold_streams",
        conflicts_with = "target"
    )]
    targets: Vec<String>,

    /// With --hold-streams or --connect-per-user: bind the client side of
    /// connections to these addresses in turn, so that ephemeral ports last
    /// and choosing one stays cheap, as for users on many machines: a list
    /// and/or IPv4 ranges, e.g. `127.0.0.1-127.0.0.16` [default: the kernel
    /// chooses].
    #[arg(long)]
    source_addrs: Option<String>,

    /// With --hold-streams: keep the streams open this long after every one
    /// was told (for reading the processes' memory).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, requires = "hold_streams")]
    hold_after: Duration,

    /// With --hold-streams: how soon after the last ticket every stream
    /// must be told the sale is sold out; later is a violation.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "hold_streams")]
    told_within: Duration,

    /// Enter the sale's draw window instead of buying: every user enters
    /// (spread over the window, or by --arrival from its opening), and
    /// after the close the published draw is audited against the
    /// commitment read before the window, and every user's own result
    /// checked against it (native or HTTP target; see README, "Rehearsing
    /// a draw").
    #[arg(long)]
    draw: bool,

    /// Write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Write the rehearsal as one self-contained HTML page to this file:
    /// configuration, invariant verdicts, summary, and charts of answers per
    /// second and latency over the run, per outcome.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,

    /// Never draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<(Config, Option<u32>)> {
        let crowd = self.crowd()?;
        let draw = self.draw_run()?;
        let target = match self.target.or_else(|| self.targets.first().cloned()) {
            Some(url) if url.starts_with("redis://") => Target::Redis { url },
            Some(url) if url.starts_with("http://") => {
                let addr = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                Target::Http {
                    addr,
                    secret: jwt_secret(self.jwt_secret_file.as_deref())?,
                    issuer: self.jwt_issuer,
                    audience: self.jwt_audience,
                }
            }
            Some(other) => {
                anyhow::bail!("--target {other:?}: use http://HOST:PORT or redis://HOST:PORT")
            }
            None => Target::Native {
                addr: self.addr,
                api_key: api_key(self.api_key, self.api_key_file.as_deref())?,
            },
        };
        if self.reset_capacity.is_some() && !matches!(target, Target::Redis { .. }) {
            anyhow::bail!("--reset-capacity only applies to a Redis target: a flashsale server owns its stock");
        }
        let source_addrs = match &self.source_addrs {
            Some(text) => {
                anyhow::ensure!(
                    self.hold_streams || self.connect_per_user,
                    "--source-addrs binds the connections of --hold-streams or --connect-per-user"
                );
                anyhow::ensure!(
                    !matches!(target, Target::Redis { .. }),
                    "--source-addrs needs a flashsale target (--addr, or --target http://HOST:PORT)"
                );
                parse_source_addrs(text).map_err(|e| anyhow::anyhow!("--source-addrs: {e}"))?
            }
            None => Vec::new(),
        };
        let payment = match self.pay_fraction {
            Some(pay_fraction) => {
                for (flag, share) in [
                    ("--pay-fraction", pay_fraction),
                    ("--cancel-fraction", self.cancel_fraction),
                ] {
                    anyhow::ensure!((0.0..=1.0).contains(&share), "{flag} must be within 0..=1");
                }
                anyhow::ensure!(
                    matches!(target, Target::Native { .. }),
                    "--pay-fraction needs a flashsale native target (--addr): confirming a hold is a backend call"
                );
                Some(Payment {
                    pay_fraction,
                    cancel_fraction: self.cancel_fraction,
                    after: self.pay_after,
                })
            }
            None => None,
        };
        let connections = if self.connect_per_user || crowd.is_some() {
            Connections::PerUser {
                concurrency: self.concurrency.max(1),
            }
        } else {
            Connections::Pipelined(self.connections.max(1))
        };
        let config = Config {
            target,
            sale: self.sale,
            users: self.users,
            user_base: self.user_base,
            arrival: self.arrival.unwrap_or(Arrival::Burst),
            connections,
            processes: self.processes,
            retry_fraction: self.retry_fraction,
            timeout: self.timeout,
            duration: self.duration,
            deadline: self.deadline,
            window: self.window.max(1),
            start_in: self.start_in,
            payment,
            json: self.json,
            source_addrs,
            crowd,
            draw,
            progress: !self.quiet && std::io::stderr().is_terminal(),
        };
        Ok((config, self.reset_capacity))
    }
}

impl Cli {
    /// The draw run of `--draw`, if asked for.
    fn draw_run(&self) -> anyhow::Result<Option<DrawRun>> {
        if !self.draw {
            return Ok(None);
        }
        anyhow::ensure!(
            !self
                .target
                .as_deref()
                .is_some_and(|t| t.starts_with("redis://")),
            "--draw needs a flashsale target (--addr, or --target http://HOST:PORT)"
        );
        anyhow::ensure!(
            !self.connect_per_user
                && !self.hold_streams
                && self.pay_fraction.is_none()
                && self.duration.is_none(),
            "--draw enters each user once over pipelined connections: no --connect-per-user, --hold-streams, --pay-fraction or --duration"
        );
        Ok(Some(DrawRun {
            spread: self.arrival.is_none(),
        }))
    }

    /// The crowd of `--hold-streams`, if asked for.
    fn crowd(&self) -> anyhow::Result<Option<Crowd>> {
        if !self.hold_streams {
            return Ok(None);
        }
        let urls = match &self.target {
            Some(url) => std::slice::from_ref(url),
            None => &self.targets[..],
        };
        anyhow::ensure!(
            !urls.is_empty(),
            "--hold-streams needs --target or --targets (http://HOST:PORT)"
        );
        let targets = urls
            .iter()
            .map(|url| {
                url.strip_prefix("http://")
                    .map(|addr| addr.trim_end_matches('/').to_owned())
                    .filter(|addr| !addr.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--hold-streams needs HTTP fronts: {url:?} is not http://HOST:PORT"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            self.retry_fraction == 0.0
                && self.pay_fraction.is_none()
                && self.duration.is_none()
                && self.arrival.unwrap_or(Arrival::Burst) == Arrival::Burst,
            "--hold-streams is one burst, each user once: no --retry-fraction, --pay-fraction, --duration or --arrival"
        );
        Ok(Some(Crowd {
            targets,
            hold_after: self.hold_after,
            told_within: self.told_within,
        }))
    }
}

/// The native API key, from its flag (or environment variable) or its
/// file; never empty.
fn api_key(key: Option<String>, file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let key = match (key, file) {
        (Some(key), _) => Some(key),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --api-key-file {}: {e}", path.display())
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, None) => None,
    };
    anyhow::ensure!(key.as_deref() != Some(""), "the API key is empty");
    Ok(key)
}

/// The HTTP front's token secret, from a file or the environment.
fn jwt_secret(file: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    let secret = match file {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        None => std::env::var("FLASHSALE_JWT_SECRET")
            .map(String::into_bytes)
            .map_err(|_| {
                anyhow::anyhow!("an http:// target needs --jwt-secret-file or FLASHSALE_JWT_SECRET")
            })?,
    };
    let trimmed = secret.trim_ascii_end().to_vec();
    anyhow::ensure!(!trimmed.is_empty(), "the JWT secret is empty");
    Ok(trimmed)
}

fn main() -> ExitCode {
    if let Ok(assignment) = std::env::var(WORKER_ENV) {
        return match worker_main(&assignment) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flashsale-loadgen worker: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("flashsale-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs and reports; `Ok(false)` when an invariant broke.
fn run(cli: Cli) -> anyhow::Result<bool> {
    let page = cli.report.clone();
    let (config, reset) = cli.into_config()?;
    if let Some(capacity) = reset {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(flashsale_loadgen::redis::reset(
            &config.target,
            &config.sale,
            capacity,
            Duration::from_secs(10),
        ))?;
    }
    let bar = config.progress.then(|| {
        let bar = ProgressBar::new(config.users);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} answers ({per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let json = config.json.clone();
    let report = flashsale_loadgen::run(config, |answered| {
        if let Some(bar) = &bar {
            if answered > bar.length().unwrap_or(0) {
                bar.set_length(answered);
            }
            bar.set_position(answered);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print!("{}", report.text());
    if let Some(path) = json {
        let file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), &report.redacted())?;
    }
    if let Some(path) = page {
        std::fs::write(&path, flashsale_loadgen::page::html(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_a_config() {
        let (c, reset) = Cli::parse_from([
            "flashsale-loadgen",
            "--addr",
            "h:1",
            "--users",
            "5",
            "--user-base",
            "100",
            "--arrival",
            "rate:50",
            "--connect-per-user",
            "--concurrency",
            "7",
            "--processes",
            "3",
            "--retry-fraction",
            "0.5",
            "--timeout",
            "2s",
            "--duration",
            "10s",
            "--json",
            "/tmp/r.json",
            "--quiet",
        ])
        .into_config()
        .unwrap();
        let cli = Cli::parse_from(["flashsale-loadgen", "--report", "/tmp/run.html"]);
        assert_eq!(cli.report, Some(PathBuf::from("/tmp/run.html")));
        assert_eq!(
            c.target,
            Target::Native {
                addr: "h:1".into(),
                api_key: None
            }
        );
        assert_eq!((c.users, c.user_base, c.processes), (5, 100, 3));
        assert_eq!(c.arrival, Arrival::Rate(50.0));
        assert_eq!(c.connections, Connections::PerUser { concurrency: 7 });
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert!(!c.progress);
        assert_eq!(reset, None);

        let (c, reset) = Cli::parse_from([
            "flashsale-loadgen",
            "--target",
            "redis://127.0.0.1:6379",
            "--reset-capacity",
            "200",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            c.target,
            Target::Redis {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(c.connections, Connections::Pipelined(16));
        assert_eq!(reset, Some(200));
    }

    /// The configuration `args` make, or the error they are refused with.
    fn config_of(args: &[&str]) -> Result<Config, String> {
        Cli::try_parse_from([&["flashsale-loadgen"][..], args].concat())
            .map_err(|e| e.to_string())
            .and_then(|cli| cli.into_config().map_err(|e| e.to_string()))
            .map(|(c, _)| c)
    }

    #[test]
    fn a_storm_may_come_from_several_addresses() {
        let config = config_of;
        let c = config(&[
            "--connect-per-user",
            "--source-addrs",
            "127.0.0.1-127.0.0.4",
        ])
        .unwrap();
        assert_eq!(
            c.source_addrs,
            (1..=4)
                .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
                .collect::<Vec<_>>()
        );
        assert!(config(&["--connect-per-user"])
            .unwrap()
            .source_addrs
            .is_empty());
        // Only the connections of a storm or a crowd are bound, and Redis's
        // client does not bind at all.
        let pipelined = config(&["--source-addrs", "127.0.0.1"]).unwrap_err();
        assert!(pipelined.contains("--connect-per-user"), "{pipelined}");
        let redis = config(&[
            "--target",
            "redis://h:1",
            "--connect-per-user",
            "--source-addrs",
            "127.0.0.1",
        ])
        .unwrap_err();
        assert!(redis.contains("flashsale target"), "{redis}");
    }

    #[test]
    fn http_targets_need_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let (c, _) = Cli::parse_from([
            "flashsale-loadgen",
            "--target",
            "http://127.0.0.1:8080/",
            "--jwt-secret-file",
            file.to_str().unwrap(),
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            c.target,
            Target::Http {
                addr: "127.0.0.1:8080".into(),
                secret: b"s3cret".to_vec(),
                issuer: None,
                audience: None,
            }
        );
        let (c, _) = Cli::parse_from([
            "flashsale-loadgen",
            "--target",
            "http://127.0.0.1:8080",
            "--jwt-secret-file",
            file.to_str().unwrap(),
            "--jwt-issuer",
            "idp",
            "--jwt-audience",
            "shop",
        ])
        .into_config()
        .unwrap();
        let Target::Http {
            issuer, audience, ..
        } = c.target
        else {
            panic!("an HTTP target");
        };
        assert_eq!(
            (issuer.as_deref(), audience.as_deref()),
            (Some("idp"), Some("shop"))
        );
        let missing = dir.path().join("missing");
        assert!(Cli::parse_from([
            "flashsale-loadgen",
            "--target",
            "http://h:1",
            "--jwt-secret-file",
            missing.to_str().unwrap()
        ])
        .into_config()
        .is_err());
    }

    #[test]
    fn payments_become_a_config() {
        let (c, _) = Cli::parse_from([
            "flashsale-loadgen",
            "--pay-fraction",
            "0.25",
            "--pay-after",
            "300ms",
            "--cancel-fraction",
            "1",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            c.payment,
            Some(Payment {
                pay_fraction: 0.25,
                cancel_fraction: 1.0,
                after: Duration::from_millis(300),
            })
        );
        let (c, _) = Cli::parse_from(["flashsale-loadgen"])
            .into_config()
            .unwrap();
        assert_eq!(c.payment, None);
        for bad in [
            &["--pay-fraction", "1.5"][..],
            &["--pay-fraction", "0.5", "--cancel-fraction=-1"],
            &[
                "--pay-fraction",
                "0.5",
                "--target",
                "redis://127.0.0.1:6379",
            ],
        ] {
            let cli = Cli::parse_from([&["flashsale-loadgen"][..], bad].concat());
            assert!(cli.into_config().is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["flashsale-loadgen", "--pay-after", "1s"]).is_err());
    }

    #[test]
    fn the_api_key_comes_from_a_file_and_is_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "the key\n").unwrap();
        let path = file.to_str().unwrap();
        let (c, _) = Cli::parse_from(["flashsale-loadgen", "--api-key-file", path])
            .into_config()
            .unwrap();
        let Target::Native { api_key, .. } = c.target else {
            panic!("a native target");
        };
        assert_eq!(api_key.as_deref(), Some("the key"));
        assert!(Cli::try_parse_from([
            "flashsale-loadgen",
            "--api-key-file",
            path,
            "--api-key",
            "k"
        ])
        .is_err());
        assert!(Cli::parse_from(["flashsale-loadgen", "--api-key", ""])
            .into_config()
            .is_err());
    }

    #[test]
    fn a_crowd_becomes_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret").unwrap();
        let secret = ["--jwt-secret-file", file.to_str().unwrap()];
        let crowd = |args: &[&str]| config_of(&[&secret[..], args].concat());
        let c = crowd(&[
            "--hold-streams",
            "--targets",
            "http://127.0.0.1:8081,http://127.0.0.1:8082/",
            "--source-addrs",
            "127.0.0.1-127.0.0.3",
            "--hold-after",
            "3s",
            "--told-within",
            "30s",
            "--concurrency",
            "64",
        ])
        .unwrap();
        let crowd_of = c.crowd.unwrap();
        assert_eq!(crowd_of.targets, vec!["127.0.0.1:8081", "127.0.0.1:8082"]);
        assert_eq!(c.source_addrs.len(), 3);
        assert_eq!(crowd_of.hold_after, Duration::from_secs(3));
        assert_eq!(crowd_of.told_within, Duration::from_secs(30));
        assert_eq!(c.connections, Connections::PerUser { concurrency: 64 });
        let Target::Http { addr, .. } = c.target else {
            panic!("an HTTP target");
        };
        assert_eq!(addr, "127.0.0.1:8081");
        let one = crowd(&["--hold-streams", "--target", "http://h:1"]).unwrap();
        assert!(one.source_addrs.is_empty());
        let one = one.crowd.unwrap();
        assert_eq!(one.targets, vec!["h:1".to_owned()]);
        assert_eq!(one.told_within, Duration::from_secs(2));
        assert_eq!(crowd(&["--target", "http://h:1"]).unwrap().crowd, None);
        for bad in [
            &["--targets", "http://h:1"][..],
            &["--target", "http://h:1", "--source-addrs", "127.0.0.1"],
            &["--hold-streams"],
            &["--hold-streams", "--targets", "redis://h:1"],
            &[
                "--hold-streams",
                "--target",
                "http://h:1",
                "--targets",
                "http://h:2",
            ],
            &[
                "--hold-streams",
                "--target",
                "http://h:1",
                "--source-addrs",
                "nowhere",
            ],
            &[
                "--hold-streams",
                "--target",
                "http://h:1",
                "--retry-fraction",
                "0.5",
            ],
            &[
                "--hold-streams",
                "--target",
                "http://h:1",
                "--arrival",
                "rate:5",
            ],
        ] {
            assert!(crowd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_draw_run_becomes_a_config() {
        let draw = |args: &[&str]| {
            Cli::try_parse_from([&["flashsale-loadgen", "--draw"][..], args].concat())
                .map_err(|e| e.to_string())
                .and_then(|cli| cli.into_config().map_err(|e| e.to_string()))
                .map(|(c, _)| c)
        };
        let c = draw(&["--users", "100000", "--connections", "8"]).unwrap();
        assert_eq!(c.draw, Some(DrawRun { spread: true }));
        assert_eq!(c.connections, Connections::Pipelined(8));
        let c = draw(&["--arrival", "rate:1000"]).unwrap();
        assert_eq!(c.draw, Some(DrawRun { spread: false }));
        assert_eq!(c.arrival, Arrival::Rate(1000.0));
        let (plain, _) = Cli::parse_from(["flashsale-loadgen"])
            .into_config()
            .unwrap();
        assert_eq!((plain.draw, plain.arrival), (None, Arrival::Burst));
        for bad in [
            &["--target", "redis://127.0.0.1:6379"][..],
            &["--connect-per-user"],
            &["--duration", "1s"],
            &["--pay-fraction", "0.5"],
        ] {
            assert!(draw(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(
            Cli::parse_from(["flashsale-loadgen", "--target", "http://x"])
                .into_config()
                .is_err()
        );
        assert!(
            Cli::parse_from(["flashsale-loadgen", "--reset-capacity", "5"])
                .into_config()
                .is_err()
        );
        assert!(Cli::try_parse_from(["flashsale-loadgen", "--arrival", "flood"]).is_err());
    }
}
