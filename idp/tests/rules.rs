//! One test per protocol rule of the token endpoint and friends (issue 2, §4 and §6).

use super::common::*;
use axum::http::{header, StatusCode};
use base64::Engine;
use idp::testing::{
    form_value, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, CONFIDENTIAL_CLIENT, PASSWORD_CLIENT,
};

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn poll(h: &Harness, dc: &str) -> Resp {
    h.token(&[
        ("grant_type", shared::token::grant_type::DEVICE_CODE),
        ("device_code", dc),
        ("client_id", "kubelogin"),
    ])
    .await
}

async fn device_start(h: &Harness) -> serde_json::Value {
    h.post(
        "/oauth/device/code",
        &[("client_id", "kubelogin"), ("scope", "openid")],
        &[],
        &[],
    )
    .await
    .json()
}

async fn refresh(h: &Harness, token: &str) -> Resp {
    h.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", "kubelogin"),
    ])
    .await
}

#[tokio::test]
async fn id_token_claims_follow_the_granted_scopes() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid profile email groups").await;
    let c = claims(t["id_token"].as_str().unwrap());
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], "kubelogin");
    assert_eq!(c["azp"], "kubelogin");
    assert_eq!(c["nonce"], "n0");
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["preferred_username"], ALICE);
    assert_eq!(c["groups"], serde_json::json!(["developers"]));
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(
        c["at_hash"],
        shared::jwt::at_hash_sha256(t["access_token"].as_str().unwrap())
    );
    assert!(c["auth_time"].as_u64().is_some());
    let t = h.tokens_for_alice("openid").await;
    let c = claims(t["id_token"].as_str().unwrap());
    assert!(
        c.get("email").is_none() && c.get("groups").is_none(),
        "no scope, no claim"
    );
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_issued() {
    let h = harness().await;
    let (code, verifier) = h.code_for_alice("openid").await;
    let first = h.redeem(&code, &verifier).await;
    assert_eq!(first.status, StatusCode::OK);
    let rt = first.json()["refresh_token"].as_str().unwrap().to_string();
    let second = h.redeem(&code, &verifier).await;
    assert_eq!(second.json()["error"], "invalid_grant");
    assert_eq!(
        refresh(&h, &rt).await.json()["error"],
        "invalid_grant",
        "tokens from the first use are revoked"
    );
}

#[tokio::test]
async fn pkce_is_required_and_checked() {
    let h = harness().await;
    let (code, _) = h.code_for_alice("openid").await;
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "missing verifier");
    let (code, _) = h.code_for_alice("openid").await;
    let (wrong, _) = pkce_pair();
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
            ("code_verifier", &wrong),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "wrong verifier");
    // A public client without a challenge, or with `plain`, is refused at the authorization endpoint.
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", LOOPBACK),
                ("response_type", "code"),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_eq!(query_of(&r.location())["error"], "invalid_request");
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", LOOPBACK),
                ("response_type", "code"),
                ("code_challenge", &"a".repeat(43)),
                ("code_challenge_method", "plain"),
            ],
        )
        .await;
    assert_eq!(query_of(&r.location())["error"], "invalid_request");
}

