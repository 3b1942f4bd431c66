//! flashsale-server: the reservation core, the write-ahead log and the network front.

pub mod core;
pub mod wal;
