//! kubectl-oidc_login, run as kubectl runs it (one process per call), against the real IdP.

use e2e::{run_plugin, token_of};
use idp::clock::{Clock, SystemClock};
use idp::testing::{
    TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD, CONFIDENTIAL_CLIENT, PASSWORD_CLIENT,
};
use std::path::Path;
use std::process::Output;

struct Session {
    cache: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Session {
    fn new() -> Self {
        let cache = tempfile::tempdir().unwrap();
        let log = cache.path().join("browser.log");
        Session { cache, log }
    }
    fn browser_opens(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    fn args(&self, idp: &TestIdp, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            "get-token".to_string(),
            format!("--oidc-issuer-url={}", idp.issuer()),
            "--oidc-client-id=kubelogin".into(),
            "--oidc-extra-scope=email".into(),
            "--oidc-extra-scope=groups".into(),
            format!(
                "--token-cache-dir={}",
                self.cache.path().join("cache").display()
            ),
            "--listen-address=127.0.0.1:0".into(),
            format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
            "--authentication-timeout-sec=20".into(),
        ];
        if let Some(ca) = &idp.ca_path {
            a.push(format!("--certificate-authority={}", ca.display()));
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }
    fn env(&self, idp: &TestIdp) -> Vec<(&'static str, String)> {
        let mut e = vec![
            ("FAKE_BROWSER_USER", ALICE.to_string()),
            ("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD.to_string()),
            ("FAKE_BROWSER_LOG", self.log.display().to_string()),
        ];
        if let Some(ca) = &idp.ca_path {
            e.push(("FAKE_BROWSER_CA", ca.display().to_string()));
        }
        e
    }
    fn get_token(&self, idp: &TestIdp, extra: &[&str]) -> Output {
        run_plugin(&self.args(idp, extra), &self.env(idp)).unwrap()
    }
    fn get_token_env(
        &self,
        idp: &TestIdp,
        extra: &[&str],
        more: &[(&'static str, String)],
    ) -> Output {
        let mut env = self.env(idp);
        env.extend(more.iter().cloned());
        run_plugin(&self.args(idp, extra), &env).unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one ExecCredential JSON");
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert!(v["status"]["expirationTimestamp"].is_string());
    token_of(out).unwrap()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "an error: line: {err}"
    );
    err
}

fn claim(token: &str, name: &str) -> serde_json::Value {
    shared::jwt::decode_claims_unverified::<serde_json::Value>(token).unwrap()[name].clone()
}

#[test]
fn browser_login_then_cache_then_refresh_then_refresh_again() {
    let idp = TestIdp::start();
    let s = Session::new();
    let t1 = ok(&s.get_token(&idp, &[]));
    assert_eq!(claim(&t1, "email"), "alice@example.com");
    assert_eq!(claim(&t1, "groups"), serde_json::json!(["developers"]));
    assert_eq!(s.browser_opens(), 1);
    assert_eq!(idp.token_grants("authorization_code"), 1);

    let t2 = ok(&s.get_token(&idp, &[]));
    assert_eq!(t2, t1, "served from the cache");
    assert_eq!(s.browser_opens(), 1);
    assert_eq!(
        idp.token_grants("authorization_code") + idp.token_grants("refresh_token"),
        1,
        "no token request"
    );

    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new iat, so a new token
    let t3 = ok(&s.get_token(&idp, &["--force-refresh"]));
    assert_ne!(t3, t1);
    assert_eq!(idp.token_grants("refresh_token"), 1);
    let t4 = ok(&s.get_token(&idp, &["--force-refresh"]));
    assert_eq!(idp.token_grants("refresh_token"), 2);
    assert_eq!(claim(&t4, "sub"), claim(&t1, "sub"));
    assert_eq!(s.browser_opens(), 1, "refreshes never open the browser");
}

#[test]
fn twenty_parallel_calls_at_expiry_make_one_refresh() {
    let idp = TestIdp::start_with(TestIdpOptions {
        manual_clock: true,
        ..Default::default()
    });
    let s = Session::new();
    // Log in with tokens that expire in 20 s: inside the refresh margin.
    idp.clock().set(SystemClock.now() - 3600 + 20);
    ok(&s.get_token(&idp, &[]));
    idp.clock().set(SystemClock.now());
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (args, env) = (s.args(&idp, &[]), s.env(&idp));
            std::thread::spawn(move || run_plugin(&args, &env).unwrap())
        })
        .collect();
    let tokens: Vec<String> = handles
        .into_iter()
        .map(|h| ok(&h.join().unwrap()))
        .collect();
    assert_eq!(
        idp.token_grants("refresh_token"),
        1,
        "exactly one refresh for 20 callers"
    );
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "all got the same token"
    );
    assert_eq!(s.browser_opens(), 1);
}

#[test]
fn device_code_grant_is_approved_in_a_separate_browser() {
    let idp = TestIdp::start();
    let s = Session::new();
    let t = ok(&s.get_token(&idp, &["--grant-type=device-code"]));
    assert_eq!(claim(&t, "email"), "alice@example.com");
    assert_eq!(idp.token_grants(shared::token::grant_type::DEVICE_CODE), 1);
    let opened = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        opened.contains("/device?user_code="),
        "opened verification_uri_complete: {opened}"
    );
}

#[test]
fn password_grant() {
    let idp = TestIdp::start();
    let s = Session::new();
    let t = ok(&s.get_token(
        &idp,
        &[
            "--grant-type=password",
            &format!("--oidc-client-id={PASSWORD_CLIENT}"),
            &format!("--username={ALICE}"),
            &format!("--password={ALICE_PASSWORD}"),
        ],
    ));
    assert_eq!(claim(&t, "aud"), PASSWORD_CLIENT);
    assert_eq!(s.browser_opens(), 0);
}

#[test]
fn client_credentials_grant_hands_over_the_access_token() {
    let idp = TestIdp::start();
    let s = Session::new();
    let secret = format!("--oidc-client-secret={}", idp.confidential_secret);
    let t = ok(&s.get_token(
        &idp,
        &[
            "--grant-type=client-credentials",
            &format!("--oidc-client-id={CONFIDENTIAL_CLIENT}"),
            &secret,
            "--oidc-use-access-token",
        ],
    ));
    assert_eq!(claim(&t, "sub"), CONFIDENTIAL_CLIENT);
    assert_eq!(idp.token_grants("client_credentials"), 1);
}

#[test]
fn es256_tokens_are_accepted() {
    let idp = TestIdp::start_with(TestIdpOptions {
        algorithm: "ES256".into(),
        ..Default::default()
    });
    let s = Session::new();
    let t = ok(&s.get_token(&idp, &[]));
    let h: serde_json::Value = shared::jwt::decode_header_unverified(&t).unwrap();
    assert_eq!(h["alg"], "ES256");
}

#[test]
fn https_issuer_needs_its_ca() {
    let idp = TestIdp::start_with(TestIdpOptions {
        tls: true,
        ..Default::default()
    });
    let s = Session::new();
    ok(&s.get_token(&idp, &[]));
    // Without the CA the system roots do not know the local CA: a TLS error with a hint.
    let args: Vec<String> = s
        .args(&idp, &["--force-refresh"])
        .into_iter()
        .filter(|a| !a.starts_with("--certificate-authority"))
        .collect();
    let other_cache = tempfile::tempdir().unwrap();
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a.starts_with("--token-cache-dir") {
                format!("--token-cache-dir={}", other_cache.path().display())
            } else {
                a
            }
        })
        .collect();
    let err = failed(&run_plugin(&args, &s.env(&idp)).unwrap());
    assert!(err.contains("--certificate-authority"), "{err}");
}

