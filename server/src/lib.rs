//! flashsale-server: sells a fixed stock of tickets, one per user, to a rush
//! of buyers, and never sells one more.
//!
//! # Layout
//!
//! The byte path, from the socket inwards:
//!
//! - [`net`]: thread-per-core workers, each with its own `SO_REUSEPORT`
//!   listener and single-threaded runtime; the per-connection loop that
//!   decodes frames and writes answers in batches.
//! - [`service`]: what each request does, and which answers must wait for
//!   the disk.
//! - [`core`]: the reservation core. Per sale, an `AtomicU32` of remaining
//!   stock and a sharded lock-free buyer set. Pure logic, no I/O; model
//!   checked with loom.
//! - [`wal`]: the write-ahead log. Winners go over a channel to one writer
//!   thread that appends and fdatasyncs in batches (group commit); a win is
//!   acknowledged only once durable. Recovery rebuilds the core at startup.
//! - [`catalog`]: reconciles the sales stored in the log with the flags.
//! - [`http`]: the HTTP front (JSON API, bearer tokens, Server-Sent Events,
//!   the buyer's page), in the server or as a stand-alone gateway.
//! - [`sink`]: the optional drain of sold tickets from the log into
//!   PostgreSQL, off the reserve path, exactly once.
//! - [`export`]: a sale's winners from the log as CSV, without a database.
//! - [`server`]: start-up and graceful shutdown of all of the above.
//!
//! The binary (`src/main.rs`) only parses flags and signals.

pub mod catalog;
pub mod config;
pub mod core;
pub mod export;
pub mod http;
pub mod metrics;
pub mod net;
pub mod server;
pub mod service;
pub mod sink;
pub mod wal;

pub use config::{GatewayConfig, HttpConfig, SaleArg, ServerConfig};
pub use server::Server;
