//! The write-ahead log (record format, recovery, group-commit writer).

pub mod record;