#[test]
fn disabling_the_user_ends_access_without_a_browser_storm() {
    let idp = TestIdp::start();
    let s = Session::new();
    ok(&s.get_token(&idp, &[]));
    idp.disable_user(ALICE);
    // The refresh is refused, the plugin falls back to a login, which the (absent) user never
    // completes.
    let ignore = [("FAKE_BROWSER_ACTION", "ignore".to_string())];
    let err = failed(&s.get_token_env(
        &idp,
        &["--force-refresh", "--authentication-timeout-sec=2"],
        &ignore,
    ));
    assert!(
        err.contains("refresh token was not accepted") && err.contains("invalid_grant"),
        "the reason is shown: {err}"
    );
    let opened = s.browser_opens();
    assert_eq!(opened, 2);
    // An IDE calling kubectl in a loop right after: no new browser tab each time.
    for _ in 0..3 {
        failed(&s.get_token_env(
            &idp,
            &["--force-refresh", "--authentication-timeout-sec=2"],
            &ignore,
        ));
    }
    assert_eq!(s.browser_opens(), opened, "back-off: no browser storm");
}

#[test]
fn revoke_all_forces_a_new_login() {
    let idp = TestIdp::start();
    let s = Session::new();
    ok(&s.get_token(&idp, &[]));
    idp.revoke_all("kubelogin");
    ok(&s.get_token(&idp, &["--force-refresh"]));
    assert_eq!(
        s.browser_opens(),
        2,
        "the refresh failed, so the user logged in again"
    );
    assert_eq!(idp.token_grants("authorization_code"), 2);
}

#[test]
fn clean_revoke_revokes_the_refresh_token_at_the_idp() {
    let idp = TestIdp::start();
    let s = Session::new();
    ok(&s.get_token(&idp, &[]));
    let mut args = s.args(&idp, &["--revoke"]);
    args[0] = "clean".into();
    args.retain(|a| {
        !a.starts_with("--browser-command")
            && !a.starts_with("--listen-address")
            && !a.starts_with("--authentication-timeout")
    });
    let out = run_plugin(&args, &s.env(&idp)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!has_files(&s.cache.path().join("cache")), "cache emptied");
    // The family is revoked at the IdP: its audit log says so.
    let st = idp.state.clone();
    let revoked = idp.block_on(async move {
        st.store
            .audit_events(idp::store::AuditFilter {
                event: Some("token_revoked".into()),
                ..Default::default()
            })
            .await
            .unwrap()
    });
    assert_eq!(revoked.len(), 1);
}

fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().any(|e| e.path().is_file()))
        .unwrap_or(false)
}
