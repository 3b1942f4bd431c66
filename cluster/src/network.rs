//! Node-to-node RPC: openraft's three calls (append entries, vote, install
//! snapshot) over one TCP connection per peer.
//!
//! **Framing.** Length-prefixed frames (tokio-util's
//! `LengthDelimitedCodec`: a 4-byte big-endian length, then the body), each
//! body one message encoded by `flashsale_protocol::encoding`. A frame is
//! capped at [`MAX_FRAME`]: openraft sends snapshots in chunks well below it,
//! and a larger length is a peer to hang up on, not memory to allocate.
//!
//! **Who may talk.** A connection opens with a [`Hello`] naming the cluster
//! (its members, spelled canonically) and carrying the cluster key, and the
//! node it means to reach. The server compares the key in constant time and
//! refuses a hello from another cluster, one without the key, or one meant
//! for another node (an address reused by a different node must not take
//! its votes), with a reason the caller logs.
//!
//! **Failure is a dropped connection.** Any error or timeout on a call drops
//! the connection; the next call dials again. openraft retries calls and
//! backs off from peers reported `Unreachable`, so this layer never retries.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::{NodeId, Raft, TypeConfig};

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// Longest a dial or a hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What makes a peer one of ours: the cluster it belongs to and its key.
#[derive(Clone)]
pub struct Identity {
    /// The cluster's members, spelled canonically (`1=host:port,2=...`).
    pub cluster: String,
    /// The cluster key (empty: none configured).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cluster", &self.cluster)
            .field("key", &if self.key.is_empty() { "none" } else { "set" })
            .finish()
    }
}

/// Where a node serves buyers: what a follower tells a client that asked
/// it instead of the leader. Each node states its own in every hello and
/// welcome, so every node learns the others' as soon as they talk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// The native protocol's address (`host:port`), if it serves one.
    pub native: Option<String>,
    /// The HTTP front's address, if it serves one.
    pub http: Option<String>,
}

/// What this node has learned of each node's [`Advertised`] addresses.
#[derive(Debug, Default)]
pub struct Directory(Mutex<BTreeMap<NodeId, Advertised>>);

impl Directory {
    /// Node `id`'s addresses, if known.
    pub fn get(&self, id: NodeId) -> Option<Advertised> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Records node `id`'s addresses.
    pub fn learn(&self, id: NodeId, advertised: Advertised) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, advertised);
    }
}

/// The first message of a connection, from the dialling node.
#[derive(Serialize, Deserialize)]
struct Hello {
    cluster: String,
    key: Vec<u8>,
    from: NodeId,
    to: NodeId,
    advertised: Advertised,
}

/// The answer to a [`Hello`].
#[derive(Serialize, Deserialize)]
enum Welcome {
    Accepted(Advertised),
    Refused(String),
}

/// A call.
#[derive(Serialize, Deserialize)]
enum Call {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`Call`], of the same kind.
#[derive(Serialize, Deserialize)]
enum Answer {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

type Wire = Framed<TcpStream, LengthDelimitedCodec>;

fn framed(stream: TcpStream) -> Wire {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    Framed::new(stream, codec)
}

async fn send<T: Serialize>(wire: &mut Wire, message: &T) -> io::Result<()> {
    let body = flashsale_protocol::encoding::encode(message).map_err(io::Error::other)?;
    wire.send(bytes::Bytes::from(body)).await
}

async fn receive<T: DeserializeOwned>(wire: &mut Wire) -> io::Result<T> {
    let frame = wire
        .next()
        .await
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the peer hung up"))??;
    flashsale_protocol::encoding::decode(&frame)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// This node's side of every connection: who it is, what it advertises,
/// and what it has learned of the others.
#[derive(Debug)]
pub struct Local {
    /// This node's id.
    pub me: NodeId,
    /// The cluster it belongs to.
    pub identity: Identity,
    /// Its own addresses for buyers.
    pub advertised: Advertised,
    /// The others' addresses, as learned.
    pub directory: Directory,
}

/// Dials this node's peers: openraft asks it for one client per peer.
#[derive(Clone)]
pub struct Network {
    local: Arc<Local>,
}

impl Network {
    /// The transport of the node `local` describes.
    pub fn new(local: Arc<Local>) -> Network {
        Network { local }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            local: Arc::clone(&self.local),
            target,
            addr: node.addr.clone(),
            wire: None,
        }
    }
}

/// One peer, as seen by this node: its address and, once dialled, the
/// connection.
pub struct Peer {
    local: Arc<Local>,
    target: NodeId,
    addr: String,
    wire: Option<Wire>,
}

/// Why a call failed before the peer answered.
enum CallError {
    /// The peer could not be reached or refused us: openraft backs off.
    Unreachable(io::Error),
    /// The connection failed during the call.
    Network(io::Error),
}

impl Peer {
    async fn dial(&self) -> Result<Wire, CallError> {
        let connect = async {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let mut wire = framed(stream);
            let local = &self.local;
            let hello = Hello {
                cluster: local.identity.cluster.clone(),
                key: local.identity.key.clone(),
                from: local.me,
                to: self.target,
                advertised: local.advertised.clone(),
            };
            send(&mut wire, &hello).await?;
            match receive(&mut wire).await? {
                Welcome::Accepted(advertised) => {
                    local.directory.learn(self.target, advertised);
                    Ok(wire)
                }
                Welcome::Refused(why) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("node {} refused us: {why}", self.target),
                )),
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(wire)) => Ok(wire),
            Ok(Err(e)) => Err(CallError::Unreachable(e)),
            Err(_) => Err(CallError::Unreachable(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no hello from node {} at {}", self.target, self.addr),
            ))),
        }
    }

    /// Sends `call` and waits, at most `ttl`, for its answer.
    async fn call(&mut self, call: Call, ttl: Duration) -> Result<Answer, CallError> {
        let mut wire = match self.wire.take() {
            Some(wire) => wire,
            None => self.dial().await?,
        };
        let exchange = async {
            send(&mut wire, &call).await?;
            receive::<Answer>(&mut wire).await
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(answer)) => {
                self.wire = Some(wire);
                Ok(answer)
            }
            Ok(Err(e)) => Err(CallError::Network(e)),
            Err(_) => Err(CallError::Network(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("node {} did not answer within {ttl:?}", self.target),
            ))),
        }
    }

    fn failed<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = io::Error::new(io::ErrorKind::InvalidData, "an answer of the wrong kind");
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Call::Append(rpc), option.hard_ttl()).await {
            Ok(Answer::Append(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Call::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Answer::Snapshot(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.failed(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Call::Vote(rpc), option.hard_ttl()).await {
            Ok(Answer::Vote(answer)) => answer.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// Serves the calls of this node's peers on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    local: Arc<Local>,
    shutdown: CancellationToken,
) {
    flashsale_net::accept_until(&listener, &shutdown, "cluster", |stream, peer| {
        let raft = raft.clone();
        let local = Arc::clone(&local);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = answer(stream, raft, &local) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "cluster connection ended");
                    }
                }
            }
        });
    })
    .await;
}

