//! flashsale-server: sells a fixed stock of tickets, one per user, to a rush
//! of buyers, and never sells one more.
//!
//! This crate is the server process: it wires the reservation core
//! ([`flashsale_core`]), the write-ahead log ([`flashsale_wal`]) and the HTTP
//! front ([`flashsale_http`]) together, and adds what only the server does.
//!
//! # Layout
//!
//! The byte path, from the socket inwards:
//!
//! - [`native`]: the binary protocol's front: thread-per-core workers, each
//!   with its own `SO_REUSEPORT` listener and single-threaded runtime; the
//!   per-connection loop that decodes frames and writes answers in batches.
//! - [`backend`]: the HTTP front's [`Backend`](flashsale_http::Backend) over
//!   this process's service.
//! - [`serving`]: which service the fronts hand requests to (on a node of
//!   a cluster, the current term's while it leads; none otherwise).
//! - [`service`]: what each request does, and which answers must wait for
//!   the disk.
//! - [`catalog`]: reconciles the sales stored in the log with the flags.
//! - [`journal`]: the log records of holds, written and read back.
//! - [`operator`]: the admin API's operations (create, pause, resume,
//!   close, confirm, release) over this process's sales.
//! - [`expiry`]: the sweep that returns unpaid holds to stock on time.
//! - [`sink`]: the optional drain of sold tickets from the log into
//!   PostgreSQL, off the reserve path, exactly once.
//! - [`export`]: a sale's winners from the log as CSV, without a database.
//! - [`gauges`]: the metrics read at render time (stock, log health).
//! - [`log_hook`]: what happens when the log reports a batch durable.
//! - [`leadership`]: a node of a cluster ([`flashsale_cluster`]): a service
//!   per term it leads, built from the [`replica`]ted records.
//! - [`server`]: start-up and graceful shutdown of all of the above.
//!
//! The binary (`src/main.rs`, `src/cli.rs`) only parses flags and signals.

pub mod backend;
pub mod catalog;
pub mod config;
pub mod drawer;
pub mod expiry;
pub mod export;
pub mod gauges;
pub mod journal;
pub mod leadership;
pub mod log_hook;
pub mod native;
pub mod operator;
pub mod replica;
pub mod server;
pub mod service;
pub mod serving;
pub mod sink;

pub use config::{SaleArg, ServerConfig};
pub use server::Server;
