//! The store's error type.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flashsale_protocol::encoding::EncodeError;

use super::frame::MAX_PAYLOAD;

/// What can go wrong opening the store, or using it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogStoreError {
    /// A file-system call failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another store has the directory open.
    #[error("{} is in use by another raft log store", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// `raft.log` does not start with a header this version reads. It is
    /// left untouched.
    #[error("{} is not a raft log this version can read: {reason}", path.display())]
    BadHeader {
        /// The log file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// `raft.meta` is damaged (it is replaced atomically, so never torn).
    #[error("{} is damaged: {reason}", path.display())]
    BadMeta {
        /// The meta file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A whole, valid entry of `raft.log` is not the one that must follow
    /// the entry before it (or the purge point).
    #[error(
        "{} holds entry {found} at offset {offset} where entry {expected} belongs",
        path.display()
    )]
    Gap {
        /// The log file.
        path: PathBuf,
        /// File offset of the frame.
        offset: u64,
        /// The index that should be there.
        expected: u64,
        /// The index that is.
        found: u64,
    },
    /// `append` was given an entry at or before the last entry of the log.
    #[error("entry {index} does not come after the last log entry {last}")]
    OutOfOrder {
        /// The entry's index.
        index: u64,
        /// The index of the last entry.
        last: u64,
    },
    /// An entry encodes to more than a frame carries.
    #[error("entry {index} encodes to {len} bytes, over the maximum of {MAX_PAYLOAD}")]
    TooLarge {
        /// The entry's index.
        index: u64,
        /// Its encoded length.
        len: usize,
    },
    /// An entry or the meta could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A write or sync failed: the store accepts nothing more until the
    /// process restarts and recovers it.
    #[error("the raft log store has failed and accepts nothing more")]
    Failed {
        /// The first failure, shared by every refused call.
        #[source]
        cause: Arc<LogStoreError>,
    },
    /// The writer thread is gone.
    #[error("the raft log store's writer thread is gone")]
    Closed,
}

impl LogStoreError {
    pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| LogStoreError::Io { op, path, source }
    }
}
