//! The cache hit of `get-token` on its own, for the `kubectl-oidc_login` shim (`src/shim.rs`).
//!
//! kubectl runs the plugin before every command, and on a cache hit the process start is most
//! of its time: the relocations and pages of a binary that also carries the flows, clap, TLS and
//! the CEL interpreter (README, Performance). The shim links only this module and what it
//! calls, answers when [`answer`] returns the ExecCredential, and hands everything else to the
//! full binary (`kubelogin-rs`) unchanged.
//!
//! [`answer`] is the hot path of `commands::get_token` step by step, with the same functions:
//! the lean parse ([`crate::lean`]), `resolve` (the cache key), `cache_policy_in` (the
//! directory), the lock, the disk entry, [`CachePolicy::serves`] (the expiry rule) and
//! `render` (the apiVersion kubectl asked for). It answers `None` wherever `get-token` would do
//! anything but print a cached token, and wherever it would have to wait:
//! - the lean parser declines the command line (another command, `-v`, `--help`, a
//!   `KUBELOGIN_*` variable, anything unusual);
//! - `KUBERNETES_EXEC_INFO` is not one `get-token` accepts, or the flags do not resolve;
//! - the storage is not the disk (the keyring needs D-Bus), or `--force-refresh`;
//! - the cache directory is not private, the lock is held by another process (it is
//!   refreshing or logging in: the full binary waits for it), no entry, an unreadable one;
//! - the token is expired, expires within the refresh margin, or has no known expiry.
//!
//! So whenever this answers, the full binary would have printed the same bytes (the tests run
//! both on the same cache and compare).

use std::ffi::OsString;

use chrono::{DateTime, Utc};

use crate::cli::Command;
use crate::deps::Environment;
use crate::exec_credential::{parse_exec_info, render};
use crate::token_cache::disk::DiskStore;
use crate::token_cache::lock::CacheLock;
use crate::token_cache::{self, Storage, TokenStore};

/// The ExecCredential for stdout when the command line is a `get-token` that a fresh cached
/// token answers; `None`: let the full binary run. `args` is the whole command line (program
/// name first), `env_names` the environment's variable names, `env` what `get-token` reads from
/// the environment, `now` the clock.
pub fn answer<E: IntoIterator<Item = OsString>>(
    args: &[OsString],
    env_names: E,
    env: &Environment,
    now: DateTime<Utc>,
) -> Option<String> {
    let cli = crate::lean::get_token(args, env_names)?;
    let Some(Command::GetToken(a)) = &cli.command else {
        return None;
    };
    let info = parse_exec_info(env.exec_info.as_deref()).ok()?;
    // `interactive` only says whether a login may prompt: it is not part of the key.
    let r = crate::commands::resolve(&a.provider, Some(&a.cache), false).ok()?;
    let cache = crate::commands::flags::cache_policy_in(env, &a.cache, a.force_refresh);
    if cache.storage != Storage::Disk || cache.force_refresh {
        return None;
    }
    let key = r.key.hex();
    // Held from the read to the output, as in `get_token::obtain`.
    let _lock = CacheLock::try_acquire(&token_cache::lock_path(&cache.dir, &key)).ok()??;
    let entry = DiskStore::new(cache.dir.clone()).load(&key).ok()??;
    let credential = entry.credential(r.login.use_access_token)?;
    if !cache.serves(&credential, now) {
        return None;
    }
    Some(render(
        info.api_version,
        credential.token.expose(),
        credential.expiry,
    ))
}
