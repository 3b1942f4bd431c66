//! What every flashsale binary does around its server: logging to stderr,
//! the machine-readable announcement on stdout, and graceful shutdown on
//! SIGTERM or SIGINT.

use std::io::Write;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). The Raft
/// engine's own lines are kept to warnings unless `RUST_LOG` names
/// `openraft`: at `info` it logs every vote and every message of an
/// election.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        )))
        .with_writer(std::io::stderr)
        .init();
}

/// The filter directives for a `RUST_LOG` of `env` (unset: `info`).
fn log_filter(env: Option<&str>) -> String {
    let env = env
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .unwrap_or("info");
    if env.contains("openraft") {
        env.to_owned()
    } else {
        format!("{env},openraft=warn")
    }
}

/// One machine-readable line on stdout, flushed at once, for scripts and
/// tests that start a server on port 0 (`flashsale-server listening on
/// ADDR`).
///
/// # Errors
///
/// When stdout cannot be written.
pub fn announce(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut stdout = std::io::stdout();
    stdout.write_fmt(line)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// SIGTERM and SIGINT, on a small runtime of their own.
pub struct ShutdownSignals {
    runtime: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Install them before the server announces
    /// itself, so that a SIGTERM sent the moment it listens is a graceful
    /// shutdown, not a kill.
    ///
    /// # Errors
    ///
    /// When the runtime or a handler cannot be set up.
    pub fn install() -> std::io::Result<ShutdownSignals> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let guard = runtime.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        drop(guard);
        Ok(ShutdownSignals { runtime, term, int })
    }

    /// Waits for a signal (`false`) or for `failed` to be cancelled by a
    /// failure inside the server (`true`).
    pub fn wait(mut self, failed: CancellationToken) -> bool {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.term.recv() => false,
                _ = self.int.recv() => false,
                () = failed.cancelled() => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_raft_engine_is_quiet_unless_named() {
        assert_eq!(log_filter(None), "info,openraft=warn");
        assert_eq!(log_filter(Some("debug")), "debug,openraft=warn");
        assert_eq!(
            log_filter(Some("info,openraft=debug")),
            "info,openraft=debug"
        );
    }
}
