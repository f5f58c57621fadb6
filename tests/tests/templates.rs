//! Every kubeconfig template in `kubeconfig-templates/`, filled in for this machine and used by
//! real kubectl against the kube-apiserver stand-in: what a new team member does with it.

use e2e::apiserver::{ApiServer, ApiServerSettings};
use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD, CONFIDENTIAL_CLIENT};
use shared::kube_oidc::Settings;
use std::path::Path;
use std::process::{Command, Stdio};

struct Setup {
    idp: TestIdp,
    api: ApiServer,
    home: tempfile::TempDir,
}

fn setup(username_claim: &str) -> Setup {
    let idp = TestIdp::start_with(TestIdpOptions {
        tls: true,
        ..Default::default()
    });
    let client_id = if username_claim == "sub" {
        CONFIDENTIAL_CLIENT
    } else {
        "kubelogin"
    };
    let mut oidc = Settings::new(&idp.issuer(), client_id);
    oidc.username_claim = username_claim.into();
    oidc.username_prefix = Some("oidc:".into());
    oidc.groups_claim = Some("groups".into());
    oidc.groups_prefix = Some("oidc:".into());
    let api = ApiServer::start(ApiServerSettings::new(oidc, idp.ca_path.clone())).unwrap();
    Setup {
        idp,
        api,
        home: tempfile::tempdir().unwrap(),
    }
}

/// The template with this machine's addresses, the built plugin in place of `kubectl
/// oidc-login`, and test-only flags (isolated cache, scripted browser, any free port).
fn fill(template: &str, s: &Setup) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kubeconfig-templates")
            .join(template),
    )
    .unwrap();
    let ca = s.idp.ca_path.as_ref().unwrap().display().to_string();
    let extra = [
        format!(
            "--token-cache-dir={}",
            s.home.path().join("cache").display()
        ),
        format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
        "--listen-address=127.0.0.1:0".to_string(),
        "--authentication-timeout-sec=20".to_string(),
    ];
    let extra_lines: String = extra.iter().map(|a| format!("          - {a}\n")).collect();
    let filled = text
        .replace("https://k3s.example.internal:6443", &s.api.url)
        .replace(
            "/etc/kubelogin/cluster-ca.crt",
            &s.api.ca_path.display().to_string(),
        )
        .replace("https://idp.example.internal:8443", &s.idp.issuer())
        .replace("/etc/kubelogin/ca.crt", &ca)
        .replace(
            "command: kubectl",
            &format!("command: {}", e2e::plugin_path().display()),
        )
        .replace("          - oidc-login\n", "")
        .replace(
            "          - get-token\n",
            &format!("          - get-token\n{extra_lines}"),
        );
    assert!(
        !filled.contains("example.internal"),
        "every placeholder is filled: {filled}"
    );
    filled
}

fn whoami(s: &Setup, template: &str, env: &[(&str, String)]) -> serde_json::Value {
    let kubeconfig = s.home.path().join(template);
    std::fs::write(&kubeconfig, fill(template, s)).unwrap();
    let mut c = Command::new("/usr/bin/kubectl");
    c.args([
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "json",
        "--request-timeout=60s",
    ])
    .stdin(Stdio::null())
    .env("FAKE_BROWSER_USER", ALICE)
    .env("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD)
    .env("FAKE_BROWSER_CA", s.idp.ca_path.as_ref().unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "kubectl failed with {template}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["status"]["userInfo"].clone()
}

#[test]
fn authcode_template() {
    let s = setup("email");
    let u = whoami(&s, "authcode.yaml", &[]);
    assert_eq!(u["username"], "oidc:alice@example.com");
    assert!(u["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("oidc:developers")));
}

#[test]
fn device_code_template() {
    let s = setup("email");
    let u = whoami(&s, "device-code.yaml", &[]);
    assert_eq!(u["username"], "oidc:alice@example.com");
    assert_eq!(
        s.idp.token_grants(shared::token::grant_type::DEVICE_CODE),
        1
    );
}

#[test]
fn client_credentials_template() {
    let s = setup("sub");
    let u = whoami(
        &s,
        "client-credentials.yaml",
        &[(
            "KUBELOGIN_OIDC_CLIENT_SECRET",
            s.idp.confidential_secret.clone(),
        )],
    );
    assert_eq!(u["username"], format!("oidc:{CONFIDENTIAL_CLIENT}"));
}

#[test]
fn keyring_template() {
    // The Secret Service comes from tests/run-all.sh (dbus-run-session + gnome-keyring).
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "no D-Bus session: run the tests with tests/run-all.sh, which starts one with gnome-keyring"
    );
    let s = setup("email");
    let u = whoami(&s, "keyring.yaml", &[]);
    assert_eq!(u["username"], "oidc:alice@example.com");
    // The token went to the keyring, not to files.
    let files: Vec<_> = std::fs::read_dir(s.home.path().join("cache"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".lock")
                || f.to_string_lossy().contains("backoff")),
        "no token file on disk: {files:?}"
    );
    let again = whoami(&s, "keyring.yaml", &[]);
    assert_eq!(again["username"], "oidc:alice@example.com");
    assert_eq!(
        s.idp.token_grants("authorization_code"),
        1,
        "the second call was served from the keyring"
    );
}
