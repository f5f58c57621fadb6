//! The subcommands, and turning flags into the configuration the flows use.

pub mod clean;
pub mod doctor;
pub mod get_token;
pub mod setup;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::auth::{resolve_grant, LoginOptions};
use crate::cli::{CacheArgs, GrantType, PkceMethod, ProviderArgs};
use crate::deps::{Deps, HttpSettings};
use crate::error::{Error, Result};
use crate::provider::ProviderConfig;
use crate::secret::Secret;
use crate::token_cache::CacheKey;

/// The flags, checked and resolved.
pub struct Resolved {
    pub provider: ProviderConfig,
    pub login: LoginOptions,
    pub key: CacheKey,
}

fn key_values(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let (k, v) = crate::cli::parse_key_value(flag, item)?;
        map.insert(k, v);
    }
    Ok(map)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Checks the provider flags and builds the configuration; `interactive` says whether stdin may
/// be used for prompts.
pub fn resolve(
    args: &ProviderArgs,
    cache: Option<&CacheArgs>,
    interactive: bool,
) -> Result<Resolved> {
    let issuer = args
        .oidc_issuer_url
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::usage("--oidc-issuer-url is required"))?;
    let client_id = args
        .oidc_client_id
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::usage("--oidc-client-id is required"))?;
    url::Url::parse(&issuer)
        .map_err(|e| Error::usage(format!("--oidc-issuer-url \"{issuer}\" is not a URL: {e}")))?;
    let headers = key_values("--oidc-request-header", &args.oidc_request_header)?;
    let extra_params = key_values(
        "--oidc-auth-request-extra-params",
        &args.oidc_auth_request_extra_params,
    )?;
    let pkce = if args.oidc_use_pkce && args.oidc_pkce_method == PkceMethod::Auto {
        PkceMethod::S256
    } else {
        args.oidc_pkce_method
    };
    let grant = resolve_grant(args.grant_type, &args.username);
    let mut listen = args.listen_address.clone();
    if !args.listen_port.is_empty() {
        // The deprecated --listen-port wins, as in kubelogin.
        listen = args
            .listen_port
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
    }
    let local_server_tls = match (
        args.local_server_cert.as_str(),
        args.local_server_key.as_str(),
    ) {
        ("", "") => None,
        (c, k) if !c.is_empty() && !k.is_empty() => Some((c.to_string(), k.to_string())),
        _ => {
            return Err(Error::usage(
                "--local-server-cert and --local-server-key go together",
            ))
        }
    };
    let extra_scopes: Vec<String> = args
        .oidc_extra_scope
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let provider = ProviderConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: Secret::new(args.oidc_client_secret.clone()),
        extra_scopes: extra_scopes.clone(),
        request_headers: headers.clone().into_iter().collect(),
        http: HttpSettings {
            ca_files: args.certificate_authority.clone(),
            ca_data: args.certificate_authority_data.clone(),
            insecure_skip_tls_verify: args.insecure_skip_tls_verify,
            timeout: Duration::from_secs(args.http_timeout_sec.max(1)),
            no_redirects: false,
        },
        device_authorization_endpoint: non_empty(&args.oidc_device_authorization_endpoint),
    };
    let login = LoginOptions {
        grant,
        pkce,
        redirect_url: args.oidc_redirect_url.clone(),
        listen_addresses: listen,
        timeout: Duration::from_secs(args.authentication_timeout_sec.max(1)),
        skip_open_browser: args.skip_open_browser,
        browser_command: non_empty(&args.browser_command),
        open_url_after_authentication: non_empty(&args.open_url_after_authentication),
        local_server_tls,
        username: args.username.clone(),
        password: Secret::new(args.password.clone()),
        auth_request_extra_params: extra_params.clone().into_iter().collect(),
        interactive,
        use_access_token: args.oidc_use_access_token,
    };
    let mut key = CacheKey::new_v1();
    key.issuer = issuer;
    key.client_id = client_id;
    key.client_secret = args.oidc_client_secret.clone();
    key.extra_scopes = extra_scopes;
    key.redirect_url = args.oidc_redirect_url.clone();
    key.pkce_method = match pkce {
        PkceMethod::Auto => "auto",
        PkceMethod::No => "no",
        PkceMethod::S256 => "S256",
    }
    .to_string();
    key.use_access_token = args.oidc_use_access_token;
    key.request_headers = headers;
    key.ca_files = args.certificate_authority.clone();
    key.ca_data = args.certificate_authority_data.clone();
    key.insecure_skip_tls_verify = args.insecure_skip_tls_verify;
    if grant == GrantType::Password {
        key.username = args.username.clone();
    }
    key.auth_request_extra_params = extra_params;
    if let Some(c) = cache {
        key.name = c.token_cache_name.clone();
    }
    Ok(Resolved {
        provider,
        login,
        key,
    })
}

/// Whether prompts on stdin are allowed: kubectl's `spec.interactive` when it says, else
/// whether stdin is a terminal.
pub fn interactive(deps: &Deps, exec_interactive: Option<bool>) -> bool {
    exec_interactive.unwrap_or_else(|| deps.prompt.is_terminal())
}
