//! The parts of `flashsale-torture`: see the binary's documentation.

pub mod burst;
pub mod ledger;
pub mod process;
pub mod rng;
pub mod run;
pub mod sellout;
pub mod torn;
