//! The router without a socket (tower `oneshot`): discovery, JWKS, headers, the authorize
//! endpoint's error handling, CSRF, throttling and limits.

use super::common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use idp::testing::{form_value, ALICE, ALICE_PASSWORD};

#[tokio::test]
async fn discovery_names_every_endpoint_and_only_s256() {
    let h = harness().await;
    let d = h.get("/.well-known/openid-configuration", &[]).await.json();
    assert_eq!(d["issuer"], ISSUER);
    for (k, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("device_authorization_endpoint", "/oauth/device/code"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("end_session_endpoint", "/oauth/logout"),
    ] {
        assert_eq!(d[k], format!("{ISSUER}{path}"), "{k}");
    }
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(d["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    for s in ["groups", "offline_access", "openid"] {
        assert!(d["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(s)));
    }
    for m in ["none", "client_secret_basic", "client_secret_post"] {
        assert!(d["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(m)));
    }
}

#[tokio::test]
async fn jwks_publishes_the_key_that_signs_tokens() {
    let h = harness().await;
    let jwks = h.get("/.well-known/jwks.json", &[]).await.json();
    let t = h.tokens_for_alice("openid").await;
    let header: serde_json::Value =
        shared::jwt::decode_header_unverified(t["id_token"].as_str().unwrap()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&header["kid"].as_str().unwrap()));
    assert_eq!(header["alg"], "RS256");
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let h = harness().await;
    let r = h.get("/login", &[]).await;
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(r.headers.contains_key(header::REFERRER_POLICY));
    assert!(
        !r.headers.contains_key(header::STRICT_TRANSPORT_SECURITY),
        "no HSTS on http"
    );
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
}

#[tokio::test]
async fn https_issuer_adds_hsts_and_secure_cookies() {
    let h = harness_with(|c| {
        c.issuer = "https://idp.test".into();
        c.secure_cookies = true;
    })
    .await;
    let r = h.get("/login", &[]).await;
    assert!(r.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

#[tokio::test]
async fn login_form_without_csrf_is_forbidden() {
    let h = harness().await;
    let r = h
        .post(
            "/login",
            &[("username", ALICE), ("password", ALICE_PASSWORD)],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = h.get("/login", &[]).await;
    let cookies = page.cookies();
    let r = h
        .post(
            "/login",
            &[
                ("csrf_token", "x".repeat(43).as_str()),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "a wrong token is refused too"
    );
    assert!(r.cookies().iter().all(|c| !c.starts_with("kl_session")));
}

#[tokio::test]
async fn consent_and_device_forms_without_csrf_are_forbidden() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = h
        .post(
            "/oauth/authorize/consent",
            &[("request", "client_id=kubelogin"), ("decision", "allow")],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .post(
            "/device",
            &[("user_code", "BCDF-GHJK"), ("decision", "allow")],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h.post("/logout", &[], &cookies, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn wrong_passwords_are_throttled_per_account() {
    let h = harness().await;
    let page = h.get("/login", &[]).await;
    let cookies = page.cookies();
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    for _ in 0..5 {
        let r = h
            .post(
                "/login",
                &[
                    ("csrf_token", &csrf),
                    ("username", ALICE),
                    ("password", "nope"),
                ],
                &cookies,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = h
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    h.clock.advance(16 * 60);
    let r = h
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "the window passed");
    let failures = h
        .state
        .store
        .audit_events(idp::store::AuditFilter {
            event: Some("login_failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failures.len(), 5);
}

#[tokio::test]
async fn authorize_errors_before_the_redirect_uri_is_trusted_are_pages() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (_, ch) = pkce_pair();
    // Unknown client.
    let r = h.get(&format!("/oauth/authorize?client_id=nobody&redirect_uri=http%3A%2F%2Fevil.example&response_type=code&code_challenge={ch}&code_challenge_method=S256"), &cookies).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.location().is_empty());
    // Unregistered redirect URI: shown, never redirected (RFC 6749 §4.1.2.1).
    let r = h.get(&format!("/oauth/authorize?client_id=kubelogin&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=token&code_challenge={ch}&code_challenge_method=S256"), &cookies).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.location().is_empty());
    assert!(r.body.contains("not a registered redirect URI"));
    // Registered redirect URI: later errors go back to the client with state.
    let r = h.get(&format!("/oauth/authorize?client_id=kubelogin&redirect_uri=http%3A%2F%2Flocalhost%3A8000&response_type=token&state=xyz&code_challenge={ch}&code_challenge_method=S256"), &cookies).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let q = query_of(&r.location());
    assert_eq!(q["error"], "unsupported_response_type");
    assert_eq!(q["state"], "xyz");
}

#[tokio::test]
async fn no_session_goes_to_login_and_prompt_none_says_login_required() {
    let h = harness().await;
    let (_, ch) = pkce_pair();
    let base = format!("/oauth/authorize?client_id=kubelogin&redirect_uri=http%3A%2F%2Flocalhost%3A8000&response_type=code&scope=openid&state=s1&code_challenge={ch}&code_challenge_method=S256");
    let r = h.get(&base, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location()
            .starts_with("/login?return_to=%2Foauth%2Fauthorize"),
        "{}",
        r.location()
    );
    let r = h.get(&format!("{base}&prompt=none"), &[]).await;
    let q = query_of(&r.location());
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "s1");
}

#[tokio::test]
async fn consent_is_remembered_and_prompt_consent_asks_again() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (_, ch) = pkce_pair();
    let base = format!("/oauth/authorize?client_id=kubelogin&redirect_uri=http%3A%2F%2Flocalhost%3A8000&response_type=code&scope=openid+email&code_challenge={ch}&code_challenge_method=S256");
    let r = h.get(&base, &cookies).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("kubectl (kubelogin)") && r.body.contains("email"),
        "the consent page shows client and scopes"
    );
    let r = h.get(&format!("{base}&prompt=none"), &cookies).await;
    assert_eq!(query_of(&r.location())["error"], "consent_required");
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", LOOPBACK),
                ("response_type", "code"),
                ("scope", "openid email"),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    assert!(query_of(&r.location()).contains_key("code"));
    let r = h.get(&base, &cookies).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "remembered: straight back with a code"
    );
    assert!(query_of(&r.location()).contains_key("code"));
    let r = h.get(&format!("{base}&prompt=consent"), &cookies).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "prompt=consent shows the page again"
    );
}

#[tokio::test]
async fn consent_denied_redirects_access_denied() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (_, ch) = pkce_pair();
    let r = h.get(&format!("/oauth/authorize?client_id=kubelogin&redirect_uri=http%3A%2F%2Flocalhost%3A8000&response_type=code&scope=openid&state=q&code_challenge={ch}&code_challenge_method=S256"), &cookies).await;
    let csrf = form_value(&r.body, "csrf_token").unwrap();
    let request = form_value(&r.body, "request").unwrap();
    let r = h
        .post(
            "/oauth/authorize/consent",
            &[
                ("csrf_token", &csrf),
                ("request", &request),
                ("decision", "deny"),
            ],
            &cookies,
            &[],
        )
        .await;
    let q = query_of(&r.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "q");
}

#[tokio::test]
async fn prompt_login_and_max_age_force_a_new_login() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (_, ch) = pkce_pair();
    let base = format!("/oauth/authorize?client_id=kubelogin&redirect_uri=http%3A%2F%2Flocalhost%3A8000&response_type=code&scope=openid&code_challenge={ch}&code_challenge_method=S256");
    let r = h.get(&format!("{base}&prompt=login"), &cookies).await;
    assert!(r.location().starts_with("/login?"));
    assert!(
        !r.location().contains("prompt%3Dlogin"),
        "after login the request does not ask again"
    );
    h.clock.advance(120);
    let r = h.get(&format!("{base}&max_age=60"), &cookies).await;
    assert!(
        r.location().starts_with("/login?"),
        "session older than max_age"
    );
    let r = h.get(&format!("{base}&max_age=600"), &cookies).await;
    assert_eq!(r.status, StatusCode::OK, "young enough: consent page");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let h = harness().await;
    let big = "a".repeat(idp::MAX_BODY_BYTES + 10);
    let req = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("grant_type={big}")))
        .unwrap();
    let r = h.call(req).await;
    assert!(
        r.status == StatusCode::PAYLOAD_TOO_LARGE || r.status == StatusCode::BAD_REQUEST,
        "{}",
        r.status
    );
}

#[tokio::test]
async fn token_errors_are_json_and_not_cached() {
    let h = harness().await;
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "kubelogin"),
            ("code", "nope"),
            ("redirect_uri", LOOPBACK),
        ])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let r = h
        .token(&[("grant_type", "implicit"), ("client_id", "kubelogin")])
        .await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = h
        .post("/oauth/token", &[("grant_type", "refresh_token")], &[], &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
}

#[tokio::test]
async fn a_first_boot_serves_while_its_key_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn idp::store::Store> = std::sync::Arc::new(
        idp::store::SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap(),
    );
    let config = idp::config::Config::for_issuer(ISSUER).unwrap();
    assert!(idp::state::needs_generation(&config, store.as_ref())
        .await
        .unwrap());
    let clock = std::sync::Arc::new(idp::clock::ManualClock::new(1_800_000_000));
    let state = idp::state::AppState::new_deferring_keygen(config.clone(), store.clone(), clock)
        .await
        .unwrap();
    let call = |path: &'static str| {
        let state = state.clone();
        async move {
            use tower::ServiceExt;
            let r = idp::app(state)
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = r.status();
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (status, d) = call("/.well-known/openid-configuration").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["issuer"], ISSUER);
    // JWKS waits for the key, then publishes it.
    let (status, jwks) = call("/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(
        !idp::state::needs_generation(&config, store.as_ref())
            .await
            .unwrap(),
        "the key is stored"
    );
}
