//! Runs the whole command in-process (`kubelogin::run`) against the stub provider with a fake
//! clock, a fake console, and a "browser" that follows redirects over real HTTP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kubelogin::deps::real::ReqwestFactory;
use kubelogin::testing::FakeDeps;
use kubelogin::Cli;

use clap::Parser;

use crate::stub::{Config, Stub};

pub struct Harness {
    pub fake: FakeDeps,
    pub stub: Arc<Stub>,
    pub dir: tempfile::TempDir,
    /// Final URL and status the browser reached, and the body.
    pub landed: Arc<Mutex<Vec<(String, u16, String)>>>,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let mut fake = FakeDeps::new();
        fake.deps.http = Arc::new(ReqwestFactory);
        let stub = Stub::start(fake.clock.clone(), config);
        let landed = Arc::new(Mutex::new(Vec::new()));
        let sink = landed.clone();
        fake.browser.on_open(move |url| {
            let url = url.to_string();
            let sink = sink.clone();
            // A browser works on its own; the flow keeps serving the loopback meanwhile.
            std::thread::spawn(move || {
                // Trusts the loopback server's test certificate (--local-server-cert).
                let client = reqwest::blocking::Client::builder()
                    .danger_accept_invalid_certs(true)
                    .build()
                    .unwrap();
                match client.get(&url).send() {
                    Ok(r) => {
                        let final_url = r.url().to_string();
                        let status = r.status().as_u16();
                        let body = r.text().unwrap_or_default();
                        sink.lock().unwrap().push((final_url, status, body));
                    }
                    Err(e) => sink.lock().unwrap().push((url, 0, e.to_string())),
                }
            });
            Ok(())
        });
        Harness {
            fake,
            stub,
            dir: tempfile::tempdir().unwrap(),
            landed,
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The provider flags and a private cache directory, then `extra`.
    pub fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "kubectl-oidc_login".to_string(),
            command.to_string(),
            format!("--oidc-issuer-url={}", self.stub.issuer),
            format!("--oidc-client-id={}", self.stub.client_id),
            "--listen-address=127.0.0.1:0".to_string(),
            "--authentication-timeout-sec=10".to_string(),
        ];
        if command != "setup" {
            args.push(format!("--token-cache-dir={}", self.cache_dir().display()));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn run(&self, extra: &[&str]) -> kubelogin::Result<String> {
        self.run_command("get-token", extra)
    }

    pub fn run_command(&self, command: &str, extra: &[&str]) -> kubelogin::Result<String> {
        let cli = Cli::try_parse_from(self.args(command, extra)).unwrap();
        kubelogin::run(cli, self.fake.deps.clone())
    }

    /// `command` with exactly `args` and the harness's cache directory, nothing else (for
    /// `status` and `clean --issuer`, which take no provider flags of their own).
    pub fn run_bare(&self, command: &str, args: &[&str]) -> kubelogin::Result<String> {
        let mut all = vec![
            "kubectl-oidc_login".to_string(),
            command.to_string(),
            format!("--token-cache-dir={}", self.cache_dir().display()),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let cli = Cli::try_parse_from(all).unwrap();
        kubelogin::run(cli, self.fake.deps.clone())
    }

    /// Every token the cache holds, on disk and in the keyring (to check none is shown).
    pub fn cached_tokens(&self, keyring_items: &[String]) -> Vec<String> {
        let mut texts: Vec<String> = keyring_items.to_vec();
        for name in self.cache_entries() {
            texts.push(std::fs::read_to_string(self.cache_dir().join(name)).unwrap());
        }
        let mut tokens = Vec::new();
        for t in texts {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            for field in ["id_token", "refresh_token", "access_token"] {
                if let Some(tok) = v[field].as_str() {
                    tokens.push(tok.to_string());
                    // No part of a JWT either (its signature alone is a secret's worth).
                    tokens.extend(tok.split('.').filter(|p| p.len() > 8).map(str::to_string));
                }
            }
        }
        tokens
    }

    /// Token files in the cache (not locks or back-off records).
    pub fn cache_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.cache_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn console(&self) -> String {
        self.fake.console_text()
    }
}

/// The token and expiry of an ExecCredential.
pub fn token_of(out: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    (
        v["status"]["token"].as_str().unwrap().to_string(),
        v["status"]["expirationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// Whether the machine has an IPv6 loopback. With `REQUIRE_IPV6=1` (set by
/// `tests/run-all.sh`) a missing one fails the test instead of skipping it.
pub fn ipv6_loopback() -> bool {
    let ok = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        assert!(
            std::env::var("REQUIRE_IPV6").as_deref() != Ok("1"),
            "REQUIRE_IPV6=1 but [::1] cannot be bound here"
        );
        eprintln!("skipping: no IPv6 loopback here (set REQUIRE_IPV6=1 to make this fail)");
    }
    ok
}
