//! The token cache: key, entry, storages (disk, keyring, none), lock and login back-off.
//!
//! `commands::flags` derives the [`CacheKey`] from the resolved provider and login options and
//! picks the [`Storage`]; `commands::get_token::obtain` reads and writes through them.

pub mod disk;
pub mod keyring;
pub mod lock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::deps::{Deps, Environment};
use crate::error::Result;
use crate::secret::Secret;

/// Version of the key encoding. Bump it when [`CacheKey`] changes meaning, so old entries are
/// simply not found instead of being misread.
const KEY_VERSION: u32 = 1;

/// Everything that makes two logins different. Serialised as JSON with fields in declaration
/// order and maps as `BTreeMap` (sorted), so the same flags give the same key on every run
/// (kubelogin's gob encoding of maps did not: #1638). A golden test pins the hash.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CacheKey {
    pub version: u32,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Sorted and deduplicated: the order of scopes does not change the grant.
    pub extra_scopes: Vec<String>,
    pub redirect_url: String,
    pub pkce_method: String,
    pub use_access_token: bool,
    pub request_headers: BTreeMap<String, String>,
    pub ca_files: Vec<String>,
    pub ca_data: Vec<String>,
    pub insecure_skip_tls_verify: bool,
    /// The password-grant username (empty for other grants), as in kubelogin.
    pub username: String,
    pub auth_request_extra_params: BTreeMap<String, String>,
    /// `--token-cache-name`: lets two accounts of one issuer and client coexist (#1474).
    pub name: String,
}

impl CacheKey {
    pub fn new_v1() -> Self {
        CacheKey {
            version: KEY_VERSION,
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            extra_scopes: Vec::new(),
            redirect_url: String::new(),
            pkce_method: String::new(),
            use_access_token: false,
            request_headers: BTreeMap::new(),
            ca_files: Vec::new(),
            ca_data: Vec::new(),
            insecure_skip_tls_verify: false,
            username: String::new(),
            auth_request_extra_params: BTreeMap::new(),
            name: String::new(),
        }
    }

    /// Hex SHA-256 of the canonical encoding: the file name and keyring account suffix.
    pub fn hex(&self) -> String {
        let mut k = self.clone();
        k.extra_scopes.sort();
        k.extra_scopes.dedup();
        // Serialising strings, bools and BTreeMaps of strings cannot fail.
        let bytes = serde_json::to_vec(&k).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// One cached login. Field names of kubelogin's file (`id_token`, `refresh_token`) plus what an
/// opaque access token needs (#1459): the token and the expiry computed from `expires_in`, and
/// which login it is ([`Origin`]) for `status` and `clean --issuer`.
///
/// Every added field is optional: files written by kubelogin or by earlier versions (no
/// origin) still read, and kubelogin ignores the fields it does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub id_token: Secret,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub refresh_token: Secret,
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub access_token: Secret,
    /// Unix seconds; from `expires_in` when the access token is not a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<i64>,
    /// The login that stored this entry. The file name is a hash, so without this the issuer
    /// and client could only be guessed from the token's own claims.
    /// Boxed to keep the entry small: it travels by value through `obtain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<Origin>>,
}

/// Which login an entry belongs to: the parts of its [`CacheKey`] a person names it by. No
/// secret: the client secret, headers and CA stay only in the key's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub issuer: String,
    pub client_id: String,
    /// `--token-cache-name` (empty when not given).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_cache_name: String,
}

impl Origin {
    pub fn of(key: &CacheKey) -> Origin {
        Origin {
            issuer: key.issuer.clone(),
            client_id: key.client_id.clone(),
            token_cache_name: key.name.clone(),
        }
    }
}

/// The token kubectl gets and when it expires.
#[derive(Debug, Clone)]
pub struct Credential {
    pub token: Secret,
    pub expiry: Option<DateTime<Utc>>,
}

impl CacheEntry {
    /// This entry marked as stored by the login of `key`.
    pub fn with_origin(mut self, key: &CacheKey) -> CacheEntry {
        self.origin = Some(Box::new(Origin::of(key)));
        self
    }

    /// The credential for kubectl: the ID token, or the access token with
    /// `--oidc-use-access-token`. Expiry from the JWT `exp` without verification (the token was
    /// verified when it was received, before it was cached), or the stored `expires_in`.
    pub fn credential(&self, use_access_token: bool) -> Option<Credential> {
        let token = if use_access_token {
            &self.access_token
        } else {
            &self.id_token
        };
        if token.is_empty() {
            return None;
        }
        let jwt_exp = shared::jwt::expiry_unverified(token.expose())
            .ok()
            .flatten();
        let exp = match jwt_exp {
            Some(e) => i64::try_from(e).ok(),
            None if use_access_token => self.access_token_expires_at,
            None => None,
        };
        Some(Credential {
            token: token.clone(),
            expiry: exp.and_then(|e| Utc.timestamp_opt(e, 0).single()),
        })
    }
}

