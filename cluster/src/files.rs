//! Files replaced whole: `raft.meta` and `raft.snapshot`.
//!
//! The new contents go to a temporary file beside the old one, which is
//! synced, renamed over the old one, and the directory synced, so that a
//! crash at any point leaves either the old file or the new one, never a
//! mix, and a file the caller was told is replaced stays replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Mode of every file a node writes: its user's only.
pub const FILE_MODE: u32 = 0o600;

/// Replaces `dir/name` with `bytes`, durably (see the module docs).
///
/// # Errors
/// Any I/O error; the old file is then still in place, unless the error
/// came from the last sync (the new one may then be in place).
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}
