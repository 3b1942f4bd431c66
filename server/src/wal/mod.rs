//! The write-ahead log (record format, recovery, group-commit writer).
