//! The error type of the write-ahead log.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::record::{EncodeError, HeaderError};

/// Everything that can go wrong opening, recovering or appending to the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file-system call failed while opening or recovering the log (for
    /// example a data directory that is not writable, or a full disk).
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The data directory is not the server's alone: another user owns it,
    /// or group or others may write to it. Nothing in it is touched.
    #[error("data directory {} {reason}", path.display())]
    UnsafeDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong, and what to do about it.
        reason: String,
    },
    /// A file of the data directory is a symbolic link. It is not followed.
    #[error(
        "{} is a symbolic link: the server never opens a file of its data directory \
         through one; remove it",
        path.display()
    )]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// The file does not start with a valid header. It is left untouched.
    #[error("{} is not a flashsale write-ahead log this version can read: {reason}", path.display())]
    BadHeader {
        /// The log file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: HeaderError,
    },
    /// A record of a required kind this version does not know: the log was
    /// written by a newer version. It is left untouched.
    #[error(
        "{} has a record of unknown required kind {kind} at offset {offset}: \
         it was written by a newer version of flashsale; refusing to read it",
        path.display()
    )]
    NewerVersion {
        /// The log file.
        path: PathBuf,
        /// File offset of the record.
        offset: u64,
        /// Its kind byte.
        kind: u8,
    },
    /// A write or sync failed earlier; the log accepts nothing more until
    /// the process restarts and recovers it.
    #[error("the write-ahead log failed to {op} and accepts no more records")]
    Failed {
        /// The call that failed (`"write"`, `"sync"`, ...).
        op: &'static str,
        /// The original error, shared by every rejected caller.
        #[source]
        source: Arc<io::Error>,
    },
    /// The log is shut down.
    #[error("the write-ahead log is shut down")]
    Closed,
    /// The record cannot be encoded (a field too long for the format).
    #[error("record cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| WalError::Io { op, path, source }
    }
}
