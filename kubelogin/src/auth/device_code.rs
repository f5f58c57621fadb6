//! Device authorization grant, RFC 8628, with PKCE when the provider supports it (kubelogin
//! #1470) and a client-side time limit (`--authentication-timeout-sec`, or the code's own
//! `expires_in` if sooner).
//!
//! Polling is written here rather than through `oauth2`'s device flow helper because that
//! helper sends neither PKCE nor our request headers and knows nothing of our clock.

use std::time::Duration;

use shared::device::{format_user_code, DEFAULT_INTERVAL_SECS, SLOW_DOWN_INCREMENT_SECS};
use shared::token::error_code;

use super::{finish, form, pkce, qr, LoginOptions};
use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::printable::printable;
use crate::provider::Provider;
use crate::token_cache::CacheEntry;

pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    let pkce = pkce(provider, opts.pkce);
    let scope = provider.cfg.scope();
    let mut params = form([("scope", scope.as_str())]);
    if let Some((challenge, _)) = &pkce {
        params.push(("code_challenge".into(), challenge.as_str().to_string()));
        params.push((
            "code_challenge_method".into(),
            challenge.method().as_str().to_string(),
        ));
    }
    // §3.1–3.2.
    let auth = provider.device_authorization(params)?;
    let start = deps.clock.now();
    let limit = opts
        .timeout
        .min(Duration::from_secs(auth.expires_in.max(1)));
    // A person watches a terminal: the QR code, the code set apart and a countdown.
    let countdown = deps.console.is_terminal().then(|| {
        show_on_terminal(deps, &auth);
        Countdown {
            deadline: start
                + chrono::Duration::seconds(i64::try_from(limit.as_secs()).unwrap_or(0)),
        }
    });
    if countdown.is_none() {
        show_plain(deps, &auth);
    }
    match &auth.verification_uri_complete {
        Some(complete) => open_browser_quietly(deps, opts, complete),
        None => open_browser_quietly(deps, opts, &auth.verification_uri),
    }
    let result = poll(
        deps,
        provider,
        opts,
        &auth,
        pkce.as_ref(),
        limit,
        countdown.as_ref(),
    );
    if countdown.is_some() {
        // Leaves the cursor at the start of the emptied countdown line.
        deps.console.rewrite("");
    }
    result
}

/// The lines printed when stderr is not a terminal (a log, kubectl's captured stderr).
fn show_plain(deps: &Deps, auth: &shared::device::DeviceAuthorizationResponse) {
    // What the provider sent is printed without control characters (printable.rs).
    let user_code = printable(&format_user_code(&auth.user_code));
    match &auth.verification_uri_complete {
        Some(complete) => {
            deps.say(&format!(
                "Open {} to log in (code {user_code}).",
                printable(complete)
            ));
        }
        None => {
            deps.say(&format!(
                "Open {} and enter the code {user_code}",
                printable(&auth.verification_uri)
            ));
        }
    }
}

/// On a terminal: a QR code of `verification_uri_complete` to scan with a phone (RFC 8628
/// §3.3.1 suggests exactly this), the URL, and the user code alone on its line.
fn show_on_terminal(deps: &Deps, auth: &shared::device::DeviceAuthorizationResponse) {
    let user_code = printable(&format_user_code(&auth.user_code));
    let uri = printable(&auth.verification_uri);
    match auth
        .verification_uri_complete
        .as_deref()
        .and_then(qr::half_blocks)
    {
        Some(lines) => {
            for line in lines {
                deps.say(&line);
            }
            deps.say(&format!(
                "Scan the QR code, or open {uri} and enter the code:"
            ));
        }
        None => deps.say(&format!("Open {uri} and enter the code:")),
    }
    // §3.3: the code the user compares or types, set apart (bold, indented, blank lines).
    deps.say(&format!("\n    \x1b[1m{user_code}\x1b[0m\n"));
}

/// The time left until the client gives up (`expires_in`, or `--authentication-timeout-sec`
/// if sooner), redrawn every second from the injected clock.
struct Countdown {
    deadline: chrono::DateTime<chrono::Utc>,
}

impl Countdown {
    fn show(&self, deps: &Deps) {
        let left = (self.deadline - deps.clock.now()).num_seconds().max(0);
        deps.console.rewrite(&format!(
            "Waiting for approval: {}:{:02} left",
            left / 60,
            left % 60
        ));
    }
}

