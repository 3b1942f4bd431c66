//! The gateway's configuration: the HTTP front and how to reach the core.

use std::time::Duration;

use flashsale_http::HttpConfig;

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
}
