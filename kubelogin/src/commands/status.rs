//! `status`: what the token cache holds, one entry per login and storage (the disk cache and
//! the OS keyring), and never a token.
//!
//! Entries are found by their key in the cache directory: a disk entry is the file `<key>`; a
//! keyring entry has no file of its own, but its login left `<key>.lock` there (the lock is
//! taken before every read or write), which is how the keyring item
//! `kubelogin/tokencache/<key>` is found again (the keyring crate cannot list items).
//!
//! Who the entry is for comes from the [`Origin`] recorded by the login, or, for entries written
//! before it was recorded (and by kubelogin), from the ID token's `iss` and `aud` claims. The
//! subject and email come from the ID token's payload, decoded without verifying the signature
//! (the token was verified when it was received, and nothing here trusts it): the output says
//! so.

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::cli::{OutputFormat, StatusArgs};
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::printable::printable;
use crate::token_cache::disk::DiskStore;
use crate::token_cache::keyring::KeyringStore;
use crate::token_cache::{self, CacheEntry, Origin};

/// Largest cache file read. An entry is a few KB (tens with many groups); anything larger is
/// not ours and is skipped rather than read into memory.
pub const MAX_ENTRY_BYTES: u64 = 1024 * 1024;

pub fn run(deps: &Deps, args: &StatusArgs) -> Result<String> {
    let dir = token_cache::cache_dir(deps, args.token_cache_dir.as_deref());
    let found = list(deps, &dir, Keyring::Probe)?;
    let now = deps.clock.now();
    let report = Report {
        cache_dir: dir.display().to_string(),
        entries: found.iter().map(|f| f.status(now)).collect(),
    };
    match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .map_err(|e| Error::invalid("cannot write the status as JSON", e)),
        OutputFormat::Text => Ok(report.text()),
    }
}

/// Where an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    Disk,
    Keyring,
}

/// Which keys [`list`] looks up in the keyring, and what a keyring that cannot be read means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyring {
    /// Only keys without a disk file (a keyring login leaves just its lock file), so a user of
    /// the disk cache never meets the keyring (no unlock prompt, no warning on a machine
    /// without one); if it cannot be read, say so on stderr and list the disk only.
    Probe,
    /// Every key, and fail if the keyring cannot be read (`--token-cache-storage=keyring`:
    /// the user said the tokens are there).
    Required,
}

/// One cache entry in one storage.
#[derive(Debug, Clone)]
pub struct Found {
    pub place: Place,
    pub key: String,
    pub entry: CacheEntry,
}

/// Every entry in `dir` and in the keyring, disk first, in key order.
pub fn list(deps: &Deps, dir: &Path, keyring: Keyring) -> Result<Vec<Found>> {
    let keys = token_cache::keys_in(dir);
    let mut found = Vec::new();
    for key in &keys {
        if let Some(entry) = read_file(&dir.join(key)) {
            found.push(Found {
                place: Place::Disk,
                key: key.clone(),
                entry,
            });
        }
    }
    let store = KeyringStore::new(deps, DiskStore::new(dir.to_path_buf()));
    let on_disk = found.iter().map(|f| f.key.clone()).collect::<Vec<_>>();
    for key in &keys {
        if keyring == Keyring::Probe && on_disk.contains(key) {
            continue;
        }
        match store.load_own(key) {
            Ok(Some(Some(entry))) => found.push(Found {
                place: Place::Keyring,
                key: key.clone(),
                entry,
            }),
            Ok(_) => {}
            Err(e) if keyring == Keyring::Required => return Err(e),
            Err(e) => {
                deps.say(&format!(
                    "warning: the keyring could not be read ({e}); showing the disk cache only"
                ));
                break;
            }
        }
    }
    Ok(found)
}

/// A cache file, when it is one of ours: at most [`MAX_ENTRY_BYTES`] of JSON.
fn read_file(path: &Path) -> Option<CacheEntry> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// The claims `status` shows, read from the ID token without verification.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UnverifiedClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `aud` (one string or several), for telling the client of an entry without an origin.
    #[serde(skip)]
    pub aud: Vec<String>,
    #[serde(skip)]
    pub exp: Option<i64>,
}

impl Found {
    /// The ID token's claims that name its holder; empty when there is no ID token or it is
    /// not a JWT.
    pub fn claims(&self) -> UnverifiedClaims {
        let Ok(v) = shared::jwt::decode_claims_unverified::<serde_json::Value>(
            self.entry.id_token.expose(),
        ) else {
            return UnverifiedClaims::default();
        };
        let text = |name: &str| v.get(name).and_then(|c| c.as_str()).map(printable);
        let aud = match v.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        UnverifiedClaims {
            iss: text("iss"),
            sub: text("sub"),
            email: text("email"),
            aud,
            exp: v.get("exp").and_then(|e| e.as_i64()),
        }
    }

