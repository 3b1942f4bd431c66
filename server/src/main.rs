//! `flashsale-server`: parses flags, starts the server (or, with the
//! `gateway` subcommand, an HTTP gateway to a remote core), and shuts it
//! down gracefully on SIGINT or SIGTERM. `migrate` creates the PostgreSQL
//! tables of the drain; `export` prints a sale's winners from the log.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use flashsale_server::export::export_csv;
use flashsale_server::http::gateway::Gateway;
use flashsale_server::{GatewayConfig, Server, ServerConfig};

use crate::cli::{Cli, Mode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let env_secret = std::env::var("FLASHSALE_JWT_SECRET").ok();
    let result = Cli::parse()
        .into_mode(env_secret)
        .and_then(|mode| match mode {
            Mode::Server(config) => run(config),
            Mode::Gateway(config) => run_gateway(config),
            Mode::Migrate(url) => flashsale_server::sink::migrate(&url),
            Mode::Export(args) => {
                let stdout = std::io::stdout();
                export_csv(&args.data_dir, &args.sale, &mut stdout.lock()).map(drop)
            }
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flashsale-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT, on a small runtime of their own.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. They go in before the server announces
    /// itself, so a SIGTERM sent the moment it listens is a graceful
    /// shutdown, not a kill.
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = runtime.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        drop(_guard);
        Ok(Signals { runtime, term, int })
    }

    /// Waits for a signal (`false`) or for `token` to be cancelled by a
    /// failure (`true`).
    fn wait(mut self, token: tokio_util::sync::CancellationToken) -> bool {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => false,
                _ = self.int.recv() => false,
                () = token.cancelled() => true,
            }
        })
    }
}

/// One machine-readable line on stdout, for scripts and tests that start
/// the server on port 0.
fn announce(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout();
    stdout.write_fmt(line)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

fn run(config: ServerConfig) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let server = Server::start(config)?;
    announce(format_args!(
        "flashsale-server listening on {}",
        server.local_addr()
    ))?;
    if let Some(http) = server.http_addr() {
        announce(format_args!("flashsale-server http on {http}"))?;
    }
    let failed = signals.wait(server.shutdown_token());
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let stopped = server.shutdown();
    if failed {
        anyhow::bail!("a worker thread failed");
    }
    stopped
}

fn run_gateway(config: GatewayConfig) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let gateway = Gateway::start(config)?;
    announce(format_args!(
        "flashsale-server http on {}",
        gateway.local_addr()
    ))?;
    let failed = signals.wait(gateway.shutdown_token());
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    gateway.shutdown();
    if failed {
        anyhow::bail!("the HTTP front failed");
    }
    Ok(())
}
