//! The admin console's actions through its pages, on real SQLite: each one's status, its effect
//! in the store and its audit event naming the admin, their IP and user agent; CSRF refusal;
//! confirmation pages; errors kept on the page with the input; the CSV export streamed with
//! escaping.

use crate::access_control::{add_admin, csrf, ADMIN, ADMIN_PASSWORD};
use crate::common::{harness, Harness, Resp};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use futures_util::StreamExt;
use idp::clock::Clock;
use idp::store::{AuditEvent, AuditFilter};
use idp::testing::{form_value, ALICE, BOB, BOB_PASSWORD};
use std::net::SocketAddr;
use tower::ServiceExt;

const IP: &str = "198.51.100.4";
const UA: &str = "ConsoleTest/1.0 (X11; Linux x86_64)";

/// A form POST from the admin's browser at [`IP`] with [`UA`].
async fn post(h: &Harness, path: &str, form: &[(&str, &str)], cookies: &[String]) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookies.join("; "))
        .header(header::USER_AGENT, UA)
        .body(Body::from(body))
        .unwrap();
    let addr: SocketAddr = format!("{IP}:50000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    h.call(req).await
}

async fn signed_in_admin() -> (Harness, Vec<String>, String) {
    let h = harness().await;
    add_admin(&h).await;
    let cookies = h.login(ADMIN, ADMIN_PASSWORD).await;
    let token = csrf(&h, &cookies).await;
    (h, cookies, token)
}

