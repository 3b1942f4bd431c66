//! The command line of `flashsale-server`: every flag (each also settable by
//! environment variable), the subcommands, and their translation into the
//! library's configuration structs. Parsing only: nothing here starts
//! anything. The HTTP front's flags are [`HttpFlags`], shared with
//! `flashsale-gateway`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flashsale_http::admin::check_key;
use flashsale_http::flags::{positive_duration, read_api_key, read_secret, HttpFlags};
use flashsale_server::config::{parse_members, AdminConfig, ClusterConfig, DEFAULT_LISTEN};
use flashsale_server::sink::SinkConfig;
use flashsale_server::{SaleArg, ServerConfig};
use flashsale_wal::Durability;

/// Sells a fixed stock of tickets, one per user, to a rush of buyers.
#[derive(Debug, Parser)]
#[command(name = "flashsale-server", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address of the binary-protocol listener.
    #[arg(long, env = "FLASHSALE_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,

    /// Directory of the write-ahead log and the sale definitions.
    #[arg(long, env = "FLASHSALE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// A sale, as ID[:CAPACITY[:OPENS_AT_UNIX_MS]]; repeatable, or
    /// comma-separated. ID: 1-64 of A-Z a-z 0-9 . _ -; CAPACITY: 1 to
    /// 10000000 (200); OPENS_AT: up to the end of year 9999 (now). Default:
    /// the sales stored in the data directory, or `default:200` open now.
    #[arg(long = "sale", env = "FLASHSALE_SALES", value_delimiter = ',')]
    sales: Vec<SaleArg>,

    /// Sell the first tickets of every new sale named by --sale (or of the
    /// default sale) by a fair draw among the users who ask within this
    /// many milliseconds of opening (1 to 86400000); see docs/FAIRNESS.md.
    /// A stored sale keeps its own; naming a different window is refused.
    #[arg(long, env = "FLASHSALE_DRAW_WINDOW_MS", value_parser = clap::value_parser!(u64).range(1..=flashsale_core::MAX_DRAW_WINDOW_MS))]
    draw_window_ms: Option<u64>,

    /// Worker threads, one pinned listener each [default: one per core].
    #[arg(long, env = "FLASHSALE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// When a win is acknowledged: after fdatasync, or at once (benchmarks only).
    #[arg(long, env = "FLASHSALE_DURABILITY", value_enum, default_value_t = DurabilityArg::Fsync)]
    durability: DurabilityArg,

    /// Open connections beyond which new ones are refused with OVERLOADED
    /// (clamped, with a warning, to what the open-file limit allows).
    #[arg(long, env = "FLASHSALE_MAX_CONNECTIONS", default_value_t = 100_000)]
    max_connections: usize,

    /// Requests in progress per connection beyond which it is not read.
    #[arg(long, env = "FLASHSALE_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,

    /// Close connections idle for this long (e.g. 30s, 2m).
    #[arg(long, env = "FLASHSALE_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// Close a connection whose Hello is not in and accepted within this
    /// long (e.g. 5s), however it trickles bytes.
    #[arg(long, env = "FLASHSALE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    handshake_timeout: Duration,

    /// Largest accepted frame body, in bytes.
    #[arg(long, env = "FLASHSALE_MAX_FRAME_LEN", default_value_t = flashsale_protocol::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: usize,

    /// API key every client must present in its Hello. Prefer
    /// --api-key-file: a flag's value is in the process list.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// File holding the API key every client must present in its Hello.
    #[arg(long, env = "FLASHSALE_API_KEY_FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,

    /// Allow the binary protocol on a non-loopback address without an API
    /// key: only on a private network that nothing but the shop's own
    /// services can reach.
    #[arg(long, env = "FLASHSALE_PRIVATE_NETWORK")]
    private_network: bool,

    /// Address of the HTTP front [default: no HTTP].
    #[arg(long, env = "FLASHSALE_HTTP")]
    http: Option<SocketAddr>,

    /// Address of the operator's API (never the buyers' port) [default: none].
    /// Needs a key: --admin-key-file or FLASHSALE_ADMIN_KEY.
    #[arg(long, env = "FLASHSALE_ADMIN")]
    admin: Option<SocketAddr>,

    /// File holding the operator's bearer key, at least 32 bytes (or set
    /// FLASHSALE_ADMIN_KEY to the key itself).
    #[arg(long, env = "FLASHSALE_ADMIN_KEY_FILE")]
    admin_key_file: Option<PathBuf>,

    /// Serve /metrics on the admin listener only, not on the buyers' HTTP
    /// port [default: true with --admin]; =false serves it on both.
    #[arg(long, env = "FLASHSALE_METRICS_ADMIN_ONLY", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    metrics_admin_only: Option<bool>,

    /// Drain sold tickets into this PostgreSQL database,
    /// postgres://USER@HOST:PORT/DB [default: no database]. Keep the
    /// password out of it: --sink-password-file, or FLASHSALE_SINK.
    #[arg(long, env = "FLASHSALE_SINK", hide_env_values = true)]
    sink: Option<String>,

    #[command(flatten)]
    sink_password: SinkPassword,

    /// This node's id in --cluster.
    #[arg(long, env = "FLASHSALE_NODE_ID", requires = "cluster", value_parser = clap::value_parser!(u64).range(1..))]
    node_id: Option<u64>,

    /// Run as one node of a replicated cluster: every node's id and the
    /// address it replicates over, ID=HOST:PORT,... (the same list on every
    /// node; see docs/CLUSTER.md). Nodes present the --api-key to each other.
    #[arg(long, env = "FLASHSALE_CLUSTER", requires = "node_id")]
    cluster: Option<String>,

    /// Listen for the other nodes here instead of on this node's own
    /// --cluster entry, which then forwards here (a proxy, a NAT).
    #[arg(long, env = "FLASHSALE_CLUSTER_LISTEN", requires = "cluster")]
    cluster_listen: Option<String>,

    #[command(flatten)]
    web: HttpFlags,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the drain's tables in PostgreSQL (idempotent), then exit.
    Migrate(MigrateArgs),
    /// Print a sale's winners from the log as CSV (sale,ticket,user,sold_at,status).
    /// Safe while a server runs on the directory: reads only.
    Export(ExportArgs),
    /// Manage the sales of a running server through its admin API.
    Sales(crate::sales_cli::SalesArgs),
    /// Check a published fair draw (docs/FAIRNESS.md): the seed against its
    /// commitment, and the winners recomputed from the seed and the
    /// entrants. Exits 0 when it checks out, 1 on a mismatch (printed), 2
    /// when there is no document to check.
    Audit(crate::audit::AuditArgs),
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The database, postgres://USER@HOST:PORT/DB (the password from
    /// --sink-password-file, or the whole URL in FLASHSALE_SINK).
    #[arg(long, env = "FLASHSALE_SINK", hide_env_values = true)]
    sink: String,

    #[command(flatten)]
    sink_password: SinkPassword,
}

