//! The data directory and the files in it belong to the server's user
//! alone: the log names every buyer and when they bought.
//!
//! - [`prepare_dir`] creates a missing data directory with mode 0700, and
//!   refuses one that another user owns or that group or others may write
//!   to: whoever can write there can plant a link where the server is about
//!   to create a file, or replace the log between two starts.
//! - [`private_options`] opens files with mode 0600 and never through a
//!   symbolic link (`O_NOFOLLOW`); with `create_new`, a name that exists in
//!   any form, a dangling link included, is an error, never a truncation.
//! - [`restrict`] narrows a file an older version created to 0600.
//! - [`write_new`] puts a small file in place atomically (a temporary file,
//!   synced, renamed, the directory synced), as the log's header and the
//!   drain's id are written.
//!
//! The modes are set at creation, so the umask can only narrow them, and a
//! file is never readable by others for an instant.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use super::error::WalError;

/// Mode of a data directory the server creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the server creates in it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700 if it is missing,
/// then checks that this process's user owns it and that neither group nor
/// others may write to it.
///
/// # Errors
///
/// [`WalError::Io`] when it cannot be created or examined (the message
/// says "create data directory"); [`WalError::UnsafeDir`] when another user
/// owns it or group or others may write to it, saying how to fix it.
pub fn prepare_dir(dir: &Path) -> Result<(), WalError> {
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(WalError::io("create data directory", dir))?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    let meta = fs::metadata(dir).map_err(WalError::io("examine data directory", dir))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    let problem = if meta.uid() != me {
        Some(format!(
            "is owned by uid {}, not by this server's uid {me}; run the server as its owner, \
             or give the server a directory of its own (mode 700)",
            meta.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "has mode {mode:o}: group or others may write to it, and so plant or replace the \
             server's files; run `chmod 700 {}` or choose another directory",
            dir.display()
        ))
    } else {
        None
    };
    match problem {
        Some(reason) => Err(WalError::UnsafeDir {
            path: dir.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Options that open a file read-write with mode 0600 (when created) and
/// fail on a symbolic link instead of following it. Add `create` or
/// `create_new` as the caller needs.
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits());
    options
}

/// Opens `path` with `options` (from [`private_options`]), telling a
/// symbolic link apart from other failures.
///
/// # Errors
///
/// [`WalError::Link`] for a link; [`WalError::Io`] with `op` otherwise.
pub fn open(options: &OpenOptions, op: &'static str, path: &Path) -> Result<File, WalError> {
    options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
            WalError::Link {
                path: path.to_owned(),
            }
        } else {
            WalError::io(op, path)(e)
        }
    })
}

/// Narrows the mode of an existing file to 0600, for a file created by an
/// older version under a looser umask.
///
/// # Errors
///
/// [`WalError::Io`] naming the file, when its mode cannot be read or set.
pub fn restrict(file: &File, path: &Path) -> Result<(), WalError> {
    let mode = file
        .metadata()
        .map_err(WalError::io("examine", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(WalError::io("restrict the mode of", path))?;
        tracing::info!(file = %path.display(), old_mode = format!("{:o}", mode & 0o777), "made the file private (mode 600)");
    }
    Ok(())
}

/// Puts `contents` at `dir/name` atomically: written to `name.tmp`, synced,
/// renamed over `name`, and the directory synced. A crash leaves either no
/// file or the whole one.
///
/// A `name.tmp` left by a crash (or planted) is removed first, which removes
/// a link, never what it points to; the new one is created with
/// `create_new`, so nothing else can take its place unseen.
///
/// # Errors
///
/// [`WalError::Io`] naming the step and the path.
pub fn write_new(dir: &Path, name: &str, contents: &[u8]) -> Result<(), WalError> {
    let tmp = dir.join(format!("{name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(WalError::io("remove the stale", &tmp)(e)),
    }
    let mut file = open(private_options().create_new(true), "create", &tmp)?;
    file.write_all(contents)
        .map_err(WalError::io("write", &tmp))?;
    file.sync_all().map_err(WalError::io("sync", &tmp))?;
    drop(file);
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(WalError::io("rename into place", &path))?;
    sync_dir(dir)
}

/// Makes a directory's entries (a created or renamed file) durable.
///
/// # Errors
///
/// [`WalError::Io`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_and_its_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare_dir(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        write_new(&dir, "f", b"x").unwrap();
        assert_eq!(mode(&dir.join("f")), FILE_MODE);
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"x");
        assert!(!dir.join("f.tmp").exists());
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let root = tempfile::tempdir().unwrap();
        for mode in [0o770, 0o702, 0o777] {
            fs::set_permissions(root.path(), fs::Permissions::from_mode(mode)).unwrap();
            let err = prepare_dir(root.path()).unwrap_err().to_string();
            assert!(err.contains(&root.path().display().to_string()), "{err}");
            assert!(err.contains("chmod 700"), "{err}");
        }
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(root.path()).unwrap();
    }

    #[test]
    fn links_are_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("f.tmp")).unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("link")).unwrap();
        // The planted temporary link is replaced, its target untouched.
        write_new(root.path(), "f", b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(fs::read(root.path().join("f")).unwrap(), b"new");
        // A link where a file is opened is refused, with or without create.
        let link = root.path().join("link");
        let err = open(&private_options(), "open", &link).unwrap_err();
        assert!(matches!(err, WalError::Link { .. }), "{err}");
        let created = open(
            private_options().create(true).truncate(false),
            "open",
            &link,
        );
        assert!(matches!(created, Err(WalError::Link { .. })));
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }
}
