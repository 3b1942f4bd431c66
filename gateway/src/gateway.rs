//! The gateway: the HTTP front alone, in front of a remote core reached
//! through the native client.
//!
//! A gateway holds no state of its own (tokens are verified with the shared
//! secret, tickets live in the core), so any number of them can stand
//! behind a load balancer, each with a few pipelined connections to the
//! core. It answers exactly as the front inside the server does; only a
//! core that cannot be reached adds answers of its own (502, 504).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use flashsale_client::{ClientConfig, Pool, ReconnectPolicy};
use flashsale_http::{Backend, HttpFront};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::remote::RemoteBackend;

/// How long the gateway waits for the core's answer to one request.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed reconnect to the core, how long requests on that
/// connection are answered "core unavailable" (502) at once, without trying
/// again: while the core is down, a crowd of buyers gets its answer
/// immediately instead of each waiting for connection attempts, and the
/// core is not hammered by reconnects the moment it comes back.
const CORE_COOLDOWN: Duration = Duration::from_millis(500);

/// A running gateway.
pub struct Gateway {
    http: HttpFront,
    shutdown: CancellationToken,
}

impl Gateway {
    /// Connects to the core and starts serving HTTP.
    ///
    /// # Errors
    ///
    /// No JWT secret (and no demo mode), a core that cannot be reached or
    /// refuses the handshake, or an HTTP address that cannot be bound.
    pub fn start(config: GatewayConfig) -> anyhow::Result<Gateway> {
        if let Err(e) = flashsale_metrics::install() {
            tracing::warn!(error = %e, "metrics are not recorded");
        }
        // One core, or the nodes of a cluster, comma-separated: the client
        // follows the leader among them (docs/CLUSTER.md).
        let mut nodes = config
            .core
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(str::to_owned);
        let first = nodes.next().unwrap_or_default();
        let mut client = ClientConfig::new(first)
            .nodes(nodes)
            .request_timeout(CORE_TIMEOUT)
            .reconnect(ReconnectPolicy::new().cooldown(CORE_COOLDOWN));
        if let Some(key) = &config.api_key {
            client = client.api_key(key.clone());
        }
        let connections = config.connections.max(1);
        let core = config.core.clone();
        let backend = async move {
            let pool = Pool::connect(client, connections)
                .await
                .with_context(|| format!("cannot connect to the core at {core}"))?;
            let backend: Arc<dyn Backend> = Arc::new(RemoteBackend::new(pool));
            Ok(backend)
        };
        // Empty: `/api/config` asks the core for its sales at each request.
        let sales = config.http.sales.clone();
        let shutdown = CancellationToken::new();
        let http = HttpFront::start(
            &config.http,
            backend,
            sales,
            shutdown.clone(),
            config.shutdown_grace,
        )?;
        tracing::info!(core = %config.core, connections, "gateway to the core");
        Ok(Gateway { http, shutdown })
    }

    /// The address of the HTTP listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets requests in progress finish, and returns.
    pub fn shutdown(self) {
        self.shutdown.cancel();
        self.http.join();
        tracing::info!("stopped");
    }
}
