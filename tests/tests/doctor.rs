//! `kubectl oidc-login doctor` against the real IdP: a healthy setup, and the landmines it must
//! name — the trailing-slash issuer, a CA kube-apiserver lacks, an unregistered redirect URI.

use e2e::run_plugin;
use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD};
use std::process::Output;

struct Doc {
    idp: TestIdp,
    dir: tempfile::TempDir,
    /// The loopback port doctor checks: free when chosen, never 8000/18000 (they belong to
    /// the people using this machine).
    port: u16,
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Doc {
    fn new() -> Doc {
        Doc {
            idp: TestIdp::start_with(TestIdpOptions {
                tls: true,
                ..Default::default()
            }),
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }
    fn ca(&self) -> String {
        self.idp.ca_path.as_ref().unwrap().display().to_string()
    }
    fn common(&self, command: &str, listen: &str) -> Vec<String> {
        vec![
            command.to_string(),
            format!("--oidc-issuer-url={}", self.idp.issuer()),
            "--oidc-client-id=kubelogin".into(),
            "--oidc-extra-scope=email,groups".into(),
            format!("--certificate-authority={}", self.ca()),
            format!(
                "--token-cache-dir={}",
                self.dir.path().join("cache").display()
            ),
            format!("--listen-address={listen}"),
            format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
            "--authentication-timeout-sec=5".into(),
        ]
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FAKE_BROWSER_USER", ALICE.into()),
            ("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD.into()),
            ("FAKE_BROWSER_CA", self.ca()),
        ]
    }
    /// Logs in once so doctor finds a cached token (it then probes its port without binding
    /// it).
    fn login(&self) {
        let out = run_plugin(&self.common("get-token", "127.0.0.1:0"), &self.env()).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn doctor(&self, extra: &[String]) -> (Output, String) {
        let mut args = self.common("doctor", &format!("127.0.0.1:{}", self.port));
        args.extend(extra.iter().cloned());
        let out = run_plugin(&args, &self.env()).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out, err)
    }
    fn apiserver_flags(&self) -> Vec<String> {
        vec![
            format!("--apiserver-oidc-ca-file={}", self.ca()),
            "--apiserver-oidc-username-claim=email".into(),
            "--apiserver-oidc-username-prefix=oidc:".into(),
            "--apiserver-oidc-groups-claim=groups".into(),
            "--apiserver-oidc-groups-prefix=oidc:".into(),
        ]
    }
}

#[test]
fn a_healthy_setup_passes_and_shows_the_kubernetes_user() {
    let d = Doc::new();
    d.login();
    let (out, err) = d.doctor(&d.apiserver_flags());
    assert!(out.status.success(), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(&format!(
            "[ok]   the provider accepts the redirect URI http://localhost:{}\n",
            d.port
        )),
        "{err}"
    );
    assert!(err.contains("username: oidc:alice@example.com"), "{err}");
    assert!(err.contains("oidc:developers"), "{err}");
    assert!(!err.contains("[FAIL]"), "{err}");
}

#[test]
fn names_the_trailing_slash_issuer_mismatch() {
    let d = Doc::new();
    d.login();
    let mut flags = d.apiserver_flags();
    flags.push(format!("--apiserver-oidc-issuer-url={}/", d.idp.issuer()));
    let (out, err) = d.doctor(&flags);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("only the trailing slash differs"), "{err}");
    assert!(
        err.contains(&format!("--oidc-issuer-url={}", d.idp.issuer())),
        "the fix names the exact string: {err}"
    );
    assert!(
        err.contains("kube-apiserver would reject the token"),
        "the real token is rejected for it too: {err}"
    );
}

#[test]
fn names_the_ca_kube_apiserver_lacks() {
    let d = Doc::new();
    d.login();
    let flags: Vec<String> = d
        .apiserver_flags()
        .into_iter()
        .filter(|f| !f.starts_with("--apiserver-oidc-ca-file"))
        .collect();
    let (out, err) = d.doctor(&flags);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kube-apiserver would not trust the provider with its system roots"),
        "{err}"
    );
    assert!(err.contains(&format!("--oidc-ca-file={}", d.ca())), "{err}");
}

#[test]
fn reads_kube_apiserver_settings_from_a_k3s_config() {
    let d = Doc::new();
    d.login();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/k3s/config.yaml"
    ))
    .unwrap();
    let config = example
        .replace("https://idp.example.internal:8443", &d.idp.issuer())
        .replace("/etc/rancher/k3s/kubelogin-idp-ca.crt", &d.ca());
    let path = d.dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let (out, err) = d.doctor(&[format!("--k3s-config={}", path.display())]);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("username: oidc:alice@example.com"), "{err}");
}

#[test]
fn names_an_unregistered_redirect_uri() {
    let d = Doc::new();
    let mut flags = d.apiserver_flags();
    let redirect = format!("http://localhost:{}/callback", d.port);
    flags.push(format!("--oidc-redirect-url={redirect}"));
    let (out, err) = d.doctor(&flags);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the provider refuses the redirect URI {redirect}")),
        "{err}"
    );
    assert!(err.contains(&format!("register {redirect}")), "{err}");
}
