//! `get-token`: the credential plugin kubectl runs before every command, and [`obtain`], the
//! cache → refresh → login sequence that `setup` and `doctor` use too.
//!
//! Hot path (a valid cached token): parse flags, take the lock, read one file, decode `exp`,
//! print. No HTTP client, no TLS roots, no threads. Only a miss goes on to refresh, then login.

use crate::auth::{self, opens_browser, Refresh};
use crate::cli::GetTokenArgs;
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::exec_credential::{parse_exec_info, render};
use crate::provider::Provider;
use crate::token_cache::lock::CacheLock;
use crate::token_cache::{self, Backoff, CacheEntry, CachePolicy, Credential, TokenStore};

use super::Resolved;

/// Returns the ExecCredential JSON for stdout.
pub fn run(deps: &Deps, args: &GetTokenArgs) -> Result<String> {
    // Bad input fails before anything is touched.
    let info = parse_exec_info(deps.env.exec_info.as_deref())?;
    let interactive = super::interactive(deps, info.interactive);
    let r = super::resolve(&args.provider, Some(&args.cache), interactive)?;
    let cache = super::flags::cache_policy(deps, &args.cache, args.force_refresh);
    let got = obtain(deps, &r, Some(&cache))?;
    Ok(render(
        info.api_version,
        got.credential.token.expose(),
        got.credential.expiry,
    ))
}

/// Where an obtained token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Refresh,
    Login,
}

/// A token for kubectl and what came with it.
#[derive(Debug)]
pub struct Obtained {
    /// Every token of the login: ID, access and refresh token.
    pub tokens: CacheEntry,
    /// The token kubectl gets (the ID token, or the access token with
    /// `--oidc-use-access-token`) and its expiry.
    pub credential: Credential,
    pub source: Source,
    /// The flow of the login that ran here (`auto` decided); `None` for a cached or refreshed
    /// token.
    pub grant: Option<auth::GrantType>,
}

impl Obtained {
    fn new(tokens: CacheEntry, source: Source, use_access_token: bool) -> Result<Obtained> {
        let credential = tokens
            .credential(use_access_token)
            .ok_or_else(|| Error::Login("the provider gave no token to hand to kubectl".into()))?;
        Ok(Obtained {
            tokens,
            credential,
            source,
            grant: None,
        })
    }

    /// The claims of the ID token, or of the access token when there is none, as JSON. Not
    /// verified again: the ID token was verified when it was received.
    pub fn claims(&self) -> std::result::Result<serde_json::Value, shared::jwt::JwtFormatError> {
        let token = if self.tokens.id_token.is_empty() {
            &self.tokens.access_token
        } else {
            &self.tokens.id_token
        };
        shared::jwt::decode_claims_unverified(token.expose())
    }
}

/// The token for kubectl: from the cache while it is fresh, else by a refresh, else by a login.
///
/// With a `cache`, the key's lock is held from the read to the write, so parallel calls make
/// one refresh or one login and the others find its token. Without one (`setup`), it logs in
/// and keeps nothing.
pub fn obtain(deps: &Deps, r: &Resolved, cache: Option<&CachePolicy>) -> Result<Obtained> {
    let use_access_token = r.login.use_access_token;
    let Some(cache) = cache else {
        let provider = Provider::discover(deps, &r.provider)?;
        let opts = auth::decide(deps, &provider, &r.login);
        let tokens = auth::login(deps, &provider, &opts)?;
        let mut got = Obtained::new(tokens, Source::Login, use_access_token)?;
        got.grant = Some(opts.grant);
        return Ok(got);
    };
    let key = r.key.hex();
    let store = token_cache::store(deps, cache.storage, &cache.dir);
    // Held until this function returns: read → refresh/login → write happen under it.
    let _lock = CacheLock::acquire(
        deps,
        &token_cache::lock_path(&cache.dir, &key),
        cache.lock_timeout,
    )?;
    let cached = match store.load(&key)? {
        Some(entry) => match fresh(deps, entry, cache, use_access_token) {
            Ok(hit) => return Ok(hit),
            Err(stale) => Some(stale),
        },
        None => None,
    };

    let provider = Provider::discover(deps, &r.provider)?;
    if let Some(entry) = cached.filter(|e| !e.refresh_token.is_empty()) {
        if let Some(refreshed) = refresh(deps, &provider, &entry, use_access_token)? {
            let refreshed = refreshed.with_origin(&r.key);
            store.save(&key, &refreshed)?;
            return Obtained::new(refreshed, Source::Refresh, use_access_token);
        }
    }
    login(deps, &provider, r, cache, &key, store.as_ref())
}

/// The cached entry as the answer while its token is fresh (expiring later than the margin)
/// and no refresh is forced; otherwise the entry back, for its refresh token.
fn fresh(
    deps: &Deps,
    entry: CacheEntry,
    cache: &CachePolicy,
    use_access_token: bool,
) -> std::result::Result<Obtained, CacheEntry> {
    match entry.credential(use_access_token) {
        Some(credential) if cache.serves(&credential, deps.clock.now()) => {
            deps.log(1, || {
                let exp = credential
                    .expiry
                    .map(|e| e.to_rfc3339())
                    .unwrap_or_default();
                format!("using the cached token (expires {exp})")
            });
            Ok(Obtained {
                tokens: entry,
                credential,
                source: Source::Cache,
                grant: None,
            })
        }
        _ => {
            deps.log(1, || {
                "the cached token is expired or about to expire".into()
            });
            Err(entry)
        }
    }
}