#[tokio::test]
async fn confidential_clients_have_pkce_verified_when_they_send_a_challenge() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (_, ch) = pkce_pair();
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", CONFIDENTIAL_CLIENT),
                ("redirect_uri", "https://app.example.com/callback"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    let code = query_of(&r.location())["code"].clone();
    let r = h
        .post(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://app.example.com/callback"),
            ],
            &[],
            &[("authorization", &basic(CONFIDENTIAL_CLIENT, &h.secret))],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn redirect_uri_must_match_and_loopback_ports_are_free() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (verifier, ch) = pkce_pair();
    // Any port on a registered loopback URI (RFC 8252 §7.3).
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", "http://localhost:41234"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &ch),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    let loc = r.location();
    assert!(loc.starts_with("http://localhost:41234/?code="), "{loc}");
    let code = query_of(&loc)["code"].clone();
    // The token request must repeat exactly the same redirect_uri.
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Not loopback: the port is part of the match.
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", CONFIDENTIAL_CLIENT),
                ("redirect_uri", "https://app.example.com:444/callback"),
                ("response_type", "code"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.location().is_empty());
    // A different loopback host is not the registered one.
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", "http://localhost.evil.example:8000"),
                ("response_type", "code"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refresh_rotates_and_returns_an_id_token_without_nonce() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid email").await;
    let first = claims(t["id_token"].as_str().unwrap());
    h.clock.advance(100);
    let r = refresh(&h, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t2 = r.json();
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    let c = claims(t2["id_token"].as_str().expect("id_token on refresh"));
    assert_eq!(c["sub"], first["sub"]);
    assert_eq!(c["auth_time"], first["auth_time"]);
    assert_eq!(
        c["iat"].as_u64().unwrap(),
        first["iat"].as_u64().unwrap() + 100
    );
    assert!(c.get("nonce").is_none());
    assert_eq!(c["email"], "alice@example.com");
    // A narrower scope is allowed, a wider one is not.
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t2["refresh_token"].as_str().unwrap()),
            ("client_id", "kubelogin"),
            ("scope", "openid groups"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_scope");
}

#[tokio::test]
async fn refresh_reuse_inside_the_grace_window_succeeds_outside_revokes_the_family() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let old = t["refresh_token"].as_str().unwrap().to_string();
    let a = refresh(&h, &old).await;
    assert_eq!(a.status, StatusCode::OK);
    h.clock.advance(2);
    let b = refresh(&h, &old).await;
    assert_eq!(
        b.status,
        StatusCode::OK,
        "a racing kubectl within the grace window: {}",
        b.body
    );
    assert!(b.json()["id_token"].is_string());
    assert_eq!(
        b.json()["refresh_token"],
        a.json()["refresh_token"],
        "the same successor within the window"
    );
    h.clock.advance(10);
    let c = refresh(&h, &old).await;
    assert_eq!(
        c.json()["error"],
        "invalid_grant",
        "reuse after the grace window"
    );
    let newest = a.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        refresh(&h, &newest).await.json()["error"],
        "invalid_grant",
        "the whole family is revoked"
    );
    let ev = h
        .state
        .store
        .audit_events(idp::store::AuditFilter {
            event: Some("refresh_token_reused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
}

#[tokio::test]
async fn a_disabled_user_gets_invalid_grant() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let alice = h
        .state
        .store
        .user_by_username(ALICE)
        .await
        .unwrap()
        .unwrap();
    h.state
        .store
        .set_user_disabled(&alice.id, true, h.clock_now())
        .await
        .unwrap();
    assert_eq!(
        refresh(&h, t["refresh_token"].as_str().unwrap())
            .await
            .json()["error"],
        "invalid_grant"
    );
    // Re-enabling does not revive revoked sessions.
    h.state
        .store
        .set_user_disabled(&alice.id, false, h.clock_now())
        .await
        .unwrap();
    assert_eq!(
        refresh(&h, t["refresh_token"].as_str().unwrap())
            .await
            .json()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn revoke_all_forces_everyone_to_log_in_again() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    h.clock.advance(1);
    h.state
        .store
        .revoke_all_for_client("kubelogin", h.clock_now())
        .await
        .unwrap();
    assert_eq!(
        refresh(&h, t["refresh_token"].as_str().unwrap())
            .await
            .json()["error"],
        "invalid_grant"
    );
    // The access token stops working at userinfo too.
    let r = h
        .get_bearer("/oauth/userinfo", t["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn device_flow_pending_slow_down_approve() {
    let h = harness().await;
    let r = h
        .post(
            "/oauth/device/code",
            &[("client_id", "kubelogin"), ("scope", "openid email")],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let d = r.json();
    let user_code = d["user_code"].as_str().unwrap().to_string();
    assert!(user_code.len() == 9 && user_code.as_bytes()[4] == b'-');
    assert!(user_code
        .chars()
        .filter(|c| *c != '-')
        .all(|c| shared::device::USER_CODE_ALPHABET.contains(&(c as u8))));
    assert_eq!(d["interval"], 5);
    assert_eq!(d["expires_in"], 600);
    assert_eq!(d["verification_uri"], format!("{ISSUER}/device"));
    assert!(d["verification_uri_complete"]
        .as_str()
        .unwrap()
        .contains("user_code="));
    let dc = d["device_code"].as_str().unwrap().to_string();
    assert_eq!(poll(&h, &dc).await.json()["error"], "authorization_pending");
    assert_eq!(
        poll(&h, &dc).await.json()["error"],
        "slow_down",
        "polled within the interval"
    );
    h.clock.advance(6);
    assert_eq!(
        poll(&h, &dc).await.json()["error"],
        "slow_down",
        "the interval grew to 10 s (and now 15 s)"
    );
    h.clock.advance(16);
    assert_eq!(poll(&h, &dc).await.json()["error"], "authorization_pending");
    // Approve on the device page.
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h
        .get(
            &format!("/device?user_code={}", user_code.to_lowercase()),
            &cookies,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("kubectl (kubelogin)") && page.body.contains("email"),
        "client and scopes shown"
    );
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    let r = h
        .post(
            "/device",
            &[
                ("csrf_token", &csrf),
                ("user_code", &user_code),
                ("decision", "allow"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.clock.advance(20);
    let r = poll(&h, &dc).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let c = claims(
        r.json()["id_token"]
            .as_str()
            .expect("ID token on the device grant"),
    );
    assert_eq!(c["email"], "alice@example.com");
    h.clock.advance(20);
    assert_eq!(
        poll(&h, &dc).await.json()["error"],
        "invalid_grant",
        "a device code is used once"
    );
}

#[tokio::test]
async fn device_flow_denied_and_expired() {
    let h = harness().await;
    let d = device_start(&h).await;
    let cookies = h.login(BOB, BOB_PASSWORD).await;
    let page = h
        .get(
            &format!("/device?user_code={}", d["user_code"].as_str().unwrap()),
            &cookies,
        )
        .await;
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    h.post(
        "/device",
        &[
            ("csrf_token", &csrf),
            ("user_code", d["user_code"].as_str().unwrap()),
            ("decision", "deny"),
        ],
        &cookies,
        &[],
    )
    .await;
    let r = h
        .token(&[
            ("grant_type", shared::token::grant_type::DEVICE_CODE),
            ("device_code", d["device_code"].as_str().unwrap()),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "access_denied");
    let d = device_start(&h).await;
    h.clock.advance(601);
    let r = h
        .token(&[
            ("grant_type", shared::token::grant_type::DEVICE_CODE),
            ("device_code", d["device_code"].as_str().unwrap()),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "expired_token");
    // Scopes the client may not have are refused up front.
    let r = h
        .post(
            "/oauth/device/code",
            &[("client_id", "kubelogin"), ("scope", "openid admin")],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_scope");
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let h = harness().await;
    let r = h
        .post(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "openid groups"),
            ],
            &[],
            &[("authorization", &basic(CONFIDENTIAL_CLIENT, &h.secret))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let t = r.json();
    assert!(t.get("id_token").is_none() && t.get("refresh_token").is_none());
    assert_eq!(
        claims(t["access_token"].as_str().unwrap())["sub"],
        CONFIDENTIAL_CLIENT
    );
    // client_secret_post works too.
    let r = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", &h.secret),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The public client may not.
    let r = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "unauthorized_client");
}

#[tokio::test]
async fn client_authentication_rules() {
    let h = harness().await;
    let r = h
        .post(
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            &[],
            &[("authorization", &basic(CONFIDENTIAL_CLIENT, "wrong"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let r = h
        .post(
            "/oauth/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", &h.secret),
            ],
            &[],
            &[("authorization", &basic(CONFIDENTIAL_CLIENT, &h.secret))],
        )
        .await;
    assert_eq!(
        r.json()["error"],
        "invalid_request",
        "two authentication methods at once"
    );
    let r = h
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
        ])
        .await;
    assert_eq!(
        r.json()["error"],
        "invalid_client",
        "a confidential client without its secret"
    );
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "kubelogin"),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_request", "repeated parameter");
}

#[tokio::test]
async fn refresh_tokens_are_bound_to_their_client() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", &h.secret),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(
        refresh(&h, t["refresh_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK,
        "the owner's token was not burnt"
    );
}

#[tokio::test]
async fn password_grant_only_where_enabled() {
    let h = harness().await;
    let r = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
            ("scope", "openid email"),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        claims(r.json()["id_token"].as_str().unwrap())["email"],
        "alice@example.com"
    );
    let r = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", ALICE),
            ("password", "wrong"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", "kubelogin"),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
        ])
        .await;
    assert_eq!(r.json()["error"], "unauthorized_client");
}

#[tokio::test]
async fn userinfo_answers_for_live_access_tokens_only() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid email groups").await;
    let at = t["access_token"].as_str().unwrap();
    let r = h.get_bearer("/oauth/userinfo", at).await;
    assert_eq!(r.status, StatusCode::OK);
    let u = r.json();
    assert_eq!(u["email"], "alice@example.com");
    assert_eq!(u["groups"], serde_json::json!(["developers"]));
    assert_eq!(u["sub"], claims(t["id_token"].as_str().unwrap())["sub"]);
    let r = h
        .post(
            "/oauth/revoke",
            &[
                ("token", at),
                ("token_type_hint", "access_token"),
                ("client_id", "kubelogin"),
            ],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        h.get_bearer("/oauth/userinfo", at).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get_bearer("/oauth/userinfo", "garbage").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let next = refresh(&h, rt).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h
        .post(
            "/oauth/revoke",
            &[("token", &next), ("client_id", "kubelogin")],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(refresh(&h, &next).await.json()["error"], "invalid_grant");
    // Unknown tokens get 200 too (RFC 7009 §2.2).
    assert_eq!(
        h.post(
            "/oauth/revoke",
            &[("token", "unknown"), ("client_id", "kubelogin")],
            &[],
            &[]
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn introspection_needs_a_confidential_client() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let at = t["access_token"].as_str().unwrap();
    let r = h
        .post(
            "/oauth/introspect",
            &[("token", at), ("client_id", "kubelogin")],
            &[],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let auth = basic(CONFIDENTIAL_CLIENT, &h.secret);
    let r = h
        .post(
            "/oauth/introspect",
            &[("token", at)],
            &[],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.json()["active"], true);
    assert_eq!(r.json()["username"], ALICE);
    let r = h
        .post(
            "/oauth/introspect",
            &[("token", t["refresh_token"].as_str().unwrap())],
            &[],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.json()["active"], true);
    let alice = h
        .state
        .store
        .user_by_username(ALICE)
        .await
        .unwrap()
        .unwrap();
    h.state
        .store
        .set_user_disabled(&alice.id, true, h.clock_now())
        .await
        .unwrap();
    let r = h
        .post(
            "/oauth/introspect",
            &[("token", at)],
            &[],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.json(), serde_json::json!({"active": false}));
}

#[tokio::test]
async fn end_session_redirects_only_to_registered_uris() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    // Without an ID token hint the user confirms first (RP-Initiated Logout §2).
    let page = h.get("/oauth/logout?client_id=automation&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fbye&state=z", &cookies).await;
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    let r = h
        .post(
            "/oauth/logout",
            &[
                ("csrf_token", csrf.as_str()),
                ("client_id", "automation"),
                ("post_logout_redirect_uri", "https://app.example.com/bye"),
                ("state", "z"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "https://app.example.com/bye?state=z");
    let home = h.get("/", &cookies).await;
    assert!(home.body.contains("Not signed in"), "the session is gone");
    let r = h.get("/oauth/logout?client_id=automation&post_logout_redirect_uri=https%3A%2F%2Fevil.example", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.location().is_empty());
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_verifiable() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let old_kid =
        shared::jwt::decode_header_unverified::<serde_json::Value>(t["id_token"].as_str().unwrap())
            .unwrap()["kid"]
            .clone();
    let key = idp::keys::SigningKey::generate(idp::keys::Algorithm::Es256).unwrap();
    h.state
        .store
        .activate_key(
            idp::store::StoredKey {
                kid: key.kid().into(),
                alg: "ES256".into(),
                private_pem: key.to_pkcs8_pem(),
                created_at: h.clock_now(),
                retired_at: None,
            },
            h.clock_now(),
        )
        .await
        .unwrap();
    h.state.reload_keys().await.unwrap();
    let jwks = h.get("/.well-known/jwks.json", &[]).await.json();
    let kids: Vec<serde_json::Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&old_kid) && kids.contains(&serde_json::json!(key.kid())));
    let t2 = refresh(&h, t["refresh_token"].as_str().unwrap())
        .await
        .json();
    let hdr: serde_json::Value =
        shared::jwt::decode_header_unverified(t2["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(hdr["kid"], key.kid());
    assert_eq!(hdr["alg"], "ES256");
    // The old access token still works until it expires…
    assert_eq!(
        h.get_bearer("/oauth/userinfo", t["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    // …and once every token it signed has expired, the old key leaves the JWKS.
    h.clock.advance(3600 + 61);
    h.state.reload_keys().await.unwrap();
    let jwks = h.get("/.well-known/jwks.json", &[]).await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
}
