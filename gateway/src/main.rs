//! `flashsale-gateway`: parses flags, connects to the core, serves HTTP, and
//! shuts down gracefully on SIGINT or SIGTERM.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use flashsale_gateway::{Gateway, GatewayConfig};
use flashsale_net::open_files;
use flashsale_net::process::{announce, init_logging, ShutdownSignals};

use crate::cli::Cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    init_logging();
    let env_secret = std::env::var("FLASHSALE_JWT_SECRET").ok();
    match Cli::parse().into_config(env_secret).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("flashsale-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: GatewayConfig) -> anyhow::Result<()> {
    let files = open_files::raise_to_hard_limit();
    config.fit_open_files(files.soft)?;
    let signals = ShutdownSignals::install()?;
    let gateway = Gateway::start(config)?;
    announce(format_args!(
        "flashsale-gateway http on {}",
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
