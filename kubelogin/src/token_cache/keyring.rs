//! Keyring storage: the OS credential store, service `kubelogin`, account
//! `kubelogin/tokencache/<hex>` (kubelogin's names, so its users find the entries).
//!
//! Platform stores limit the secret size (Windows Credential Manager ~2.5 KB, and macOS
//! Keychain rejects large items: kubelogin #1255) while ID tokens with many groups grow past
//! that. When a write is refused the entry is split into numbered chunks under
//! `<account>/<n>` with a small manifest in the main entry; if even that fails, the entry goes
//! to the disk cache with a warning rather than losing the login.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::disk::DiskStore;
use super::{CacheEntry, TokenStore};
use crate::deps::{Deps, Keyring};
use crate::error::{Error, Result};

pub const SERVICE: &str = "kubelogin";
/// Size of one chunk, in bytes of ASCII JSON; below every platform's limit.
const CHUNK: usize = 1024;

pub fn account(key: &str) -> String {
    format!("kubelogin/tokencache/{key}")
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    kubelogin_chunks: usize,
}

pub struct KeyringStore {
    keyring: Arc<dyn Keyring>,
    /// Where an entry too large for the keyring goes, and where it is looked for.
    fallback: DiskStore,
    deps: Deps,
    /// Largest secret written as one item; `None` lets the keyring itself refuse.
    entry_limit: Option<usize>,
}

impl KeyringStore {
    pub fn new(deps: &Deps, fallback: DiskStore) -> Self {
        KeyringStore {
            keyring: deps.keyring.clone(),
            fallback,
            deps: deps.clone(),
            entry_limit: None,
        }
    }

    /// Splits every entry longer than `limit` bytes into chunks of at most `limit` bytes,
    /// without first asking the keyring. For a store whose limit is known (and for tests,
    /// which force the chunked path through a real Secret Service that accepts large items).
    pub fn with_entry_limit(mut self, limit: usize) -> Self {
        self.entry_limit = Some(limit.max(1));
        self
    }

    fn chunk_size(&self) -> usize {
        self.entry_limit.map_or(CHUNK, |l| l.min(CHUNK))
    }

    fn delete_chunks(&self, account: &str) -> Result<()> {
        if let Some(text) = self.keyring.get(SERVICE, account)? {
            if let Ok(m) = serde_json::from_str::<Manifest>(&text) {
                for i in 0..m.kubelogin_chunks {
                    self.keyring.delete(SERVICE, &format!("{account}/{i}"))?;
                }
            }
        }
        Ok(())
    }

    fn save_chunked(&self, account: &str, json: &str) -> Result<()> {
        // JSON of our entry is ASCII (tokens are base64url), so byte chunks are char chunks.
        let chunks: Vec<&str> = json
            .as_bytes()
            .chunks(self.chunk_size())
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        if chunks.concat() != json {
            return Err(Error::keyring("entry is not ASCII, cannot split it"));
        }
        for (i, c) in chunks.iter().enumerate() {
            self.keyring.set(SERVICE, &format!("{account}/{i}"), c)?;
        }
        let manifest = serde_json::to_string(&Manifest {
            kubelogin_chunks: chunks.len(),
        })
        .map_err(Error::keyring)?;
        self.keyring.set(SERVICE, account, &manifest)
    }
}

impl KeyringStore {
    /// The entry held in the keyring itself, without looking at the disk fallback (`status`
    /// lists each storage on its own). `None` when there is no item; `Some(None)` when the
    /// item is unreadable or half-written.
    pub fn load_own(&self, key: &str) -> Result<Option<Option<CacheEntry>>> {
        let account = account(key);
        let Some(text) = self.keyring.get(SERVICE, &account)? else {
            return Ok(None);
        };
        let json = match serde_json::from_str::<Manifest>(&text) {
            Ok(m) => {
                let mut json = String::new();
                for i in 0..m.kubelogin_chunks {
                    match self.keyring.get(SERVICE, &format!("{account}/{i}"))? {
                        Some(part) => json.push_str(&part),
                        // A half-written entry is a cache miss, not an error.
                        None => return Ok(Some(None)),
                    }
                }
                json
            }
            Err(_) => text,
        };
        Ok(Some(serde_json::from_str(&json).ok()))
    }
}

