//! What every test of a cluster starts its nodes with, and how it finds
//! the one that leads.

use std::net::SocketAddr;
use std::time::Duration;

/// A `--cluster` list of nodes `1..=n` on loopback, on ports below the
/// ephemeral range ([`crate::fixed_ports`]): a killed node must get its
/// replication port back when it restarts.
///
/// # Errors
///
/// When no `n` such ports are free.
pub fn loopback_cluster(n: u64) -> anyhow::Result<String> {
    let ports = crate::fixed_ports(usize::try_from(n)?)?;
    Ok((1..=n)
        .zip(ports)
        .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// The flags of node `id` of the cluster `spec`, whose nodes present `key`
/// to each other (and clients to them), selling `sale` (`ID:CAPACITY`).
pub fn node_args(id: u64, spec: &str, key: &str, sale: &str) -> Vec<String> {
    [
        "--node-id",
        &id.to_string(),
        "--cluster",
        spec,
        "--api-key",
        key,
        "--sale",
        sale,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Which of `nodes` (id and native address) serve `sale` now, each asked
/// alone: a client that does not follow `NOT_LEADER`, so a follower's
/// answer is its own. A node that cannot be asked does not serve.
pub async fn serving(nodes: &[(u64, SocketAddr)], key: &str, sale: &str) -> Vec<u64> {
    let mut serving = Vec::new();
    for (id, addr) in nodes {
        let config = flashsale_client::ClientConfig::new(addr.to_string())
            .api_key(key)
            .request_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .reconnect(flashsale_client::ReconnectPolicy::no_retry())
            .follow_leader(false);
        if let Ok(client) = config.connect().await {
            if client.status(sale).await.is_ok() {
                serving.push(*id);
            }
        }
    }
    serving
}