impl Credential {
    /// Usable when it expires more than `margin` after `now`. A token without a known expiry
    /// is not reused: we cannot tell kubectl when to come back, so we refresh instead.
    pub fn is_fresh(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        matches!(self.expiry, Some(exp) if now + margin < exp)
    }
}

/// Where entries live (`--token-cache-storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Disk,
    /// The OS keyring, with the disk as the fallback for entries it refuses.
    Keyring,
    /// Nothing is kept: every call refreshes or logs in.
    None,
}

/// Where the token cache lives and how `commands::get_token::obtain` uses it.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub dir: PathBuf,
    pub storage: Storage,
    /// The longest wait for another process holding the key's lock.
    pub lock_timeout: Duration,
    /// A cached token expiring sooner than this is refreshed.
    pub refresh_margin: chrono::Duration,
    /// `--force-refresh`: never answer from the cache.
    pub force_refresh: bool,
}

impl CachePolicy {
    /// The expiry rule of a cache hit: the cached credential is handed to kubectl while it
    /// expires later than the refresh margin and no refresh is forced (kubelogin #754: a token
    /// used up to its last second fails on its way to kube-apiserver). `get-token` and the
    /// `kubectl-oidc_login` shim both decide with this.
    pub fn serves(&self, credential: &Credential, now: DateTime<Utc>) -> bool {
        !self.force_refresh && credential.is_fresh(now, self.refresh_margin)
    }
}

/// Reads and writes entries by hex key.
pub trait TokenStore {
    fn load(&self, key: &str) -> Result<Option<CacheEntry>>;
    fn save(&self, key: &str, entry: &CacheEntry) -> Result<()>;
    fn delete(&self, key: &str) -> Result<()>;
}

/// `--token-cache-storage=none`.
pub struct NoStore;
impl TokenStore for NoStore {
    fn load(&self, _: &str) -> Result<Option<CacheEntry>> {
        Ok(None)
    }
    fn save(&self, _: &str, _: &CacheEntry) -> Result<()> {
        Ok(())
    }
    fn delete(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

/// The storage chosen by `--token-cache-storage`.
pub fn store(deps: &Deps, storage: Storage, dir: &Path) -> Box<dyn TokenStore> {
    match storage {
        Storage::Disk => Box::new(disk::DiskStore::new(dir.to_path_buf())),
        Storage::Keyring => Box::new(keyring::KeyringStore::new(
            deps,
            disk::DiskStore::new(dir.to_path_buf()),
        )),
        Storage::None => Box::new(NoStore),
    }
}

/// `--token-cache-dir`, else `$KUBECACHEDIR/oidc-login`, else `~/.kube/cache/oidc-login`.
pub fn cache_dir(deps: &Deps, flag: Option<&Path>) -> PathBuf {
    cache_dir_in(&deps.env, flag)
}

/// [`cache_dir`] from the environment alone (the `kubectl-oidc_login` shim has no [`Deps`]).
pub fn cache_dir_in(env: &Environment, flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if let Some(dir) = &env.kube_cache_dir {
        return dir.join("oidc-login");
    }
    env.home
        .clone()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kube")
        .join("cache")
        .join("oidc-login")
}

/// Cache keys present in `dir`: file names of 64 hex digits, with or without the `.lock` or
/// `.backoff` suffix (a keyring login leaves its lock file on disk, which is how its keyring
/// entry is found again).
pub fn keys_in(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("").to_string();
            (stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit())).then_some(stem)
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub fn lock_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.lock"))
}

/// Login back-off, kept next to the cache in `<key>.backoff`.
///
/// An IDE that runs kubectl in a loop while its user is away would open a browser tab on every
/// call (kubelogin #904, #1330). After a browser or device login that failed or timed out, a
/// non-interactive call does not start another one until the back-off has passed: 30 s after
/// the first failure, doubling per failure up to 15 min. A successful login removes the file;
/// an interactive call (a person at a terminal) is never held back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub last_failure: i64,
}

const BACKOFF_BASE_SECS: i64 = 30;
const BACKOFF_MAX_SECS: i64 = 15 * 60;

impl Backoff {
    pub fn path(dir: &Path, key: &str) -> PathBuf {
        dir.join(format!("{key}.backoff"))
    }

