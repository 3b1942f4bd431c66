//! `flashsale-server`: parses flags, starts the server, and shuts it down
//! gracefully on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use flashsale_server::config::DEFAULT_LISTEN;
use flashsale_server::wal::Durability;
use flashsale_server::{SaleArg, Server, ServerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sells a fixed stock of tickets, one per user, to a rush of buyers.
#[derive(Debug, Parser)]
#[command(name = "flashsale-server", version, about)]
struct Cli {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge a win after its record is fdatasynced.
    Fsync,
    /// Acknowledge at once; a crash may lose acknowledged wins.
    None,
}

impl Cli {
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
        config
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Cli::parse().into_config();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flashsale-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ServerConfig) -> anyhow::Result<()> {
    // Signal handlers go in before the server announces itself, so a SIGTERM
    // sent the moment it listens is a graceful shutdown, not a kill.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        let _guard = signals.enter();
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };

    let server = Server::start(config)?;
    // One machine-readable line on stdout, for scripts and tests that start
    // the server on port 0.
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "flashsale-server listening on {}",
        server.local_addr()
    )?;
    stdout.flush()?;

    let token = server.shutdown_token();
    let failed = signals.block_on(async {
        tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => false,
            () = token.cancelled() => true,
        }
    });
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let stopped = server.shutdown();
    if failed {
        anyhow::bail!("a worker thread failed");
    }
    stopped
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
}
