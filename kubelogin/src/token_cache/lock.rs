//! The exclusive `<key>.lock` held from cache read to cache write.
//!
//! N kubectl processes started together for the same key serialise here: the first refreshes
//! or logs in, the others wait and then find the fresh token (so the provider sees one grant).
//! Unlike kubelogin the wait is bounded and says on stderr what it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deps::Deps;
use crate::error::{Error, Result};

/// How often a waiting process retries. Short enough that 20 waiters finish within a few
/// hundred milliseconds of the holder; long enough to cost nothing.
const POLL: Duration = Duration::from_millis(25);

/// An acquired lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    pub path: PathBuf,
}

impl CacheLock {
    /// Takes the exclusive lock on `path`, waiting at most `timeout`.
    pub fn acquire(deps: &Deps, path: &Path, timeout: Duration) -> Result<CacheLock> {
        let file = open(path)?;
        let start = deps.clock.now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(CacheLock {
                        _file: file,
                        path: path.to_path_buf(),
                    })
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(Error::Cache {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
            let waited = (deps.clock.now() - start).to_std().unwrap_or_default();
            if waited >= timeout {
                return Err(Error::LockTimeout {
                    path: path.to_path_buf(),
                    secs: timeout.as_secs(),
                });
            }
            // Said on stderr once the wait is noticeable (a refresh by a sibling process takes
            // milliseconds and needs no comment); at -v 1 at once.
            if !told && (waited >= Duration::from_secs(1) || deps.verbosity >= 1) {
                told = true;
                deps.say(&format!(
                    "waiting up to {}s for {} (another kubectl-oidc_login is logging in or refreshing this token)",
                    timeout.as_secs(),
                    path.display()
                ));
            }
            deps.sleeper.sleep(POLL);
        }
    }

    /// The lock if no other process holds it, without waiting: the `kubectl-oidc_login` shim
    /// answers a cache hit only when the lock is free and leaves a held one to the full
    /// binary, which waits in [`CacheLock::acquire`] as every `get-token` does.
    pub fn try_acquire(path: &Path) -> Result<Option<CacheLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(CacheLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(Error::Cache {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Opens (creating) the lock file in a private cache directory.
fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        super::disk::ensure_dir(dir)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW: a `<key>.lock` that is a symlink is refused, never followed (the
        // create would otherwise make or truncate-lock a file wherever it points).
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map_err(|source| {
        #[cfg(unix)]
        if source.raw_os_error() == Some(libc::ELOOP) {
            return Error::usage(format!(
                "token cache lock {} is a symbolic link, which is never followed; remove it (rm {})",
                path.display(),
                path.display()
            ));
        }
        Error::Cache {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeDeps;

    #[cfg(unix)]
    #[test]
    fn symlinked_lock_file_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        let victim = tmp.path().join("victim");
        let link = dir.join("k.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = CacheLock::acquire(&fake.deps, &link, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!victim.exists(), "the symlink was followed");
    }

    #[test]
    fn second_holder_times_out_with_the_path_in_the_message() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let path = tmp.path().join("k.lock");
        let first = CacheLock::acquire(&fake.deps, &path, Duration::from_secs(1)).unwrap();
        let err = CacheLock::acquire(&fake.deps, &path, Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("k.lock"), "{err}");
        drop(first);
        CacheLock::acquire(&fake.deps, &path, Duration::from_secs(1)).unwrap();
    }
}