    /// Issuer, client and cache name: recorded by the login, else from the ID token's claims
    /// (the client when `aud` names exactly one), else unknown.
    pub fn origin(&self) -> (Option<Origin>, Source) {
        if let Some(o) = &self.entry.origin {
            return (Some(Origin::clone(o)), Source::Recorded);
        }
        let c = self.claims();
        match c.iss {
            Some(issuer) => {
                let client_id = match c.aud.as_slice() {
                    [one] => one.clone(),
                    _ => String::new(),
                };
                (
                    Some(Origin {
                        issuer,
                        client_id,
                        token_cache_name: String::new(),
                    }),
                    Source::IdToken,
                )
            }
            None => (None, Source::Unknown),
        }
    }

    fn status(&self, now: DateTime<Utc>) -> EntryStatus {
        let (origin, source) = self.origin();
        let claims = self.claims();
        let id_token = (!self.entry.id_token.is_empty()).then(|| {
            let expires = claims.exp.and_then(|e| Utc.timestamp_opt(e, 0).single());
            IdTokenStatus {
                expires_at: expires.map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)),
                expired: expires.map(|e| e <= now),
                claims_unverified: claims.clone(),
            }
        });
        let opt = |s: &str| (!s.is_empty()).then(|| printable(s));
        EntryStatus {
            storage: self.place,
            key: self.key.clone(),
            issuer: origin.as_ref().and_then(|o| opt(&o.issuer)),
            client_id: origin.as_ref().and_then(|o| opt(&o.client_id)),
            token_cache_name: origin.as_ref().and_then(|o| opt(&o.token_cache_name)),
            origin_source: source,
            id_token,
            refresh_token: !self.entry.refresh_token.is_empty(),
            access_token: !self.entry.access_token.is_empty(),
        }
    }
}

/// Where an entry's issuer and client were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Stored with the entry by the login.
    Recorded,
    /// Not stored (an older entry): the ID token's `iss` and `aud`, unverified.
    IdToken,
    Unknown,
}

/// `status -o json`.
#[derive(Debug, Serialize)]
struct Report {
    cache_dir: String,
    entries: Vec<EntryStatus>,
}

#[derive(Debug, Serialize)]
struct EntryStatus {
    storage: Place,
    /// The cache key: the file name, and the keyring account's suffix.
    key: String,
    issuer: Option<String>,
    client_id: Option<String>,
    token_cache_name: Option<String>,
    origin_source: Source,
    id_token: Option<IdTokenStatus>,
    /// Whether a refresh token is held (never the token itself).
    refresh_token: bool,
    access_token: bool,
}

#[derive(Debug, Serialize)]
struct IdTokenStatus {
    expires_at: Option<String>,
    expired: Option<bool>,
    /// Read from the payload without verifying the signature.
    claims_unverified: UnverifiedClaims,
}

