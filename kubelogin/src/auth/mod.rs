//! Obtaining tokens: one module per grant, plus the refresh grant and what every grant shares
//! (PKCE, opening the browser, turning a token response into a cache entry).
//!
//! The flows take their own option types ([`LoginOptions`], [`GrantType`], [`PkceMethod`]);
//! `commands::flags` builds them from the command line, so nothing here knows clap.

pub mod authcode;
pub mod client_credentials;
pub mod device_code;
pub mod keyboard;
pub mod loopback;
pub mod password;

use std::collections::BTreeMap;
use std::time::Duration;

use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use shared::token::TokenResponse;

use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::token_cache::CacheEntry;

/// The grant a login uses (`--grant-type`, with `auto` already decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// Authorization code through the browser and the loopback server (RFC 6749 §4.1).
    Authcode,
    /// Authorization code typed back on the terminal.
    AuthcodeKeyboard,
    /// Resource owner password credentials (RFC 6749 §4.3).
    Password,
    /// Device authorization (RFC 8628).
    DeviceCode,
    /// Client credentials (RFC 6749 §4.4).
    ClientCredentials,
}

/// Whether to send a PKCE code challenge (RFC 7636); `plain` is never sent (§7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkceMethod {
    /// S256 when discovery lists it in `code_challenge_methods_supported`.
    Auto,
    /// Never.
    No,
    /// Always S256.
    S256,
}

/// How to log in, from the flags.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    pub grant: GrantType,
    pub pkce: PkceMethod,
    pub redirect_url: String,
    pub listen_addresses: Vec<String>,
    pub timeout: Duration,
    pub skip_open_browser: bool,
    pub browser_command: Option<String>,
    pub open_url_after_authentication: Option<String>,
    /// `--local-server-cert` and `--local-server-key`.
    pub local_server_tls: Option<(String, String)>,
    pub username: String,
    pub password: Secret,
    /// `--oidc-auth-request-extra-params`, sorted by name.
    pub auth_request_extra_params: BTreeMap<String, String>,
    /// Whether stdin may be used for prompts (kubectl's `spec.interactive`, else a terminal).
    pub interactive: bool,
    pub use_access_token: bool,
}

/// Whether the grant may open a browser (and so is subject to the login back-off).
pub fn opens_browser(grant: GrantType) -> bool {
    matches!(grant, GrantType::Authcode | GrantType::DeviceCode)
}

/// Runs the login of `opts.grant`.
pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    deps.log(1, || format!("logging in with the {:?} grant", opts.grant));
    match opts.grant {
        GrantType::Authcode => authcode::login(deps, provider, opts),
        GrantType::AuthcodeKeyboard => keyboard::login(deps, provider, opts),
        GrantType::DeviceCode => device_code::login(deps, provider, opts),
        GrantType::Password => password::login(deps, provider, opts),
        GrantType::ClientCredentials => client_credentials::login(deps, provider, opts),
    }
}

/// Outcome of a refresh attempt.
pub enum Refresh {
    Done(CacheEntry),
    /// The provider refused (RFC 6749 §5.2, e.g. `invalid_grant`) or the answer cannot give
    /// kubectl a usable token: a new login is the way out.
    NeedsLogin(String),
}

