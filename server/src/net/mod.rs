//! The network front: thread-per-core listeners and the per-connection loop.
//!
//! Every worker thread owns a pinned, single-threaded tokio runtime and its
//! own `SO_REUSEPORT` listener on the same address, so the kernel spreads new
//! connections over the threads and each connection lives and dies on the
//! thread that accepted it. The threads share only the [`Service`]
//! (lock-free core and log handle) and a connection counter.
//!
//! [`Service`]: crate::service::Service

mod connection;
mod listener;

pub(crate) use connection::linger;
pub use connection::ConnectionLimits;
pub use listener::{bind_listeners, Workers};
