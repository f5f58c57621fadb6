//! kubectl-oidc_login against our real IdP, in-process (`idp::testing::TestIdp`): every grant,
//! the cache lifecycle, key rotation, revocation, and parallel processes at expiry.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use clap::Parser;
use idp::testing::{
    Browser, TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD, CONFIDENTIAL_CLIENT, PASSWORD_CLIENT,
};
use kubelogin::deps::real::{ReqwestFactory, SystemClock, ThreadSleeper};
use kubelogin::testing::FakeDeps;
use kubelogin::Cli;

use crate::harness::token_of;

const CLIENT: &str = "kubelogin";

struct Run {
    idp: TestIdp,
    fake: FakeDeps,
    dir: tempfile::TempDir,
}

impl Run {
    /// The IdP with a hand-moved clock, and kubectl-oidc_login's fake clock set to it.
    fn manual(opts: TestIdpOptions) -> Run {
        let idp = TestIdp::start_with(TestIdpOptions {
            manual_clock: true,
            ..opts
        });
        let mut fake = FakeDeps::new();
        fake.deps.http = Arc::new(ReqwestFactory);
        fake.clock.set(
            Utc.timestamp_opt(idp::clock::Clock::now(idp.clock()) as i64, 0)
                .unwrap(),
        );
        let run = Run {
            idp,
            fake,
            dir: tempfile::tempdir().unwrap(),
        };
        run.browser_as(ALICE, ALICE_PASSWORD, true);
        run
    }

    /// The IdP and kubectl-oidc_login both on the wall clock and real sleeps.
    fn real_time(opts: TestIdpOptions) -> Run {
        let mut run = Run::manual(TestIdpOptions {
            manual_clock: false,
            ..opts
        });
        run.fake.deps.clock = Arc::new(SystemClock);
        run.fake.deps.sleeper = Arc::new(ThreadSleeper);
        run
    }

    /// The browser signs in at the IdP as `user` and allows (or denies) consent.
    fn browser_as(&self, user: &'static str, password: &'static str, allow: bool) {
        let http = self.idp.http_client();
        self.fake.browser.on_open(move |url| {
            let (url, http) = (url.to_string(), http.clone());
            std::thread::spawn(move || {
                let _ = Browser::new(http).login(&url, user, password, allow);
            });
            Ok(())
        });
    }

    fn advance(&self, secs: u64) {
        self.idp.clock().advance(secs);
        self.fake
            .clock
            .advance(std::time::Duration::from_secs(secs));
    }

    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "kubectl-oidc_login".to_string(),
            command.to_string(),
            format!("--oidc-issuer-url={}", self.idp.issuer()),
            "--listen-address=127.0.0.1:0".to_string(),
            "--authentication-timeout-sec=30".to_string(),
        ];
        if !extra.iter().any(|e| e.starts_with("--oidc-client-id")) {
            a.push(format!("--oidc-client-id={CLIENT}"));
        }
        if command != "setup" {
            a.push(format!("--token-cache-dir={}", self.cache_dir().display()));
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn cache_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cache")
    }

    fn run(&self, command: &str, extra: &[&str]) -> kubelogin::Result<String> {
        let cli = Cli::try_parse_from(self.args(command, extra)).unwrap();
        kubelogin::run(cli, self.fake.deps.clone())
    }

    fn get_token(&self, extra: &[&str]) -> String {
        let out = self.run("get-token", extra).unwrap();
        token_of(&out).0
    }
}

fn claims(token: &str) -> serde_json::Value {
    shared::jwt::decode_claims_unverified(token).unwrap()
}

#[test]
fn authcode_cache_lifecycle_none_valid_refreshed_refreshed_again() {
    let r = Run::manual(TestIdpOptions {
        token_lifetime: 600,
        ..TestIdpOptions::default()
    });
    // none → valid: the browser signs in at the IdP.
    let first = r.get_token(&[]);
    assert_eq!(r.idp.token_grants("authorization_code"), 1);
    let c = claims(&first);
    assert_eq!(c["iss"], r.idp.issuer().as_str());
    assert_eq!(c["aud"], CLIENT);
    // valid → cache hit, nothing at the IdP.
    assert_eq!(r.get_token(&[]), first);
    assert_eq!(r.idp.token_grants("refresh_token"), 0);
    // within the margin of exp → refreshed.
    r.advance(550);
    let second = r.get_token(&[]);
    assert_ne!(second, first);
    assert_eq!(r.idp.token_grants("refresh_token"), 1);
    // refreshed again with the rotated refresh token.
    r.advance(600);
    let third = r.get_token(&[]);
    assert_ne!(third, second);
    assert_eq!(r.idp.token_grants("refresh_token"), 2);
    assert_eq!(r.idp.token_grants("authorization_code"), 1);
    assert_eq!(r.fake.browser.opened().len(), 1);
}

#[test]
fn es256_tokens_and_key_rotation() {
    let r = Run::manual(TestIdpOptions {
        algorithm: "ES256".into(),
        ..TestIdpOptions::default()
    });
    let first = r.get_token(&[]);
    let kid = r.idp.rotate_key("RS256");
    let second = r.get_token(&["--force-refresh"]);
    let header: serde_json::Value = shared::jwt::decode_header_unverified(&second).unwrap();
    assert_eq!(header["kid"], kid.as_str());
    assert_ne!(first, second);
}

