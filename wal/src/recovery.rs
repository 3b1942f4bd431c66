//! Opening the log: create it if missing, read it back, cut a damaged tail.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::WalError;
use super::files;
use super::record::{
    check_file_header, decode_record, file_header, DecodeError, HeaderError, Record,
    FILE_HEADER_LEN,
};

/// Name of the log file inside the data directory.
pub const LOG_FILE_NAME: &str = "wal.log";

/// The result of reading a log's bytes, before any file is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Every whole, valid record before the first damage, in order.
    pub records: Vec<Record>,
    /// Length of the valid prefix, file header included: where appends go.
    pub valid_len: u64,
    /// The first damage, if the log does not end cleanly.
    pub damage: Option<Damage>,
}

/// Where and why the valid prefix of a log ends early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// File offset of the first byte that is not part of a valid record.
    pub offset: u64,
    /// What was found there.
    pub error: DecodeError,
}

/// Why a log's bytes cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The file header is wrong.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A record of an unknown required kind (see [`DecodeError::RequiredKind`]).
    #[error("unknown required record kind {kind} at offset {offset}")]
    NewerVersion {
        /// File offset of the record.
        offset: u64,
        /// Its kind byte.
        kind: u8,
    },
}

/// Reads a whole log file's bytes: header, then records up to the first damage.
///
/// Pure: this is the decision part of [`recover`], kept apart so that it can
/// be tested on every prefix and every corruption of a log cheaply.
///
/// # Errors
/// A bad file header, or a record of an unknown required kind (with a valid
/// CRC, so it is not damage). Everything else is reported as [`Damage`].
pub fn scan(file: &[u8]) -> Result<Scan, ScanError> {
    check_file_header(file)?;
    let mut records = Vec::new();
    let mut pos = FILE_HEADER_LEN;
    let mut damage = None;
    while let Some(rest) = file.get(pos..).filter(|rest| !rest.is_empty()) {
        match decode_record(rest) {
            Ok((record, used)) => {
                records.push(record);
                pos += used;
            }
            Err(DecodeError::RequiredKind { kind }) => {
                return Err(ScanError::NewerVersion {
                    offset: pos as u64,
                    kind,
                });
            }
            Err(error) => {
                damage = Some(Damage {
                    offset: pos as u64,
                    error,
                });
                break;
            }
        }
    }
    Ok(Scan {
        records,
        valid_len: pos as u64,
        damage,
    })
}

/// What [`recover`] found and did.
#[derive(Debug)]
pub struct Recovered {
    /// Every valid record, in log order.
    pub records: Vec<Record>,
    /// File offset where the next record will be appended.
    pub end_offset: u64,
    /// The damaged tail that was cut off, if any.
    pub discarded: Option<Discarded>,
}

/// A damaged tail removed by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// File offset where the damage starts (the log's new length).
    pub offset: u64,
    /// Number of bytes removed.
    pub len: u64,
    /// Why the bytes at `offset` were rejected.
    pub error: DecodeError,
    /// The side file that now holds the removed bytes.
    pub side_file: PathBuf,
}

/// Opens or creates the log in `dir` and brings it to a clean state.
///
/// Creates `dir` (mode 0700) and an empty log (mode 0600) if missing, and
/// refuses a `dir` that is not private (see [`files::prepare_dir`]); never
/// opens or creates a file through a link. Otherwise reads every record,
/// and if the log ends in damage (a write torn by a crash, or corruption),
/// copies the damaged tail to `wal.log.damaged-<unix_ms>`, truncates the log
/// to its last valid record, syncs both, and logs a warning.
///
/// # Errors
/// [`WalError::Io`] when the directory or files cannot be created, read,
/// written or synced (read-only directory, full disk);
/// [`WalError::UnsafeDir`] for a directory another user owns or others may
/// write to;
/// [`WalError::BadHeader`] and [`WalError::NewerVersion`] when the log cannot
/// be read by this version, in which case the file is not modified.
pub fn recover(dir: &Path) -> Result<Recovered, WalError> {
    open_log(dir).map(|(_, recovered)| recovered)
}

/// [`recover`], also returning the log file open for writing at its end.
pub(crate) fn open_log(dir: &Path) -> Result<(File, Recovered), WalError> {
    files::prepare_dir(dir)?;
    let path = dir.join(LOG_FILE_NAME);
    let mut file = match files::open(&files::private_options(), "open", &path) {
        Ok(file) => {
            files::restrict(&file, &path)?;
            file
        }
        Err(WalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            create_log(dir, &path)?
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(WalError::io("read", &path))?;
    let scan = scan(&bytes).map_err(|e| match e {
        ScanError::Header(reason) => WalError::BadHeader {
            path: path.clone(),
            reason,
        },
        ScanError::NewerVersion { offset, kind } => WalError::NewerVersion {
            path: path.clone(),
            offset,
            kind,
        },
    })?;
    let discarded = match scan.damage {
        Some(damage) => Some(cut_tail(dir, &path, &file, &bytes, damage)?),
        None => None,
    };
    file.seek(SeekFrom::Start(scan.valid_len))
        .map_err(WalError::io("seek", &path))?;
    let recovered = Recovered {
        records: scan.records,
        end_offset: scan.valid_len,
        discarded,
    };
    Ok((file, recovered))
}

/// Creates the log with its header, atomically: a crash leaves either no log
/// or a log with a whole header, so a short header is never a crash artefact.
fn create_log(dir: &Path, path: &Path) -> Result<File, WalError> {
    files::write_new(dir, LOG_FILE_NAME, &file_header())?;
    files::open(&files::private_options(), "open", path)
}

/// Saves the damaged bytes to a side file, then truncates the log.
///
/// The side file is durable before the log shrinks, so the bytes exist
/// somewhere at every instant. If it cannot be written (full disk), startup
/// fails rather than discard them unseen.
fn cut_tail(
    dir: &Path,
    path: &Path,
    file: &File,
    bytes: &[u8],
    damage: Damage,
) -> Result<Discarded, WalError> {
    let tail = bytes.get(damage.offset as usize..).unwrap_or_default();
    let side_file = write_side_file(dir, tail)?;
    file.set_len(damage.offset)
        .map_err(WalError::io("truncate", path))?;
    file.sync_all().map_err(WalError::io("sync", path))?;
    tracing::warn!(
        log = %path.display(),
        offset = damage.offset,
        discarded_bytes = tail.len(),
        error = %damage.error,
        side_file = %side_file.display(),
        "write-ahead log ends in damage; truncated it to its last valid record",
    );
    Ok(Discarded {
        offset: damage.offset,
        len: tail.len() as u64,
        error: damage.error,
        side_file,
    })
}

fn write_side_file(dir: &Path, tail: &[u8]) -> Result<PathBuf, WalError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let base = format!("{LOG_FILE_NAME}.damaged-{now_ms}");
    // Never overwrite an earlier side file, even one from the same millisecond.
    let mut attempt = 0u32;
    let (path, mut side) = loop {
        let name = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}.{attempt}")
        };
        let path = dir.join(name);
        match files::private_options().create_new(true).open(&path) {
            Ok(side) => break (path, side),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                attempt += 1;
            }
            Err(e) => return Err(WalError::io("create", &path)(e)),
        }
    };
    let kept = side
        .write_all(tail)
        .map_err(WalError::io("write", &path))
        .and_then(|()| side.sync_all().map_err(WalError::io("sync", &path)));
    if let Err(e) = kept {
        // A side file that does not hold the damaged bytes would only
        // mislead an operator.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    files::sync_dir(dir)?;
    Ok(path)
}
