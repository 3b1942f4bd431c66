//! `raft.meta`: the vote, the committed log id and the last purged log id,
//! replaced as a whole and atomically (temporary file, synced, renamed over,
//! directory synced), so a crash leaves either the old or the new one.

use std::fs;
use std::io;

use flashsale_protocol::encoding;
use openraft::Vote;
use serde::{Deserialize, Serialize};

use super::frame::{self, HEADER_LEN, META_HEADER};
use super::{LogStoreError, Paths, META_FILE_NAME};
use crate::{files, LogId, NodeId};

/// What `raft.meta` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) vote: Option<Vote<NodeId>>,
    pub(super) committed: Option<LogId>,
    pub(super) purged: Option<LogId>,
}

/// Reads `raft.meta`; a missing file is an empty one (a fresh node).
pub(super) fn load(paths: &Paths) -> Result<Meta, LogStoreError> {
    let path = &paths.meta;
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(LogStoreError::io("read", path)(e)),
    };
    let bad = |reason: String| LogStoreError::BadMeta {
        path: path.clone(),
        reason,
    };
    frame::check_header(&bytes, &META_HEADER).map_err(&bad)?;
    match frame::read(&bytes, HEADER_LEN) {
        Ok(Some((payload, end))) if end == bytes.len() => {
            encoding::decode(payload).map_err(|e| bad(e.to_string()))
        }
        Ok(Some(_)) => Err(bad("bytes after its record".to_owned())),
        Ok(None) => Err(bad("no record after the header".to_owned())),
        Err(damage) => Err(bad(damage.to_string())),
    }
}

/// Replaces `raft.meta` with `meta`, durably.
pub(super) fn store(paths: &Paths, meta: &Meta) -> Result<(), LogStoreError> {
    let payload = encoding::encode(meta)?;
    let mut bytes = META_HEADER.to_vec();
    frame::push(&mut bytes, &payload);
    files::replace(&paths.dir, META_FILE_NAME, &bytes)
        .map_err(LogStoreError::io("replace", &paths.meta))
}
