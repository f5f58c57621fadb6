//! A real browser for `--browser-command`: headless Chromium, driven by chromedriver over the
//! W3C WebDriver protocol, signs in on the IdP's pages as a person would and ends when the
//! browser is back on the plugin's loopback server (or the device page says "Device signed in",
//! or, for an out-of-band `redirect_uri` (the keyboard flow), the IdP shows the code to paste).
//!
//! Environment: `CHROMIUM_USER`, `CHROMIUM_PASSWORD`; optional `CHROMIUM_SERVER_CERT` (PEM
//! server certificate(s) of an HTTPS IdP, comma separated), `CHROMIUM_LOG` (each opened URL is
//! appended, so tests can count browser opens), `CHROMIUM_EXIT_LOG` (the exit status, and the
//! error if any, is appended once everything is cleaned up), `CHROMIUM_CODE_FILE` (where the code
//! read off the IdP's code page is written, as a person would copy it; required for the keyboard
//! flow), `CHROMEDRIVER_URL` (use a running chromedriver
//! instead of starting one), `CHROMIUM_BINARY`, `CHROMIUM_TIMEOUT_SEC` (default 30).
//!
//! Trusting the IdP's local CA: Chromium on Linux reads CAs from an NSS database, which would
//! need `certutil` and a writable `$HOME/.pki`. Instead the test hands over the IdP's server
//! certificate and Chromium gets `--ignore-certificate-errors-spki-list` with the SHA-256 of its
//! public key: only that key is accepted despite the unknown issuer, every other certificate is
//! still verified (`acceptInsecureCerts` stays false).
//!
//! Stdout stays empty (the plugin passes it to kubectl's stderr, but a browser must never
//! print where an ExecCredential might go); errors go to stderr with exit status 1, and the
//! session, chromedriver and the profile directory are removed on every path.

use anyhow::{anyhow, bail, Context as _};
use e2e::webdriver::{chromium_args, Driver, Session};
use std::io::Write as _;
use std::time::{Duration, Instant};

fn main() {
    let (code, line) = match run() {
        Ok(()) => (0, "0".to_string()),
        Err(e) => {
            eprintln!("chromium-browser: {e:#}");
            (1, format!("1 {e:#}"))
        }
    };
    // Everything is cleaned up by now (run's locals are dropped): a test that waits for this
    // line knows no Chromium of this run is left.
    if let Ok(log) = std::env::var("CHROMIUM_EXIT_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{}", line.replace('\n', " "));
        }
    }
    std::process::exit(code);
}

fn run() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow!("usage: chromium-browser URL"))?;
    if let Ok(log) = std::env::var("CHROMIUM_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| log.clone())?;
        writeln!(f, "{url}")?;
    }
    let user = std::env::var("CHROMIUM_USER").context("CHROMIUM_USER is not set")?;
    let password = std::env::var("CHROMIUM_PASSWORD").context("CHROMIUM_PASSWORD is not set")?;
    let timeout = Duration::from_secs(
        std::env::var("CHROMIUM_TIMEOUT_SEC")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let deadline = Instant::now() + timeout;

    // Declared in this order so they drop in reverse: session, chromedriver, then the profile.
    let profile = tempfile::tempdir().context("profile dir")?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let driver = Driver::start(&http, deadline)?;
    let session = Session::new(&http, &driver.url, &chromium_args(profile.path())?)?;
    session.navigate(&url)?;
    drive(&session, &url, &user, &password, deadline)
}

fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Plays the person: signs in, allows, and waits for the end of the flow.
fn drive(
    s: &Session<'_>,
    start: &str,
    user: &str,
    password: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let parsed = url::Url::parse(start).context("the URL to open")?;
    let device = parsed.path().ends_with("/device");
    let redirect_uri = parsed
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.to_string());
    // The keyboard flow's out-of-band URI is no address: the IdP shows the code instead.
    let keyboard = redirect_uri
        .as_deref()
        .is_some_and(|r| !r.starts_with("http://") && !r.starts_with("https://"));
    // The plugin opens either its loopback URL (which redirects to the IdP) or the IdP's
    // authorization URL carrying the loopback `redirect_uri`.
    let loopback = if device || keyboard {
        None
    } else {
        redirect_uri
            .as_deref()
            .and_then(origin)
            .or_else(|| origin(start))
    };
    let mut left_loopback = false;
    let mut logins = 0;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match step(
            s,
            loopback.as_deref(),
            &mut left_loopback,
            &mut logins,
            user,
            password,
        ) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // A page that changed under a command (stale element) is retried; a refusal is final.
            Err(e) if e.to_string().starts_with("refused:") => return Err(e),
            Err(e) => last_error = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = s.current_url().unwrap_or_default();
    bail!("the login did not finish in time (at {at}; last error: {last_error})")
}

/// One look at the page and at most one action; `Ok(true)` when the flow is over.
fn step(
    s: &Session<'_>,
    loopback: Option<&str>,
    left_loopback: &mut bool,
    logins: &mut u32,
    user: &str,
    password: &str,
) -> anyhow::Result<bool> {
    let url = s.current_url()?;
    // Chromium's TLS interstitial keeps the requested URL; its title and button give it away.
    if s.title()? == "Privacy error" || s.find("#details-button")?.is_some() {
        bail!(
            "refused: Chromium does not trust the certificate of {url} (CHROMIUM_SERVER_CERT \
             must name the server certificate of an IdP with a local CA)"
        );
    }
    if url.starts_with("chrome-error:") {
        bail!(
            "refused: Chromium shows an error page (unreachable server or untrusted certificate)"
        );
    }
    if let Some(lb) = loopback {
        if origin(&url).as_deref() == Some(lb) {
            // Back on the plugin's server after the IdP: the plugin has its code (or error).
            if *left_loopback {
                return Ok(true);
            }
        } else if url.starts_with("http") {
            *left_loopback = true;
        }
    }
    if let Some(username) = s.find("#username")? {
        if let Some(err) = s.find("#error")? {
            bail!("refused: the IdP refused the login: {}", s.text(&err)?);
        }
        if *logins >= 3 {
            bail!("refused: the login page keeps coming back");
        }
        *logins += 1;
        s.type_into(&username, user)?;
        let pw = s
            .find("#password")?
            .ok_or_else(|| anyhow!("a login page without #password"))?;
        s.type_into(&pw, password)?;
        let submit = s
            .find("#submit")?
            .ok_or_else(|| anyhow!("a login page without #submit"))?;
        s.click(&submit)?;
        return Ok(false);
    }
    if let Some(allow) = s.find("#allow")? {
        s.click(&allow)?;
        return Ok(false);
    }
    if let Some(code) = s.find("input#code")? {
        // The out-of-band code page: copy the code as a person would.
        let code = s.property(&code, "value")?;
        if code.is_empty() {
            bail!("the code page shows no code");
        }
        let path = std::env::var("CHROMIUM_CODE_FILE").map_err(|_| {
            anyhow!("refused: the IdP shows a code to paste but CHROMIUM_CODE_FILE is not set")
        })?;
        std::fs::write(&path, &code).with_context(|| path.clone())?;
        return Ok(true);
    }
    if let Some(title) = s.find("#title")? {
        let title = s.text(&title)?;
        if title == "Device signed in" {
            return Ok(loopback.is_none());
        }
        let message = match s.find("#message")? {
            Some(m) => s.text(&m)?,
            None => String::new(),
        };
        bail!("refused: the IdP says {title:?}: {message}");
    }
    Ok(false)
}
