//! The story with real kubectl: kubectl runs the built plugin from a kubeconfig `exec` entry,
//! headless Chromium signs in at the IdP (over HTTPS with its own CA), and a kube-apiserver
//! stand-in authenticates the ID token with kube-apiserver's OIDC rules and answers
//! `kubectl auth whoami` and `kubectl get --raw /version`.

use e2e::apiserver::{ApiServer, ApiServerSettings, ExecConfig};
use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD, PASSWORD_CLIENT};
use serde_json::Value;
use shared::kube_oidc::Settings;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KUBECTL: &str = "/usr/bin/kubectl";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
/// Every kubectl call is bounded; a browser login takes a few seconds.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
const V1: &str = "client.authentication.k8s.io/v1";
const V1BETA1: &str = "client.authentication.k8s.io/v1beta1";
const CHROMIUM_LOG: &str = "chromium.log";
const CHROMIUM_EXITS: &str = "chromium.exit";
const FAKE_LOG: &str = "fake-browser.log";

/// Which program the plugin opens as the browser.
#[derive(Clone, Copy, PartialEq)]
enum Browser {
    /// Headless Chromium signing in as alice.
    Chromium,
    /// A user who never completes the login (the fake browser with FAKE_BROWSER_ACTION=ignore).
    Absent,
}

