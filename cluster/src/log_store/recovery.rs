//! Reading `raft.log` back on open: every whole, valid frame is kept; the
//! first damaged one and everything after it are cut off.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use flashsale_protocol::encoding;

use super::frame::{self, HEADER_LEN, LOG_HEADER};
use super::{LogStoreError, Paths, Slot, FILE_MODE};
use crate::{Entry, LogId};

/// The log as found on disk, ready for the writer.
pub(super) struct Recovered {
    /// `raft.log`, open for reading and writing.
    pub(super) file: File,
    /// The entries after the purged point, by index.
    pub(super) log: BTreeMap<u64, Slot>,
    /// Length of the file: where the next frame goes.
    pub(super) end: u64,
}

/// Opens (or creates) `raft.log`, reads it whole, and cuts a damaged tail.
/// Entries at or before `purged` are skipped: the file is compacted lazily.
pub(super) fn recover(
    paths: &Paths,
    dir: &File,
    purged: Option<LogId>,
) -> Result<Recovered, LogStoreError> {
    let path = &paths.log;
    let io = |op| LogStoreError::io(op, path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io("open"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io("read"))?;

    if bytes.len() < HEADER_LEN && LOG_HEADER.starts_with(&bytes) {
        // A new file, or one whose creation a crash cut short.
        file.write_all_at(&LOG_HEADER, 0)
            .map_err(io("write header of"))?;
        file.sync_all().map_err(io("sync"))?;
        dir.sync_all()
            .map_err(LogStoreError::io("sync directory", &paths.dir))?;
        let end = HEADER_LEN as u64;
        return Ok(Recovered {
            file,
            log: BTreeMap::new(),
            end,
        });
    }
    frame::check_header(&bytes, &LOG_HEADER).map_err(|reason| LogStoreError::BadHeader {
        path: path.clone(),
        reason,
    })?;

    let mut log: BTreeMap<u64, Slot> = BTreeMap::new();
    let mut pos = HEADER_LEN;
    let damage = loop {
        let (payload, next) = match frame::read(&bytes, pos) {
            Ok(None) => break None,
            Ok(Some(frame)) => frame,
            Err(damage) => break Some(damage.to_string()),
        };
        let entry: Entry = match encoding::decode(payload) {
            Ok(entry) => entry,
            Err(e) => break Some(format!("undecodable entry: {e}")),
        };
        let index = entry.log_id.index;
        let expected = match (log.last_key_value(), purged) {
            (Some((last, _)), _) => Some(last.saturating_add(1)),
            (None, Some(p)) if index <= p.index => {
                pos = next;
                continue;
            }
            (None, Some(p)) => Some(p.index.saturating_add(1)),
            (None, None) => None,
        };
        if let Some(expected) = expected.filter(|&e| e != index) {
            return Err(LogStoreError::Gap {
                path: path.clone(),
                offset: pos as u64,
                expected,
                found: index,
            });
        }
        let offset = pos as u64;
        log.insert(index, Slot { offset, entry });
        pos = next;
    };

    if let Some(what) = damage {
        tracing::warn!(
            path = %path.display(),
            offset = pos,
            dropped_bytes = bytes.len() - pos,
            "cutting off the damaged tail of the raft log at offset {pos}: {what}"
        );
        file.set_len(pos as u64).map_err(io("truncate"))?;
        file.sync_all().map_err(io("sync"))?;
    }
    Ok(Recovered {
        file,
        log,
        end: pos as u64,
    })
}
