//! `clean`: delete the token cache (directory, lock files, keyring entries). With `--revoke`
//! and the provider flags, first revoke the cached refresh token (RFC 7009), so logging out
//! also ends the session at the provider (kubelogin #1665).
//!
//! `clean --issuer URL [--client-id ID] [--token-cache-name N]` deletes only the entries of
//! that login, in both storages, as `status` lists them (kubelogin #29, #659: drop one account
//! without logging out of every cluster).

use std::path::Path;

use crate::cli::CleanArgs;
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::token_cache::disk::DiskStore;
use crate::token_cache::lock::CacheLock;
use crate::token_cache::{self, keyring, Backoff, Storage, TokenStore};

use super::status::{self, Found, Place};

pub fn run(deps: &Deps, args: &CleanArgs) -> Result<String> {
    let dir = token_cache::cache_dir(deps, args.cache.token_cache_dir.as_deref());
    let storage: Storage = args.cache.token_cache_storage.into();
    if let Some(issuer) = &args.issuer {
        return clean_selected(deps, args, &dir, issuer, storage);
    }
    let mut keys = token_cache::keys_in(&dir);
    if args.revoke || args.provider.oidc_issuer_url.is_some() {
        let r = super::resolve(&args.provider, Some(&args.cache), false).map_err(|e| {
            if args.revoke {
                Error::invalid("--revoke needs the provider flags of the login", e)
            } else {
                e
            }
        })?;
        let key = r.key.hex();
        if args.revoke {
            let store = token_cache::store(deps, storage, &dir);
            match store.load(&key)? {
                Some(entry) if !entry.refresh_token.is_empty() => {
                    let provider = Provider::discover(deps, &r.provider)?;
                    provider.revoke(&entry.refresh_token, "refresh_token")?;
                    deps.say(&format!(
                        "Revoked the refresh token at {}",
                        r.provider.issuer
                    ));
                }
                _ => deps.say("No cached refresh token to revoke for these flags"),
            }
        }
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let in_keyring = keyring::KeyringStore::new(deps, DiskStore::new(dir.clone()));
    for key in &keys {
        let result = in_keyring.delete(key);
        match result {
            Ok(()) => {}
            // Only an error when the user said the tokens are in the keyring; otherwise a
            // machine without a keyring must still be able to clean its disk cache.
            Err(e) if storage == Storage::Keyring => return Err(e),
            Err(e) => deps.log(1, || format!("keyring not cleaned: {e}")),
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => deps.say(&format!("Deleted the token cache at {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            deps.say(&format!("No token cache at {}", dir.display()))
        }
        Err(source) => return Err(Error::Cache { path: dir, source }),
    }
    if storage == Storage::Keyring || !keys.is_empty() {
        deps.log(1, || format!("deleted {} keyring entries", keys.len()));
    }
    Ok(String::new())
}

/// Which entries `clean --issuer` deletes.
struct Selector<'a> {
    issuer: &'a str,
    client_id: Option<&'a str>,
    /// Empty: every name.
    name: &'a str,
}

impl Selector<'_> {
    /// Compared with the origin `status` shows: recorded by the login, else the ID token's
    /// `iss` and `aud` (an older entry, which records no cache name: it matches only when no
    /// name is asked for).
    fn matches(&self, f: &Found) -> bool {
        let (Some(origin), _) = f.origin() else {
            return false;
        };
        let client = match self.client_id {
            None => true,
            Some(c) if origin.client_id.is_empty() => f.claims().aud.iter().any(|a| a == c),
            Some(c) => origin.client_id == c,
        };
        origin.issuer == self.issuer
            && client
            && (self.name.is_empty() || origin.token_cache_name == self.name)
    }
}

/// `clean --issuer`: revokes (with `--revoke`) then deletes the matching entries, each under
/// its key's lock so a get-token writing the same key is not interleaved. A failed revocation
/// stops before anything is deleted.
fn clean_selected(
    deps: &Deps,
    args: &CleanArgs,
    dir: &Path,
    issuer: &str,
    storage: Storage,
) -> Result<String> {
    if issuer.trim().is_empty() || issuer.len() > 2048 {
        return Err(Error::usage(
            "--issuer: expected the issuer URL of the logins to delete (see `status`)",
        ));
    }
    let selector = Selector {
        issuer,
        client_id: args.client_id.as_deref(),
        name: &args.cache.token_cache_name,
    };
    let need = if storage == Storage::Keyring {
        status::Keyring::Required
    } else {
        status::Keyring::Probe
    };
    let matched: Vec<Found> = status::list(deps, dir, need)?
        .into_iter()
        .filter(|f| selector.matches(f))
        .collect();
    if matched.is_empty() {
        deps.say(&format!(
            "No cached login matches --issuer {issuer}{}; `kubectl oidc-login status` lists them",
            args.client_id
                .as_deref()
                .map(|c| format!(" --client-id {c}"))
                .unwrap_or_default()
        ));
        return Ok(String::new());
    }
    if args.revoke {
        for f in &matched {
            revoke(deps, args, f)?;
        }
    }
    let in_keyring = keyring::KeyringStore::new(deps, DiskStore::new(dir.to_path_buf()));
    let on_disk = DiskStore::new(dir.to_path_buf());
    let timeout = std::time::Duration::from_secs(args.cache.token_cache_lock_timeout_sec);
    for f in &matched {
        let _lock = CacheLock::acquire(deps, &token_cache::lock_path(dir, &f.key), timeout)?;
        match f.place {
            Place::Disk => on_disk.delete(&f.key)?,
            Place::Keyring => in_keyring.delete_own(&f.key)?,
        }
        Backoff::clear(dir, &f.key);
    }
    let count = |p: Place| matched.iter().filter(|f| f.place == p).count();
    deps.say(&format!(
        "Deleted {} cached login(s) of {issuer} ({} on disk, {} in the keyring)",
        matched.len(),
        count(Place::Disk),
        count(Place::Keyring)
    ));
    Ok(String::new())
}

/// Revokes the refresh token of one entry at its issuer, with the provider flags given (client
/// secret, CA) for that entry's issuer and client.
fn revoke(deps: &Deps, args: &CleanArgs, f: &Found) -> Result<()> {
    if f.entry.refresh_token.is_empty() {
        return Ok(());
    }
    let (Some(origin), _) = f.origin() else {
        return Ok(());
    };
    let client_id = match (origin.client_id.is_empty(), &args.client_id) {
        (false, _) => origin.client_id.clone(),
        (true, Some(c)) => c.clone(),
        (true, None) => {
            return Err(Error::usage(format!(
                "--revoke: the entry {} does not record its client; add --client-id",
                f.key
            )))
        }
    };
    let mut provider_args = args.provider.clone();
    provider_args.oidc_issuer_url = Some(origin.issuer.clone());
    provider_args.oidc_client_id = Some(client_id);
    let r = super::resolve(&provider_args, Some(&args.cache), false)?;
    let provider = Provider::discover(deps, &r.provider)?;
    provider.revoke(&f.entry.refresh_token, "refresh_token")?;
    deps.say(&format!(
        "Revoked the refresh token of {} at {}",
        f.key, origin.issuer
    ));
    Ok(())
}
