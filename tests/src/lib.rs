//! Support for the end-to-end tests: they start the real binaries and talk
//! to them over real sockets, so what they share is how to start a process,
//! how to speak each of its protocols, and how to wait without hanging.
//!
//! - [`process`]: the binaries, built fresh and run as children
//!   ([`ServerProcess`], [`workspace_bin`]); every start and stop is bounded.
//! - [`raw`]: the native protocol byte by byte ([`RawConn`]), for clients
//!   that misbehave on purpose; well-formed frames still come from the
//!   protocol crate.
//! - [`http_client`]: HTTP/1.1 and event streams against the HTTP front.
//! - [`token`]: bearer tokens minted as the identity provider mints them.
//! - [`admin`]: the operator's API, with the key test servers start with.
//! - [`burst`](mod@burst): thousands of buyers at once, from worker processes.
//! - [`postgres`]: a throwaway PostgreSQL cluster for the drain's tests.
//! - [`cluster`]: the flags a cluster's nodes start with; the node that leads.
//! - [`links`]: a proxy before each node, to cut links between the nodes.
//! - [`poll`]: waiting for an exit or a condition, bounded in tries and
//!   time, so a slow machine is slower but never hangs or flakes.
//!
//! The items the tests use most are re-exported at the root.

pub mod admin;
pub mod burst;
pub mod cluster;
pub mod http_client;
pub mod links;
pub mod poll;
pub mod postgres;
pub mod process;
pub mod raw;
pub mod token;

pub use admin::{start_with_admin, Admin};
pub use burst::{burst, Told};
pub use http_client::{
    get, http, http_as, me_as, metric, reserve_as, EventStream, HttpConn, HttpReply,
};
pub use postgres::PgCluster;
pub use process::{
    client_config, export, fixed_ports, proc_status_kib, runtime, workspace_bin, ServerProcess,
};
pub use raw::RawConn;
pub use token::bearer;
