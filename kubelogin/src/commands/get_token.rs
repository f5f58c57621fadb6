//! `get-token`: the credential plugin kubectl runs before every command.
//!
//! Hot path (a valid cached token): parse flags, take the lock, read one file, decode `exp`,
//! print. No HTTP client, no TLS roots, no threads. Only a miss goes on to refresh, then login.

use std::time::Duration;

use crate::auth::{self, opens_browser, Refresh};
use crate::cli::GetTokenArgs;
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::exec_credential::{parse_exec_info, render};
use crate::provider::Provider;
use crate::token_cache::lock::CacheLock;
use crate::token_cache::{self, Backoff, CacheEntry};

/// Returns the ExecCredential JSON for stdout.
pub fn run(deps: &Deps, args: &GetTokenArgs) -> Result<String> {
    // Bad input fails before anything is touched.
    let info = parse_exec_info(deps.env.exec_info.as_deref())?;
    let interactive = super::interactive(deps, info.interactive);
    let r = super::resolve(&args.provider, Some(&args.cache), interactive)?;
    let key = r.key.hex();
    let dir = token_cache::cache_dir(deps, args.cache.token_cache_dir.as_deref());
    let store = token_cache::store(deps, args.cache.token_cache_storage, &dir);
    let use_access_token = r.login.use_access_token;
    let output = |entry: &CacheEntry| -> Result<String> {
        let cred = entry
            .credential(use_access_token)
            .ok_or_else(|| Error::Login("the provider gave no token to hand to kubectl".into()))?;
        Ok(render(info.api_version, cred.token.expose(), cred.expiry))
    };

    // Held until this function returns: read → refresh/login → write happen under it.
    let _lock = CacheLock::acquire(
        deps,
        &token_cache::lock_path(&dir, &key),
        Duration::from_secs(args.cache.token_cache_lock_timeout_sec),
    )?;
    let cached = store.load(&key)?;
    let margin = chrono::Duration::seconds(
        i64::try_from(args.cache.token_refresh_margin_sec).unwrap_or(i64::MAX / 1000),
    );
    if let Some(entry) = &cached {
        match entry.credential(use_access_token) {
            Some(cred) if !args.force_refresh && cred.is_fresh(deps.clock.now(), margin) => {
                deps.log(1, || {
                    let exp = cred.expiry.map(|e| e.to_rfc3339()).unwrap_or_default();
                    format!("using the cached token (expires {exp})")
                });
                return output(entry);
            }
            _ => deps.log(1, || {
                "the cached token is expired or about to expire".into()
            }),
        }
    }

    let provider = Provider::discover(deps, &r.provider)?;
    if let Some(entry) = cached.as_ref().filter(|e| !e.refresh_token.is_empty()) {
        match auth::refresh(deps, &provider, &entry.refresh_token, use_access_token)? {
            Refresh::Done(fresh) => {
                store.save(&key, &fresh)?;
                return output(&fresh);
            }
            Refresh::NeedsLogin(reason) => {
                // Said at every verbosity: when the login that follows cannot finish (no
                // browser, a disabled account), this is the line that explains why.
                deps.say(&format!(
                    "the refresh token was not accepted ({reason}); logging in again"
                ));
            }
        }
    }

    let browser = opens_browser(r.login.grant);
    if browser && !interactive {
        if let Some(until) = Backoff::load(&dir, &key).until() {
            if deps.clock.now() < until {
                return Err(Error::Login(format!(
                    "the last login for this token failed; not starting another one before {} because this call is not interactive (an IDE or script runs kubectl in a loop). Run kubectl in a terminal, or wait",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )));
            }
        }
    }
    match auth::login(deps, &provider, &r.login) {
        Ok(entry) => {
            Backoff::clear(&dir, &key);
            store.save(&key, &entry)?;
            output(&entry)
        }
        Err(e) => {
            // Only a login that reached the user and then failed (timed out, denied, refused,
            // bad token) counts; a flag error or an unreachable provider opened no browser.
            let reached_user =
                matches!(e, Error::Login(_) | Error::OAuth { .. } | Error::IdToken(_));
            if browser && reached_user {
                if let Err(b) = Backoff::record_failure(&dir, &key, deps.clock.now()) {
                    deps.log(1, || format!("could not record the login back-off: {b}"));
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::testing::{FakeDeps, ISSUER};
    use clap::Parser;

    fn args(dir: &std::path::Path, extra: &[&str]) -> GetTokenArgs {
        let mut a = vec![
            "kubectl-oidc_login".to_string(),
            "get-token".into(),
            format!("--oidc-issuer-url={ISSUER}"),
            "--oidc-client-id=kubernetes".into(),
            format!("--token-cache-dir={}", dir.display()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        match Cli::try_parse_from(a).unwrap().command {
            Some(Command::GetToken(g)) => g,
            _ => panic!("not get-token"),
        }
    }

    fn jwt(exp: i64) -> String {
        let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
        format!(
            "{}.{}.sig",
            b(serde_json::json!({"alg":"RS256"})),
            b(serde_json::json!({"exp": exp}))
        )
    }

    fn plant(
        fake: &FakeDeps,
        a: &GetTokenArgs,
        dir: &std::path::Path,
        entry: CacheEntry,
    ) -> String {
        let key = super::super::resolve(&a.provider, Some(&a.cache), false)
            .unwrap()
            .key
            .hex();
        token_cache::store(&fake.deps, a.cache.token_cache_storage, dir)
            .save(&key, &entry)
            .unwrap();
        key
    }

    #[test]
    fn cache_hit_builds_no_http_client() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        let a = args(tmp.path(), &[]);
        let exp = fake.deps.clock.now().timestamp() + 3600;
        let token = jwt(exp);
        plant(
            &fake,
            &a,
            tmp.path(),
            CacheEntry {
                id_token: crate::secret::Secret::new(token.clone()),
                ..Default::default()
            },
        );
        let out = run(&fake.deps, &a).unwrap();
        assert!(out.contains(&token));
        assert_eq!(*fake.http.builds.lock().unwrap(), 0);
    }

    #[test]
    fn expiring_token_without_refresh_token_goes_to_login_and_backoff_holds_non_interactive() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = FakeDeps::new();
        fake.discovery();
        fake.deps.env.exec_info = Some(
            r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#
                .into(),
        );
        let a = args(tmp.path(), &[]);
        // Expires in 30 s: inside the default 60 s margin.
        let exp = fake.deps.clock.now().timestamp() + 30;
        let key = plant(
            &fake,
            &a,
            tmp.path(),
            CacheEntry {
                id_token: crate::secret::Secret::new(jwt(exp)),
                ..Default::default()
            },
        );
        Backoff::record_failure(tmp.path(), &key, fake.deps.clock.now()).unwrap();
        let err = run(&fake.deps, &a).unwrap_err();
        assert!(err.to_string().contains("not interactive"), "{err}");
        assert!(fake.browser.opened().is_empty());
    }
}