/// The sink database's password, from a file rather than the URL: a flag's
/// value is in the process list for every local user to read.
#[derive(Debug, Args)]
struct SinkPassword {
    /// File holding the password of the --sink database.
    #[arg(long, env = "FLASHSALE_SINK_PASSWORD_FILE")]
    sink_password_file: Option<PathBuf>,
}

impl SinkPassword {
    /// `url`'s sink settings, with the password from the file if given.
    fn sink(&self, url: String) -> anyhow::Result<SinkConfig> {
        let mut sink = SinkConfig::new(url);
        if let Some(path) = &self.sink_password_file {
            let password =
                read_secret(Some(path), None, "--sink-password-file", "")?.unwrap_or_default();
            anyhow::ensure!(
                !password.is_empty(),
                "--sink-password-file {} is empty",
                path.display()
            );
            sink.password = Some(password);
        }
        Ok(sink)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Directory of the write-ahead log.
    #[arg(long, env = "FLASHSALE_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,

    /// The sale whose winners to print.
    #[arg(long)]
    pub(crate) sale: String,
}

/// What to run.
pub(crate) enum Mode {
    Server(Box<ServerConfig>),
    Migrate(SinkConfig),
    Export(ExportArgs),
    Sales(crate::sales_cli::SalesArgs),
    Audit(crate::audit::AuditArgs),
}

/// The secrets that come from the environment rather than flags.
#[derive(Debug, Default)]
pub(crate) struct EnvSecrets {
    /// FLASHSALE_JWT_SECRET.
    pub(crate) jwt: Option<String>,
    /// FLASHSALE_ADMIN_KEY.
    pub(crate) admin_key: Option<String>,
}

impl EnvSecrets {
    pub(crate) fn read() -> EnvSecrets {
        EnvSecrets {
            jwt: std::env::var("FLASHSALE_JWT_SECRET").ok(),
            admin_key: std::env::var("FLASHSALE_ADMIN_KEY").ok(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge a win after its record is fdatasynced.
    Fsync,
    /// Acknowledge at once; a crash may lose acknowledged wins.
    None,
}

impl Cli {
    pub(crate) fn into_mode(self, env: EnvSecrets) -> anyhow::Result<Mode> {
        match self.command {
            Some(Command::Migrate(args)) => Ok(Mode::Migrate(args.sink_password.sink(args.sink)?)),
            Some(Command::Export(args)) => Ok(Mode::Export(args)),
            Some(Command::Sales(args)) => Ok(Mode::Sales(args)),
            Some(Command::Audit(args)) => Ok(Mode::Audit(args)),
            None => {
                let http = match self.http {
                    Some(listen) => Some(self.http_config(listen, env.jwt)?),
                    None => None,
                };
                let admin = self.admin_config(env.admin_key)?;
                let api_key = self.api_key()?;
                let sink = match self.sink.clone() {
                    Some(url) => Some(self.sink_password.sink(url)?),
                    None => None,
                };
                let cluster = self.cluster_config(api_key.as_deref())?;
                let mut config = self.into_config();
                config.http = http;
                config.admin = admin;
                config.api_key = api_key;
                config.sink = sink;
                config.cluster = cluster;
                Ok(Mode::Server(Box::new(config)))
            }
        }
    }

    /// The HTTP front's settings: [`HttpFlags`], and where `/metrics` is
    /// served.
    fn http_config(
        &self,
        listen: SocketAddr,
        env_secret: Option<String>,
    ) -> anyhow::Result<flashsale_http::HttpConfig> {
        let mut config = self.web.config(listen, env_secret)?;
        let admin_only = self.metrics_admin_only.unwrap_or(self.admin.is_some());
        if admin_only && self.admin.is_none() {
            anyhow::bail!("--metrics-admin-only needs --admin, or /metrics is served nowhere");
        }
        config.metrics = !admin_only;
        Ok(config)
    }

    /// The admin API's settings: refused without a key, or with one shorter
    /// than 32 bytes.
    fn admin_config(&self, env_key: Option<String>) -> anyhow::Result<Option<AdminConfig>> {
        let key = read_secret(
            self.admin_key_file.as_deref(),
            env_key,
            "--admin-key-file",
            "FLASHSALE_ADMIN_KEY",
        )?;
        match (self.admin, key) {
            (None, _) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "--admin needs the operator's key: --admin-key-file FILE or FLASHSALE_ADMIN_KEY"
            ),
            (Some(listen), Some(key)) => {
                check_key(&key)?;
                Ok(Some(AdminConfig { listen, key }))
            }
        }
    }

    /// The node's place in its cluster, if `--cluster` is given: refused
    /// with `--durability none`.
    fn cluster_config(&self, api_key: Option<&str>) -> anyhow::Result<Option<ClusterConfig>> {
        let (Some(node_id), Some(spec)) = (self.node_id, self.cluster.as_deref()) else {
            return Ok(None);
        };
        let members = parse_members(spec).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        anyhow::ensure!(
            members.contains_key(&node_id),
            "--node-id {node_id} is not one of the nodes of --cluster ({spec})"
        );
        anyhow::ensure!(
            matches!(self.durability, DurabilityArg::Fsync),
            "--durability none cannot be used with --cluster: a node acknowledges a win once a \
             majority of the nodes has it on disk"
        );
        Ok(Some(ClusterConfig {
            node_id,
            members,
            key: api_key.unwrap_or_default().as_bytes().to_vec(),
            listen: self.cluster_listen.clone(),
        }))
    }

    /// The native protocol's API key: from the flag or its file, never
    /// empty; and none is refused off loopback unless the network is
    /// declared private.
    fn api_key(&self) -> anyhow::Result<Option<String>> {
        let key = read_api_key(self.api_key.as_deref(), self.api_key_file.as_deref())?;
        if key.is_none() && !self.listen.ip().is_loopback() && !self.private_network {
            anyhow::bail!(
                "the binary protocol would listen on {} without an API key: anyone who reaches it \
                 could buy the whole stock for made-up users and read who holds which ticket. \
                 Set --api-key-file FILE (or FLASHSALE_API_KEY), or --private-network if only \
                 your own services can reach this address",
                self.listen
            );
        }
        if key.is_none() && !self.listen.ip().is_loopback() {
            tracing::warn!(listen = %self.listen, "the binary protocol listens off loopback without an API key (--private-network)");
        }
        Ok(key)
    }

    fn into_config(self) -> ServerConfig {
        let mut config = ServerConfig::new(self.data_dir)
            .listen(self.listen)
            .durability(match self.durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::None => Durability::None,
            });
        config.sales = self.sales;
        config.draw_window_ms = self.draw_window_ms;
        config.threads = self.threads.map(usize::from);
        config.max_connections = self.max_connections;
        config.max_in_flight = self.max_in_flight;
        config.idle_timeout = self.idle_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.max_frame_len = self.max_frame_len;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Cli::parse_from(["flashsale-server"]).into_config();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.sales.is_empty());
        assert_eq!(config.durability, Durability::Fsync);
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.handshake_timeout, Duration::from_secs(5));
    }

