//! A test-owned TCP proxy in front of each node of a cluster, to cut the
//! links between nodes without touching the machine's network.
//!
//! Each node listens on a private address (`--cluster-listen`) and the
//! others reach it through its proxy, the address in `--cluster`. A proxy
//! reads each connection's first frame, the nodes' hello, to learn which
//! node dialled which ([`flashsale_cluster::network::route_of`]), and
//! forwards the connection unless that link is cut. Cutting a link refuses
//! its new connections and closes the open ones, both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest first frame a proxy reads (a hello is a few hundred bytes).
const MAX_HELLO: usize = 64 * 1024;

/// The cut links, each as its two nodes in order.
type Cut = Arc<Mutex<BTreeSet<(u64, u64)>>>;

/// The proxies of a cluster and the state of its links.
pub struct Links {
    cut: Cut,
    /// Bumped on every change, so open connections look again.
    changed: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Links {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Links {
    /// Starts one proxy per node: `proxies[id]` forwards to `nodes[id]`.
    /// Call from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// When a proxy's address cannot be bound.
    pub async fn start(
        proxies: &BTreeMap<u64, SocketAddr>,
        nodes: &BTreeMap<u64, SocketAddr>,
    ) -> anyhow::Result<Links> {
        let cut: Cut = Arc::default();
        let (changed, _) = watch::channel(0);
        let mut tasks = Vec::new();
        for (id, proxy) in proxies {
            let listener = TcpListener::bind(proxy).await?;
            let target = *nodes
                .get(id)
                .ok_or_else(|| anyhow::anyhow!("no address for node {id}"))?;
            let (cut, changed) = (Arc::clone(&cut), changed.subscribe());
            tasks.push(tokio::spawn(accept(listener, target, cut, changed)));
        }
        Ok(Links {
            cut,
            changed,
            tasks,
        })
    }

    /// Cuts every link of `node` with the others: it is alone.
    pub fn isolate(&self, node: u64, others: impl IntoIterator<Item = u64>) {
        let mut cut = self.cut.lock().unwrap_or_else(PoisonError::into_inner);
        for other in others {
            cut.insert(link(node, other));
        }
        drop(cut);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.changed.send_modify(|n| *n += 1);
    }
}

fn link(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

fn is_cut(cut: &Cut, route: (u64, u64)) -> bool {
    cut.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&link(route.0, route.1))
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    cut: Cut,
    changed: watch::Receiver<u64>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        let (cut, changed) = (Arc::clone(&cut), changed.clone());
        tokio::spawn(async move {
            let _ = forward(inbound, target, cut, changed).await;
        });
    }
}

/// Reads the hello, then forwards both ways until the link is cut or
/// either side closes.
async fn forward(
    mut inbound: TcpStream,
    target: SocketAddr,
    cut: Cut,
    mut changed: watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let mut len = [0u8; 4];
    inbound.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    anyhow::ensure!(n <= MAX_HELLO, "a first frame of {n} bytes");
    let mut body = vec![0u8; n];
    inbound.read_exact(&mut body).await?;
    let route = flashsale_cluster::network::route_of(&body)
        .ok_or_else(|| anyhow::anyhow!("the first frame is not a hello"))?;
    if is_cut(&cut, route) {
        return Ok(());
    }
    let mut outbound = TcpStream::connect(target).await?;
    outbound.write_all(&len).await?;
    outbound.write_all(&body).await?;
    // One copy for the connection's life: a change that does not cut it
    // must not drop bytes the copy holds.
    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            copied = &mut copy => {
                copied?;
                return Ok(());
            }
            change = changed.changed() => {
                if change.is_err() || is_cut(&cut, route) {
                    // Dropping both streams closes the link.
                    return Ok(());
                }
            }
        }
    }
}
