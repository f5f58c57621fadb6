//! Disk storage: one JSON file per key in a 0700 directory, written atomically with mode 0600.

use std::fs;
use std::path::{Path, PathBuf};

use super::{CacheEntry, TokenStore};
use crate::error::{Error, Result};

/// Files named by the hex key inside `dir`.
pub struct DiskStore {
    pub dir: PathBuf,
}

impl DiskStore {
    pub fn new(dir: PathBuf) -> Self {
        DiskStore { dir }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

/// Creates the cache directory with mode 0700 (tokens are bearer credentials), and refuses
/// one that someone else could tamper with.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::Cache {
        path: dir.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    check_private(dir)?;
    Ok(())
}

/// The cache directory must belong to the user running us and be writable by nobody else:
/// whoever can write there can swap the lock file for a symlink, plant a token of their own
/// account (so kubectl acts as them), or read the next login's tokens. Checked on every use,
/// because `--token-cache-dir` may name a directory we did not create.
#[cfg(unix)]
pub fn check_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(|source| Error::Cache {
        path: dir.to_path_buf(),
        source,
    })?;
    let shown = dir.display();
    if !meta.is_dir() {
        return Err(Error::usage(format!(
            "token cache directory {shown} is not a directory; choose another --token-cache-dir"
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::usage(format!(
            "token cache directory {shown} is owned by uid {}, not by you (uid {me}): its owner could read or replace your tokens; use a directory of your own with --token-cache-dir (or chown {me} {shown})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::usage(format!(
            "token cache directory {shown} is writable by group or others (mode {mode:04o}): they could replace your tokens; run chmod 700 {shown}, or use another --token-cache-dir"
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never half of
/// one, with mode 0600 ([`shared::fs::write_atomic`]: temporary file, fsync, rename, fsync of
/// the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    shared::fs::write_atomic(path, bytes, 0o600).map_err(|source| Error::Cache {
        path: path.to_path_buf(),
        source,
    })
}

impl TokenStore for DiskStore {
    fn load(&self, key: &str) -> Result<Option<CacheEntry>> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Cache { path, source }),
        }
    }

    fn save(&self, key: &str, entry: &CacheEntry) -> Result<()> {
        let json = serde_json::to_vec(entry).map_err(|e| Error::Cache {
            path: self.path(key),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path(key), &json)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Cache { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn roundtrip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::new(tmp.path().join("oidc-login"));
        assert!(store.load("k").unwrap().is_none());
        let entry = CacheEntry {
            id_token: Secret::new("a.b.c"),
            refresh_token: Secret::new("r"),
            ..Default::default()
        };
        store.save("k", &entry).unwrap();
        assert_eq!(store.load("k").unwrap(), Some(entry));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.dir), 0o700);
            assert_eq!(mode(&store.path("k")), 0o600);
        }
        // Nothing but the file itself is left behind.
        assert_eq!(fs::read_dir(&store.dir).unwrap().count(), 1);
        store.delete("k").unwrap();
        store.delete("k").unwrap();
        assert!(store.load("k").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn shared_or_foreign_directories_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        ensure_dir(&dir).unwrap();
        for mode in [0o777, 0o770, 0o722, 0o1777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let err = ensure_dir(&dir).unwrap_err().to_string();
            assert!(err.contains("writable by group or others"), "{err}");
            assert!(err.contains("chmod 700"), "{err}");
        }
        // Readable by others is a privacy choice of the user, not a tampering risk.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        // Owned by someone else: only root can hand a directory to another uid.
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let err = ensure_dir(&dir).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn kubelogin_file_format_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::new(tmp.path().to_path_buf());
        fs::write(
            store.path("k"),
            r#"{"id_token":"x.y.z","refresh_token":"r"}"#,
        )
        .unwrap();
        let e = store.load("k").unwrap().unwrap();
        assert_eq!(e.id_token.expose(), "x.y.z");
    }

    #[test]
    fn corrupt_file_is_a_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::new(tmp.path().to_path_buf());
        fs::write(store.path("k"), "{not json").unwrap();
        assert!(store.load("k").unwrap().is_none());
    }
}