/// The newest audit event called `name`.
async fn last_event(h: &Harness, name: &str) -> AuditEvent {
    let events = h
        .state
        .store
        .audit_events(AuditFilter {
            event: Some(name.into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    events
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {name} event"))
}

/// The event names the admin, the request's IP and user agent, and the target.
async fn assert_audited(h: &Harness, name: &str, subject: &str) {
    let e = last_event(h, name).await;
    assert_eq!(
        (e.actor.as_str(), e.ip.as_str(), e.user_agent.as_str()),
        (ADMIN, IP, UA),
        "{name}"
    );
    assert_eq!(e.subject, subject, "{name}");
}

/// The text of the element with `id` (the first one), tags removed.
fn text_of(body: &str, id: &str) -> String {
    let start = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let close = rest.find("</").unwrap();
    rest[open_end..close].to_string()
}

#[tokio::test]
async fn the_console_creates_a_group_a_user_in_it_and_a_public_client() {
    let (h, admin, t) = signed_in_admin().await;
    // A group.
    let r = post(
        &h,
        "/admin/groups",
        &[("csrf_token", &t), ("name", "sre")],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_audited(&h, "group_created", "sre").await;
    // A user in it, with a generated password shown once.
    let form = [
        ("csrf_token", t.as_str()),
        ("username", "dave"),
        ("name", "Dave Ops"),
        ("email", "dave@example.com"),
        ("groups", "sre, developers"),
        ("password", ""),
    ];
    let r = post(&h, "/admin/users/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let password = text_of(&r.body, "secret");
    assert!(password.len() >= 12, "{password:?}");
    assert_audited(&h, "user_created", "dave").await;
    let dave = h
        .state
        .store
        .user_by_username("dave")
        .await
        .unwrap()
        .unwrap();
    let mut groups = h.state.store.groups_of_user(&dave.id).await.unwrap();
    groups.sort();
    assert_eq!(groups, ["developers", "sre"]);
    assert!(!dave.is_admin);
    // The password works, and is not on the user's page afterwards.
    h.login("dave", &password).await;
    let page = h.get("/admin/users/dave", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(&password));
    assert!(page.body.contains("developers, sre"), "{}", page.body);
    // A public client for kubectl.
    let form = [
        ("csrf_token", t.as_str()),
        ("client_id", "kubectl"),
        ("name", "kubectl"),
        ("kind", "public"),
        (
            "redirect_uris",
            "http://localhost:8000\nhttp://localhost:18000",
        ),
        ("grant_authorization_code", "on"),
        ("grant_refresh_token", "on"),
        ("scopes", "openid profile email groups offline_access"),
    ];
    let r = post(&h, "/admin/clients/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !r.body.contains("id=\"secret\""),
        "a public client has no secret"
    );
    assert_audited(&h, "client_created", "kubectl").await;
    let c = h.state.store.client("kubectl").await.unwrap().unwrap();
    assert!(c.is_public());
    assert_eq!(
        c.redirect_uris,
        ["http://localhost:8000", "http://localhost:18000"]
    );
    assert_eq!(c.grant_types, ["authorization_code", "refresh_token"]);
    assert!(c.allows_scope("groups"));
    // A confidential one shows its secret once, and the secret is the stored one.
    let form = [
        ("csrf_token", t.as_str()),
        ("client_id", "ci"),
        ("kind", "confidential"),
        ("grant_client_credentials", "on"),
    ];
    let r = post(&h, "/admin/clients/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = text_of(&r.body, "secret");
    let c = h.state.store.client("ci").await.unwrap().unwrap();
    assert_eq!(c.secret_hash, Some(idp::crypto::hash_secret(&secret)));
}

#[tokio::test]
async fn refused_input_stays_on_the_page_with_what_was_typed() {
    let (h, admin, t) = signed_in_admin().await;
    let form = [
        ("csrf_token", t.as_str()),
        ("client_id", "webapp"),
        ("name", "Web app"),
        ("kind", "public"),
        ("redirect_uris", "http://app.example.com/cb"),
    ];
    let r = post(&h, "/admin/clients/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        text_of(&r.body, "error").contains("must use https"),
        "{}",
        r.body
    );
    assert!(r.body.contains("value=\"webapp\""));
    assert!(r.body.contains("http://app.example.com/cb</textarea>"));
    assert!(h.state.store.client("webapp").await.unwrap().is_none());
    // A fragment, a public client with client_credentials: the admin layer's rules.
    let form = [
        ("csrf_token", t.as_str()),
        ("client_id", "webapp"),
        ("kind", "public"),
        ("redirect_uris", "https://app.example.com/cb#x"),
    ];
    let r = post(&h, "/admin/clients/new", &form, &admin).await;
    assert!(text_of(&r.body, "error").contains("fragment"), "{}", r.body);
    let form = [
        ("csrf_token", t.as_str()),
        ("client_id", "webapp"),
        ("kind", "public"),
        ("grant_client_credentials", "on"),
    ];
    let r = post(&h, "/admin/clients/new", &form, &admin).await;
    assert!(
        text_of(&r.body, "error").contains("public client"),
        "{}",
        r.body
    );
    assert!(r
        .body
        .contains("name=\"grant_client_credentials\" value=\"on\" checked"));
    // A user with an unknown group and a short password: told, the name kept, the password not.
    let form = [
        ("csrf_token", t.as_str()),
        ("username", "erin"),
        ("email", "erin@example.com"),
        ("groups", "nope"),
        ("password", "secret-pw-1"),
    ];
    let r = post(&h, "/admin/users/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(text_of(&r.body, "error").contains("no group"), "{}", r.body);
    assert!(r.body.contains("value=\"erin\""));
    assert!(!r.body.contains("secret-pw-1"));
    let form = [
        ("csrf_token", t.as_str()),
        ("username", "erin"),
        ("email", "erin@example.com"),
        ("password", "short"),
    ];
    let r = post(&h, "/admin/users/new", &form, &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(h
        .state
        .store
        .user_by_username("erin")
        .await
        .unwrap()
        .is_none());
    // An existing name is a conflict, not a 500.
    let form = [
        ("csrf_token", t.as_str()),
        ("username", ALICE),
        ("email", "other@example.com"),
    ];
    let r = post(&h, "/admin/users/new", &form, &admin).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.body);
}

#[tokio::test]
async fn a_forged_form_changes_nothing() {
    let (h, admin, _) = signed_in_admin().await;
    // Another session's token (bob's browser), no token at all, a made-up one.
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let own = form_value(&h.get("/admin/reauth", &admin).await.body, "csrf_token").unwrap();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::COOKIE, bob.join("; ").parse().unwrap());
    let bobs = idp::web::csrf::session_token(&h.state, &headers)
        .await
        .unwrap();
    assert_ne!(bobs, own);
    for token in [bobs.as_str(), "", "x"] {
        let r = post(
            &h,
            "/admin/users/bob/delete",
            &[("csrf_token", token)],
            &admin,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(r.body.contains("CSRF"));
    }
    assert!(h.state.store.user_by_username(BOB).await.unwrap().is_some());
}

#[tokio::test]
async fn disabling_asks_first_then_ends_everything_of_the_user() {
    let (h, admin, t) = signed_in_admin().await;
    let bob = h.login(BOB, BOB_PASSWORD).await;
    // The confirmation page says what happens and posts back to itself.
    let page = h.get("/admin/users/bob/disable", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("ends every browser session"),
        "{}",
        page.body
    );
    assert!(page.body.contains("action=\"/admin/users/bob/disable\""));
    assert!(page.body.contains("id=\"cancel\""));
    assert!(
        !h.state
            .store
            .user_by_username(BOB)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    let r = post(
        &h,
        "/admin/users/bob/disable",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        h.state
            .store
            .user_by_username(BOB)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert_audited(&h, "user_disabled", BOB).await;
    assert!(h.get("/", &bob).await.body.contains("Not signed in"));
    let page = h.get("/admin/users/bob", &admin).await;
    assert_eq!(text_of(&page.body, "status"), "disabled");
    // And back.
    let r = post(&h, "/admin/users/bob/enable", &[("csrf_token", &t)], &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !h.state
            .store
            .user_by_username(BOB)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert_audited(&h, "user_enabled", BOB).await;
}

#[tokio::test]
async fn edit_reset_password_and_delete_a_user() {
    let (h, admin, t) = signed_in_admin().await;
    let form = h.get("/admin/users/bob/edit", &admin).await;
    assert!(form.body.contains("value=\"bob@example.com\""));
    let edit = [
        ("csrf_token", t.as_str()),
        ("name", "Robert"),
        ("email", "robert@example.com"),
        ("groups", "developers"),
    ];
    let r = post(&h, "/admin/users/bob/edit", &edit, &admin).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let b = h.state.store.user_by_username(BOB).await.unwrap().unwrap();
    assert_eq!(
        (b.name.as_str(), b.email.as_str()),
        ("Robert", "robert@example.com")
    );
    assert_eq!(
        h.state.store.groups_of_user(&b.id).await.unwrap(),
        ["developers"]
    );
    assert_audited(&h, "user_updated", BOB).await;
    // A bad email: the page again, nothing changed.
    let bad = [("csrf_token", t.as_str()), ("email", "nope"), ("name", "X")];
    let r = post(&h, "/admin/users/bob/edit", &bad, &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("value=\"nope\""));
    assert_eq!(
        h.state
            .store
            .user_by_username(BOB)
            .await
            .unwrap()
            .unwrap()
            .name,
        "Robert"
    );

    // A reset signs bob out and the generated password replaces the old one.
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let r = post(
        &h,
        "/admin/users/bob/password",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_password = text_of(&r.body, "secret");
    assert_audited(&h, "user_password_changed", BOB).await;
    assert!(h.get("/", &bob).await.body.contains("Not signed in"));
    let (r, _) = h.login_attempt("", &[], BOB, BOB_PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    h.login(BOB, &new_password).await;

    let page = h.get("/admin/users/bob/delete", &admin).await;
    assert!(page.body.contains("cannot be undone"));
    let r = post(&h, "/admin/users/bob/delete", &[("csrf_token", &t)], &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.state.store.user_by_username(BOB).await.unwrap().is_none());
    assert_audited(&h, "user_deleted", BOB).await;
}

#[tokio::test]
async fn a_users_sessions_and_authorizations_are_listed_and_revoked() {
    let (h, admin, t) = signed_in_admin().await;
    let tokens = h.tokens_for_alice("openid offline_access").await;
    let page = h.get("/admin/users/alice", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    // Alice's login session (from `tokens_for_alice`) and her authorization of kubelogin.
    let a = h
        .state
        .store
        .user_by_username(ALICE)
        .await
        .unwrap()
        .unwrap();
    let sessions = h
        .state
        .store
        .sessions_of_user(&a.id, h.clock.now())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    let revoke = format!(
        "/admin/users/alice/sessions/revoke?session={}",
        sessions[0].id_hash
    );
    assert!(
        page.body.contains(&revoke.replace('&', "&amp;")),
        "{}",
        page.body
    );
    let confirm = h.get(&revoke, &admin).await;
    assert_eq!(
        form_value(&confirm.body, "session").as_deref(),
        Some(sessions[0].id_hash.as_str())
    );
    let r = post(
        &h,
        "/admin/users/alice/sessions/revoke",
        &[("csrf_token", &t), ("session", &sessions[0].id_hash)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h
        .state
        .store
        .sessions_of_user(&a.id, h.clock.now())
        .await
        .unwrap()
        .is_empty());
    assert_audited(&h, "session_revoked", ALICE).await;

    assert!(page.body.contains("authorizations/revoke?client=kubelogin"));
    let r = post(
        &h,
        "/admin/users/alice/authorizations/revoke",
        &[("csrf_token", &t), ("client", "kubelogin")],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_audited(&h, "authorization_revoked", ALICE).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Revoking what is not there is said on the page.
    let r = post(
        &h,
        "/admin/users/alice/authorizations/revoke",
        &[("csrf_token", &t), ("client", "kubelogin")],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("has not authorized"));
}

#[tokio::test]
async fn groups_members_are_added_and_removed_and_groups_deleted() {
    let (h, admin, t) = signed_in_admin().await;
    let r = post(
        &h,
        "/admin/groups/developers/members",
        &[("csrf_token", &t), ("username", BOB)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_audited(&h, "group_member_added", BOB).await;
    let page = h.get("/admin/groups/developers", &admin).await;
    assert!(
        page.body.contains("members/remove?username=bob"),
        "{}",
        page.body
    );
    let r = post(
        &h,
        "/admin/groups/developers/members",
        &[("csrf_token", &t), ("username", "ghost")],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("value=\"ghost\""));
    let confirm = h
        .get(
            "/admin/groups/developers/members/remove?username=bob",
            &admin,
        )
        .await;
    assert!(
        confirm.body.contains("Remove bob from developers?"),
        "{}",
        confirm.body
    );
    let r = post(
        &h,
        "/admin/groups/developers/members/remove",
        &[("csrf_token", &t), ("username", BOB)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_audited(&h, "group_member_removed", BOB).await;
    let r = post(
        &h,
        "/admin/groups/developers/delete",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.state.store.list_groups().await.unwrap().is_empty());
    assert_audited(&h, "group_deleted", "developers").await;
}

#[tokio::test]
async fn force_reauthentication_says_what_it_does_then_invalidates_the_clients_tokens() {
    let (h, admin, t) = signed_in_admin().await;
    let tokens = h.tokens_for_alice("openid offline_access").await;
    let page = h.get("/admin/clients/kubelogin", &admin).await;
    assert_eq!(text_of(&page.body, "live"), "1");
    let confirm = h
        .get("/admin/clients/kubelogin/force-reauthentication", &admin)
        .await;
    assert!(
        confirm
            .body
            .contains("Everyone using kubelogin must log in again"),
        "{}",
        confirm.body
    );
    assert!(confirm
        .body
        .contains("refresh token of the client is revoked"));
    h.clock.advance(5);
    let r = post(
        &h,
        "/admin/clients/kubelogin/force-reauthentication",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(text_of(&r.body, "message").contains("1 refresh token families"));
    let c = h.state.store.client("kubelogin").await.unwrap().unwrap();
    assert_eq!(c.tokens_valid_after, h.clock.now());
    assert_audited(&h, "client_tokens_revoked", "kubelogin").await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let r = h
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "kubelogin"),
        ])
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        h.get_bearer("/oauth/userinfo", access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn client_secret_rotation_and_delete() {
    let (h, admin, t) = signed_in_admin().await;
    let old = h
        .state
        .store
        .client("automation")
        .await
        .unwrap()
        .unwrap()
        .secret_hash;
    let r = post(
        &h,
        "/admin/clients/automation/rotate-secret",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret = text_of(&r.body, "secret");
    let new = h
        .state
        .store
        .client("automation")
        .await
        .unwrap()
        .unwrap()
        .secret_hash;
    assert_ne!(old, new);
    assert_eq!(new, Some(idp::crypto::hash_secret(&secret)));
    assert_audited(&h, "client_secret_rotated", "automation").await;
    // A public client has no secret to rotate: said on the page, nothing written.
    let r = post(
        &h,
        "/admin/clients/kubelogin/rotate-secret",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(h
        .state
        .store
        .client("kubelogin")
        .await
        .unwrap()
        .unwrap()
        .is_public());
    let r = post(
        &h,
        "/admin/clients/automation/delete",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.state.store.client("automation").await.unwrap().is_none());
    assert_audited(&h, "client_deleted", "automation").await;
}

#[tokio::test]
async fn rotating_the_signing_key_reaches_jwks_at_once() {
    let (h, admin, t) = signed_in_admin().await;
    let before = h.state.keys().await.unwrap().active.kid().to_string();
    let page = h.get("/admin/keys", &admin).await;
    assert!(page.body.contains(&before));
    let r = post(&h, "/admin/keys/rotate", &[("csrf_token", &t)], &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let after = h.state.keys().await.unwrap().active.kid().to_string();
    assert_ne!(before, after);
    let jwks = h.get("/.well-known/jwks.json", &[]).await.body;
    assert!(jwks.contains(&before) && jwks.contains(&after), "{jwks}");
    assert_audited(&h, "signing_key_rotated", &after).await;
}

#[tokio::test]
async fn the_overview_counts() {
    let (h, admin, _) = signed_in_admin().await;
    h.tokens_for_alice("openid offline_access").await;
    let (r, _) = h.login_attempt("", &[], BOB, "wrong-password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let page = h.get("/admin", &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(text_of(&page.body, "users"), "3");
    assert_eq!(text_of(&page.body, "sessions"), "2");
    assert_eq!(text_of(&page.body, "families"), "1");
    assert_eq!(text_of(&page.body, "failed"), "1");
    assert!(page.body.contains("login_failed"));
}

/// Audit events for the export tests: `n` by a user whose name starts with `=`, and others.
async fn seed_events(h: &Harness, n: usize) {
    let now = h.clock.now();
    for i in 0..n {
        h.state
            .store
            .record_audit(AuditEvent {
                at: now - 1000 + (i % 900) as u64,
                event: "login_succeeded".into(),
                severity: "info".into(),
                actor: "=HYPERLINK(\"http://evil\")".into(),
                ip: "203.0.113.77".into(),
                user_agent: "Mozilla/5.0, \"quoted\"".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if i % 10 == 0 {
            h.state
                .store
                .record_audit(AuditEvent {
                    at: now - 500,
                    event: "login_succeeded".into(),
                    severity: "info".into(),
                    actor: "someone-else".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn the_audit_csv_is_the_filtered_set_streamed_in_chunks_and_escaped() {
    let (h, admin, _) = signed_in_admin().await;
    seed_events(&h, 2500).await;
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("user", "=HYPERLINK(\"http://evil\")")
        .finish();
    // The page: 100 rows, IP and user agent shown, a next page, and the CSV link with the filter.
    let page = h.get(&format!("/admin/audit?{q}"), &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("203.0.113.77").count(), 100);
    assert!(
        page.body.contains("Mozilla/5.0, &#34;quoted&#34;")
            || page.body.contains("Mozilla/5.0, &quot;quoted&quot;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"next\""));
    assert!(page
        .body
        .contains(&format!("/admin/audit.csv?{}", q.replace('&', "&amp;"))));
    assert!(page.body.contains("kept for 365 days"), "{}", page.body);

    let req = Request::get(format!("/admin/audit.csv?{q}"))
        .header(header::COOKIE, admin.join("; "))
        .body(Body::empty())
        .unwrap();
    let resp = idp::app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let hd = resp.headers();
    assert_eq!(hd[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        hd[header::CONTENT_DISPOSITION],
        "attachment; filename=\"audit.csv\""
    );
    // No length known up front: the body is a stream, one chunk per keyset query.
    assert!(hd.get(header::CONTENT_LENGTH).is_none());
    let mut stream = resp.into_body().into_data_stream();
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c.unwrap());
    }
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2500);
    for r in &rows {
        assert_eq!(&r[4], "'=HYPERLINK(\"http://evil\")", "formula defused");
        assert_eq!(&r[8], "Mozilla/5.0, \"quoted\"");
    }
    // Exactly the filtered set: the same ids the pages list, newest first.
    let ids: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    let first_page = text_of(&page.body, "events");
    assert!(!first_page.is_empty());
    // A bad time is refused on the page, not a 500.
    let r = h.get("/admin/audit?since=yesterday", &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(text_of(&r.body, "error").contains("not a date"));
    let r = h.get("/admin/audit.csv?since=yesterday", &admin).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn audit_filters_by_outcome_time_and_client() {
    let (h, admin, _) = signed_in_admin().await;
    let (r, _) = h.login_attempt("", &[], BOB, "wrong-password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let failures = h.get("/admin/audit?outcome=failure", &admin).await;
    assert!(failures.body.contains("login_failed"));
    assert!(!failures.body.contains("login_succeeded"));
    let successes = h.get("/admin/audit?outcome=success", &admin).await;
    assert!(successes.body.contains("login_succeeded"));
    assert!(!successes.body.contains("<td>login_failed</td>"));
    // A time range after everything: empty.
    let later = h.clock.now() + 3600;
    let r = h.get(&format!("/admin/audit?since={later}"), &admin).await;
    assert!(r.body.contains("No events."), "{}", r.body);
    // datetime-local values are read as UTC.
    let r = h
        .get(
            "/admin/audit?since=2000-01-01T00:00&until=2000-01-02",
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("No events."));
    assert!(r.body.contains("value=\"2000-01-01T00:00\""));
}

/// The same action from the command line and from the console leaves the same audit event;
/// only who ran it (and from where) differs.
#[tokio::test]
async fn the_cli_and_the_console_write_the_same_audit_events() {
    let cli = crate::cli::Idp::new();
    cli.ok(&["group", "add", "from-cli"]);
    cli.run_stdin(
        &[
            "user",
            "add",
            ADMIN,
            "--email",
            "root@example.com",
            "--admin",
            "--password-stdin",
        ],
        ADMIN_PASSWORD,
    )
    .ok();
    for name in ["carol", "dan"] {
        let email = format!("{name}@example.com");
        cli.ok(&["user", "add", name, "--email", &email]);
    }
    cli.ok(&["user", "disable", "carol"]);
    let db = format!(
        "sqlite://{}",
        cli.data_dir().join("kubelogin-idp.db").display()
    );
    let h = crate::common::harness_on(&db).await;
    let admin = h.login(ADMIN, ADMIN_PASSWORD).await;
    let t = csrf(&h, &admin).await;
    let r = post(
        &h,
        "/admin/groups",
        &[("csrf_token", &t), ("name", "from-web")],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = post(
        &h,
        "/admin/users/dan/disable",
        &[("csrf_token", &t)],
        &admin,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    for (event, by_cli, by_web) in [
        ("group_created", "from-cli", "from-web"),
        ("user_disabled", "carol", "dan"),
    ] {
        let events = h
            .state
            .store
            .audit_events(AuditFilter {
                event: Some(event.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let find = |subject: &str| {
            events
                .iter()
                .find(|e| e.subject == subject)
                .unwrap_or_else(|| panic!("no {event} for {subject}: {events:?}"))
                .clone()
        };
        let (c, w) = (find(by_cli), find(by_web));
        assert!(c.actor.starts_with("cli:"), "{c:?}");
        assert_eq!((c.ip.as_str(), c.user_agent.as_str()), ("", ""));
        assert_eq!(w.actor, ADMIN);
        // Everything but who, where from, when and the target is the same.
        let same = |e: &AuditEvent| {
            (
                e.event.clone(),
                e.severity.clone(),
                e.client_id.clone(),
                e.details.clone(),
            )
        };
        assert_eq!(same(&c), same(&w), "{event}");
    }
}