impl Report {
    fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.entries.is_empty() {
            let _ = writeln!(out, "No cached logins in {}", self.cache_dir);
            return out;
        }
        let _ = writeln!(
            out,
            "{} cached login(s) in {} (subject and email are read from the ID token without verifying it)",
            self.entries.len(),
            self.cache_dir
        );
        let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
        for e in &self.entries {
            let place = match e.storage {
                Place::Disk => "disk",
                Place::Keyring => "keyring",
            };
            let from_token = match e.origin_source {
                Source::IdToken => " (from the ID token: not recorded by this older entry)",
                _ => "",
            };
            let _ = writeln!(out, "\n{place} {}", e.key);
            let _ = writeln!(
                out,
                "  issuer:        {}{from_token}",
                or(&e.issuer, "unknown")
            );
            let _ = writeln!(
                out,
                "  client:        {}{from_token}",
                or(&e.client_id, "unknown")
            );
            let name = match e.origin_source {
                Source::Recorded => or(&e.token_cache_name, "(none)"),
                _ => "unknown".into(),
            };
            let _ = writeln!(out, "  account name:  {name}");
            match &e.id_token {
                Some(t) => {
                    let c = &t.claims_unverified;
                    let _ = writeln!(out, "  subject:       {}", or(&c.sub, "-"));
                    let _ = writeln!(out, "  email:         {}", or(&c.email, "-"));
                    let exp = match (&t.expires_at, t.expired) {
                        (Some(at), Some(true)) => format!("expired {at}"),
                        (Some(at), _) => format!("expires {at}"),
                        _ => "no expiry (not a JWT)".into(),
                    };
                    let _ = writeln!(out, "  ID token:      {exp}");
                }
                None => {
                    let _ = writeln!(out, "  ID token:      none");
                }
            }
            let held = |b: bool| if b { "held" } else { "none" };
            let _ = writeln!(out, "  refresh token: {}", held(e.refresh_token));
            if e.access_token {
                let _ = writeln!(out, "  access token:  held");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::testing::FakeDeps;
    use crate::token_cache::TokenStore;

    fn jwt(claims: serde_json::Value) -> String {
        let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
        format!(
            "{}.{}.c2ln",
            b(serde_json::json!({"alg":"RS256"})),
            b(claims)
        )
    }

    /// An entry written before the origin was recorded (or by kubelogin) still lists, its
    /// issuer and client read from the token and labelled so.
    #[test]
    fn entry_without_origin_shows_the_token_claims() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let key = "a".repeat(64);
        std::fs::write(
            tmp.path().join(&key),
            serde_json::json!({
                "id_token": jwt(serde_json::json!({
                    "iss": "https://old.example", "aud": "kube", "sub": "s1",
                    "email": "e\u{1b}[2J@x", "exp": 1
                })),
            })
            .to_string(),
        )
        .unwrap();
        let found = list(&fake.deps, tmp.path(), Keyring::Probe).unwrap();
        assert_eq!(found.len(), 1);
        let (origin, source) = found[0].origin();
        assert_eq!(source, Source::IdToken);
        let origin = origin.unwrap();
        assert_eq!(
            (origin.issuer.as_str(), origin.client_id.as_str()),
            ("https://old.example", "kube")
        );
        let text = Report {
            cache_dir: "d".into(),
            entries: vec![found[0].status(fake.deps.clock.now())],
        }
        .text();
        assert!(text.contains("issuer:        https://old.example (from the ID token"));
        assert!(text.contains("ID token:      expired 1970-01-01T00:00:01Z"));
        assert!(text.contains("refresh token: none"));
        // A control sequence in a claim never reaches the terminal.
        assert!(text.contains("email:         e[2J@x"), "{text}");
    }

    /// A keyring that cannot be reached (no D-Bus session, a locked store).
    struct Unreachable;
    impl crate::deps::Keyring for Unreachable {
        fn get(&self, _: &str, _: &str) -> Result<Option<String>> {
            Err(Error::keyring("no secret service"))
        }
        fn set(&self, _: &str, _: &str, _: &str) -> Result<()> {
            Err(Error::keyring("no secret service"))
        }
        fn delete(&self, _: &str, _: &str) -> Result<()> {
            Err(Error::keyring("no secret service"))
        }
    }

    /// A disk-cache user never meets the keyring; a lock without a file (a keyring login) is
    /// looked up, and an unreachable keyring is then a warning, or an error when required.
    #[test]
    fn keyring_is_read_only_for_keys_without_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = FakeDeps::new();
        fake.deps.keyring = std::sync::Arc::new(Unreachable);
        let entry = CacheEntry {
            id_token: Secret::new(jwt(serde_json::json!({"exp": 4102444800u64}))),
            ..Default::default()
        };
        let key = "b".repeat(64);
        DiskStore::new(tmp.path().into())
            .save(&key, &entry)
            .unwrap();
        std::fs::write(tmp.path().join(format!("{key}.lock")), "").unwrap();
        assert_eq!(
            list(&fake.deps, tmp.path(), Keyring::Probe).unwrap().len(),
            1
        );
        assert_eq!(fake.console_text(), "");

        std::fs::write(tmp.path().join(format!("{}.lock", "c".repeat(64))), "").unwrap();
        assert_eq!(
            list(&fake.deps, tmp.path(), Keyring::Probe).unwrap().len(),
            1
        );
        assert!(fake
            .console_text()
            .contains("warning: the keyring could not be read"));
        let err = list(&fake.deps, tmp.path(), Keyring::Required).unwrap_err();
        assert!(err.to_string().contains("no secret service"), "{err}");
    }

    #[test]
    fn oversized_and_foreign_files_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let store = DiskStore::new(tmp.path().into());
        let entry = CacheEntry {
            id_token: Secret::new(jwt(serde_json::json!({"exp": 4102444800u64}))),
            ..Default::default()
        };
        store.save(&"b".repeat(64), &entry).unwrap();
        std::fs::write(
            tmp.path().join("c".repeat(64)),
            vec![b' '; MAX_ENTRY_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::write(tmp.path().join("not-a-key"), "{}").unwrap();
        std::fs::create_dir(tmp.path().join("d".repeat(64))).unwrap();
        let found = list(&fake.deps, tmp.path(), Keyring::Probe).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "b".repeat(64));
    }
}
