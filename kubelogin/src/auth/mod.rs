//! Obtaining tokens: one module per grant, plus the refresh grant and what every grant shares
//! (PKCE, opening the browser, turning a token response into a cache entry).
//!
//! The flows take their own option types ([`LoginOptions`], [`GrantType`], [`PkceMethod`]);
//! `commands::flags` builds them from the command line, so nothing here knows clap.

pub mod authcode;
pub mod auto;
pub mod client_credentials;
pub mod device_code;
pub mod keyboard;
pub mod loopback;
pub mod password;
pub mod qr;

use std::collections::BTreeMap;
use std::time::Duration;

use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use shared::token::TokenResponse;

use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::token_cache::CacheEntry;

/// The grant a login uses (`--grant-type`; `auto` with `--username` is already the password
/// grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    /// Decided at login time from the machine and the provider ([`auto::choose`]).
    Auto,
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
    matches!(
        grant,
        GrantType::Auto | GrantType::Authcode | GrantType::DeviceCode
    )
}

/// The options with `--grant-type=auto` decided ([`auto::choose`], said on stderr with the way
/// to override it); any other grant as it is. `setup` uses the decided grant for its advice
/// (authcode-keyboard needs the terminal, so kubeconfig's `interactiveMode` must allow it).
pub fn decide(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> LoginOptions {
    if opts.grant != GrantType::Auto {
        return opts.clone();
    }
    let asked = auto::Asked {
        browser_command: opts.browser_command.is_some(),
        skip_open_browser: opts.skip_open_browser,
    };
    let device = provider.metadata.device_authorization_endpoint.is_some()
        || provider.cfg.device_authorization_endpoint.is_some();
    let choice = auto::choose(deps.host.as_ref(), asked, device);
    deps.say(&choice.message());
    LoginOptions {
        grant: choice.grant,
        // No display: a launcher would fail or open a browser nobody sees.
        skip_open_browser: opts.skip_open_browser || choice.no_display,
        ..opts.clone()
    }
}

/// Runs the login of `opts.grant`; `auto` is decided here, once discovery says whether the
/// provider supports device authorization, and said on stderr with the way to override it.
pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    if opts.grant == GrantType::Auto {
        return login(deps, provider, &decide(deps, provider, opts));
    }
    deps.log(1, || format!("logging in with the {:?} grant", opts.grant));
    match opts.grant {
        GrantType::Auto => Err(Error::Login("--grant-type=auto was not decided".into())),
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

/// Prints `url` and opens it in the browser unless asked not to. The URL is always printed
/// (kubelogin does): a user whose launcher is broken needs it. A launcher that cannot start, or
/// starts and then fails (xdg-open without a browser), is reported at once with the way out,
/// instead of leaving the user to wait for the authentication timeout.
pub fn open_browser(deps: &Deps, opts: &LoginOptions, url: &str) {
    deps.say(&format!(
        "Please visit the following URL in your browser: {url}"
    ));
    if opts.skip_open_browser {
        return;
    }
    deps.log(1, || format!("opening the browser at {url}"));
    let console = deps.console.clone();
    let told = url.to_string();
    let failed = Box::new(move |why: String| console.line(&launcher_failed(&why, &told)));
    if let Err(e) = deps
        .browser
        .open(url, opts.browser_command.as_deref(), failed)
    {
        deps.say(&launcher_failed(&e.to_string(), url));
    }
}

/// What to do when the browser did not open: the URL by hand, or a flow without a browser.
fn launcher_failed(why: &str, url: &str) -> String {
    format!(
        "warning: the browser did not open ({why}).\nOpen this URL in a browser on this machine yourself: {url}\nNo browser here (SSH, a container)? Use --grant-type=device-code instead."
    )
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
    use crate::testing::{login_options, provider_config, FakeDeps, ISSUER};

    /// A device flow the fake provider approves at the first poll.
    fn device_provider(fake: &FakeDeps) {
        fake.discovery();
        let body = serde_json::json!({
            "device_code": "dc", "user_code": "BCDFGHJK",
            "verification_uri": format!("{ISSUER}/device-page"),
            "verification_uri_complete": format!("{ISSUER}/device-page?c=1"),
            "expires_in": 600, "interval": 1,
        });
        fake.http
            .route(&format!("{ISSUER}/device"), 200, &body.to_string());
        fake.http.route(
            &format!("{ISSUER}/token"),
            200,
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#,
        );
    }

    #[test]
    fn auto_without_a_display_logs_in_with_device_code_and_says_why() {
        let fake = FakeDeps::new();
        fake.host.unset("DISPLAY").var("SSH_TTY", "/dev/pts/1");
        device_provider(&fake);
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let entry = login(&fake.deps, &p, &login_options(GrantType::Auto)).unwrap();
        assert_eq!(entry.access_token.expose(), "at");
        let console = fake.console_text();
        assert!(
            console.contains(
                "Using the device code flow (device-code): this is an SSH session (SSH_TTY is set)"
            ),
            "{console}"
        );
        assert!(console.contains("pass --grant-type="), "{console}");
        assert!(
            fake.browser.opened().is_empty(),
            "no browser launch without a display"
        );
        assert_eq!(
            fake.form_of(&format!("{ISSUER}/token"), 0)["grant_type"],
            shared::token::grant_type::DEVICE_CODE
        );
    }

    /// An explicit --grant-type is obeyed whatever the machine looks like, without a word.
    #[test]
    fn an_explicit_grant_skips_the_probe() {
        let fake = FakeDeps::new();
        device_provider(&fake);
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap();
        assert!(
            !fake.console_text().contains("Using "),
            "{}",
            fake.console_text()
        );
        // Opened the browser: the desktop has a display.
        assert_eq!(
            fake.browser.opened(),
            vec![format!("{ISSUER}/device-page?c=1")]
        );
    }

    #[test]
    fn a_launcher_that_fails_is_reported_at_once_with_the_url_and_device_code() {
        let fake = FakeDeps::new();
        fake.browser
            .fail_after_start("xdg-open exited with exit status: 3");
        let opts = login_options(GrantType::Authcode);
        open_browser(&fake.deps, &opts, "http://localhost:4242/");
        let console = fake.console_text();
        assert!(
            console.starts_with(
                "Please visit the following URL in your browser: http://localhost:4242/"
            ),
            "the URL comes first, always: {console}"
        );
        assert!(
            console.contains("the browser did not open (xdg-open exited with exit status: 3)"),
            "{console}"
        );
        assert!(
            console.contains("yourself: http://localhost:4242/"),
            "{console}"
        );
        assert!(console.contains("--grant-type=device-code"), "{console}");

        // A launcher that cannot even start.
        let fake = FakeDeps::new();
        fake.browser
            .on_open(|_| Err(Error::usage("no such file: firefox")));
        open_browser(&fake.deps, &opts, "http://localhost:4242/");
        assert!(
            fake.console_text()
                .contains("did not open (no such file: firefox)"),
            "{}",
            fake.console_text()
        );
    }

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
