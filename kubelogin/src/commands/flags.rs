//! The command line turned into what the flows use, once: the provider
//! ([`ProviderConfig`]), how to log in ([`LoginOptions`]), the cache key derived from those two,
//! and where the cache lives ([`CachePolicy`]).
//!
//! clap's value enums (`cli::GrantType`, `cli::PkceMethod`, `cli::Storage`) end here: the flows
//! take their own types, converted below.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::auth::{GrantType, LoginOptions, PkceMethod};
use crate::cli::{self, CacheArgs, ProviderArgs};
use crate::deps::{Deps, Environment, HttpSettings};
use crate::error::{Error, Result};
use crate::provider::ProviderConfig;
use crate::secret::Secret;
use crate::token_cache::{self, CacheKey, CachePolicy, Storage};

/// The flags, checked and resolved.
pub struct Resolved {
    pub provider: ProviderConfig,
    pub login: LoginOptions,
    /// Derived from `provider` and `login` (and `--token-cache-name`) by [`cache_key`].
    pub key: CacheKey,
}

/// Checks the provider flags and builds the configuration; `interactive` says whether stdin may
/// be used for prompts. Errors come in the order of the flags' checks: issuer, client id,
/// issuer URL, request headers, extra parameters, loopback TLS pair.
pub fn resolve(
    args: &ProviderArgs,
    cache: Option<&CacheArgs>,
    interactive: bool,
) -> Result<Resolved> {
    let provider = provider_config(args)?;
    let login = login_options(args, interactive)?;
    let name = cache.map_or("", |c| c.token_cache_name.as_str());
    let key = cache_key(&provider, &login, name);
    Ok(Resolved {
        provider,
        login,
        key,
    })
}

/// Where the cache lives and how it is used, from the cache flags.
pub fn cache_policy(deps: &Deps, args: &CacheArgs, force_refresh: bool) -> CachePolicy {
    cache_policy_in(&deps.env, args, force_refresh)
}

/// [`cache_policy`] from the environment alone (the `kubectl-oidc_login` shim has no [`Deps`]).
pub fn cache_policy_in(env: &Environment, args: &CacheArgs, force_refresh: bool) -> CachePolicy {
    CachePolicy {
        dir: token_cache::cache_dir_in(env, args.token_cache_dir.as_deref()),
        storage: args.token_cache_storage.into(),
        lock_timeout: Duration::from_secs(args.token_cache_lock_timeout_sec),
        refresh_margin: chrono::Duration::seconds(
            i64::try_from(args.token_refresh_margin_sec).unwrap_or(i64::MAX / 1000),
        ),
        force_refresh,
    }
}

/// The issuer, the client and how to reach the provider.
fn provider_config(args: &ProviderArgs) -> Result<ProviderConfig> {
    let issuer = required(&args.oidc_issuer_url, "--oidc-issuer-url")?;
    let client_id = required(&args.oidc_client_id, "--oidc-client-id")?;
    url::Url::parse(&issuer)
        .map_err(|e| Error::invalid(format!("--oidc-issuer-url \"{issuer}\" is not a URL"), e))?;
    Ok(ProviderConfig {
        issuer,
        client_id,
        client_secret: Secret::new(args.oidc_client_secret.clone()),
        extra_scopes: args
            .oidc_extra_scope
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        request_headers: key_values("--oidc-request-header", &args.oidc_request_header)?,
        http: HttpSettings {
            ca_files: args.certificate_authority.clone(),
            ca_data: args.certificate_authority_data.clone(),
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
            timeout: Duration::from_secs(args.http_timeout_sec.max(1)),
            no_redirects: false,
        },
        device_authorization_endpoint: non_empty(&args.oidc_device_authorization_endpoint),
    })
}

/// The grant and everything it needs from the flags.
fn login_options(args: &ProviderArgs, interactive: bool) -> Result<LoginOptions> {
    let auth_request_extra_params = key_values(
        "--oidc-auth-request-extra-params",
        &args.oidc_auth_request_extra_params,
    )?;
    let local_server_tls = local_server_tls(args)?;
    Ok(LoginOptions {
        grant: grant_type(args.grant_type, &args.username),
        pkce: pkce_method(args),
        redirect_url: args.oidc_redirect_url.clone(),
        listen_addresses: listen_addresses(args),
        timeout: Duration::from_secs(args.authentication_timeout_sec.max(1)),
        skip_open_browser: args.skip_open_browser,
        browser_command: non_empty(&args.browser_command),
        open_url_after_authentication: non_empty(&args.open_url_after_authentication),
        local_server_tls,
        username: args.username.clone(),
        password: Secret::new(args.password.clone()),
        auth_request_extra_params,
        interactive,
        use_access_token: args.oidc_use_access_token,
    })
}

/// The cache key of a login: every resolved setting that makes two logins different
/// ([`CacheKey`] lists them), plus `--token-cache-name`. The values are those the flows use,
/// so a setting cannot change the login without changing the key.
pub fn cache_key(provider: &ProviderConfig, login: &LoginOptions, name: &str) -> CacheKey {
    CacheKey {
        issuer: provider.issuer.clone(),
        client_id: provider.client_id.clone(),
        client_secret: provider.client_secret.expose().to_string(),
        extra_scopes: provider.extra_scopes.clone(),
        redirect_url: login.redirect_url.clone(),
        pkce_method: match login.pkce {
            PkceMethod::Auto => "auto",
            PkceMethod::No => "no",
            PkceMethod::S256 => "S256",
        }
        .to_string(),
        use_access_token: login.use_access_token,
        request_headers: provider.request_headers.clone(),
        ca_files: provider.http.ca_files.clone(),
        ca_data: provider.http.ca_data.clone(),
        insecure_skip_tls_verify: provider.http.insecure_skip_tls_verify,
        // As in kubelogin: only the password grant's username tells logins apart.
        username: if login.grant == GrantType::Password {
            login.username.clone()
        } else {
            String::new()
        },
        auth_request_extra_params: login.auth_request_extra_params.clone(),
        name: name.to_string(),
        ..CacheKey::new_v1()
    }
}

