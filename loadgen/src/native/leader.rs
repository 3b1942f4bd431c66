//! Which node to load: a single server is its own; of a cluster's nodes
//! (`--addr a,b,c`), the one that leads.
//!
//! Each node is asked the sale's `Status` by a client that does not follow
//! `NOT_LEADER` by itself: the leader answers it (or refuses it for a
//! reason of the sale's, which the run then reports), and a follower names
//! the leader. While an election runs, nobody is named: the nodes are asked
//! again, within a bound. The run then goes to that node for its whole
//! length; a failover during the run is not followed (its requests are
//! answered `NOT_LEADER`, which the report counts as errors).

use std::time::Duration;

use flashsale_client::{ClientConfig, ClientError, ErrorCode, ReconnectPolicy};
use tokio::time::Instant;

use crate::config::{Config, Target};

/// Pause between two rounds of questions while no leader is known.
const ROUND_PAUSE: Duration = Duration::from_millis(50);

/// `config` with its native target set to the node that serves the sale.
///
/// # Errors
///
/// No node answers, or none leads, within `timeout`.
pub fn resolve(mut config: Config, timeout: Duration) -> anyhow::Result<Config> {
    let Target::Native { addr, api_key } = &config.target else {
        return Ok(config);
    };
    let nodes: Vec<String> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!nodes.is_empty(), "--addr names no server");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let leader = runtime.block_on(leader(&nodes, api_key.clone(), &config.sale, timeout))?;
    if nodes.len() > 1 || leader != nodes[0] {
        eprintln!("flashsale-loadgen: {leader} leads; the run goes there");
    }
    let api_key = api_key.clone();
    config.target = Target::Native {
        addr: leader,
        api_key,
    };
    Ok(config)
}

/// The node of `nodes` that serves `sale`, as the nodes themselves say.
async fn leader(
    nodes: &[String],
    api_key: Option<String>,
    sale: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        for node in nodes {
            match ask(node, api_key.clone(), sale).await {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => last = format!("{node} knows no leader"),
                // One server that cannot be asked: the run says why, as it
                // always has (a refused key, nothing listening).
                Err(_) if nodes.len() == 1 => return Ok(node.clone()),
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no node of {} leads after {timeout:?} ({last})",
            nodes.join(",")
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// Who serves the sale, in `node`'s own words: itself, the leader it
/// names, or nobody yet (`None`).
async fn ask(
    node: &str,
    api_key: Option<String>,
    sale: &str,
) -> Result<Option<String>, ClientError> {
    let mut config = ClientConfig::new(node)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy::no_retry())
        .follow_leader(false);
    if let Some(key) = api_key {
        config = config.api_key(key);
    }
    let client = config.connect().await?;
    match client.status(sale).await {
        Ok(_) => Ok(Some(node.to_owned())),
        Err(ClientError::Server(e)) if e.code == ErrorCode::NOT_LEADER => {
            Ok(Some(e.message).filter(|leader| !leader.is_empty()))
        }
        // The sale's own refusal (an unknown sale): this node serves, and
        // the run reports the refusal as it would on a single server.
        Err(ClientError::Server(_)) => Ok(Some(node.to_owned())),
        Err(e) => Err(e),
    }
}
