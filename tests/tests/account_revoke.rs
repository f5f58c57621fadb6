//! Self-service revocation end to end: kubectl-oidc_login logs Alice in (the scripted browser
//! consents), Alice revokes the authorization on `/account/authorizations` in real Chromium
//! (link, confirmation page, POST), and the plugin's next refresh is refused with
//! `invalid_grant`; the consent is forgotten, so the next login asks again.

use e2e::run_plugin;
use e2e::webdriver::{chromium_args, Driver, Session};
use idp::testing::{TestIdp, ALICE, ALICE_PASSWORD};
use std::time::{Duration, Instant};

fn plugin_args(idp: &TestIdp, cache: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "get-token".to_string(),
        format!("--oidc-issuer-url={}", idp.issuer()),
        "--oidc-client-id=kubelogin".into(),
        format!("--token-cache-dir={}", cache.join("cache").display()),
        "--listen-address=127.0.0.1:0".into(),
        format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser")),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn element(s: &Session, css: &str) -> String {
    s.wait_for(css).unwrap()
}

#[test]
fn revoking_on_the_account_page_makes_the_plugins_next_refresh_fail() {
    let idp = TestIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("browser.log");
    let env = vec![
        ("FAKE_BROWSER_USER", ALICE.to_string()),
        ("FAKE_BROWSER_PASSWORD", ALICE_PASSWORD.to_string()),
        ("FAKE_BROWSER_LOG", log.display().to_string()),
    ];
    let first = run_plugin(&plugin_args(&idp, dir.path(), &[]), &env).unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // Alice, in Chromium, finds the kubectl client on her authorizations page and revokes it.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&http, Instant::now() + Duration::from_secs(30)).unwrap();
    let s = Session::new(&http, &driver.url, &chromium_args(profile.path()).unwrap()).unwrap();
    let base = idp.issuer();
    s.navigate(&format!("{base}/account/authorizations"))
        .unwrap();
    s.type_into(&element(&s, "#username"), ALICE).unwrap();
    s.type_into(&element(&s, "#password"), ALICE_PASSWORD)
        .unwrap();
    s.click(&element(&s, "#submit")).unwrap();
    let entry = element(&s, "#client-kubelogin");
    let text = s.text(&entry).unwrap();
    assert!(
        text.contains("Last used") && text.contains("Address"),
        "{text}"
    );
    s.click(&element(&s, "#client-kubelogin .revoke")).unwrap();
    assert!(s
        .current_url()
        .unwrap()
        .contains("/account/authorizations/revoke?"));
    s.click(&element(&s, "#confirm")).unwrap();
    let notice = s.text(&element(&s, "#notice")).unwrap();
    assert!(notice.contains("revoked"), "{notice}");
    assert!(s.find("#client-kubelogin").unwrap().is_none());

    // The plugin's refresh is refused; its fallback login is left unanswered.
    let ignore = [
        env.clone(),
        vec![("FAKE_BROWSER_ACTION", "ignore".to_string())],
    ]
    .concat();
    let args = plugin_args(
        &idp,
        dir.path(),
        &["--force-refresh", "--authentication-timeout-sec=2"],
    );
    let out = run_plugin(&args, &ignore).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refresh token was not accepted") && err.contains("invalid_grant"),
        "{err}"
    );
    let alice = idp
        .block_on(idp.state.store.user_by_username(ALICE))
        .unwrap()
        .unwrap();
    let consent = idp
        .block_on(idp.state.store.consented_scopes(&alice.id, "kubelogin"))
        .unwrap();
    assert!(consent.is_empty(), "the next login asks again: {consent:?}");
}