/// Sleeps `secs` seconds; with a countdown, one second at a time, redrawing it before each.
fn wait(deps: &Deps, secs: u64, countdown: Option<&Countdown>) {
    match countdown {
        None => deps.sleeper.sleep(Duration::from_secs(secs)),
        Some(c) => {
            for _ in 0..secs {
                c.show(deps);
                deps.sleeper.sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Polls the token endpoint (§3.4–3.5) until the code is approved, refused or out of time.
fn poll(
    deps: &Deps,
    provider: &Provider,
    opts: &LoginOptions,
    auth: &shared::device::DeviceAuthorizationResponse,
    pkce: Option<&(oauth2::PkceCodeChallenge, oauth2::PkceCodeVerifier)>,
    limit: Duration,
    countdown: Option<&Countdown>,
) -> Result<CacheEntry> {
    let start = deps.clock.now();
    let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
    loop {
        wait(deps, interval, countdown);
        if countdown.is_some() && deps.verbosity >= 1 {
            // The -v lines below start on a clean line, not after the countdown.
            deps.console.rewrite("");
        }
        let elapsed = (deps.clock.now() - start).to_std().unwrap_or_default();
        if elapsed > limit {
            return Err(Error::Login(format!(
                "timed out after {}s waiting for the device code to be approved (--authentication-timeout-sec, expires_in)",
                limit.as_secs()
            )));
        }
        // §3.4.
        let mut params = form([
            ("grant_type", shared::token::grant_type::DEVICE_CODE),
            ("device_code", auth.device_code.as_str()),
        ]);
        if let Some((_, verifier)) = pkce {
            params.push(("code_verifier".into(), verifier.secret().clone()));
        }
        match provider.token(params) {
            Ok(response) => return finish(deps, provider, response, None, opts.use_access_token),
            // §3.5: keep polling.
            Err(Error::OAuth { code, .. }) if code == error_code::AUTHORIZATION_PENDING => {
                deps.log(1, || "authorization pending".into());
            }
            // §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent
            // requests".
            Err(Error::OAuth { code, .. }) if code == error_code::SLOW_DOWN => {
                interval += SLOW_DOWN_INCREMENT_SECS;
                deps.log(1, || format!("slow_down: polling every {interval}s"));
            }
            Err(Error::OAuth { code, .. }) if code == error_code::EXPIRED_TOKEN => {
                return Err(Error::Login(
                    "the device code expired before it was approved; run the command again".into(),
                ))
            }
            Err(Error::OAuth { code, .. }) if code == error_code::ACCESS_DENIED => {
                return Err(Error::Login("the login was denied at the provider".into()))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The code is already printed, so a browser that fails to start needs no second URL.
fn open_browser_quietly(deps: &Deps, opts: &LoginOptions, url: &str) {
    if opts.skip_open_browser {
        return;
    }
    let (console, verbose) = (deps.console.clone(), deps.verbosity >= 1);
    let failed = Box::new(move |why: String| {
        if verbose {
            console.line(&format!("no browser: {why}"));
        }
    });
    if let Err(e) = deps
        .browser
        .open(url, opts.browser_command.as_deref(), failed)
    {
        deps.log(1, || format!("no browser: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::GrantType;
    use crate::testing::{login_options, provider_config, FakeDeps, ISSUER};

    fn device_answer(fake: &FakeDeps, complete: bool, interval: Option<u64>) {
        let mut body = serde_json::json!({
            "device_code": "dc", "user_code": "BCDFGHJK",
            "verification_uri": format!("{ISSUER}/device-page"), "expires_in": 600,
        });
        if complete {
            body["verification_uri_complete"] = format!("{ISSUER}/device-page?c=1").into();
        }
        if let Some(i) = interval {
            body["interval"] = i.into();
        }
        fake.http
            .route(&format!("{ISSUER}/device"), 200, &body.to_string());
    }

    #[test]
    fn polls_with_interval_slow_down_and_pkce() {
        let fake = FakeDeps::new();
        fake.discovery();
        device_answer(&fake, true, Some(3));
        let token = format!("{ISSUER}/token");
        fake.http
            .route(&token, 400, r#"{"error":"authorization_pending"}"#);
        fake.http.route(&token, 400, r#"{"error":"slow_down"}"#);
        fake.http.route(
            &token,
            200,
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#,
        );
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let entry = login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap();
        assert_eq!(entry.access_token.expose(), "at");
        let slept: Vec<u64> = fake
            .sleeper
            .slept
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(slept, vec![3, 3, 8]);
        let start = fake.form_of(&format!("{ISSUER}/device"), 0);
        assert_eq!(start["code_challenge_method"], "S256");
        assert_eq!(start["scope"], "openid");
        let poll = fake.form_of(&token, 0);
        assert_eq!(poll["grant_type"], shared::token::grant_type::DEVICE_CODE);
        assert_eq!(
            shared::pkce::s256_challenge(&poll["code_verifier"]),
            start["code_challenge"]
        );
        assert_eq!(
            fake.browser.opened(),
            vec![format!("{ISSUER}/device-page?c=1")]
        );
    }

    #[test]
    fn prints_the_user_code_and_fails_on_expiry_or_denial() {
        for (code, words) in [("expired_token", "expired"), ("access_denied", "denied")] {
            let fake = FakeDeps::new();
            fake.discovery();
            device_answer(&fake, false, None);
            fake.http.route(
                &format!("{ISSUER}/token"),
                400,
                &format!(r#"{{"error":"{code}"}}"#),
            );
            let cfg = provider_config();
            let p = Provider::discover(&fake.deps, &cfg).unwrap();
            let err = login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap_err();
            assert!(err.to_string().contains(words), "{err}");
            assert!(fake.console_text().contains("BCDF-GHJK"));
            // RFC 8628 §3.2: 5 s when the server gives no interval.
            assert_eq!(fake.sleeper.slept.lock().unwrap()[0].as_secs(), 5);
        }
    }

    #[test]
    fn provider_text_is_printed_without_control_characters() {
        let fake = FakeDeps::new();
        fake.discovery();
        let body = serde_json::json!({
            "device_code": "dc", "user_code": "BCDF\u{1b}]0;owned\u{7}GHJK",
            "verification_uri": format!("{ISSUER}/device\u{1b}[2J-page"), "expires_in": 600,
        });
        fake.http
            .route(&format!("{ISSUER}/device"), 200, &body.to_string());
        fake.http.route(
            &format!("{ISSUER}/token"),
            400,
            r#"{"error":"access_denied","error_description":"no\u001b[31m red","error_uri":"https://x/\u001b[0m"}"#,
        );
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let err = login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap_err();
        let console = fake.console_text();
        assert!(console.contains("device[2J-page"), "{console}");
        assert!(console.contains("]0;owned"), "{console}");
        assert!(
            !console.contains('\u{1b}') && !console.contains('\u{7}'),
            "{console:?}"
        );
        assert!(err.to_string().contains("denied"), "{err}");
        // The token endpoint's refusal itself, as an error value.
        let e = p
            .token(vec![("grant_type".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no[31m red") && e.contains("https://x/[0m"),
            "{e}"
        );
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
    }

    /// On a terminal: the QR code, the user code on its own line, and a countdown from the
    /// injected clock, one second at a time, cleared at the end.
    #[test]
    fn terminal_shows_qr_code_and_countdown() {
        let fake = FakeDeps::new();
        fake.console.set_terminal(true);
        fake.discovery();
        device_answer(&fake, true, Some(2));
        let token = format!("{ISSUER}/token");
        fake.http
            .route(&token, 400, r#"{"error":"authorization_pending"}"#);
        fake.http.route(
            &token,
            200,
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#,
        );
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap();
        let console = fake.console_text();
        assert!(
            console.contains('\u{2580}') && console.contains('\u{2584}'),
            "{console}"
        );
        assert!(
            console.contains(&format!(
                "Scan the QR code, or open {ISSUER}/device-page and enter the code:"
            )),
            "{console}"
        );
        assert!(
            console.contains("\n    \x1b[1mBCDF-GHJK\x1b[0m\n"),
            "{console:?}"
        );
        // login_options' 60 s timeout is sooner than expires_in (600 s).
        assert_eq!(
            fake.console.rewrites(),
            vec![
                "Waiting for approval: 1:00 left",
                "Waiting for approval: 0:59 left",
                "Waiting for approval: 0:58 left",
                "Waiting for approval: 0:57 left",
                "",
            ]
        );
        let slept: Vec<u64> = fake
            .sleeper
            .slept
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(slept, vec![1, 1, 1, 1]);
    }

    #[test]
    fn no_qr_code_or_countdown_when_stderr_is_not_a_terminal() {
        let fake = FakeDeps::new();
        fake.discovery();
        device_answer(&fake, true, Some(2));
        fake.http.route(
            &format!("{ISSUER}/token"),
            200,
            r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#,
        );
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        login(&fake.deps, &p, &login_options(GrantType::DeviceCode)).unwrap();
        let console = fake.console_text();
        assert!(
            !console.contains('\u{2580}') && !console.contains('\x1b'),
            "{console:?}"
        );
        assert!(fake.console.rewrites().is_empty());
        assert!(console.contains("(code BCDF-GHJK)"), "{console}");
    }

    #[test]
    fn client_side_timeout() {
        let fake = FakeDeps::new();
        fake.discovery();
        device_answer(&fake, true, Some(5));
        fake.http.route(
            &format!("{ISSUER}/token"),
            400,
            r#"{"error":"authorization_pending"}"#,
        );
        let cfg = provider_config();
        let p = Provider::discover(&fake.deps, &cfg).unwrap();
        let mut opts = login_options(GrantType::DeviceCode);
        opts.timeout = std::time::Duration::from_secs(20);
        let err = login(&fake.deps, &p, &opts).unwrap_err();
        assert!(err.to_string().contains("timed out after 20s"), "{err}");
    }
}
