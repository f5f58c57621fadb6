//! `clean`: delete the token cache (directory, lock files, keyring entries). With `--revoke`
//! and the provider flags, first revoke the cached refresh token (RFC 7009), so logging out
//! also ends the session at the provider (kubelogin #1665).

use std::path::Path;

use crate::cli::CleanArgs;
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::token_cache::disk::DiskStore;
use crate::token_cache::{self, keyring, Storage, TokenStore};

pub fn run(deps: &Deps, args: &CleanArgs) -> Result<String> {
    let dir = token_cache::cache_dir(deps, args.cache.token_cache_dir.as_deref());
    let storage: Storage = args.cache.token_cache_storage.into();
    let mut keys = keys_in(&dir);
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

/// Cache keys present in `dir`: file names of 64 hex digits, with or without the `.lock` or
/// `.backoff` suffix (a keyring login leaves its lock file on disk, which is how its keyring
/// entry is found again).
fn keys_in(dir: &Path) -> Vec<String> {
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
