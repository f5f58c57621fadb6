//! Atomic file writes, the one file-system helper both programs share: the client's token cache
//! and the IdP's certificates, keys and first-boot credentials file.
//!
//! A reader sees the old file or the new one, never half of one, and never a file with looser
//! permissions than asked for: the bytes go to a temporary file in the target's directory
//! (created with O_EXCL and mode 0600 by `tempfile`, so a planted symlink is never followed),
//! which gets its final mode, is flushed to disk (fsync), then renamed over the target; the
//! directory is flushed last so the rename itself survives a crash. On any error the temporary
//! file is removed.

use std::io::{self, Write as _};
use std::path::Path;

/// Writes `bytes` to `path` atomically with permission bits `mode` (Unix; whatever the umask),
/// replacing an existing `path` (rename(2)).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = prepare(path, bytes, mode)?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path);
    Ok(())
}

/// [`write_atomic`] for a file that must not exist yet: an existing `path` (even a dangling
/// symlink) is left as it is and the error is [`io::ErrorKind::AlreadyExists`]
/// (renameat2 `RENAME_NOREPLACE`, or link(2) where the kernel lacks it).
pub fn create_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = prepare(path, bytes, mode)?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(path);
    Ok(())
}

/// The directory a file of `path` lives in ("." for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A temporary file beside `path`, named after it (`.NAME.XXXXXX.tmp`, so a leftover of a crash
/// says what it was), holding `bytes` with mode `mode`, flushed to disk.
fn prepare(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir_of(path))?;
    // The umask may have cleared bits of a wider mode (0644 under umask 077); `mode` wins.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Flushes the directory entry of `path` (the rename). Best effort: not every file system can
/// fsync a directory, and the file's data is already on disk.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(dir_of(path)) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_replaces_and_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("server.crt");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o644);
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file"
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("key");
        write_atomic(&path, b"secret", 0o600).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn create_refuses_an_existing_file_and_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("credentials.txt");
        create_atomic(&path, b"first", 0o600).unwrap();
        let err = create_atomic(&path, b"second", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = tmp.path().join("cache");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert_eq!(
            create_atomic(&path, b"x", 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing").join("file");
        assert_eq!(
            write_atomic(&path, b"x", 0o600).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
