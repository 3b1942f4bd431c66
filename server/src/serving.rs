//! Which [`Service`] the fronts hand requests to.
//!
//! A single node has one service for its whole life. A node of a cluster
//! serves sales only while it leads: each term it leads gets a service of its
//! own, built from the replicated records when the term starts and dropped
//! when it ends (whatever its core decided that the log did not commit is
//! gone with it). Between terms, and on a follower, there is none, and every
//! request but a `Ping` is answered `NOT_LEADER` with the leader's native
//! address, so a client knows where to go.
//!
//! The fronts hold this slot, never a service. A single node's is fixed
//! and reached without an atomic operation; a cluster node's is found by
//! one atomic load per request (`arc-swap`: no lock, no reference count
//! touched on the common path).

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use flashsale_protocol::json::ClusterRole;
use flashsale_protocol::{ErrorCode, ErrorFrame, RequestRef, Response};

use crate::service::{Answer, Service};

/// The service of this node now, if it serves any.
pub struct Serving {
    /// A single node's service, for good.
    fixed: Option<Arc<Service>>,
    /// A cluster node's service in the term it leads.
    current: ArcSwapOption<Service>,
    /// The leader's native address, as told to a client of a follower
    /// (empty: unknown).
    leader: ArcSwap<String>,
    /// A cluster node's role, as `/healthz` reports it.
    role: ArcSwapOption<ClusterRole>,
}

impl Serving {
    /// The slot of a single node, serving `service` for good.
    pub fn single(service: Arc<Service>) -> Arc<Serving> {
        Arc::new(Serving {
            fixed: Some(service),
            current: ArcSwapOption::empty(),
            leader: ArcSwap::from_pointee(String::new()),
            role: ArcSwapOption::empty(),
        })
    }

    /// The slot of a node of a cluster, serving nothing until it leads.
    pub fn follower() -> Arc<Serving> {
        Arc::new(Serving {
            fixed: None,
            current: ArcSwapOption::empty(),
            leader: ArcSwap::from_pointee(String::new()),
            role: ArcSwapOption::empty(),
        })
    }

    /// The service now, if this node serves.
    pub fn current(&self) -> Option<Arc<Service>> {
        self.fixed.clone().or_else(|| self.current.load_full())
    }

    /// Starts serving `service` (a term begins).
    pub fn lead(&self, service: Arc<Service>) {
        self.current.store(Some(service));
    }

    /// Stops serving (a term ends) and names the leader to send clients
    /// to; returns the service that was served.
    pub fn follow(&self, leader: Option<String>) -> Option<Arc<Service>> {
        self.leader.store(Arc::new(leader.unwrap_or_default()));
        self.current.swap(None)
    }

    /// Names the leader to send clients to, while following.
    pub fn set_leader(&self, leader: Option<String>) {
        self.leader.store(Arc::new(leader.unwrap_or_default()));
    }

    /// Records this node's role in its cluster.
    pub fn set_role(&self, role: ClusterRole) {
        self.role.store(Some(Arc::new(role)));
    }

    /// This node's role in its cluster; `None` on a single node.
    pub fn cluster_role(&self) -> Option<ClusterRole> {
        self.role.load().as_deref().copied()
    }

    /// Answers `request` at `now_ms` with the current service, or
    /// `NOT_LEADER` without one.
    pub fn handle(&self, request: RequestRef<'_>, now_ms: u64) -> Answer {
        if let Some(service) = &self.fixed {
            return service.handle(request, now_ms);
        }
        match &*self.current.load() {
            Some(service) => service.handle(request, now_ms),
            None if matches!(request, RequestRef::Ping) => Answer::Now(Response::Pong),
            None => Answer::Now(Response::Error(self.not_leader())),
        }
    }

    /// The answer of a node that does not serve.
    pub fn not_leader(&self) -> ErrorFrame {
        ErrorFrame::new(ErrorCode::NOT_LEADER, self.leader.load().as_str())
    }
}
