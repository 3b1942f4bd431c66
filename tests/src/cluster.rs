//! What every test of a cluster starts its nodes with.

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
