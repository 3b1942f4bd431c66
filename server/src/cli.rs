//! The command line of `flashsale-server`: every flag (each also settable by
//! environment variable), the subcommands, and their translation into the
//! library's configuration structs. Parsing only: nothing here starts
//! anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flashsale_server::config::{
    DEFAULT_HTTP_MAX_CONNECTIONS, DEFAULT_HTTP_MAX_IN_FLIGHT, DEFAULT_LISTEN,
};
use flashsale_server::sink::SinkConfig;
use flashsale_server::wal::Durability;
use flashsale_server::{GatewayConfig, HttpConfig, SaleArg, ServerConfig};

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

    /// A sale, as ID:CAPACITY[:OPENS_AT_UNIX_MS]; repeatable. Default: the
    /// sales stored in the data directory, or `default:200` open now.
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

    /// Largest accepted frame body, in bytes.
    #[arg(long, env = "FLASHSALE_MAX_FRAME_LEN", default_value_t = flashsale_protocol::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: usize,

    /// API key every client must present in its Hello.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Address of the HTTP front [default: no HTTP].
    #[arg(long, env = "FLASHSALE_HTTP")]
    http: Option<SocketAddr>,

    /// Drain sold tickets into this PostgreSQL database,
    /// postgres://USER[:PASSWORD]@HOST:PORT/DB [default: no database].
    #[arg(long, env = "FLASHSALE_SINK", hide_env_values = true)]
    sink: Option<String>,

    #[command(flatten)]
    web: WebArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP front alone, in front of a remote core.
    Gateway(GatewayArgs),
    /// Create the drain's tables in PostgreSQL (idempotent), then exit.
    Migrate(MigrateArgs),
    /// Print a sale's winners from the log as CSV (sale,ticket,user,sold_at).
    /// Safe while a server runs on the directory: reads only.
    Export(ExportArgs),
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

#[derive(Debug, Args)]
struct GatewayArgs {
    /// Address of the core's binary protocol.
    #[arg(long, env = "FLASHSALE_CORE")]
    core: String,

    /// Address of the HTTP listener.
    #[arg(long, env = "FLASHSALE_HTTP")]
    http: SocketAddr,

    /// Pipelined connections to the core.
    #[arg(long, env = "FLASHSALE_CORE_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,

    /// API key of the core.
    #[arg(long, env = "FLASHSALE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// A sale id the page offers; repeatable [default: `default`].
    #[arg(long = "sale", env = "FLASHSALE_GATEWAY_SALES", value_delimiter = ',')]
    sales: Vec<String>,

    #[command(flatten)]
    web: WebArgs,
}

/// Flags of the HTTP front, in the server and in the gateway.
#[derive(Debug, Args)]
struct WebArgs {
    /// File holding the HS256 secret of buyers' tokens (or set
    /// FLASHSALE_JWT_SECRET to the secret itself).
    #[arg(long, env = "FLASHSALE_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,

    /// Demo mode: POST /demo/token hands out tokens to anyone. Never for a
    /// real sale.
    #[arg(long, env = "FLASHSALE_DEMO")]
    demo: bool,

    /// HTTP requests in progress beyond which new ones get 503 at once.
    #[arg(long, env = "FLASHSALE_HTTP_MAX_IN_FLIGHT", default_value_t = DEFAULT_HTTP_MAX_IN_FLIGHT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_in_flight: usize,

    /// Open HTTP connections beyond which new ones get 503 and are closed.
    #[arg(long, env = "FLASHSALE_HTTP_MAX_CONNECTIONS", default_value_t = DEFAULT_HTTP_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    http_max_connections: usize,

    /// Longest a request's head may take to arrive (e.g. 10s).
    #[arg(long, env = "FLASHSALE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    http_header_timeout: Duration,