/// The refresh grant with the cached refresh token; `None` when the provider refused it and a
/// login must follow.
fn refresh(
    deps: &Deps,
    provider: &Provider,
    entry: &CacheEntry,
    use_access_token: bool,
) -> Result<Option<CacheEntry>> {
    match auth::refresh(deps, provider, &entry.refresh_token, use_access_token)? {
        Refresh::Done(fresh) => Ok(Some(fresh)),
        Refresh::NeedsLogin(reason) => {
            // Said at every verbosity: when the login that follows cannot finish (no
            // browser, a disabled account), this is the line that explains why.
            deps.say(&format!(
                "the refresh token was not accepted ({reason}); logging in again"
            ));
            Ok(None)
        }
    }
}

/// A new login, saved under `key`. A browser login is held back for a non-interactive caller
/// while the back-off of an earlier failed one lasts, and one that reached the user and failed
/// extends the back-off.
fn login(
    deps: &Deps,
    provider: &Provider,
    r: &Resolved,
    cache: &CachePolicy,
    key: &str,
    store: &dyn TokenStore,
) -> Result<Obtained> {
    let browser = opens_browser(r.login.grant);
    if browser && !r.login.interactive {
        held_back(deps, cache, key)?;
    }
    let opts = auth::decide(deps, provider, &r.login);
    match auth::login(deps, provider, &opts) {
        Ok(entry) => {
            Backoff::clear(&cache.dir, key);
            let entry = entry.with_origin(&r.key);
            store.save(key, &entry)?;
            let mut got = Obtained::new(entry, Source::Login, r.login.use_access_token)?;
            got.grant = Some(opts.grant);
            Ok(got)
        }
        Err(e) => {
            // Only a login that reached the user and then failed (timed out, denied, refused,
            // bad token) counts; a flag error or an unreachable provider opened no browser.
            let reached_user =
                matches!(e, Error::Login(_) | Error::OAuth { .. } | Error::IdToken(_));
            if browser && reached_user {
                if let Err(b) = Backoff::record_failure(&cache.dir, key, deps.clock.now()) {
                    deps.log(1, || format!("could not record the login back-off: {b}"));
                }
            }
            Err(e)
        }
    }
}

/// Refuses to start a browser login while the back-off of the last failed one lasts.
fn held_back(deps: &Deps, cache: &CachePolicy, key: &str) -> Result<()> {
    match Backoff::load(&cache.dir, key).until() {
        Some(until) if deps.clock.now() < until => Err(Error::Login(format!(
            "the last login for this token failed; not starting another one before {} because this call is not interactive (an IDE or script runs kubectl in a loop). Run kubectl in a terminal, or wait",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))),
        _ => Ok(()),
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
        token_cache::store(&fake.deps, a.cache.token_cache_storage.into(), dir)
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

    /// `obtain` says where its token came from: a refresh of a stale entry, then the cache,
    /// and a login without a cache (setup), which keeps nothing.
    #[test]
    fn obtain_says_where_the_token_came_from() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = FakeDeps::new();
        fake.discovery();
        fake.http.route(
            &format!("{ISSUER}/token"),
            200,
            r#"{"access_token":"at2","token_type":"Bearer","expires_in":3600}"#,
        );
        let a = args(
            tmp.path(),
            &["--oidc-use-access-token", "--oidc-client-secret=s"],
        );
        let now = fake.deps.clock.now().timestamp();
        plant(
            &fake,
            &a,
            tmp.path(),
            CacheEntry {
                access_token: crate::secret::Secret::new("at1"),
                access_token_expires_at: Some(now + 30),
                refresh_token: crate::secret::Secret::new("rt"),
                ..Default::default()
            },
        );
        let r = super::super::resolve(&a.provider, Some(&a.cache), false).unwrap();
        let cache = super::super::flags::cache_policy(&fake.deps, &a.cache, false);
        let got = obtain(&fake.deps, &r, Some(&cache)).unwrap();
        assert_eq!(got.source, Source::Refresh);
        assert_eq!(got.credential.token.expose(), "at2");
        assert_eq!(got.tokens.refresh_token.expose(), "rt");
        let again = obtain(&fake.deps, &r, Some(&cache)).unwrap();
        assert_eq!(again.source, Source::Cache);
        assert_eq!(again.credential.token.expose(), "at2");

        let mut setup = a.provider.clone();
        setup.grant_type = crate::cli::GrantType::ClientCredentials;
        let r = super::super::resolve(&setup, None, false).unwrap();
        let got = obtain(&fake.deps, &r, None).unwrap();
        assert_eq!(got.source, Source::Login);
        assert_eq!(
            got.credential.expiry.unwrap().timestamp(),
            now + 3600,
            "the expiry of the access token from expires_in"
        );
        let entries = std::fs::read_dir(tmp.path()).unwrap().count();
        let again = obtain(&fake.deps, &r, None).unwrap();
        assert_eq!(again.source, Source::Login, "setup never reads the cache");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), entries);
    }
}
