//! `setup` and `doctor` on kube-apiserver's side, against the real IdP: the zero-config http
//! issuer kube-apiserver refuses, and the username and groups claims suggested from a real
//! token.

use e2e::run_plugin;
use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD};
use std::process::Output;

fn run(idp: &TestIdp, command: &str, extra: &[&str]) -> (Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        command.to_string(),
        format!("--oidc-issuer-url={}", idp.issuer()),
        "--oidc-client-id=kubelogin".into(),
        "--listen-address=127.0.0.1:0".into(),
        format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
        "--authentication-timeout-sec=20".into(),
    ];
    if command != "setup" {
        args.push(format!(
            "--token-cache-dir={}",
            dir.path().join("cache").display()
        ));
    }
    let mut env = vec![
        ("FAKE_BROWSER_USER", ALICE.to_string()),
        ("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD.to_string()),
    ];
    if let Some(ca) = &idp.ca_path {
        args.push(format!("--certificate-authority={}", ca.display()));
        env.push(("FAKE_BROWSER_CA", ca.display().to_string()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_plugin(&args, &env).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out, stdout, stderr)
}

#[test]
fn setup_fails_the_http_issuer_before_printing_apiserver_flags() {
    // TestIdp::start() serves the zero-config kind of issuer: http on loopback.
    let idp = TestIdp::start();
    assert!(idp.issuer().starts_with("http://"));
    let (out, stdout, stderr) = run(&idp, "setup", &["--oidc-extra-scope=email,groups"]);
    assert!(out.status.success(), "{stderr}");
    let fail = stdout
        .find("[FAIL] kube-apiserver refuses the issuer")
        .unwrap_or_else(|| panic!("{stdout}"));
    let flags = stdout.find("kube-apiserver flags:").unwrap();
    assert!(fail < flags, "{stdout}");
    assert!(stdout.contains("kubelogin-idp certs --host"), "{stdout}");
    assert!(stdout.contains("TLS_CERT_FILE"), "built-in TLS: {stdout}");
    assert!(
        stderr.contains("[FAIL] kube-apiserver refuses the issuer"),
        "on stderr too: {stderr}"
    );
}

#[test]
fn doctor_fails_the_http_issuer_instead_of_calling_it_equal() {
    let idp = TestIdp::start();
    let (out, stdout, stderr) = run(&idp, "doctor", &["--oidc-extra-scope=email"]);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!(
            "[FAIL] kube-apiserver refuses the issuer \"{}\"",
            idp.issuer()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("fix: serve the IdP over https"), "{stderr}");
    assert!(stderr.contains("kubelogin-idp certs"), "{stderr}");
    assert!(!stderr.contains("equals the provider's issuer"), "{stderr}");
    // The flow auto picks here (--browser-command is set: the browser).
    assert!(
        stderr.contains("[note] --grant-type=auto: Using the browser login (authcode): --browser-command is set"),
        "{stderr}"
    );
}

#[test]
fn setup_suggests_email_and_groups_claims_from_a_real_token() {
    let idp = TestIdp::start_with(TestIdpOptions {
        tls: true,
        ..Default::default()
    });
    let (out, stdout, stderr) = run(&idp, "setup", &["--oidc-extra-scope=email,groups"]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("[FAIL]"),
        "an https issuer passes: {stdout}"
    );
    assert!(stdout.contains("\"email_verified\": true"), "{stdout}");
    assert!(
        stdout.contains("  --oidc-username-claim=email\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  --oidc-groups-claim=groups\n"),
        "{stdout}"
    );
    assert!(stdout.contains("# --oidc-username-claim=email: the email scope was asked for"));
    assert!(stdout.contains("--user=alice@example.com"), "{stdout}");

    // Without the email scope the username stays on sub.
    let (out, stdout, stderr) = run(&idp, "setup", &["--oidc-extra-scope=groups"]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("  --oidc-username-claim=sub\n"), "{stdout}");
    assert!(
        stdout.contains("  --oidc-groups-claim=groups\n"),
        "{stdout}"
    );
}
