//! The native front: thread-per-core workers and the per-connection loop of
//! the binary protocol.
//!
//! Every worker thread owns a pinned, single-threaded tokio runtime and its
//! own `SO_REUSEPORT` listener on the same address, so the kernel spreads new
//! connections over the threads and each connection lives and dies on the
//! thread that accepted it. The threads share only the [`Service`]
//! (lock-free core and log handle) and a connection counter.
//!
//! [`Service`]: crate::service::Service

mod buffers;
mod connection;
mod listener;

pub use connection::ConnectionLimits;
pub use listener::Workers;
