//! The parts of `flashsale-torture`: see the binary's documentation.
//!
//! From the bottom up: `rng` (seeded draws), `step` (one request and its
//! answer), `script` (what one user does), `process` and `burst` (the server
//! and the users that see it killed), `tally`, `ledger` and `hold_ledger` /
//! `hold_check` (the clients' record and its check after a restart, for
//! sales without and with holds), `record` (one sale of either kind and its
//! users), `torn` and `sellout`, and `run`, the trial loop; `cluster`, the
//! trials of a three-node cluster.

pub mod burst;
pub mod cluster;
pub mod hold_check;
pub mod hold_ledger;
pub mod ledger;
pub mod process;
pub mod record;
pub mod rng;
pub mod run;
pub mod script;
pub mod sellout;
pub mod step;
pub mod tally;
pub mod torn;