impl KeyringStore {
    /// Deletes the keyring item (and its chunks) of `key`, leaving a disk entry of the same key.
    pub fn delete_own(&self, key: &str) -> Result<()> {
        let account = account(key);
        self.delete_chunks(&account)?;
        self.keyring.delete(SERVICE, &account)
    }
}

impl TokenStore for KeyringStore {
    fn load(&self, key: &str) -> Result<Option<CacheEntry>> {
        match self.load_own(key)? {
            Some(entry) => Ok(entry),
            None => self.fallback.load(key),
        }
    }

    fn save(&self, key: &str, entry: &CacheEntry) -> Result<()> {
        let account = account(key);
        let json = serde_json::to_string(entry).map_err(Error::keyring)?;
        self.delete_chunks(&account)?;
        let too_long = self.entry_limit.is_some_and(|l| json.len() > l);
        let first_try = if too_long {
            Err(Error::keyring(format!(
                "too long: {} > {} bytes",
                json.len(),
                self.chunk_size()
            )))
        } else {
            self.keyring.set(SERVICE, &account, &json)
        };
        let saved = match first_try {
            Ok(()) => Ok(()),
            Err(first) => {
                self.deps.log(1, || {
                    format!(
                        "keyring refused a {} byte entry ({first}); splitting it",
                        json.len()
                    )
                });
                self.save_chunked(&account, &json)
            }
        };
        match saved {
            Ok(()) => self.fallback.delete(key),
            Err(e) => {
                self.deps.say(&format!(
                    "warning: the keyring could not store the token ({e}); keeping it in {} instead",
                    self.fallback.path(key).display()
                ));
                // Whatever half-state the keyring holds must not shadow the disk copy.
                let _ = self.delete_chunks(&account);
                let _ = self.keyring.delete(SERVICE, &account);
                self.fallback.save(key, entry)
            }
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.delete_own(key)?;
        self.fallback.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::testing::FakeDeps;

    fn entry(size: usize) -> CacheEntry {
        CacheEntry {
            id_token: Secret::new("h.".to_string() + &"p".repeat(size) + ".s"),
            refresh_token: Secret::new("r"),
            ..Default::default()
        }
    }

    #[test]
    fn small_entry_is_one_item_under_kubelogin_names() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let store = KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into()));
        store.save("abc", &entry(10)).unwrap();
        assert!(fake.keyring.items().contains_key(&(
            "kubelogin".to_string(),
            "kubelogin/tokencache/abc".to_string()
        )));
        assert_eq!(store.load("abc").unwrap(), Some(entry(10)));
        store.delete("abc").unwrap();
        assert!(fake.keyring.items().is_empty());
    }

    #[test]
    fn oversized_entry_is_split_and_reassembled() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        fake.keyring.set_limit(Some(2000));
        let store = KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into()));
        store.save("abc", &entry(5000)).unwrap();
        assert!(fake.keyring.items().len() > 2);
        assert_eq!(store.load("abc").unwrap(), Some(entry(5000)));
        // Overwriting with a small entry leaves no stale chunks.
        fake.keyring.set_limit(None);
        store.save("abc", &entry(10)).unwrap();
        assert_eq!(fake.keyring.items().len(), 1);
        store.delete("abc").unwrap();
        assert!(fake.keyring.items().is_empty());
    }

    #[test]
    fn unusable_keyring_falls_back_to_disk_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        fake.keyring.set_limit(Some(10));
        let store = KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into()));
        store.save("abc", &entry(100)).unwrap();
        assert!(fake
            .console_text()
            .contains("warning: the keyring could not store"));
        assert!(tmp.path().join("abc").exists());
        assert_eq!(store.load("abc").unwrap(), Some(entry(100)));
        store.delete("abc").unwrap();
        assert!(!tmp.path().join("abc").exists());
    }
}