/// Serves one peer's connection: its hello, then its calls, one at a time.
async fn answer(stream: TcpStream, raft: Raft, local: &Local) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut wire = framed(stream);
    let hello: Hello = tokio::time::timeout(CONNECT_TIMEOUT, receive(&mut wire))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
    if let Some(why) = refusal(&hello, local.me, &local.identity) {
        tracing::warn!(from = hello.from, %why, "refused a node");
        send(&mut wire, &Welcome::Refused(why.clone())).await?;
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    }
    local.directory.learn(hello.from, hello.advertised);
    send(&mut wire, &Welcome::Accepted(local.advertised.clone())).await?;
    loop {
        let call = match wire.next().await {
            None => return Ok(()),
            Some(frame) => flashsale_protocol::encoding::decode::<Call>(&frame?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        };
        let reply = match call {
            Call::Append(rpc) => Answer::Append(raft.append_entries(rpc).await),
            Call::Vote(rpc) => Answer::Vote(raft.vote(rpc).await),
            Call::Snapshot(rpc) => Answer::Snapshot(raft.install_snapshot(rpc).await),
        };
        send(&mut wire, &reply).await?;
    }
}

/// Which node dialled which, from the body of a connection's first frame
/// (its hello): for tooling between nodes, such as a test's proxy that
/// cuts chosen links. `None` for anything else.
pub fn route_of(first_frame: &[u8]) -> Option<(NodeId, NodeId)> {
    let hello: Hello = flashsale_protocol::encoding::decode(first_frame).ok()?;
    Some((hello.from, hello.to))
}

/// Why `hello` is refused by node `me` of `identity`, if it is.
fn refusal(hello: &Hello, me: NodeId, identity: &Identity) -> Option<String> {
    let key_ok: bool = hello.key.ct_eq(&identity.key).into();
    if !key_ok {
        return Some("wrong cluster key".into());
    }
    if hello.cluster != identity.cluster {
        return Some(format!(
            "another cluster ({}; this is {})",
            hello.cluster, identity.cluster
        ));
    }
    if hello.to != me {
        return Some(format!("meant for node {}, this is node {me}", hello.to));
    }
    None
}

/// The address a node listens on for its peers, from its `--cluster` entry.
///
/// # Errors
/// An address that does not resolve.
pub async fn resolve(addr: &str) -> io::Result<SocketAddr> {
    tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(key: &[u8]) -> Identity {
        Identity {
            cluster: "1=a:1,2=b:2,3=c:3".into(),
            key: key.to_vec(),
        }
    }

    fn hello(cluster: &str, key: &[u8], to: NodeId) -> Hello {
        Hello {
            cluster: cluster.into(),
            key: key.to_vec(),
            from: 2,
            to,
            advertised: Advertised::default(),
        }
    }

    #[test]
    fn a_hello_names_its_route_and_nothing_else_does() {
        let body = flashsale_protocol::encoding::encode(&hello("c", b"k", 3)).unwrap_or_default();
        assert_eq!(route_of(&body), Some((2, 3)));
        assert_eq!(route_of(&body[..body.len() - 1]), None);
        assert_eq!(route_of(b"not a hello"), None);
    }

    #[test]
    fn a_hello_is_refused_for_another_cluster_a_wrong_key_or_another_node() {
        let us = identity(b"k");
        assert_eq!(refusal(&hello("1=a:1,2=b:2,3=c:3", b"k", 1), 1, &us), None);
        let refused = |h: Hello| refusal(&h, 1, &us).unwrap_or_default();
        assert!(refused(hello("1=a:1,2=b:2,3=c:3", b"x", 1)).contains("key"));
        assert!(refused(hello("1=a:1,2=b:2,3=c:3", b"", 1)).contains("key"));
        assert!(refused(hello("1=a:1,2=b:2", b"k", 1)).contains("another cluster"));
        assert!(refused(hello("1=a:1,2=b:2,3=c:3", b"k", 3)).contains("node 3"));
    }
}
