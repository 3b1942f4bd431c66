//! `flashsale-server`: parses flags, starts the server, and shuts it down
//! gracefully on SIGINT or SIGTERM. `migrate` creates the PostgreSQL tables
//! of the drain; `export` prints a sale's winners from the log; `sales`
//! calls the admin API; `audit --draw` checks a published fair draw.
//! `flashsale-server gateway ...` is an alias of `flashsale-gateway ...`
//! kept for one release (see [`gateway_alias`]).

mod audit;
mod cli;
mod gateway_alias;
mod sales_cli;

use std::process::ExitCode;

use clap::Parser;
use flashsale_net::open_files;
use flashsale_net::process::{announce, init_logging, ShutdownSignals};
use flashsale_server::export::export_csv;
use flashsale_server::{Server, ServerConfig};

use crate::cli::{Cli, EnvSecrets, Mode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if gateway_alias::requested() {
        return gateway_alias::run();
    }
    init_logging();
    let result = Cli::parse()
        .into_mode(EnvSecrets::read())
        .and_then(|mode| match mode {
            Mode::Server(config) => run(*config).map(|()| ExitCode::SUCCESS),
            Mode::Migrate(sink) => {
                flashsale_server::sink::migrate(&sink).map(|()| ExitCode::SUCCESS)
            }
            Mode::Export(args) => {
                let stdout = std::io::stdout();
                export_csv(&args.data_dir, &args.sale, &mut stdout.lock())
                    .map(|_| ExitCode::SUCCESS)
            }
            Mode::Sales(args) => sales_cli::run(args).map(|()| ExitCode::SUCCESS),
            // Its own exit codes: 1 is a dishonest draw, 2 a missing one.
            Mode::Audit(args) => Ok(audit::run(&args)),
        });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flashsale-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: ServerConfig) -> anyhow::Result<()> {
    let files = open_files::raise_to_hard_limit();
    config.fit_open_files(files.soft)?;
    let signals = ShutdownSignals::install()?;
    let server = Server::start(config)?;
    announce(format_args!(
        "flashsale-server listening on {}",
        server.local_addr()
    ))?;
    if let Some(http) = server.http_addr() {
        announce(format_args!("flashsale-server http on {http}"))?;
    }
    if let Some(admin) = server.admin_addr() {
        announce(format_args!("flashsale-server admin on {admin}"))?;
    }
    let failed = signals.wait(server.shutdown_token());
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let stopped = server.shutdown();
    if failed {
        anyhow::bail!("a worker thread failed");
    }
    stopped
}