    pub fn load(dir: &Path, key: &str) -> Backoff {
        std::fs::read(Self::path(dir, key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// When the next non-interactive login may start, if it is held back at all.
    pub fn until(&self) -> Option<DateTime<Utc>> {
        if self.failures == 0 {
            return None;
        }
        let shift = self.failures.saturating_sub(1).min(10);
        let wait = (BACKOFF_BASE_SECS << shift).min(BACKOFF_MAX_SECS);
        Utc.timestamp_opt(self.last_failure.saturating_add(wait), 0)
            .single()
    }

    pub fn record_failure(dir: &Path, key: &str, now: DateTime<Utc>) -> Result<()> {
        let mut b = Self::load(dir, key);
        b.failures = b.failures.saturating_add(1);
        b.last_failure = now.timestamp();
        let json = serde_json::to_vec(&b).unwrap_or_default();
        disk::write_atomic(&Self::path(dir, key), &json)
    }

    pub fn clear(dir: &Path, key: &str) {
        let _ = std::fs::remove_file(Self::path(dir, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_key() -> CacheKey {
        let mut k = CacheKey::new_v1();
        k.issuer = "https://idp.example/".into();
        k.client_id = "kubernetes".into();
        k.client_secret = "s3cr3t".into();
        k.extra_scopes = vec!["profile".into(), "email".into()];
        k.pkce_method = "auto".into();
        k.request_headers.insert("X-B".into(), "2".into());
        k.request_headers.insert("X-A".into(), "1".into());
        k.auth_request_extra_params
            .insert("prompt".into(), "login".into());
        k.auth_request_extra_params
            .insert("audience".into(), "x".into());
        k
    }

    /// Pins the encoding: if this changes, every user's cache is silently invalidated, so
    /// bump `KEY_VERSION` on purpose instead.
    #[test]
    fn golden_cache_key() {
        assert_eq!(
            sample_key().hex(),
            "eae32b72a1792880ca5c1cd52361ff0be69898b3c9419a76cfc84a171b878534"
        );
    }

    #[test]
    fn key_is_independent_of_insertion_and_scope_order() {
        let a = sample_key();
        let mut b = CacheKey::new_v1();
        b.auth_request_extra_params
            .insert("audience".into(), "x".into());
        b.auth_request_extra_params
            .insert("prompt".into(), "login".into());
        b.request_headers.insert("X-A".into(), "1".into());
        b.request_headers.insert("X-B".into(), "2".into());
        b.issuer = a.issuer.clone();
        b.client_id = a.client_id.clone();
        b.client_secret = a.client_secret.clone();
        b.extra_scopes = vec!["email".into(), "profile".into(), "email".into()];
        b.pkce_method = a.pkce_method.clone();
        assert_eq!(a.hex(), b.hex());
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = sample_key().hex();
        let variants: Vec<fn(&mut CacheKey)> = vec![
            |k| k.issuer.push('x'),
            |k| k.client_id.push('x'),
            |k| k.client_secret.push('x'),
            |k| k.extra_scopes.push("groups".into()),
            |k| k.redirect_url.push('x'),
            |k| k.pkce_method = "S256".into(),
            |k| k.use_access_token = true,
            |k| {
                k.request_headers.insert("X-C".into(), "3".into());
            },
            |k| k.ca_files.push("/ca.pem".into()),
            |k| k.ca_data.push("Zm9v".into()),
            |k| k.insecure_skip_tls_verify = true,
            |k| k.username.push('x'),
            |k| {
                k.auth_request_extra_params.insert("a".into(), "b".into());
            },
            |k| k.name = "work".into(),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut k = sample_key();
            change(&mut k);
            assert_ne!(k.hex(), base, "field {i} does not change the key");
        }
    }

    #[test]
    fn freshness_respects_the_margin() {
        let exp = Utc.timestamp_opt(1_000_000, 0).unwrap();
        let c = Credential {
            token: Secret::new("t"),
            expiry: Some(exp),
        };
        let margin = chrono::Duration::seconds(60);
        assert!(c.is_fresh(exp - chrono::Duration::seconds(61), margin));
        assert!(!c.is_fresh(exp - chrono::Duration::seconds(60), margin));
        let none = Credential {
            token: Secret::new("t"),
            expiry: None,
        };
        assert!(!none.is_fresh(exp, margin));
    }

    #[test]
    fn opaque_access_token_uses_stored_expiry() {
        let e = CacheEntry {
            access_token: Secret::new("opaque"),
            access_token_expires_at: Some(2_000_000_000),
            ..Default::default()
        };
        let c = e.credential(true).unwrap();
        assert_eq!(c.expiry.unwrap().timestamp(), 2_000_000_000);
        assert!(e.credential(false).is_none());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = |failures| Backoff {
            failures,
            last_failure: 1000,
        };
        assert_eq!(b(0).until(), None);
        assert_eq!(b(1).until().unwrap().timestamp(), 1030);
        assert_eq!(b(2).until().unwrap().timestamp(), 1060);
        assert_eq!(b(30).until().unwrap().timestamp(), 1000 + 900);
    }
}