    /// Close HTTP connections on which nothing moves for this long (e.g. 30s).
    #[arg(long, env = "FLASHSALE_HTTP_IDLE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    http_idle_timeout: Duration,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl WebArgs {
    /// The HTTP front's configuration; `env_secret` is the value of
    /// FLASHSALE_JWT_SECRET.
    fn to_config(
        &self,
        listen: SocketAddr,
        env_secret: Option<String>,
    ) -> anyhow::Result<HttpConfig> {
        let secret = match (&self.jwt_secret_file, env_secret) {
            (Some(_), Some(_)) => {
                anyhow::bail!("both --jwt-secret-file and FLASHSALE_JWT_SECRET are set; use one")
            }
            (Some(path), None) => {
                let text = std::fs::read(path).with_context(|| {
                    format!("cannot read the JWT secret file {}", path.display())
                })?;
                Some(trim_line_end(text))
            }
            (None, Some(secret)) => Some(secret.into_bytes()),
            (None, None) => None,
        };
        let mut config = HttpConfig::new(listen)
            .demo(self.demo)
            .max_in_flight(self.http_max_in_flight);
        config.jwt_secret = secret;
        config.max_connections = self.http_max_connections;
        config.header_timeout = self.http_header_timeout;
        config.idle_timeout = self.http_idle_timeout;
        Ok(config)
    }
}

/// A secret file usually ends with a newline that is not part of the key.
fn trim_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

/// What to run.
pub(crate) enum Mode {
    Server(ServerConfig),
    Gateway(GatewayConfig),
    Migrate(String),
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge a win after its record is fdatasynced.
    Fsync,
    /// Acknowledge at once; a crash may lose acknowledged wins.
    None,
}

impl Cli {
    pub(crate) fn into_mode(self, env_secret: Option<String>) -> anyhow::Result<Mode> {
        match self.command {
            Some(Command::Gateway(args)) => {
                let mut http = args.web.to_config(args.http, env_secret)?;
                http.sales = args.sales;
                let mut config = GatewayConfig::new(args.core, http);
                config.connections = usize::from(args.connections);
                config.api_key = args.api_key;
                Ok(Mode::Gateway(config))
            }
            Some(Command::Migrate(args)) => Ok(Mode::Migrate(args.sink)),
            Some(Command::Export(args)) => Ok(Mode::Export(args)),
            None => {
                let http = match self.http {
                    Some(listen) => Some(self.web.to_config(listen, env_secret)?),
                    None => None,
                };
                let mut config = self.into_config();
                config.http = http;
                Ok(Mode::Server(config))
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
            "--max-frame-len",
            "100",
            "--api-key",
            "k",
        ])
        .into_config();
        assert_eq!(config.sales.len(), 2);
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
        assert_eq!(config.api_key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["flashsale-server", "--sale", "a:0"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--durability", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["flashsale-server", "--idle-timeout", "soon"]).is_err());
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
        let Mode::Server(config) = cli.into_mode(Some("s3cret".into())).unwrap() else {
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
        let Mode::Server(config) = cli.into_mode(Some("s3cret".into())).unwrap() else {
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
    fn gateway_subcommand() {
        let cli = Cli::parse_from([
            "flashsale-server",
            "gateway",
            "--core",
            "10.0.0.1:7070",
            "--http",
            "0.0.0.0:80",
            "--connections",
            "3",
            "--api-key",
            "k",
            "--sale",
            "gig",
        ]);
        let Mode::Gateway(config) = cli.into_mode(Some("x".into())).unwrap() else {
            panic!("expected the gateway");
        };
        assert_eq!(config.core, "10.0.0.1:7070");
        assert_eq!(
            (config.connections, config.api_key.as_deref()),
            (3, Some("k"))
        );
        assert_eq!(config.http.sales, ["gig"]);
        assert!(!config.http.demo);
        assert!(
            Cli::try_parse_from(["flashsale-server", "gateway", "--http", "0.0.0.0:80"]).is_err()
        );
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
        let Mode::Migrate(url) = cli.into_mode(None).unwrap() else {
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
        let Mode::Export(args) = cli.into_mode(None).unwrap() else {
            panic!("expected export");
        };
        assert_eq!(
            (args.data_dir, args.sale.as_str()),
            (PathBuf::from("/d"), "gig")
        );
        assert!(Cli::try_parse_from(["flashsale-server", "export", "--data-dir", "/d"]).is_err());
    }

    #[test]
    fn secret_file_and_env_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.to_str().unwrap();
        let args = [
            "flashsale-server",
            "--http",
            "127.0.0.1:0",
            "--jwt-secret-file",
            path,
        ];
        let Mode::Server(config) = Cli::parse_from(args).into_mode(None).unwrap() else {
            panic!("expected the server");
        };
        assert_eq!(
            config.http.unwrap().jwt_secret.as_deref(),
            Some(&b"from-file"[..])
        );
        assert!(Cli::parse_from(args).into_mode(Some("env".into())).is_err());
    }
}
