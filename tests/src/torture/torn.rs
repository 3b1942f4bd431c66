//! A torn write, laid on the log while the server is down.
//!
//! `kill -9` alone almost never tears a record: the kernel finishes a
//! `write` the process had started. A power cut does, leaving the start of
//! the last, unacknowledged batch. This appends such a start, a proper
//! prefix of a copy of the last record, so that recovery has a tail to cut
//! (and a kill can land while it cuts it). The bytes were never
//! acknowledged, so cutting them loses nothing any client was told.
//!
//! The layout is the log's own (`docs/WAL.md`, `flashsale_wal::record`): a
//! file header, then records of a frame header (`payload_len` u32
//! little-endian, CRC, kind) and the payload.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use flashsale_wal::record::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use flashsale_wal::LOG_FILE_NAME;
use rand::Rng as _;

use super::rng::Rng;

/// Appends a proper prefix of the last whole record of `data_dir`'s log.
/// Returns how many bytes were appended (none when the log has no record).
///
/// # Errors
///
/// The log cannot be read or appended to.
pub fn tear_tail(data_dir: &Path, rng: &mut Rng) -> anyhow::Result<usize> {
    let path = data_dir.join(LOG_FILE_NAME);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let Some(last) = last_record(&bytes) else {
        return Ok(0);
    };
    // At least one byte, never the whole record.
    let cut = rng.random_range(1..last.len());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(&last[..cut])
        .with_context(|| format!("appending to {}", path.display()))?;
    Ok(cut)
}

/// The bytes of the last whole record, if any.
fn last_record(bytes: &[u8]) -> Option<&[u8]> {
    let mut pos = FILE_HEADER_LEN;
    let mut last = None;
    while let Some(header) = bytes.get(pos..pos + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = pos + RECORD_HEADER_LEN + len;
        let Some(record) = bytes.get(pos..end) else {
            break;
        };
        last = Some(record);
        pos = end;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_whole_record() {
        let mut log = vec![0u8; FILE_HEADER_LEN];
        for (len, fill) in [(3u32, 1u8), (2, 2)] {
            log.extend_from_slice(&len.to_le_bytes());
            log.extend_from_slice(&[fill; RECORD_HEADER_LEN - 4]);
            log.extend(std::iter::repeat_n(fill, len as usize));
        }
        let whole = log.len();
        assert_eq!(
            last_record(&log).map(<[u8]>::len),
            Some(RECORD_HEADER_LEN + 2)
        );
        log.extend_from_slice(&[9, 0, 0]);
        assert_eq!(last_record(&log), last_record(&log[..whole]));
        assert_eq!(last_record(&log[..FILE_HEADER_LEN + 4]), None);
    }
}