    /// The server's configuration from `args`, as `main` builds it.
    fn server<const N: usize>(args: [&str; N]) -> anyhow::Result<ServerConfig> {
        match Cli::try_parse_from(args)?.into_mode(EnvSecrets::default())? {
            Mode::Server(config) => Ok(*config),
            _ => anyhow::bail!("not the server"),
        }
    }

    #[test]
    fn the_native_key_is_never_empty_and_required_off_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let file = file.to_str().unwrap();
        let config = server(["flashsale-server", "--api-key-file", file]).unwrap();
        assert_eq!(config.api_key.as_deref(), Some("from-file"));
        assert!(server(["flashsale-server", "--api-key-file", file, "--api-key", "k"]).is_err());
        assert!(server(["flashsale-server", "--api-key", ""]).is_err());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(server([
            "flashsale-server",
            "--api-key-file",
            empty.to_str().unwrap()
        ])
        .is_err());

        let open = ["flashsale-server", "--listen", "0.0.0.0:7070"];
        let refused = server(open).unwrap_err().to_string();
        assert!(refused.contains("--private-network"), "{refused}");
        assert!(server(["flashsale-server", "--listen", "[::]:7070"]).is_err());
        assert!(server([
            "flashsale-server",
            "--listen",
            "0.0.0.0:7070",
            "--private-network"
        ])
        .is_ok());
        assert!(server([
            "flashsale-server",
            "--listen",
            "0.0.0.0:7070",
            "--api-key-file",
            file
        ])
        .is_ok());
        assert!(server(["flashsale-server", "--listen", "[::1]:7070"]).is_ok());
    }

    #[test]
    fn every_flag() {
        let config = server([
            "flashsale-server",
            "--listen",
            "0.0.0.0:1",
            "--data-dir",
            "/d",
            "--sale",
            "a:5",
            "--sale",
            "b:6:7",
            "--threads",
            "3",
            "--durability",
            "none",
            "--max-connections",
            "9",
            "--max-in-flight",
            "8",
            "--idle-timeout",
            "2m",
            "--handshake-timeout",
            "750ms",
            "--max-frame-len",
            "100",
            "--api-key",
            "k",
        ])
        .unwrap();
        assert_eq!(config.sales.len(), 2);
        let split = Cli::parse_from(["flashsale-server", "--sale", "a:5,b"]).into_config();
        assert_eq!(
            split.sales,
            ["a:5", "b:200"].map(|s| s.parse::<SaleArg>().unwrap())
        );
        assert_eq!(
            config.sales[1],
            SaleArg {
                id: "b".into(),
                capacity: 6,
                opens_at_ms: Some(7)
            }
        );
        assert_eq!(config.threads, Some(3));
        assert_eq!(config.durability, Durability::None);
        assert_eq!(
            (
                config.max_connections,
                config.max_in_flight,
                config.max_frame_len
            ),
            (9, 8, 100)
        );
        assert_eq!(config.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.handshake_timeout, Duration::from_millis(750));
        assert_eq!(config.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["flashsale-server", "--sale", "a:0"]).is_err());
        let absurd = format!("a:1:{}", u64::MAX);
        let err = Cli::try_parse_from(["flashsale-server", "--sale", &absurd]).unwrap_err();
        assert!(err.to_string().contains("year 9999"), "{err}");
        assert!(Cli::try_parse_from(["flashsale-server", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--durability", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--idle-timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--handshake-timeout", "0s"]).is_err());
    }

    #[test]
    fn http_flags() {
        let cli = Cli::parse_from([
            "flashsale-server",
            "--http",
            "127.0.0.1:8080",
            "--demo",
            "--http-max-in-flight",
            "7",
        ]);
        let Mode::Server(config) = cli
            .into_mode(EnvSecrets {
                jwt: Some("s3cret".into()),
                ..EnvSecrets::default()
            })
            .unwrap()
        else {
            panic!("expected the server");
        };
        let http = config.http.unwrap();
        assert_eq!(http.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(http.demo);
        assert_eq!(http.max_in_flight, 7);
        assert_eq!(http.jwt_secret.as_deref(), Some(&b"s3cret"[..]));
        assert!(Cli::try_parse_from(["flashsale-server", "--http-max-in-flight", "0"]).is_err());
        assert_eq!(http.max_connections, 10_000);
        assert_eq!(http.header_timeout, Duration::from_secs(10));
        assert_eq!(http.idle_timeout, Duration::from_secs(30));
        let cli = Cli::parse_from([
            "flashsale-server",
            "--http",
            "127.0.0.1:8080",
            "--http-max-connections",
            "9",
            "--http-header-timeout",
            "2s",
            "--http-idle-timeout",
            "500ms",
        ]);
        let Mode::Server(config) = cli
            .into_mode(EnvSecrets {
                jwt: Some("s3cret".into()),
                ..EnvSecrets::default()
            })
            .unwrap()
        else {
            panic!("expected the server");
        };
        let http = config.http.unwrap();
        assert_eq!(http.max_connections, 9);
        assert_eq!(http.header_timeout, Duration::from_secs(2));
        assert_eq!(http.idle_timeout, Duration::from_millis(500));
        for (flag, value) in [
            ("--http-max-connections", "0"),
            ("--http-header-timeout", "0s"),
            ("--http-idle-timeout", "0s"),
        ] {
            assert!(Cli::try_parse_from(["flashsale-server", flag, value]).is_err());
        }
    }

    #[test]
    fn metrics_leave_the_buyers_port_with_an_admin_listener() {
        let metrics_on_http = |args: &[&str]| {
            let mut all = vec!["flashsale-server", "--http", "127.0.0.1:8080"];
            all.extend_from_slice(args);
            let env = EnvSecrets {
                jwt: Some("s3cret".into()),
                admin_key: Some("k".repeat(32)),
            };
            match Cli::try_parse_from(all)?.into_mode(env)? {
                Mode::Server(config) => anyhow::Ok(config.http.map(|h| h.metrics)),
                _ => anyhow::bail!("expected the server"),
            }
        };
        let admin = ["--admin", "127.0.0.1:9"];
        assert_eq!(metrics_on_http(&[]).unwrap(), Some(true));
        assert_eq!(metrics_on_http(&admin).unwrap(), Some(false));
        let both = [&admin[..], &["--metrics-admin-only=false"]].concat();
        assert_eq!(metrics_on_http(&both).unwrap(), Some(true));
        let explicit = [&admin[..], &["--metrics-admin-only"]].concat();
        assert_eq!(metrics_on_http(&explicit).unwrap(), Some(false));
        assert!(
            metrics_on_http(&["--metrics-admin-only"]).is_err(),
            "nowhere to serve /metrics"
        );
    }

    #[test]
    fn the_admin_api_needs_a_long_enough_key() {
        let admin = |key: Option<&str>| {
            let cli = Cli::parse_from(["flashsale-server", "--admin", "127.0.0.1:9"]);
            cli.into_mode(EnvSecrets {
                admin_key: key.map(str::to_owned),
                ..EnvSecrets::default()
            })
        };
        assert!(admin(None).is_err(), "no key");
        assert!(admin(Some("short")).is_err(), "a short key");
        let key = "k".repeat(32);
        let Mode::Server(config) = admin(Some(&key)).unwrap() else {
            panic!("expected the server");
        };
        let admin = config.admin.unwrap();
        assert_eq!(admin.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(admin.key, key.as_bytes());
        assert!(
            !format!("{admin:?}").contains(&key),
            "the key is not logged"
        );
        let Mode::Server(config) = Cli::parse_from(["flashsale-server"])
            .into_mode(EnvSecrets {
                admin_key: Some(key),
                ..EnvSecrets::default()
            })
            .unwrap()
        else {
            panic!("expected the server");
        };
        assert!(config.admin.is_none(), "a key alone starts no admin API");
    }

    #[test]
    fn audit_subcommand() {
        let hex = "ab".repeat(32);
        let cli = Cli::parse_from([
            "flashsale-server",
            "audit",
            "--draw",
            "http://127.0.0.1:8080/api/sales/gig/draw",
            "--commitment",
            &hex,
        ]);
        let Mode::Audit(args) = cli.into_mode(EnvSecrets::default()).unwrap() else {
            panic!("expected audit");
        };
        assert!(matches!(args.draw, crate::audit::Source::Url(_)));
        assert_eq!(args.commitment.as_deref(), Some(hex.as_str()));
        assert_eq!(args.timeout, Duration::from_secs(120));
        assert!(
            Cli::try_parse_from(["flashsale-server", "audit"]).is_err(),
            "no source"
        );
    }

    #[test]
    fn sink_flag_and_subcommands() {
        assert!(server(["flashsale-server"]).unwrap().sink.is_none());
        let config = server(["flashsale-server", "--sink", "postgres://u@h:1/d"]).unwrap();
        let sink = config.sink.unwrap();
        assert_eq!(
            (sink.url.as_str(), sink.password),
            ("postgres://u@h:1/d", None)
        );
        let cli = Cli::parse_from(["flashsale-server", "migrate", "--sink", "postgres://u@h/d"]);
        let Mode::Migrate(sink) = cli.into_mode(EnvSecrets::default()).unwrap() else {
            panic!("expected migrate");
        };
        assert_eq!(sink.url, "postgres://u@h/d");

        // The password from a file, kept out of the process list and the logs.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret pass\n").unwrap();
        let file = file.to_str().unwrap();
        let with = [
            "flashsale-server",
            "--sink",
            "postgres://u@h/d",
            "--sink-password-file",
            file,
        ];
        let sink = server(with).unwrap().sink.unwrap();
        assert_eq!(sink.password.as_deref(), Some(&b"s3cret pass"[..]));
        assert!(!format!("{sink:?}").contains("s3cret"), "{sink:?}");
        let pg = sink.pg_config().unwrap();
        assert_eq!(pg.get_password(), Some(&b"s3cret pass"[..]));
        let migrate = [
            "flashsale-server",
            "migrate",
            "--sink",
            "postgres://u@h/d",
            "--sink-password-file",
            file,
        ];
        let Mode::Migrate(sink) = Cli::parse_from(migrate)
            .into_mode(EnvSecrets::default())
            .unwrap()
        else {
            panic!("expected migrate");
        };
        assert!(sink.password.is_some());
        let missing = [
            "flashsale-server",
            "--sink",
            "postgres://u@h/d",
            "--sink-password-file",
            "/nonexistent/pw",
        ];
        assert!(server(missing).is_err());
        let cli = Cli::parse_from([
            "flashsale-server",
            "export",
            "--data-dir",
            "/d",
            "--sale",
            "gig",
        ]);
        let Mode::Export(args) = cli.into_mode(EnvSecrets::default()).unwrap() else {
            panic!("expected export");
        };
        assert_eq!(
            (args.data_dir, args.sale.as_str()),
            (PathBuf::from("/d"), "gig")
        );
        assert!(Cli::try_parse_from(["flashsale-server", "export", "--data-dir", "/d"]).is_err());
    }
}
