//! A scripted browser for `--browser-command`: given the URL the plugin opens, it signs in at
//! the IdP's real login page, allows consent (or approves a device code) and follows the
//! redirect back to the plugin's loopback server — what a person does in a real browser.
//!
//! Environment: `FAKE_BROWSER_USER`, `FAKE_BROWSER_PASSWORD`, optional `FAKE_BROWSER_CA` (PEM of
//! the IdP's CA), optional `FAKE_BROWSER_LOG` (each opened URL is appended, one per line, so
//! tests can count browser opens), optional `FAKE_BROWSER_ACTION=deny|ignore`.

use std::io::Write;

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fake-browser: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> Result<(), String> {
    let url = std::env::args().nth(1).ok_or("usage: fake-browser URL")?;
    if let Ok(log) = std::env::var("FAKE_BROWSER_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        writeln!(f, "{url}").map_err(|e| e.to_string())?;
    }
    let action = std::env::var("FAKE_BROWSER_ACTION").unwrap_or_default();
    if action == "ignore" {
        return Ok(());
    }
    let user = std::env::var("FAKE_BROWSER_USER").map_err(|_| "FAKE_BROWSER_USER is not set")?;
    let password =
        std::env::var("FAKE_BROWSER_PASSWORD").map_err(|_| "FAKE_BROWSER_PASSWORD is not set")?;
    let mut b = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Ok(ca) = std::env::var("FAKE_BROWSER_CA") {
        let pem = std::fs::read(&ca).map_err(|e| format!("{ca}: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
    }
    let mut browser = idp::testing::Browser::new(b.build().map_err(|e| e.to_string())?);
    let allow = action != "deny";
    let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    if parsed.path().ends_with("/device") {
        let code = parsed
            .query_pairs()
            .find(|(k, _)| k == "user_code")
            .map(|(_, v)| v.to_string())
            .ok_or("no user_code in the device URL")?;
        let issuer = url.split("/device").next().unwrap_or_default().to_string();
        return browser.device(&issuer, &code, &user, &password, allow);
    }
    browser.login(&url, &user, &password, allow).map(|_| ())
}
