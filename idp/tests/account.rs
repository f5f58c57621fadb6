//! The self-service pages under `/account` through the router: each action's effect in the
//! store and its audit event, the CSRF refusal, another person's session or authorization out of
//! reach, bounded input shown back as an error on the page, and the sign-in redirect.

use crate::common::*;
use axum::http::StatusCode;
use idp::crypto::hash_secret;
use idp::store::AuditFilter;
use idp::testing::{form_value, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD};

const PAGES: &[&str] = &[
    "/account",
    "/account/sessions",
    "/account/authorizations",
    "/account/sessions/revoke-others",
];

/// The session id a browser's cookies hold (the store keys it by its hash).
fn session_hash(cookies: &[String]) -> String {
    let sid = cookies
        .iter()
        .rev()
        .find_map(|c| c.strip_prefix("kl_session="))
        .filter(|v| !v.is_empty())
        .unwrap();
    hash_secret(sid)
}

/// The CSRF token of the page at `path` for this browser.
async fn csrf(h: &Harness, path: &str, cookies: &[String]) -> String {
    let r = h.get(path, cookies).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    form_value(&r.body, "csrf_token").unwrap()
}

async fn events(h: &Harness, event: &str) -> Vec<idp::store::AuditEvent> {
    h.state
        .store
        .audit_events(AuditFilter {
            event: Some(event.into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

async fn user(h: &Harness, name: &str) -> idp::store::User {
    h.state.store.user_by_username(name).await.unwrap().unwrap()
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_sign_in_and_back() {
    let h = harness().await;
    for p in PAGES {
        let r = h.get(p, &[]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{p}");
        let q = query_of(&format!("{ISSUER}{}", r.location()));
        assert!(r.location().starts_with("/login?"), "{p}: {}", r.location());
        assert!(q["return_to"].starts_with("/account"), "{p}: {q:?}");
    }
}

#[tokio::test]
async fn the_profile_shows_the_account_and_saves_the_name_with_an_audit_event() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h.get("/account", &cookies).await;
    assert_eq!(page.status, StatusCode::OK);
    let alice = user(&h, ALICE).await;
    assert!(page.body.contains(&alice.email), "{}", page.body);
    let token = form_value(&page.body, "csrf_token").unwrap();
    let r = h
        .post(
            "/account/profile",
            &[
                ("csrf_token", &token),
                ("name", "Alice Liddell"),
                // The email is not the person's to change (it may be their Kubernetes name).
                ("email", "mallory@example.com"),
            ],
            &cookies,
            &[("user-agent", "account-test/1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/account?done=profile");
    let after = user(&h, ALICE).await;
    assert_eq!(after.name, "Alice Liddell");
    assert_eq!(after.email, alice.email);
    let e = &events(&h, "user_updated").await[0];
    assert_eq!((e.actor.as_str(), e.subject.as_str()), (ALICE, ALICE));
    assert_eq!(e.user_agent, "account-test/1");
    let shown = h.get("/account?done=profile", &cookies).await;
    assert!(shown.body.contains("Your profile was saved."));
    assert!(shown.body.contains("value=\"Alice Liddell\""));
}

#[tokio::test]
async fn a_bad_name_is_refused_on_the_page_with_what_was_typed() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let token = csrf(&h, "/account", &cookies).await;
    let before = user(&h, ALICE).await;
    for (name, why) in [
        ("x".repeat(129), "at most 128"),
        ("line\nbreak".to_string(), "control characters"),
        ("y".repeat(60_000), "at most 128"),
    ] {
        let r = h
            .post(
                "/account/profile",
                &[("csrf_token", &token), ("name", &name)],
                &cookies,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body.contains(why), "{why}: {}", r.body);
        assert!(r.body.contains("id=\"error\""));
        assert!(r.body.len() < 20_000, "a huge value is not echoed whole");
    }
    assert_eq!(user(&h, ALICE).await, before);
}

#[tokio::test]
async fn every_account_form_refuses_a_token_of_another_session() {
    let h = harness().await;
    let alice = h.login(ALICE, ALICE_PASSWORD).await;
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let bobs = csrf(&h, "/account", &bob).await;
    let target = session_hash(&bob);
    for (path, extra) in [
        ("/account/profile", ("name", "Hijacked")),
        ("/account/password", ("new_password", "whatever-123")),
        ("/account/sessions/revoke", ("session", target.as_str())),
        ("/account/sessions/revoke-others", ("x", "y")),
        ("/account/authorizations/revoke", ("client_id", "kubelogin")),
    ] {
        for token in [bobs.as_str(), ""] {
            let r = h
                .post(path, &[("csrf_token", token), extra], &alice, &[])
                .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
            assert!(r.body.contains("CSRF"));
        }
    }
    assert_ne!(user(&h, ALICE).await.name, "Hijacked");
    assert_eq!(h.get("/account", &alice).await.status, StatusCode::OK);
    assert_eq!(h.get("/account", &bob).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_needs_the_current_one_and_ends_other_sessions_and_refresh_tokens() {
    let h = harness().await;
    let tokens = h.tokens_for_alice("openid offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let other = h.login(ALICE, ALICE_PASSWORD).await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let token = csrf(&h, "/account", &cookies).await;
    let change = |current: &'static str, new: &'static str, again: &'static str| {
        let (h, cookies, token) = (&h, cookies.clone(), token.clone());
        async move {
            h.post(
                "/account/password",
                &[
                    ("csrf_token", &token),
                    ("current_password", current),
                    ("new_password", new),
                    ("confirm_password", again),
                ],
                &cookies,
                &[],
            )
            .await
        }
    };
    let r = change("wrong-password", "new-password-789", "new-password-789").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("The current password is wrong."),
        "{}",
        r.body
    );
    // Checked as a login is: audited (and throttled) like a wrong password at sign-in.
    let failed = events(&h, "login_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].actor, ALICE);
    let r = change(ALICE_PASSWORD, "new-password-789", "new-password-780").await;
    assert!(r.body.contains("differ"), "{}", r.body);
    let r = change(ALICE_PASSWORD, "short", "short").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("at least 8"), "{}", r.body);
    // Nothing changed so far: the other browser and the refresh token still work.
    assert_eq!(h.get("/account", &other).await.status, StatusCode::OK);
    assert!(events(&h, "user_password_changed").await.is_empty());

    let r = change(ALICE_PASSWORD, "new-password-789", "new-password-789").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/account?done=password");
    // This browser continues on a new session; the old id and every other session are gone.
    let mut renewed: Vec<String> = cookies
        .iter()
        .filter(|c| !c.starts_with("kl_session="))
        .cloned()
        .collect();
    renewed.extend(r.cookies());
    assert_ne!(session_hash(&renewed), session_hash(&cookies));
    let page = h.get("/account?done=password", &renewed).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("signed out"), "{}", page.body);
    let alice = user(&h, ALICE).await;
    let now = h.clock_now();
    let sessions = h
        .state
        .store
        .sessions_of_user(&alice.id, now)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id_hash, session_hash(&renewed));
    assert_eq!(
        h.get("/account", &other).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        h.get("/account", &cookies).await.status,
        StatusCode::SEE_OTHER
    );
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "invalid_grant");
    let e = &events(&h, "user_password_changed").await[0];
    assert_eq!((e.actor.as_str(), e.subject.as_str()), (ALICE, ALICE));
    // The new password signs in, the old one does not.
    h.login(ALICE, "new-password-789").await;
    let (r, _) = h.login_attempt("", &[], ALICE, ALICE_PASSWORD).await;
    assert_ne!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_one_or_all_others_but_never_another_persons() {
    let h = harness().await;
    let laptop = h.login(ALICE, ALICE_PASSWORD).await;
    h.clock.advance(30);
    let phone = h.login(ALICE, ALICE_PASSWORD).await;
    let tablet = h.login(ALICE, ALICE_PASSWORD).await;
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let page = h.get("/account/sessions", &laptop).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("<li class=\"item\"").count(),
        3,
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("id=\"current-session\"").count(), 1);
    let phone_hash = session_hash(&phone);
    assert!(page.body.contains(&format!("session={phone_hash}")));
    assert!(!page.body.contains(&session_hash(&bob)));
    let token = csrf(&h, "/account", &laptop).await;

    // The confirmation page carries the choice to the POST.
    let confirm = h
        .get(
            &format!("/account/sessions/revoke?session={phone_hash}"),
            &laptop,
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert_eq!(form_value(&confirm.body, "session").unwrap(), phone_hash);

    let post = |path: &'static str, session: String| {
        let (h, laptop, token) = (&h, laptop.clone(), token.clone());
        async move {
            h.post(
                path,
                &[
                    ("csrf_token", token.as_str()),
                    ("session", session.as_str()),
                ],
                &laptop,
                &[],
            )
            .await
        }
    };
    // Bob's session is not Alice's to end; malformed and current ones are refused.
    let r = post("/account/sessions/revoke", session_hash(&bob)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/account", &bob).await.status, StatusCode::OK);
    let r = post("/account/sessions/revoke", "zz".repeat(600)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post("/account/sessions/revoke", session_hash(&laptop)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Sign out"));

    let r = post("/account/sessions/revoke", phone_hash.clone()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        h.get("/account", &phone).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(h.get("/account", &tablet).await.status, StatusCode::OK);
    let e = &events(&h, "session_revoked").await[0];
    assert_eq!((e.actor.as_str(), e.subject.as_str()), (ALICE, ALICE));
    let r = post("/account/sessions/revoke", phone_hash).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "already ended");

    let confirm = h.get("/account/sessions/revoke-others", &laptop).await;
    assert!(confirm.body.contains("id=\"confirm\""));
    let r = post("/account/sessions/revoke-others", String::new()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        h.get("/account", &tablet).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(h.get("/account", &laptop).await.status, StatusCode::OK);
    assert_eq!(h.get("/account", &bob).await.status, StatusCode::OK);
    assert_eq!(events(&h, "session_revoked").await.len(), 2);
}

#[tokio::test]
async fn a_sessions_last_use_is_written_at_most_once_a_minute() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let id = session_hash(&cookies);
    let t0 = h.clock_now();
    let last = |h: &Harness| {
        let id = id.clone();
        let store = h.state.store.clone();
        let now = h.clock_now();
        async move { store.session(&id, now).await.unwrap().unwrap().last_used_at }
    };
    assert_eq!(last(&h).await, t0);
    h.clock.advance(59);
    h.get("/account", &cookies).await;
    assert_eq!(last(&h).await, t0, "not rewritten within the minute");
    h.clock.advance(1);
    h.get("/account", &cookies).await;
    assert_eq!(last(&h).await, t0 + 60);
}

#[tokio::test]
async fn revoking_an_authorization_ends_its_refresh_tokens_and_forgets_the_consent() {
    let h = harness().await;
    let tokens = h.tokens_for_alice("openid offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    h.clock.advance(120);
    let r = h
        .post(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "kubelogin"),
            ],
            &[],
            &[("user-agent", "kubectl-oidc_login/test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h.get("/account/authorizations", &cookies).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"client-kubelogin\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("kubectl-oidc_login/test"),
        "{}",
        page.body
    );
    assert!(page.body.contains("offline_access"));
    let token = csrf(&h, "/account", &cookies).await;
    let alice = user(&h, ALICE).await;
    let activity = h
        .state
        .store
        .family_activity(&alice.id, h.clock_now())
        .await
        .unwrap();
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].last_used_at, h.clock_now());

    // Bob has not authorized it: his revoke finds nothing, Alice's tokens live on.
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let bobs = csrf(&h, "/account", &bob).await;
    let r = h
        .post(
            "/account/authorizations/revoke",
            &[("csrf_token", &bobs), ("client_id", "kubelogin")],
            &bob,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .post(
            "/account/authorizations/revoke",
            &[("csrf_token", &token), ("client_id", &"k".repeat(65))],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!h
        .state
        .store
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());

    let confirm = h
        .get(
            "/account/authorizations/revoke?client_id=kubelogin",
            &cookies,
        )
        .await;
    assert_eq!(form_value(&confirm.body, "client_id").unwrap(), "kubelogin");
    let r = h
        .post(
            "/account/authorizations/revoke",
            &[("csrf_token", &token), ("client_id", "kubelogin")],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    assert!(h
        .state
        .store
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
    let e = &events(&h, "authorization_revoked").await[0];
    assert_eq!((e.actor.as_str(), e.subject.as_str()), (ALICE, ALICE));
    assert_eq!(e.client_id, "kubelogin");
    let page = h
        .get("/account/authorizations?done=authorization", &cookies)
        .await;
    assert!(page.body.contains("id=\"none\""), "{}", page.body);
    assert!(page.body.contains("ask for your consent again"));
}
