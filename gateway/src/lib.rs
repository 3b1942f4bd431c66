//! flashsale-gateway: the HTTP front alone, in front of a remote core.
//!
//! A gateway holds no state of its own (tokens are verified with the shared
//! secret, tickets live in the core), so any number of them can stand
//! behind a load balancer, each with a few pipelined native connections to
//! the core. It answers exactly as the front inside the server does: both
//! are [`flashsale_http`] over a [`Backend`](flashsale_http::Backend); here
//! that backend is [`RemoteBackend`], a [`flashsale_client::Pool`].
//!
//! # Layout
//!
//! - [`config`]: [`GatewayConfig`], where the core is and how to reach it.
//! - [`remote`]: [`RemoteBackend`] and the mapping of the client's errors.
//! - [`gateway`]: [`Gateway`], start-up and graceful shutdown.
//!
//! The binary (`src/main.rs`, `src/cli.rs`) only parses flags and signals.

pub mod config;
pub mod gateway;
pub mod remote;

pub use config::GatewayConfig;
pub use gateway::Gateway;
pub use remote::RemoteBackend;