/// The refresh grant, RFC 6749 §6. A network failure is an `Err` (reported to the user, not
/// turned into a browser login).
///
/// A response without `id_token` when kubectl needs one counts as a failed refresh and leads
/// to a login, as in kubelogin: the cached ID token is about to expire, and handing it out
/// again would only move the 401 to the API server. (OpenID Connect Core §12.2 lets a
/// provider omit it.)
pub fn refresh(
    deps: &Deps,
    provider: &Provider,
    refresh_token: &Secret,
    use_access_token: bool,
) -> Result<Refresh> {
    deps.log(1, || "refreshing the token".to_string());
    let response = match provider.token(vec![
        (
            "grant_type".into(),
            shared::token::grant_type::REFRESH_TOKEN.into(),
        ),
        ("refresh_token".into(), refresh_token.expose().to_string()),
    ]) {
        Ok(r) => r,
        Err(e @ Error::OAuth { .. }) => return Ok(Refresh::NeedsLogin(e.to_string())),
        Err(e) => return Err(e),
    };
    if response.id_token.is_none() && !use_access_token {
        return Ok(Refresh::NeedsLogin(
            "the refresh response has no id_token".into(),
        ));
    }
    match finish(deps, provider, response, None, use_access_token) {
        Ok(mut entry) => {
            // RFC 6749 §6: without a new refresh token the old one stays valid.
            if entry.refresh_token.is_empty() {
                entry.refresh_token = refresh_token.clone();
            }
            Ok(Refresh::Done(entry))
        }
        Err(e @ Error::IdToken(_)) => Ok(Refresh::NeedsLogin(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Verifies the ID token of a token response and turns it into a cache entry.
pub fn finish(
    deps: &Deps,
    provider: &Provider,
    response: TokenResponse,
    nonce: Option<&Secret>,
    use_access_token: bool,
) -> Result<CacheEntry> {
    let access_token = Secret::new(response.access_token);
    let id_token = response.id_token.map(Secret::new);
    match &id_token {
        Some(t) => provider.verify_id_token(t, Some(&access_token), nonce)?,
        None if !use_access_token => {
            return Err(Error::Login(format!(
                "{} returned no id_token (is the openid scope allowed for this client?); to use the access token pass --oidc-use-access-token",
                provider.metadata.token_endpoint
            )))
        }
        None => {}
    }
    let expires_at = response
        .expires_in
        .and_then(|s| i64::try_from(s).ok())
        .map(|s| deps.clock.now().timestamp().saturating_add(s));
    Ok(CacheEntry {
        id_token: id_token.unwrap_or_default(),
        refresh_token: response.refresh_token.map(Secret::new).unwrap_or_default(),
        access_token,
        access_token_expires_at: expires_at,
        origin: None,
    })
}

/// A PKCE pair (RFC 7636 §4.1–4.2) when `--oidc-pkce-method` and the provider call for it.
pub fn pkce(
    provider: &Provider,
    method: PkceMethod,
) -> Option<(PkceCodeChallenge, PkceCodeVerifier)> {
    let use_it = match method {
        PkceMethod::No => false,
        PkceMethod::S256 => true,
        PkceMethod::Auto => provider.supports_s256(),
    };
    use_it.then(PkceCodeChallenge::new_random_sha256)
}

/// Opens `url` in the browser, or prints it when asked to or when no browser starts.
pub fn open_browser(deps: &Deps, opts: &LoginOptions, url: &str) {
    if opts.skip_open_browser {
        deps.say(&format!(
            "Please visit the following URL in your browser: {url}"
        ));
        return;
    }
    deps.log(1, || format!("opening the browser at {url}"));
    if let Err(e) = deps.browser.open(url, opts.browser_command.as_deref()) {
        deps.say(&format!(
            "warning: {e}\nPlease visit the following URL in your browser: {url}"
        ));
    }
}

/// Form pairs as owned strings.
pub(crate) fn form<const N: usize>(pairs: [(&str, &str); N]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{provider_config, FakeDeps, ISSUER};

    fn refresh_with(answer: Option<(u16, &str)>, use_access_token: bool) -> Result<Refresh> {
        let fake = FakeDeps::new();
        fake.discovery();
        if let Some((status, body)) = answer {
            fake.http.route(&format!("{ISSUER}/token"), status, body);
        }
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg)?;
        refresh(&fake.deps, &p, &Secret::new("old-rt"), use_access_token)
    }

    #[test]
    fn refusal_means_login() {
        let r = refresh_with(Some((400, r#"{"error":"invalid_grant"}"#)), false).unwrap();
        assert!(matches!(r, Refresh::NeedsLogin(ref m) if m.contains("invalid_grant")));
    }

    #[test]
    fn network_failure_is_an_error() {
        // No route for the token endpoint: the fake fails like a refused connection.
        assert!(matches!(
            refresh_with(None, false),
            Err(Error::Network { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_login() {
        assert!(matches!(
            refresh_with(Some((502, "<html>bad gateway</html>")), false),
            Err(Error::BadResponse { .. })
        ));
    }

    #[test]
    fn missing_id_token_means_login_unless_the_access_token_is_used() {
        let ok = r#"{"access_token":"at2","token_type":"Bearer","expires_in":60}"#;
        assert!(matches!(
            refresh_with(Some((200, ok)), false).unwrap(),
            Refresh::NeedsLogin(_)
        ));
        let Refresh::Done(entry) = refresh_with(Some((200, ok)), true).unwrap() else {
            panic!("expected a refreshed entry")
        };
        assert_eq!(entry.access_token.expose(), "at2");
        // RFC 6749 §6: no new refresh token, the old one stays.
        assert_eq!(entry.refresh_token.expose(), "old-rt");
    }
}
