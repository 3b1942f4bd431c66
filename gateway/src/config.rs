//! The gateway's configuration: the HTTP front and how to reach the core.

use std::time::Duration;

use flashsale_http::HttpConfig;
use flashsale_net::open_files::{FileBudget, TooFewFiles, BASE_RESERVE};

/// A stateless HTTP gateway in front of a remote core.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Address of the core's binary protocol.
    pub core: String,
    /// Connections to the core, pipelined.
    pub connections: usize,
    /// API key of the core, if it wants one.
    pub api_key: Option<String>,
    /// The HTTP front.
    pub http: HttpConfig,
    /// Longest a graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl GatewayConfig {
    /// A gateway to `core`, serving `http`, over 4 connections.
    pub fn new(core: impl Into<String>, http: HttpConfig) -> Self {
        GatewayConfig {
            core: core.into(),
            connections: 4,
            api_key: None,
            http,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// Files the gateway keeps open besides its HTTP connections: the
    /// common base ([`BASE_RESERVE`]) and its connections to the core.
    pub fn reserved_files(&self) -> u64 {
        BASE_RESERVE + self.connections as u64
    }

    /// Clamps the HTTP connection limits to what `files`, the open-file
    /// limit in force, leaves once [`reserved_files`](Self::reserved_files)
    /// are set aside, with a WARN line for each clamp.
    ///
    /// # Errors
    ///
    /// When not even a handful of connections fit.
    pub fn fit_open_files(&mut self, files: u64) -> Result<(), TooFewFiles> {
        let budget = FileBudget::new(files, self.reserved_files())?;
        self.http.fit_open_files(&budget);
        Ok(())
    }
}
