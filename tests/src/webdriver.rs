//! A WebDriver client for headless Chromium (W3C WebDriver over chromedriver): start
//! chromedriver, open a session with the flags these machines need, and the handful of commands
//! the tests use. Shared by `chromium-browser` (the plugin's `--browser-command`) and the
//! console journey test, which drives the IdP's admin pages itself, and the accessibility
//! test (a script run in the page).
//!
//! Environment: `CHROMEDRIVER_URL` (use a running chromedriver instead of starting one),
//! `CHROMIUM_BINARY`, `CHROMIUM_SERVER_CERT` (see `chromium_args`).

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// W3C WebDriver §12: the key of an element reference in JSON.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags for a headless run in a throwaway profile; with `CHROMIUM_SERVER_CERT`, the
/// IdP's server key is pinned (see the `chromium-browser` binary's comment).
pub fn chromium_args(profile: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    if let Ok(certs) = std::env::var("CHROMIUM_SERVER_CERT") {
        let mut pins = Vec::new();
        for path in certs.split(',').filter(|p| !p.is_empty()) {
            pins.extend(spki_pins(path)?);
        }
        if !pins.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                pins.join(",")
            ));
        }
    }
    Ok(args)
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of each certificate in a PEM file: the pin format of
/// `--ignore-certificate-errors-spki-list` (and of HPKP, RFC 7469 §2.4).
pub fn spki_pins(path: &str) -> anyhow::Result<Vec<String>> {
    use sha2::Digest as _;
    use x509_cert::der::{Decode as _, Encode as _};
    let pem = std::fs::read(path).with_context(|| format!("CHROMIUM_SERVER_CERT {path}"))?;
    let mut pins = Vec::new();
    for der in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = der.with_context(|| format!("{path}: unreadable PEM"))?;
        let cert = x509_cert::Certificate::from_der(der.as_ref())
            .map_err(|e| anyhow!("{path}: not an X.509 certificate: {e}"))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| anyhow!("{path}: {e}"))?;
        pins.push(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki)));
    }
    if pins.is_empty() {
        bail!("{path}: no CERTIFICATE in the file");
    }
    Ok(pins)
}

/// chromedriver: the one given by `CHROMEDRIVER_URL`, or a child process killed on drop.
pub struct Driver {
    pub url: String,
    child: Option<Child>,
}

impl Driver {
    pub fn start(http: &reqwest::blocking::Client, deadline: Instant) -> anyhow::Result<Driver> {
        if let Ok(url) = std::env::var("CHROMEDRIVER_URL") {
            return Ok(Driver {
                url: url.trim_end_matches('/').to_string(),
                child: None,
            });
        }
        // A port the kernel just handed out is free; chromedriver binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // Its output must not reach the plugin's stderr pipe, which kubectl's caller may be
        // reading until every writer is gone.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start chromedriver (Debian: apt-get install chromium-driver)")?;
        let mut driver = Driver {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        loop {
            let ready = http
                .get(format!("{}/status", driver.url))
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return Ok(driver);
            }
            if let Some(c) = driver.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("chromedriver exited at start ({status})");
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    /// Asks chromedriver to shut down (it then reaps the Chromium processes it started) and
    /// kills it only if it does not exit in time.
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = reqwest::blocking::Client::new()
            .get(format!("{}/shutdown", self.url))
            .timeout(Duration::from_secs(5))
            .send();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A WebDriver session; deleting it (on drop) quits Chromium.
pub struct Session<'a> {
    http: &'a reqwest::blocking::Client,
    base: String,
}

impl<'a> Session<'a> {
    pub fn new(
        http: &'a reqwest::blocking::Client,
        driver: &str,
        args: &[String],
    ) -> anyhow::Result<Session<'a>> {
        let binary = std::env::var("CHROMIUM_BINARY").unwrap_or_else(|_| {
            // Debian's /usr/bin/chromium is a shell wrapper; the real binary avoids its noise.
            ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|p| p.to_string())
                .unwrap_or_else(|| "chromium".into())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let v = call(
            http,
            reqwest::Method::POST,
            &format!("{driver}/session"),
            Some(caps),
        )?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {v}"))?;
        Ok(Session {
            http,
            base: format!("{driver}/session/{id}"),
        })
    }

    pub fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        call(self.http, method, &format!("{}{path}", self.base), body)
    }

    pub fn navigate(&self, url: &str) -> anyhow::Result<()> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .map(|_| ())
    }

    pub fn current_url(&self) -> anyhow::Result<String> {
        let v = self.cmd(reqwest::Method::GET, "/url", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub fn title(&self) -> anyhow::Result<String> {
        let v = self.cmd(reqwest::Method::GET, "/title", None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching a CSS selector, if any (an empty list is not an error).
    pub fn find(&self, css: &str) -> anyhow::Result<Option<String>> {
        let v = self.cmd(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(v.as_array()
            .and_then(|a| a.first())
            .and_then(|e| e[ELEMENT_KEY].as_str())
            .map(str::to_string))
    }

    /// The first element matching `css`, polled (bounded, 20 s) while the page loads: after a
    /// click that submits a form, the URL can change before the new document is there.
    pub fn wait_for(&self, css: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(e) = self.find(css)? {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                bail!("never saw {css}; at {}", self.current_url()?);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn text(&self, element: &str) -> anyhow::Result<String> {
        let v = self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// An element's DOM property (an input's `value` is a property, not text).
    pub fn property(&self, element: &str, name: &str) -> anyhow::Result<String> {
        let v = self.cmd(
            reqwest::Method::GET,
            &format!("/element/{element}/property/{name}"),
            None,
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub fn type_into(&self, element: &str, text: &str) -> anyhow::Result<()> {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .map(|_| ())
    }

    pub fn click(&self, element: &str) -> anyhow::Result<()> {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(&self.base)
            .timeout(Duration::from_secs(10))
            .send();
    }
}

/// One WebDriver command; returns its `value`, or the WebDriver error (W3C §6.6) as an error.
pub fn call(
    http: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method.clone(), url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .with_context(|| format!("{method} {url}: not JSON"))?;
    if !status.is_success() {
        bail!(
            "{method} {url}: {} {}",
            v["value"]["error"].as_str().unwrap_or("error"),
            v["value"]["message"].as_str().unwrap_or_default()
        );
    }
    Ok(v["value"].clone())
}

impl Session<'_> {
    /// Runs `script` as the body of a function in the page (W3C WebDriver §13.2.1 "Execute
    /// Script"); with `async_`, the script calls `arguments[arguments.length - 1]` with its
    /// result (§13.2.2). WebDriver injects it through the DevTools protocol, which the page's
    /// Content-Security-Policy does not govern, so a strict CSP need not be loosened for it.
    pub fn execute(&self, script: &str, args: Value, async_: bool) -> anyhow::Result<Value> {
        let path = if async_ {
            "/execute/async"
        } else {
            "/execute/sync"
        };
        self.cmd(
            reqwest::Method::POST,
            path,
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Sets the window's size in CSS pixels (W3C WebDriver §11.8.2).
    pub fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .map(|_| ())
    }
}