/// `--grant-type=auto`: password when a username is given (kubelogin), else decided at login
/// time from the machine and the provider (`auth::auto`).
pub fn grant_type(grant: cli::GrantType, username: &str) -> GrantType {
    match grant {
        cli::GrantType::Auto if !username.is_empty() => GrantType::Password,
        cli::GrantType::Auto => GrantType::Auto,
        cli::GrantType::Authcode => GrantType::Authcode,
        cli::GrantType::AuthcodeKeyboard => GrantType::AuthcodeKeyboard,
        cli::GrantType::Password => GrantType::Password,
        cli::GrantType::DeviceCode => GrantType::DeviceCode,
        cli::GrantType::ClientCredentials => GrantType::ClientCredentials,
    }
}

/// `--oidc-pkce-method`; the deprecated `--oidc-use-pkce` turns `auto` into S256.
fn pkce_method(args: &ProviderArgs) -> PkceMethod {
    match args.oidc_pkce_method {
        cli::PkceMethod::Auto if args.oidc_use_pkce => PkceMethod::S256,
        cli::PkceMethod::Auto => PkceMethod::Auto,
        cli::PkceMethod::No => PkceMethod::No,
        cli::PkceMethod::S256 => PkceMethod::S256,
    }
}

impl From<cli::Storage> for Storage {
    fn from(s: cli::Storage) -> Storage {
        match s {
            cli::Storage::Disk => Storage::Disk,
            cli::Storage::Keyring => Storage::Keyring,
            cli::Storage::None => Storage::None,
        }
    }
}

/// `--listen-address`, unless the deprecated `--listen-port` is given: it wins, as in
/// kubelogin.
fn listen_addresses(args: &ProviderArgs) -> Vec<String> {
    if args.listen_port.is_empty() {
        args.listen_address.clone()
    } else {
        args.listen_port
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

/// `--local-server-cert` and `--local-server-key`: both or neither.
fn local_server_tls(args: &ProviderArgs) -> Result<Option<(String, String)>> {
    match (
        args.local_server_cert.as_str(),
        args.local_server_key.as_str(),
    ) {
        ("", "") => Ok(None),
        (c, k) if !c.is_empty() && !k.is_empty() => Ok(Some((c.to_string(), k.to_string()))),
        _ => Err(Error::usage(
            "--local-server-cert and --local-server-key go together",
        )),
    }
}

fn required(value: &Option<String>, flag: &str) -> Result<String> {
    value
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::usage(format!("{flag} is required")))
}

/// `key=value` items of a repeatable flag, sorted by key (the last value of a key wins).
fn key_values(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let (k, v) = cli::parse_key_value(flag, item)?;
        map.insert(k, v);
    }
    Ok(map)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn get_token(extra: &[&str]) -> crate::cli::GetTokenArgs {
        let mut a = vec![
            "kubectl-oidc_login",
            "get-token",
            "--oidc-issuer-url=https://idp.example/",
            "--oidc-client-id=kubernetes",
        ];
        a.extend_from_slice(extra);
        match Cli::try_parse_from(a).unwrap().command {
            Some(Command::GetToken(g)) => g,
            _ => panic!("not get-token"),
        }
    }

    #[test]
    fn grant_auto_resolution() {
        assert_eq!(grant_type(cli::GrantType::Auto, ""), GrantType::Auto);
        assert_eq!(
            grant_type(cli::GrantType::Authcode, ""),
            GrantType::Authcode
        );
        assert_eq!(
            grant_type(cli::GrantType::Auto, "alice"),
            GrantType::Password
        );
        assert_eq!(
            grant_type(cli::GrantType::DeviceCode, "alice"),
            GrantType::DeviceCode
        );
    }

    /// The key derived from the resolved flags is the one the token_cache golden test pins
    /// (`token_cache::tests::golden_cache_key`): cache files written before keep being found.
    #[test]
    fn flags_give_the_golden_cache_key() {
        let a = get_token(&[
            "--oidc-client-secret=s3cr3t",
            "--oidc-extra-scope=profile, email",
            "--oidc-request-header=X-B=2,X-A=1",
            "--oidc-auth-request-extra-params=prompt=login,audience=x",
        ]);
        let r = resolve(&a.provider, Some(&a.cache), false).unwrap();
        assert_eq!(
            r.key.hex(),
            "eae32b72a1792880ca5c1cd52361ff0be69898b3c9419a76cfc84a171b878534"
        );
    }

    /// Settings that do not change what the login yields leave the key alone; the password
    /// grant's username and the cache name do change it.
    #[test]
    fn key_follows_the_resolved_values() {
        let key = |extra: &[&str]| {
            let a = get_token(extra);
            resolve(&a.provider, Some(&a.cache), false)
                .unwrap()
                .key
                .hex()
        };
        let base = key(&[]);
        assert_eq!(key(&["--listen-address=127.0.0.1:0"]), base);
        assert_eq!(key(&["--oidc-extra-scope= "]), base);
        assert_eq!(key(&["--oidc-use-pkce"]), key(&["--oidc-pkce-method=S256"]));
        assert_ne!(key(&["--oidc-use-pkce"]), base);
        assert_eq!(key(&["--grant-type=device-code", "--username=alice"]), base);
        assert_ne!(key(&["--username=alice"]), base);
        assert_ne!(key(&["--token-cache-name=work"]), base);
    }
}
