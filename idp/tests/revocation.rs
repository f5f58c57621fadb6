//! Revocation reaches everything a grant produced: the refresh grace window never forks a
//! family, password resets and forced re-authentication end sessions, access tokens die with
//! their grant, a disabled user gets nothing anywhere, and client authentication failures look
//! alike (issue 7 items 4, 5, 6, 11 and the audit gaps of item 19).

use super::common::*;
use axum::http::StatusCode;
use idp::store::AuditFilter;
use idp::testing::{form_value, ALICE, ALICE_PASSWORD, CONFIDENTIAL_CLIENT, PASSWORD_CLIENT};

async fn refresh(h: &Harness, token: &str) -> Resp {
    h.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", "kubelogin"),
    ])
    .await
}

async fn events(h: &Harness, event: &str) -> Vec<idp::store::AuditEvent> {
    h.state
        .store
        .audit_events(AuditFilter {
            event: Some(event.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn alice_id(h: &Harness) -> String {
    h.state
        .store
        .user_by_username(ALICE)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn introspect(h: &Harness, token: &str) -> serde_json::Value {
    h.post(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", &h.secret),
        ],
        &[],
        &[],
    )
    .await
    .json()
}

/// Whether the browser with these cookies is still signed in (the home page says who).
async fn signed_in(h: &Harness, cookies: &[String]) -> bool {
    h.get("/", cookies).await.body.contains("Signed in as")
}

/// Starts a device authorization (with an S256 challenge when given) and has alice approve it
/// in the browser; returns the device code and alice's cookies.
async fn approved_device(h: &Harness, challenge: Option<&str>) -> (String, Vec<String>) {
    let mut form = vec![("client_id", "kubelogin"), ("scope", "openid")];
    if let Some(c) = challenge {
        form.extend([("code_challenge", c), ("code_challenge_method", "S256")]);
    }
    let d = h.post("/oauth/device/code", &form, &[], &[]).await.json();
    let user_code = d["user_code"].as_str().unwrap().to_string();
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = decide_device(h, &cookies, &user_code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (d["device_code"].as_str().unwrap().to_string(), cookies)
}

/// Opens the approval page for `user_code` and allows it.
async fn decide_device(h: &Harness, cookies: &[String], user_code: &str) -> Resp {
    let page = h
        .get(&format!("/device?user_code={user_code}"), cookies)
        .await;
    let csrf = form_value(&page.body, "csrf_token").unwrap_or_default();
    h.post(
        "/device",
        &[
            ("csrf_token", &csrf),
            ("user_code", user_code),
            ("decision", "allow"),
        ],
        cookies,
        &[],
    )
    .await
}

/// One device-code poll, with a PKCE verifier when given.
async fn poll_device(h: &Harness, device_code: &str, verifier: Option<&str>) -> Resp {
    let mut form = vec![
        ("grant_type", shared::token::grant_type::DEVICE_CODE),
        ("device_code", device_code),
        ("client_id", "kubelogin"),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    h.token(&form).await
}

#[tokio::test]
async fn a_retry_in_the_grace_window_gets_the_same_successor_not_a_sibling() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let old = t["refresh_token"].as_str().unwrap().to_string();
    let a = refresh(&h, &old).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    h.clock.advance(2);
    // A thief (or a client whose response was lost) presents the rotated token again.
    let b = refresh(&h, &old).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let successor = a.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        b.json()["refresh_token"].as_str().unwrap(),
        successor,
        "the same successor, so the family has one branch"
    );
    assert!(b.json()["id_token"].is_string());
    // Whoever uses the successor first wins; the second use is reuse and ends the family.
    let first = refresh(&h, &successor).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    h.clock.advance(10);
    let second = refresh(&h, &successor).await;
    assert_eq!(second.json()["error"], "invalid_grant");
    let newest = first.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        refresh(&h, &newest).await.json()["error"],
        "invalid_grant",
        "reuse detection saw the replay: the whole family is revoked"
    );
    assert_eq!(events(&h, "refresh_token_grace_reuse").await.len(), 1);
    assert_eq!(events(&h, "refresh_token_reused").await.len(), 1);
}

#[tokio::test]
async fn each_refresh_writes_one_audit_row() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let mut rt = t["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        h.clock.advance(1);
        let r = refresh(&h, &rt).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    }
    let rows = events(&h, "token_refreshed").await;
    assert_eq!(rows.len(), 3, "one row per refresh: {rows:?}");
    assert!(rows.iter().all(|e| e.actor == ALICE));
}

#[tokio::test]
async fn a_password_reset_ends_sessions_and_refresh_families() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    assert!(signed_in(&h, &cookies).await);
    let hash = idp::crypto::hash_password("a-brand-new-password-1").unwrap();
    h.state
        .store
        .set_password(&alice_id(&h).await, &hash, h.clock_now())
        .await
        .unwrap();
    assert!(
        !signed_in(&h, &cookies).await,
        "the attacker's session cookie is dead"
    );
    assert_eq!(
        refresh(&h, t["refresh_token"].as_str().unwrap())
            .await
            .json()["error"],
        "invalid_grant",
        "the attacker's refresh token is dead"
    );
    assert_eq!(
        h.get_bearer("/oauth/userinfo", t["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "and so is the access token of that grant"
    );
}

#[tokio::test]
async fn a_code_replay_kills_the_access_token_at_userinfo_and_introspection() {
    let h = harness().await;
    let (code, verifier) = h.code_for_alice("openid").await;
    let redeem = || h.redeem(&code, &verifier);
    let first = redeem().await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let at = first.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.get_bearer("/oauth/userinfo", &at).await.status,
        StatusCode::OK
    );
    assert_eq!(introspect(&h, &at).await["active"], true);
    assert_eq!(redeem().await.json()["error"], "invalid_grant");
    assert_eq!(
        h.get_bearer("/oauth/userinfo", &at).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(introspect(&h, &at).await["active"], false);
}

#[tokio::test]
async fn a_revoked_client_and_a_disabled_user_fail_introspection() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let at = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(introspect(&h, &at).await["active"], true);
    h.state
        .store
        .set_user_disabled(&alice_id(&h).await, true, h.clock_now())
        .await
        .unwrap();
    assert_eq!(introspect(&h, &at).await["active"], false);

    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let at = t["access_token"].as_str().unwrap().to_string();
    h.clock.advance(1);
    h.state
        .store
        .revoke_all_for_client("kubelogin", h.clock_now())
        .await
        .unwrap();
    assert_eq!(introspect(&h, &at).await["active"], false);
}

#[tokio::test]
async fn revoke_all_ends_the_users_sessions_and_consents() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (code, _) = h.code_for_alice("openid").await;
    assert!(!code.is_empty());
    let id = alice_id(&h).await;
    assert!(!h
        .state
        .store
        .consented_scopes(&id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
    assert!(signed_in(&h, &cookies).await);
    h.clock.advance(1);
    h.state
        .store
        .revoke_all_for_client("kubelogin", h.clock_now())
        .await
        .unwrap();
    assert!(
        !signed_in(&h, &cookies).await,
        "users of the client must sign in again"
    );
    assert!(h
        .state
        .store
        .consented_scopes(&id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_device_grant_honours_a_forced_reauthentication() {
    let h = harness().await;
    let (dc, _) = approved_device(&h, None).await;
    // The laptop is stolen: the admin forces re-authentication before the device polls.
    h.clock.advance(1);
    h.state
        .store
        .revoke_all_for_client("kubelogin", h.clock_now())
        .await
        .unwrap();
    h.clock.advance(10);
    let r = poll_device(&h, &dc, None).await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
}

#[tokio::test]
async fn the_device_grant_refuses_a_poll_without_the_verifier() {
    let h = harness().await;
    let (verifier, challenge) = pkce_pair();
    let (dc, _) = approved_device(&h, Some(&challenge)).await;
    h.clock.advance(10);
    let r = poll_device(&h, &dc, None).await;
    assert_eq!(
        r.json()["error"],
        "invalid_grant",
        "no verifier: {}",
        r.body
    );
    // The refused poll consumed the approval: even the right verifier cannot rescue it now.
    h.clock.advance(10);
    let r = poll_device(&h, &dc, Some(&verifier)).await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
}

#[tokio::test]
async fn the_device_grant_refuses_a_wrong_verifier() {
    let h = harness().await;
    let (_, challenge) = pkce_pair();
    let (dc, _) = approved_device(&h, Some(&challenge)).await;
    h.clock.advance(10);
    let wrong = idp::crypto::random_token(32);
    let r = poll_device(&h, &dc, Some(&wrong)).await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("code_verifier"));
}

#[tokio::test]
async fn a_disabled_user_gets_nothing_anywhere() {
    let h = harness().await;
    // Before the disable: a browser session, an unredeemed code, a pending device approval.
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (code, verifier) = h.code_for_alice("openid").await;
    let d = h
        .post(
            "/oauth/device/code",
            &[("client_id", "kubelogin"), ("scope", "openid")],
            &[],
            &[],
        )
        .await
        .json();
    let user_code = d["user_code"].as_str().unwrap().to_string();
    let page = h
        .get(&format!("/device?user_code={user_code}"), &cookies)
        .await;
    let csrf = form_value(&page.body, "csrf_token").unwrap();

    h.state
        .store
        .set_user_disabled(&alice_id(&h).await, true, h.clock_now())
        .await
        .unwrap();

    // The old session cookie no longer signs anyone in...
    assert!(!signed_in(&h, &cookies).await);
    // ...nor approves the device (the form is answered with the login page, not an approval).
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
    assert_ne!(r.status, StatusCode::OK, "{}", r.body);
    h.clock.advance(10);
    let poll = h
        .token(&[
            ("grant_type", shared::token::grant_type::DEVICE_CODE),
            ("device_code", d["device_code"].as_str().unwrap()),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(
        poll.json()["error"],
        "authorization_pending",
        "{}",
        poll.body
    );
    // The code issued before the disable cannot be redeemed.
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
    // The login page refuses the right password.
    let (r, fresh) = h.login_attempt("", &[], ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(!signed_in(&h, &fresh).await);
    // The password grant refuses it too.
    let r = h
        .token(&[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.body);
}

#[tokio::test]
async fn client_authentication_failures_look_alike() {
    let h = harness().await;
    let unknown = attempt(&h, "no-such-client", Some("whatever")).await;
    let unknown_no_secret = attempt(&h, "no-such-client", None).await;
    let wrong_secret = attempt(&h, CONFIDENTIAL_CLIENT, Some("wrong")).await;
    let missing_secret = attempt(&h, CONFIDENTIAL_CLIENT, None).await;
    let public_with_secret = attempt(&h, "kubelogin", Some("whatever")).await;
    for r in [
        &unknown_no_secret,
        &wrong_secret,
        &missing_secret,
        &public_with_secret,
    ] {
        assert_eq!(r.status, unknown.status);
        assert_eq!(
            r.body, unknown.body,
            "the answer must not tell clients apart"
        );
    }
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.json()["error"], "invalid_client");
}

async fn attempt(h: &Harness, id: &str, secret: Option<&str>) -> Resp {
    let mut form = vec![("grant_type", "client_credentials"), ("client_id", id)];
    if let Some(s) = secret {
        form.push(("client_secret", s));
    }
    h.token(&form).await
}

/// A refused refresh of a known family is in the audit log under the user's name, as are reuse
/// and revocation, so filtering the log by that user shows the refresh that failed after a
/// disable or a forced re-authentication; a client retrying the dead token adds no rows.
#[tokio::test]
async fn refused_refreshes_are_audited_against_the_username() {
    let h = harness().await;
    let by_alice = |event: &'static str| {
        let h = &h;
        async move {
            h.state
                .store
                .audit_events(AuditFilter {
                    event: Some(event.into()),
                    user: Some(ALICE.into()),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    // Forced re-authentication: the family predates it.
    let t = h.tokens_for_alice("openid").await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    h.clock.advance(1);
    h.state
        .store
        .revoke_all_for_client("kubelogin", h.clock_now())
        .await
        .unwrap();
    assert_eq!(refresh(&h, &rt).await.json()["error"], "invalid_grant");
    let refused = by_alice("refresh_token_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].client_id, "kubelogin");
    // Retries within the minute add no row.
    for _ in 0..5 {
        assert_eq!(refresh(&h, &rt).await.json()["error"], "invalid_grant");
    }
    assert_eq!(by_alice("refresh_token_refused").await.len(), 1);

    // A disabled user: a new login's refresh is refused and recorded again after the window.
    h.clock.advance(120);
    let t = h.tokens_for_alice("openid").await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let id = alice_id(&h).await;
    h.state
        .store
        .set_user_disabled(&id, true, h.clock_now())
        .await
        .unwrap();
    assert_eq!(refresh(&h, &rt).await.json()["error"], "invalid_grant");
    assert_eq!(by_alice("refresh_token_refused").await.len(), 2);

    // An unknown token names nobody and records nothing.
    assert_eq!(
        refresh(&h, "not-a-token").await.json()["error"],
        "invalid_grant"
    );
    assert_eq!(events(&h, "refresh_token_refused").await.len(), 2);
}

/// Reuse of a rotated refresh token is found by the user's name too.
#[tokio::test]
async fn refresh_reuse_is_audited_against_the_username() {
    let h = harness().await;
    let t = h.tokens_for_alice("openid").await;
    let old = t["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&h, &old).await.status, StatusCode::OK);
    h.clock.advance(60);
    assert_eq!(refresh(&h, &old).await.json()["error"], "invalid_grant");
    let reused = events(&h, "refresh_token_reused").await;
    assert_eq!(reused.len(), 1);
    assert_eq!(reused[0].subject, ALICE);
}