#[test]
fn consent_denied_is_an_error_and_backs_off() {
    let r = Run::manual(TestIdpOptions::default());
    r.browser_as(ALICE, ALICE_PASSWORD, false);
    let err = r.run("get-token", &[]).unwrap_err().to_string();
    assert!(err.contains("access_denied"), "{err}");
    assert!(std::fs::read_dir(r.cache_dir())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".backoff")));
}

#[test]
fn revoked_sessions_lead_to_a_new_login() {
    let r = Run::manual(TestIdpOptions::default());
    r.get_token(&[]);
    r.idp.revoke_all(CLIENT);
    r.get_token(&["--force-refresh"]);
    assert_eq!(r.idp.token_grants("authorization_code"), 2);
}

#[test]
fn clean_revoke_ends_the_session_at_the_idp() {
    let r = Run::manual(TestIdpOptions::default());
    r.get_token(&[]);
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(r.cache_dir())
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    r.run("clean", &["--revoke"]).unwrap();
    assert!(!r.cache_dir().exists());
    // Put the old refresh token back: the IdP refuses it, so a new login happens.
    std::fs::create_dir_all(r.cache_dir()).unwrap();
    for (p, b) in saved {
        std::fs::write(p, b).unwrap();
    }
    r.get_token(&["--force-refresh"]);
    assert_eq!(r.idp.token_grants("refresh_token"), 0);
    assert_eq!(r.idp.token_grants("authorization_code"), 2);
}

#[test]
fn device_code_approved_at_the_idp() {
    let r = Run::real_time(TestIdpOptions::default());
    let http = r.idp.http_client();
    let issuer = r.idp.issuer();
    r.fake.browser.on_open(move |url| {
        let code = url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "user_code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let (http, issuer) = (http.clone(), issuer.clone());
        std::thread::spawn(move || {
            Browser::new(http)
                .device(&issuer, &code, ALICE, ALICE_PASSWORD, true)
                .unwrap();
        });
        Ok(())
    });
    let token = r.get_token(&["--grant-type=device-code"]);
    assert_eq!(claims(&token)["aud"], CLIENT);
    assert_eq!(
        r.idp
            .token_grants("urn:ietf:params:oauth:grant-type:device_code"),
        1
    );
}

#[test]
fn password_grant_at_the_idp() {
    let r = Run::manual(TestIdpOptions::default());
    let token = r.get_token(&[
        &format!("--oidc-client-id={PASSWORD_CLIENT}"),
        "--username=alice",
        "--password=alice-password-123",
    ]);
    assert_eq!(claims(&token)["aud"], PASSWORD_CLIENT);
    assert_eq!(r.idp.token_grants("password"), 1);
}

#[test]
fn client_credentials_access_token_at_the_idp() {
    let r = Run::manual(TestIdpOptions::default());
    let secret = format!("--oidc-client-secret={}", r.idp.confidential_secret);
    let token = r.get_token(&[
        &format!("--oidc-client-id={CONFIDENTIAL_CLIENT}"),
        &secret,
        "--grant-type=client-credentials",
        "--oidc-use-access-token",
    ]);
    assert!(!token.is_empty());
    assert_eq!(r.idp.token_grants("client_credentials"), 1);
}

#[test]
fn setup_shows_groups_from_the_idp() {
    let r = Run::manual(TestIdpOptions::default());
    let out = r.run("setup", &["--oidc-extra-scope=groups"]).unwrap();
    assert!(out.contains("developers"), "{out}");
    assert!(out.contains("--group=oidc:developers"), "{out}");
}

#[test]
fn https_idp_with_certificate_authority() {
    let r = Run::manual(TestIdpOptions {
        tls: true,
        ..TestIdpOptions::default()
    });
    let ca = format!(
        "--certificate-authority={}",
        r.idp.ca_path.as_ref().unwrap().display()
    );
    r.get_token(&[&ca]);
    let err = r
        .run("get-token", &["--token-cache-name=no-ca"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--certificate-authority"), "{err}");
}

fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubectl-oidc_login"));
    c.env("HOME", home)
        .env_remove("KUBERNETES_EXEC_INFO")
        .stdin(Stdio::null());
    c
}

/// The acceptance test: N parallel kubectl calls at expiry → one refresh grant at the
/// IdP, all succeed with the same token (`KUBELOGIN_PARALLEL`, default 50).
#[test]
fn parallel_processes_at_expiry_one_refresh_at_the_idp() {
    let n: usize = std::env::var("KUBELOGIN_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let r = Run::manual(TestIdpOptions::default());
    let now = idp::clock::SystemClock;
    let wall = idp::clock::Clock::now(&now);
    // Log in "3000 s ago": the token has 600 s left, inside a 900 s margin.
    r.idp.clock().set(wall - 3000);
    r.fake
        .clock
        .set(Utc.timestamp_opt(wall as i64 - 3000, 0).unwrap());
    r.get_token(&[]);
    r.idp.clock().set(wall);
    let args = r.args("get-token", &["--token-refresh-margin-sec=900"]);
    let children: Vec<_> = (0..n)
        .map(|_| {
            bin(r.dir.path())
                .args(&args[1..])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tokens = std::collections::BTreeSet::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        tokens.insert(token_of(&String::from_utf8_lossy(&o.stdout)).0);
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(r.idp.token_grants("refresh_token"), 1);
}
