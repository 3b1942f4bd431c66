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
use flashsale_http::flags::{positive_duration, read_secret, HttpFlags};
use flashsale_server::config::{AdminConfig, DEFAULT_LISTEN};
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

    /// Worker threads, one pinned listener each [default: one per core].
    #[arg(long, env = "FLASHSALE_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// When a win is acknowledged: after fdatasync, or at once (benchmarks only).
    #[arg(long, env = "FLASHSALE_DURABILITY", value_enum, default_value_t = DurabilityArg::Fsync)]
    durability: DurabilityArg,

    /// Open connections beyond which new ones are refused with OVERLOADED.
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

    /// API key every client must present in its Hello.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

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

    /// Drain sold tickets into this PostgreSQL database,
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB [default: no database].
    #[arg(long, env = "FLASHSALE_SINK", hide_env_values = true)]
    sink: Option<String>,

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
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The database, postgres://USER[:PASSWORD]@HOST:PORT/DB.
    #[arg(long, env = "FLASHSALE_SINK", hide_env_values = true)]
    sink: String,
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
    Migrate(String),
    Export(ExportArgs),
    Sales(crate::sales_cli::SalesArgs),
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
            Some(Command::Migrate(args)) => Ok(Mode::Migrate(args.sink)),
            Some(Command::Export(args)) => Ok(Mode::Export(args)),
            Some(Command::Sales(args)) => Ok(Mode::Sales(args)),
            None => {
                let http = match self.http {
                    Some(listen) => Some(self.web.config(listen, env.jwt)?),
                    None => None,
                };
                let admin = self.admin_config(env.admin_key)?;
                let mut config = self.into_config();
                config.http = http;
                config.admin = admin;
                Ok(Mode::Server(Box::new(config)))
            }
        }
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

    fn into_config(self) -> ServerConfig {
        let mut config = ServerConfig::new(self.data_dir)
            .listen(self.listen)
            .durability(match self.durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::None => Durability::None,
            });
        config.sales = self.sales;
        config.threads = self.threads.map(usize::from);
        config.max_connections = self.max_connections;
        config.max_in_flight = self.max_in_flight;
        config.idle_timeout = self.idle_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.max_frame_len = self.max_frame_len;
        config.api_key = self.api_key;
        config.sink = self.sink.map(SinkConfig::new);
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

    #[test]
    fn every_flag() {
        let config = Cli::parse_from([
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
        .into_config();
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
    fn sink_flag_and_subcommands() {
        assert!(Cli::parse_from(["flashsale-server"])
            .into_config()
            .sink
            .is_none());
        let config =
            Cli::parse_from(["flashsale-server", "--sink", "postgres://u@h:1/d"]).into_config();
        assert_eq!(config.sink.unwrap().url, "postgres://u@h:1/d");
        let cli = Cli::parse_from(["flashsale-server", "migrate", "--sink", "postgres://u@h/d"]);
        let Mode::Migrate(url) = cli.into_mode(EnvSecrets::default()).unwrap() else {
            panic!("expected migrate");
        };
        assert_eq!(url, "postgres://u@h/d");
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