/// An IdP over HTTPS, a kube-apiserver stand-in trusting it, and a user's home.
struct Story {
    idp: TestIdp,
    api: ApiServer,
    home: tempfile::TempDir,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Story {
    fn new(opts: TestIdpOptions, signing_algs: &[&str]) -> Story {
        let idp = TestIdp::start_with(TestIdpOptions { tls: true, ..opts });
        // kube-apiserver --oidc-issuer-url=<issuer> --oidc-client-id=kubelogin
        //   --oidc-username-claim=email --oidc-username-prefix=oidc:
        //   --oidc-groups-claim=groups --oidc-groups-prefix=oidc: --oidc-ca-file=<idp ca>
        let mut oidc = Settings::new(&idp.issuer(), "kubelogin");
        oidc.username_claim = "email".into();
        oidc.username_prefix = Some("oidc:".into());
        oidc.groups_claim = Some("groups".into());
        oidc.groups_prefix = Some("oidc:".into());
        oidc.signing_algs = signing_algs.iter().map(|s| s.to_string()).collect();
        let api = ApiServer::start(ApiServerSettings::new(oidc, idp.ca_path.clone())).unwrap();
        assert_eq!(
            api.stats().jwks_fetches,
            1,
            "{:?}",
            api.stats().last_fetch_error
        );
        Story {
            idp,
            api,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.log(name))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// URLs the plugin opened in either browser.
    fn browser_opens(&self) -> usize {
        self.lines(CHROMIUM_LOG).len() + self.lines(FAKE_LOG).len()
    }

    /// A kubeconfig whose user runs the plugin with the flags of
    /// kubeconfig-templates/authcode.yaml, plus test-only ones (cache dir, browser, port).
    fn kubeconfig(
        &self,
        name: &str,
        api_version: &str,
        extra: &[&str],
        browser: Browser,
    ) -> PathBuf {
        self.write_kubeconfig(name, &self.exec(api_version, extra, browser))
    }

    /// The `exec` entry of [`Story::kubeconfig`].
    fn exec(&self, api_version: &str, extra: &[&str], browser: Browser) -> ExecConfig {
        let ca = self.idp.ca_path.as_ref().unwrap();
        let browser_cmd = match browser {
            Browser::Chromium => env!("CARGO_BIN_EXE_chromium-browser"),
            Browser::Absent => env!("CARGO_BIN_EXE_fake-browser"),
        };
        let mut args: Vec<String> = vec![
            "get-token".into(),
            format!("--oidc-issuer-url={}", self.idp.issuer()),
            "--oidc-client-id=kubelogin".into(),
            "--oidc-extra-scope=email,groups".into(),
            format!("--certificate-authority={}", ca.display()),
            format!(
                "--token-cache-dir={}",
                self.home.path().join("cache").display()
            ),
            "--listen-address=127.0.0.1:0".into(),
            format!("--browser-command={browser_cmd}"),
        ];
        if browser == Browser::Chromium {
            // Fail before kubectl's own deadline if the browser never comes back.
            args.push("--authentication-timeout-sec=45".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let server_cert = self.idp.dir.join("certs").join("server.crt");
        let env: Vec<(String, String)> = match browser {
            Browser::Chromium => vec![
                ("CHROMIUM_USER".into(), ALICE.into()),
                ("CHROMIUM_PASSWORD".into(), ALICE_PASSWORD.into()),
                (
                    "CHROMIUM_SERVER_CERT".into(),
                    server_cert.display().to_string(),
                ),
                (
                    "CHROMIUM_LOG".into(),
                    self.log(CHROMIUM_LOG).display().to_string(),
                ),
                (
                    "CHROMIUM_EXIT_LOG".into(),
                    self.log(CHROMIUM_EXITS).display().to_string(),
                ),
            ],
            Browser::Absent => vec![
                ("FAKE_BROWSER_ACTION".into(), "ignore".into()),
                (
                    "FAKE_BROWSER_LOG".into(),
                    self.log(FAKE_LOG).display().to_string(),
                ),
            ],
        };
        ExecConfig {
            api_version: api_version.into(),
            command: e2e::plugin_path(),
            args,
            env,
            interactive_mode: (api_version == V1).then(|| "Never".to_string()),
        }
    }

    fn write_kubeconfig(&self, name: &str, exec: &ExecConfig) -> PathBuf {
        let path = self.home.path().join(format!("{name}.kubeconfig"));
        self.api.write_kubeconfig(&path, exec).unwrap();
        path
    }

    /// Runs kubectl with a deadline, its output in files (a pipe would also wait for any
    /// process that inherited it).
    fn kubectl(&self, kubectl: &str, kubeconfig: &Path, args: &[&str]) -> Run {
        let out = self.home.path().join("kubectl.out");
        let err = self.home.path().join("kubectl.err");
        let mut child = Command::new(kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .env("HOME", self.home.path())
            // `kubectl oidc-login` finds the plugin on PATH, as after `cargo install`.
            .env("PATH", path_with_plugin())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > KUBECTL_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kubectl {args:?} timed out; stderr: {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            ok: status.success(),
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
        }
    }

    /// `kubectl auth whoami -o json`: (username, groups).
    fn whoami(&self, kubectl: &str, kubeconfig: &Path) -> (String, Vec<String>) {
        let run = self.kubectl(kubectl, kubeconfig, &["auth", "whoami", "-o", "json"]);
        assert!(run.ok, "kubectl auth whoami failed: {}", run.stderr);
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["kind"], "SelfSubjectReview", "{v}");
        let info = &v["status"]["userInfo"];
        let groups = info["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        (info["username"].as_str().unwrap().to_string(), groups)
    }

    fn grants(&self) -> (u64, u64) {
        (
            self.idp.token_grants("authorization_code"),
            self.idp.token_grants("refresh_token"),
        )
    }

    fn authenticated(&self) -> usize {
        self.api.stats().authenticated.len()
    }
}

impl Drop for Story {
    /// The plugin does not wait for its browser: wait here until every Chromium run has
    /// cleaned up, so no browser outlives the test (bounded, and never a second panic).
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.lines(CHROMIUM_EXITS).len() < self.lines(CHROMIUM_LOG).len()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !std::thread::panicking() {
            let failures: Vec<String> = self
                .lines(CHROMIUM_EXITS)
                .into_iter()
                .filter(|l| l != "0")
                .collect();
            assert!(failures.is_empty(), "chromium-browser failed: {failures:?}");
        }
    }
}

fn path_with_plugin() -> String {
    format!(
        "{}:{}",
        e2e::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn assert_alice(user: &(String, Vec<String>)) {
    assert_eq!(user.0, "oidc:alice@example.com");
    assert!(
        user.1.contains(&"oidc:developers".to_string()),
        "{:?}",
        user.1
    );
    assert!(
        user.1.contains(&"system:authenticated".to_string()),
        "{:?}",
        user.1
    );
}

#[test]
fn authcode_login_in_chromium_then_cache_then_refresh() {
    // 75 s tokens: a fresh one is outside the plugin's 60 s refresh margin, so the next calls
    // are cache hits, and 15 s later it is inside it, so the next call refreshes. (The manual
    // clock of the parallel-refresh test would not do here: the second call must be a hit.)
    let s = Story::new(
        TestIdpOptions {
            token_lifetime: 75,
            ..Default::default()
        },
        &["RS256"],
    );
    let kc = s.kubeconfig("authcode", V1, &[], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &kc));
    assert_eq!(s.browser_opens(), 1);
    assert_eq!(s.grants(), (1, 0));
    let first = s.api.stats().authenticated.last().unwrap().clone();

    // Cached: no browser, no token request at the IdP, the same token at the API server.
    assert_alice(&s.whoami(KUBECTL, &kc));
    let version = s.kubectl(KUBECTL, &kc, &["get", "--raw", "/version"]);
    assert!(version.ok, "{}", version.stderr);
    let v: Value = serde_json::from_str(&version.stdout).unwrap();
    assert_eq!(v["gitVersion"], "v1.32.0-standin");
    assert_eq!(s.browser_opens(), 1);
    assert_eq!(s.grants(), (1, 0), "cache hits make no token request");
    assert!(s
        .api
        .stats()
        .authenticated
        .iter()
        .all(|a| a.exp == first.exp));

    // Inside the refresh margin: refreshed without a browser.
    let refresh_at = first.exp - 60 + 1;
    while idp::clock::Clock::now(&idp::clock::SystemClock) < refresh_at {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_alice(&s.whoami(KUBECTL, &kc));
    assert_eq!(s.grants(), (1, 1), "one refresh");
    assert_eq!(s.browser_opens(), 1, "no browser for a refresh");
    let last = s.api.stats().authenticated.last().unwrap().clone();
    assert!(last.exp > first.exp, "a new token reached the API server");
    assert!(
        s.api.stats().rejected.is_empty(),
        "{:?}",
        s.api.stats().rejected
    );
}

#[test]
fn device_code_approved_in_chromium() {
    let s = Story::new(TestIdpOptions::default(), &["RS256"]);
    let kc = s.kubeconfig(
        "device",
        V1,
        &["--grant-type=device-code"],
        Browser::Chromium,
    );
    assert_alice(&s.whoami(KUBECTL, &kc));
    assert_eq!(
        s.idp.token_grants(shared::token::grant_type::DEVICE_CODE),
        1
    );
    let opened = s.lines(CHROMIUM_LOG);
    assert!(opened[0].contains("/device?user_code="), "{opened:?}");
    assert_eq!(s.grants(), (0, 0));
}

#[test]
fn disabled_user_gets_no_token_through_kubectl() {
    let s = Story::new(TestIdpOptions::default(), &["RS256"]);
    let kc = s.kubeconfig("authcode", V1, &[], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &kc));

    s.idp.disable_user(ALICE);
    // kube-apiserver verifies ID tokens locally: the cached one works until it expires (the
    // token lifetime bounds how long an offboarded user keeps access).
    assert_alice(&s.whoami(KUBECTL, &kc));
    let before = s.authenticated();
    // The next refresh is refused; the plugin falls back to a login nobody completes.
    let refresh = s.kubeconfig(
        "refresh",
        V1,
        &["--force-refresh", "--authentication-timeout-sec=2"],
        Browser::Absent,
    );
    let run = s.kubectl(KUBECTL, &refresh, &["auth", "whoami", "-o", "json"]);
    assert!(!run.ok, "kubectl must fail: {}", run.stdout);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("error: "),
        "the plugin says why: {}",
        run.stderr
    );
    assert_eq!(s.browser_opens(), 2, "one fallback login was attempted");
    assert_eq!(s.grants(), (1, 0), "no refresh succeeded");
    assert_eq!(
        s.authenticated(),
        before,
        "the API server saw no valid token"
    );
}

#[test]
fn revoke_all_forces_a_new_login() {
    let s = Story::new(TestIdpOptions::default(), &["RS256"]);
    let kc = s.kubeconfig("authcode", V1, &[], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &kc));
    s.idp.revoke_all("kubelogin");
    // ID tokens already issued stay valid at the API server until they expire (it verifies
    // them locally); the next refresh is where revocation bites.
    let refresh = s.kubeconfig("refresh", V1, &["--force-refresh"], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &refresh));
    assert_eq!(
        s.browser_opens(),
        2,
        "the refresh failed, so the browser opened again"
    );
    assert_eq!(s.grants(), (2, 0));
}

#[test]
fn key_rotation_keeps_old_tokens_and_the_api_server_fetches_the_new_key() {
    let s = Story::new(TestIdpOptions::default(), &["RS256", "ES256"]);
    let kc = s.kubeconfig("authcode", V1, &[], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &kc));
    let old = s.api.stats().authenticated.last().unwrap().clone();

    let new_kid = s.idp.rotate_key("ES256");
    assert_ne!(old.kid.as_deref(), Some(new_kid.as_str()));
    // The cached token, signed with the old key, still verifies.
    assert_alice(&s.whoami(KUBECTL, &kc));
    assert_eq!(s.api.stats().jwks_fetches, 1, "no re-fetch for a known key");

    // A refreshed token carries the new kid: unknown to the stand-in, which re-fetches.
    let refresh = s.kubeconfig("refresh", V1, &["--force-refresh"], Browser::Chromium);
    assert_alice(&s.whoami(KUBECTL, &refresh));
    let stats = s.api.stats();
    let last = stats.authenticated.last().unwrap();
    assert_eq!(last.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(stats.jwks_fetches, 2, "{:?}", stats.last_fetch_error);
    assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
    assert_eq!(s.grants(), (1, 1));
    assert_eq!(s.browser_opens(), 1);

    // And tokens of the old key keep working after the re-fetch, while they live: the IdP
    // still publishes the retired key.
    assert_eq!(s.api.get_with_token("/version", &old.token).unwrap(), 200);
    assert_eq!(s.api.get_with_token("/version", "not-a-jwt").unwrap(), 401);
}

#[test]
fn kubectl_1_27_1_32_1_33_with_exec_v1_and_v1beta1() {
    let s = Story::new(TestIdpOptions::default(), &["RS256"]);
    // kubectl 1.27 has SelfSubjectReview at v1beta1 only; it went GA in 1.28.
    for (kubectl, review) in [
        (KUBECTL_127, "v1beta1"),
        (KUBECTL, "v1"),
        (KUBECTL_133, "v1"),
    ] {
        for api_version in [V1, V1BETA1] {
            let kc = s.kubeconfig("k", api_version, &[], Browser::Chromium);
            let seen = s.api.stats().authenticated.len();
            assert_alice(&s.whoami(kubectl, &kc));
            let version = s.kubectl(kubectl, &kc, &["get", "--raw", "/version"]);
            assert!(version.ok, "{kubectl} {api_version}: {}", version.stderr);
            let paths: Vec<String> = s.api.stats().authenticated[seen..]
                .iter()
                .map(|a| a.path.clone())
                .collect();
            let want = format!("/apis/authentication.k8s.io/{review}/selfsubjectreviews");
            assert!(paths.contains(&want), "{kubectl}: {paths:?}");
            assert!(
                paths.contains(&"/version".to_string()),
                "{kubectl}: {paths:?}"
            );
            assert_eq!(s.browser_opens(), 1, "{kubectl} {api_version}");
        }
    }
    // The templates' form: `command: kubectl` with `oidc-login` as the first argument, which
    // kubectl resolves to kubectl-oidc_login on PATH.
    let mut exec = s.exec(V1, &[], Browser::Chromium);
    exec.command = "kubectl".into();
    exec.args.insert(0, "oidc-login".into());
    exec.interactive_mode = Some("IfAvailable".into());
    let kc = s.write_kubeconfig("plugin", &exec);
    assert_alice(&s.whoami(KUBECTL, &kc));
    assert_eq!(
        s.grants(),
        (1, 0),
        "one login serves every kubectl and exec version"
    );
    assert!(
        s.api.stats().rejected.is_empty(),
        "{:?}",
        s.api.stats().rejected
    );
}

#[test]
fn chromium_browser_fails_cleanly_on_a_refused_login_or_an_untrusted_idp() {
    let idp = TestIdp::start_with(TestIdpOptions {
        tls: true,
        ..Default::default()
    });
    let browse = |password: &str, pin: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chromium-browser"));
        c.arg(format!("{}/device?user_code=BCDF-GHJK", idp.issuer()))
            .env("CHROMIUM_USER", ALICE)
            .env("CHROMIUM_PASSWORD", password)
            .env("CHROMIUM_TIMEOUT_SEC", "20")
            .env_remove("CHROMIUM_SERVER_CERT")
            .stdin(Stdio::null());
        if pin {
            c.env(
                "CHROMIUM_SERVER_CERT",
                idp.dir.join("certs").join("server.crt"),
            );
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
        err
    };
    let err = browse("wrong-password", true);
    assert!(err.contains("refused the login"), "{err}");
    // Without the pin Chromium verifies the certificate against its roots and refuses the
    // IdP's local CA: the pin is what makes it trusted, nothing else is relaxed.
    let err = browse(ALICE_PASSWORD, false);
    assert!(err.contains("does not trust the certificate"), "{err}");
}

/// A real ID token for the password-grant client, straight from the IdP's token endpoint.
fn password_grant_token(idp: &TestIdp) -> String {
    let resp: Value = idp
        .http_client()
        .post(format!("{}/oauth/token", idp.issuer()))
        .form(&[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
            ("scope", "openid email groups"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    resp["id_token"].as_str().expect("id_token").to_string()
}

#[test]
fn api_server_stand_in_follows_its_oidc_flags() {
    let idp = TestIdp::start_with(TestIdpOptions {
        tls: true,
        ..Default::default()
    });
    let token = password_grant_token(&idp);
    let ca = idp.ca_path.clone();
    let start = |issuer: &str, client: &str, ca: Option<PathBuf>| {
        let mut oidc = Settings::new(issuer, client);
        oidc.username_claim = "email".into();
        ApiServer::start(ApiServerSettings::new(oidc, ca)).unwrap()
    };

    let api = start(&idp.issuer(), PASSWORD_CLIENT, ca.clone());
    assert_eq!(api.get_with_token("/version", &token).unwrap(), 200);
    assert_eq!(api.get_with_token("/nope", &token).unwrap(), 404);
    assert_eq!(api.get_with_token("/version", "").unwrap(), 401);
    assert_eq!(
        api.stats().authenticated[0].user.username,
        "alice@example.com",
        "no prefix for email by default"
    );

    // --oidc-client-id of another client: the audience does not match.
    let api = start(&idp.issuer(), "kubelogin", ca.clone());
    assert_eq!(api.get_with_token("/version", &token).unwrap(), 401);
    assert_eq!(
        api.stats().rejected[0].kind,
        Some(shared::kube_oidc::RejectKind::AudienceMismatch)
    );

    // The trailing-slash landmine: discovery names the issuer without it, so kube-apiserver's
    // authenticator never initialises and every token gets 401.
    let api = start(&format!("{}/", idp.issuer()), PASSWORD_CLIENT, ca.clone());
    let err = api.stats().last_fetch_error.unwrap();
    assert!(err.contains("issuer did not match"), "{err}");
    assert_eq!(api.get_with_token("/version", &token).unwrap(), 401);
    assert!(api.stats().rejected[0].reason.contains("not initialized"));

    // Without --oidc-ca-file the local CA is unknown: no keys, 401.
    let api = start(&idp.issuer(), PASSWORD_CLIENT, None);
    assert!(api.stats().last_fetch_error.is_some());
    assert_eq!(api.stats().jwks_fetches, 0);
    assert_eq!(api.get_with_token("/version", &token).unwrap(), 401);
}
