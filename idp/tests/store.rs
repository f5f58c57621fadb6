//! The storage conformance suite: one function per behaviour of the `Store` trait, written
//! against `&dyn Store` only, so every backend (SQLite and PostgreSQL) runs the very same
//! checks. `backend_suite!` at the bottom instantiates each function once per backend, each on a
//! fresh database.
//!
//! Time is always passed in explicitly (the trait takes `now`), so nothing here sleeps.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers a test module
// shares; failing loudly is what a test helper should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idp::error::StoreError;
use idp::store::{
    AuditEvent, AuditFilter, AuthCode, Client, CodeRedemption, Consent, DeviceCode, DevicePoll,
    DeviceStatus, Family, FamilyQuery, NewUser, RefreshToken, Rotation, Session, Store, StoredKey,
    User, UserQuery,
};

/// An arbitrary "now" well away from zero, so `now - x` never underflows in the tests.
const T0: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn new_user(username: &str) -> NewUser {
    NewUser {
        username: username.into(),
        email: format!("{username}@example.com"),
        name: format!("{username} display"),
        password_hash: Some(format!("hash-of-{username}")),
        is_admin: false,
    }
}

async fn user(s: &dyn Store, username: &str) -> User {
    s.create_user(new_user(username), T0).await.unwrap()
}

fn client_fixture(id: &str, public: bool) -> Client {
    Client {
        client_id: id.into(),
        name: format!("{id} name"),
        secret_hash: (!public).then(|| format!("secret-hash-{id}")),
        redirect_uris: vec![
            "http://localhost:8000".into(),
            "http://127.0.0.1:8000".into(),
        ],
        post_logout_redirect_uris: vec!["http://localhost:8000/bye".into()],
        grant_types: vec![
            "authorization_code".into(),
            "refresh_token".into(),
            "urn:ietf:params:oauth:grant-type:device_code".into(),
        ],
        scopes: vec!["openid".into(), "profile".into(), "groups".into()],
        tokens_valid_after: 0,
        created_at: T0,
    }
}

async fn client(s: &dyn Store, id: &str, public: bool) -> Client {
    let c = client_fixture(id, public);
    s.create_client(c.clone()).await.unwrap();
    c
}

fn family_fixture(id: &str, client_id: &str, user_id: &str, now: u64) -> Family {
    Family {
        id: id.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        scope: "openid offline_access".into(),
        auth_time: now - 10,
        created_at: now,
        revoked_at: None,
    }
}

fn token(hash: &str, family_id: &str, created_at: u64, expires_at: u64) -> RefreshToken {
    RefreshToken {
        token_hash: hash.into(),
        family_id: family_id.into(),
        created_at,
        expires_at,
        rotated_at: None,
        ip: String::new(),
        user_agent: String::new(),
    }
}

/// A family `id` with first token `first_hash`, valid for an hour from `now`.
async fn family(
    s: &dyn Store,
    id: &str,
    client_id: &str,
    user_id: &str,
    first_hash: &str,
    now: u64,
) -> Family {
    let f = family_fixture(id, client_id, user_id, now);
    s.create_family(f.clone(), token(first_hash, id, now, now + 3600))
        .await
        .unwrap();
    f
}

fn code_fixture(hash: &str, client_id: &str, user_id: &str, now: u64, ttl: u64) -> AuthCode {
    AuthCode {
        code_hash: hash.into(),
        client_id: client_id.into(),
        user_id: user_id.into(),
        redirect_uri: "http://localhost:8000".into(),
        scope: "openid profile".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        auth_time: now - 5,
        created_at: now,
        expires_at: now + ttl,
    }
}

fn device_fixture(hash: &str, user_code: &str, client_id: &str, now: u64) -> DeviceCode {
    DeviceCode {
        device_code_hash: hash.into(),
        user_code: user_code.into(),
        client_id: client_id.into(),
        scope: "openid groups".into(),
        code_challenge: None,
        created_at: now,
        expires_at: now + 600,
        interval: 5,
        last_polled_at: None,
        status: DeviceStatus::Pending,
        user_id: None,
        auth_time: None,
        request_ip: "198.51.100.23".into(),
        request_user_agent: "kubectl-oidc_login/1.0".into(),
    }
}

fn session_fixture(id_hash: &str, user_id: &str, now: u64, ttl: u64) -> Session {
    Session {
        id_hash: id_hash.into(),
        user_id: user_id.into(),
        auth_time: now,
        created_at: now,
        expires_at: now + ttl,
        ip: "192.0.2.7".into(),
        user_agent: "conformance/1.0".into(),
        last_used_at: now,
    }
}

fn key_fixture(kid: &str, created_at: u64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: "ES256".into(),
        // The store keeps the PEM opaque; it never parses it.
        private_pem: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
        created_at,
        retired_at: None,
    }
}

fn audit_fixture(at: u64, event: &str, actor: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        at,
        event: event.into(),
        severity: "info".into(),
        actor: actor.into(),
        subject: "subject".into(),
        client_id: "kubelogin".into(),
        ip: "192.0.2.1".into(),
        user_agent: "ua".into(),
        details: format!("{event} by {actor} at {at}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected StoreError::Conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected StoreError::NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

pub async fn user_create_and_lookup(s: &dyn Store) {
    assert_eq!(s.count_users().await.unwrap(), 0);
    let mut nu = new_user("alice");
    nu.is_admin = true;
    let u = s.create_user(nu, T0).await.unwrap();
    assert!(!u.id.is_empty(), "a user gets a stable id (the sub claim)");
    assert_eq!(u.username, "alice");
    assert_eq!(u.email, "alice@example.com");
    assert_eq!(u.name, "alice display");
    assert_eq!(u.password_hash.as_deref(), Some("hash-of-alice"));
    assert!(u.is_admin);
    assert!(!u.disabled);
    assert_eq!(u.created_at, T0);

    assert_eq!(s.user_by_username("alice").await.unwrap(), Some(u.clone()));
    assert_eq!(s.user_by_id(&u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(s.user_by_username("nobody").await.unwrap(), None);
    assert_eq!(s.user_by_id("no-such-id").await.unwrap(), None);
    assert_eq!(s.count_users().await.unwrap(), 1);

    let b = user(s, "bob").await;
    assert_ne!(b.id, u.id, "ids are unique");
    assert_eq!(s.count_users().await.unwrap(), 2);
}

pub async fn user_duplicate_is_conflict(s: &dyn Store) {
    let first = user(s, "alice").await;
    let mut again = new_user("alice");
    again.email = "other@example.com".into();
    assert_conflict(s.create_user(again, T0 + 1).await);
    // The first account is untouched.
    assert_eq!(
        s.user_by_username("alice").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.count_users().await.unwrap(), 1);
}

pub async fn user_list_sorted_by_username(s: &dyn Store) {
    for name in ["carol", "alice", "bob"] {
        user(s, name).await;
    }
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
}

pub async fn user_set_password(s: &dyn Store) {
    let u = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    family(s, "fa", "kubelogin", &u.id, "ta", T0).await;
    family(s, "fb", "kubelogin", &bob.id, "tb", T0).await;
    s.create_session(session_fixture("sa", &u.id, T0, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("sb", &bob.id, T0, 3600))
        .await
        .unwrap();
    s.set_password(&u.id, "new-hash", T0 + 10).await.unwrap();
    let got = s.user_by_id(&u.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash.as_deref(), Some("new-hash"));
    // A password reset locks out whoever knew the old one: sessions and refresh families end.
    assert_eq!(s.session("sa", T0 + 10).await.unwrap(), None);
    assert_eq!(
        s.family("fa").await.unwrap().unwrap().revoked_at,
        Some(T0 + 10)
    );
    assert!(s.session("sb", T0 + 10).await.unwrap().is_some());
    assert_eq!(s.family("fb").await.unwrap().unwrap().revoked_at, None);
    assert_not_found(s.set_password("no-such-id", "x", T0).await);
}

pub async fn user_disable_revokes_families_and_sessions(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    family(s, "fa1", "kubelogin", &alice.id, "ta1", T0).await;
    family(s, "fa2", "kubelogin", &alice.id, "ta2", T0).await;
    family(s, "fb", "kubelogin", &bob.id, "tb", T0).await;
    s.create_session(session_fixture("sa", &alice.id, T0, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("sb", &bob.id, T0, 3600))
        .await
        .unwrap();

    let now = T0 + 100;
    s.set_user_disabled(&alice.id, true, now).await.unwrap();
    assert!(s.user_by_id(&alice.id).await.unwrap().unwrap().disabled);
    for f in ["fa1", "fa2"] {
        assert_eq!(s.family(f).await.unwrap().unwrap().revoked_at, Some(now));
    }
    assert_eq!(s.session("sa", now).await.unwrap(), None);
    assert!(matches!(
        s.rotate_refresh_token(
            "ta1",
            "kubelogin",
            token("ta1-next", "fa1", now, now + 3600),
            "sealed-successor",
            now,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Refused(_)
    ));
    // Bob is untouched.
    assert_eq!(s.family("fb").await.unwrap().unwrap().revoked_at, None);
    assert!(s.session("sb", now).await.unwrap().is_some());

    // Enabling again does not bring revoked tokens back.
    s.set_user_disabled(&alice.id, false, now + 1)
        .await
        .unwrap();
    assert!(!s.user_by_id(&alice.id).await.unwrap().unwrap().disabled);
    assert_eq!(
        s.family("fa1").await.unwrap().unwrap().revoked_at,
        Some(now)
    );

    assert_not_found(s.set_user_disabled("no-such-id", true, now).await);
}

pub async fn user_delete(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    s.create_group("devs", T0).await.unwrap();
    s.add_group_member("devs", &alice.id).await.unwrap();
    s.add_group_member("devs", &bob.id).await.unwrap();
    family(s, "fa", "kubelogin", &alice.id, "ta", T0).await;
    s.create_session(session_fixture("sa", &alice.id, T0, 3600))
        .await
        .unwrap();
    s.save_consent(&alice.id, "kubelogin", &["openid".into()], T0)
        .await
        .unwrap();

    s.delete_user(&alice.id).await.unwrap();
    assert_eq!(s.user_by_username("alice").await.unwrap(), None);
    assert_eq!(s.user_by_id(&alice.id).await.unwrap(), None);
    assert_eq!(s.count_users().await.unwrap(), 1);
    // Everything hanging off the user goes with it.
    assert!(s.families_of_user(&alice.id).await.unwrap().is_empty());
    assert_eq!(s.refresh_token("ta").await.unwrap(), None);
    assert_eq!(s.session("sa", T0).await.unwrap(), None);
    assert!(s.groups_of_user(&alice.id).await.unwrap().is_empty());
    assert!(s
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
    let groups = s.list_groups().await.unwrap();
    assert_eq!(groups[0].members, ["bob"]);

    assert_not_found(s.delete_user(&alice.id).await);
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

pub async fn group_create_duplicate_and_list(s: &dyn Store) {
    assert!(s.list_groups().await.unwrap().is_empty());
    s.create_group("ops", T0).await.unwrap();
    s.create_group("devs", T0).await.unwrap();
    assert_conflict(s.create_group("devs", T0 + 1).await);
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    s.add_group_member("devs", &bob.id).await.unwrap();
    s.add_group_member("devs", &alice.id).await.unwrap();

    let groups = s.list_groups().await.unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0].name, "devs");
    assert_eq!(
        groups[0].members,
        ["alice", "bob"],
        "members by username, sorted"
    );
    assert_eq!(groups[1].name, "ops");
    assert!(groups[1].members.is_empty(), "an empty group is listed too");
}

pub async fn group_add_and_remove_member(s: &dyn Store) {
    s.create_group("devs", T0).await.unwrap();
    s.create_group("admins", T0).await.unwrap();
    let alice = user(s, "alice").await;

    s.add_group_member("devs", &alice.id).await.unwrap();
    s.add_group_member("admins", &alice.id).await.unwrap();
    // Adding twice is harmless.
    s.add_group_member("devs", &alice.id).await.unwrap();
    assert_eq!(
        s.groups_of_user(&alice.id).await.unwrap(),
        ["admins", "devs"]
    );

    s.remove_group_member("devs", &alice.id).await.unwrap();
    assert_eq!(s.groups_of_user(&alice.id).await.unwrap(), ["admins"]);
    assert_not_found(s.remove_group_member("devs", &alice.id).await);

    assert_not_found(s.add_group_member("no-such-group", &alice.id).await);
    assert_eq!(s.groups_of_user(&alice.id).await.unwrap(), ["admins"]);
}

pub async fn group_delete(s: &dyn Store) {
    s.create_group("devs", T0).await.unwrap();
    s.create_group("ops", T0).await.unwrap();
    let alice = user(s, "alice").await;
    s.add_group_member("devs", &alice.id).await.unwrap();
    s.add_group_member("ops", &alice.id).await.unwrap();

    s.delete_group("devs").await.unwrap();
    let names: Vec<String> = s
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["ops"]);
    assert_eq!(
        s.groups_of_user(&alice.id).await.unwrap(),
        ["ops"],
        "membership goes with the group"
    );
    assert_not_found(s.delete_group("devs").await);
    // The name is free again.
    s.create_group("devs", T0 + 1).await.unwrap();
    assert!(s.list_groups().await.unwrap()[0].members.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

pub async fn client_create_lookup_list(s: &dyn Store) {
    let public = client(s, "kubelogin", true).await;
    let confidential = client(s, "automation", false).await;
    assert_eq!(s.client("kubelogin").await.unwrap(), Some(public.clone()));
    assert_eq!(
        s.client("automation").await.unwrap(),
        Some(confidential.clone())
    );
    assert!(s.client("kubelogin").await.unwrap().unwrap().is_public());
    assert!(!s.client("automation").await.unwrap().unwrap().is_public());
    assert_eq!(s.client("nope").await.unwrap(), None);

    assert_eq!(
        s.list_clients().await.unwrap(),
        [confidential, public],
        "sorted by client_id"
    );
}

pub async fn client_duplicate_is_conflict(s: &dyn Store) {
    let first = client(s, "kubelogin", true).await;
    assert_conflict(s.create_client(client_fixture("kubelogin", false)).await);
    assert_eq!(s.client("kubelogin").await.unwrap(), Some(first));
}

pub async fn client_delete(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    client(s, "other", true).await;
    family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    family(s, "f2", "other", &alice.id, "t2", T0).await;

    s.delete_client("kubelogin").await.unwrap();
    assert_eq!(s.client("kubelogin").await.unwrap(), None);
    assert_eq!(s.list_clients().await.unwrap().len(), 1);
    // Its refresh tokens can no longer be used.
    assert_eq!(
        s.rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t1b", "f1", T0 + 1, T0 + 99),
            "sealed-successor",
            T0 + 1,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Invalid
    );
    assert!(s.refresh_token("t2").await.unwrap().is_some());
    assert_not_found(s.delete_client("kubelogin").await);
}

pub async fn client_secret_rotation(s: &dyn Store) {
    client(s, "automation", false).await;
    client(s, "kubelogin", true).await;
    s.set_client_secret_hash("automation", "rotated-hash")
        .await
        .unwrap();
    assert_eq!(
        s.client("automation").await.unwrap().unwrap().secret_hash,
        Some("rotated-hash".into())
    );
    // A public client has no secret to rotate, and must not silently become confidential.
    assert_not_found(s.set_client_secret_hash("kubelogin", "x").await);
    assert!(s.client("kubelogin").await.unwrap().unwrap().is_public());
    assert_not_found(s.set_client_secret_hash("nope", "x").await);
}

pub async fn client_revoke_all(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    client(s, "other", true).await;
    family(s, "fa", "kubelogin", &alice.id, "ta", T0).await;
    family(s, "fb", "kubelogin", &bob.id, "tb", T0).await;
    family(s, "fdead", "kubelogin", &bob.id, "tdead", T0).await;
    s.revoke_family("fdead", T0 + 1).await.unwrap();
    family(s, "fo", "other", &alice.id, "to", T0).await;
    let scopes = vec!["openid".to_string(), "groups".to_string()];
    s.save_consent(&alice.id, "kubelogin", &scopes, T0)
        .await
        .unwrap();
    s.save_consent(&alice.id, "other", &scopes, T0)
        .await
        .unwrap();

    let carol = user(s, "carol").await;
    s.create_session(session_fixture("sa", &alice.id, T0, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("sc", &carol.id, T0, 3600))
        .await
        .unwrap();

    let now = T0 + 50;
    let n = s.revoke_all_for_client("kubelogin", now).await.unwrap();
    assert_eq!(
        s.session("sa", now).await.unwrap(),
        None,
        "users of the client are signed out"
    );
    assert!(
        s.session("sc", now).await.unwrap().is_some(),
        "a user who never used the client is not"
    );
    assert_eq!(n, 2, "the count is of families revoked now");
    assert_eq!(
        s.client("kubelogin")
            .await
            .unwrap()
            .unwrap()
            .tokens_valid_after,
        now
    );
    assert_eq!(s.family("fa").await.unwrap().unwrap().revoked_at, Some(now));
    assert_eq!(s.family("fb").await.unwrap().unwrap().revoked_at, Some(now));
    assert_eq!(
        s.family("fdead").await.unwrap().unwrap().revoked_at,
        Some(T0 + 1),
        "an earlier revocation time is kept"
    );
    assert!(s
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
    // The other client is untouched.
    assert_eq!(s.family("fo").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        s.consented_scopes(&alice.id, "other").await.unwrap(),
        scopes
    );
    assert_eq!(
        s.client("other").await.unwrap().unwrap().tokens_valid_after,
        0
    );

    assert_eq!(
        s.revoke_all_for_client("kubelogin", now + 1).await.unwrap(),
        0
    );
    assert_not_found(s.revoke_all_for_client("nope", now).await);
}

// ---------------------------------------------------------------------------------------------
// Consent
// ---------------------------------------------------------------------------------------------

pub async fn consent_save_and_merge(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    assert!(s
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());

    s.save_consent(
        &alice.id,
        "kubelogin",
        &["openid".into(), "profile".into()],
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        s.consented_scopes(&alice.id, "kubelogin").await.unwrap(),
        ["openid", "profile"]
    );

    // The caller merges (authorize adds the new scopes to those already granted) and saves the
    // union, which replaces the stored set rather than adding a second row.
    let mut merged = s.consented_scopes(&alice.id, "kubelogin").await.unwrap();
    merged.push("groups".into());
    s.save_consent(&alice.id, "kubelogin", &merged, T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        s.consented_scopes(&alice.id, "kubelogin").await.unwrap(),
        ["openid", "profile", "groups"]
    );

    // Consent is per user.
    assert!(s
        .consented_scopes(&bob.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Authorization codes
// ---------------------------------------------------------------------------------------------

pub async fn code_redeem_once_then_replay_revokes_family(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let code = code_fixture("c1", "kubelogin", &alice.id, T0, 120);
    s.insert_auth_code(code.clone()).await.unwrap();

    assert_eq!(
        s.redeem_auth_code("c1", T0 + 3).await.unwrap(),
        CodeRedemption::Fresh(code)
    );
    family(s, "f1", "kubelogin", &alice.id, "t1", T0 + 3).await;
    s.link_code_family("c1", "f1").await.unwrap();

    assert_eq!(
        s.redeem_auth_code("c1", T0 + 4).await.unwrap(),
        CodeRedemption::Replayed
    );
    assert_eq!(
        s.family("f1").await.unwrap().unwrap().revoked_at,
        Some(T0 + 4),
        "RFC 6749 §4.1.2: tokens issued from a replayed code are revoked"
    );
    // Still a replay, however often.
    assert_eq!(
        s.redeem_auth_code("c1", T0 + 5).await.unwrap(),
        CodeRedemption::Replayed
    );
}

pub async fn code_replay_without_family(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_auth_code(code_fixture("c1", "kubelogin", &alice.id, T0, 120))
        .await
        .unwrap();
    assert!(matches!(
        s.redeem_auth_code("c1", T0 + 1).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    assert_eq!(
        s.redeem_auth_code("c1", T0 + 2).await.unwrap(),
        CodeRedemption::Replayed
    );
}

pub async fn code_expired_or_unknown_is_not_found(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_auth_code(code_fixture("c1", "kubelogin", &alice.id, T0, 120))
        .await
        .unwrap();
    assert_eq!(
        s.redeem_auth_code("c1", T0 + 120).await.unwrap(),
        CodeRedemption::NotFound,
        "a code is dead at expires_at"
    );
    assert_eq!(
        s.redeem_auth_code("c1", T0 + 500).await.unwrap(),
        CodeRedemption::NotFound
    );
    assert_eq!(
        s.redeem_auth_code("unknown", T0).await.unwrap(),
        CodeRedemption::NotFound
    );
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------------------------

pub async fn refresh_create_family_and_lookup(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let f = family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    assert_eq!(s.family("f1").await.unwrap(), Some(f.clone()));
    assert_eq!(s.family("nope").await.unwrap(), None);
    assert_eq!(
        s.refresh_token("t1").await.unwrap(),
        Some((token("t1", "f1", T0, T0 + 3600), f.clone()))
    );
    assert_eq!(s.refresh_token("nope").await.unwrap(), None);

    let f2 = family(s, "f2", "kubelogin", &alice.id, "t2", T0 + 10).await;
    let fams = s.families_of_user(&alice.id).await.unwrap();
    assert_eq!(fams, [f2, f], "newest first");
}

pub async fn refresh_rotate_current(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let f = family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;

    let now = T0 + 60;
    let r = s
        .rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2", "f1", now, now + 3600),
            "sealed-successor",
            now,
            5,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r, Rotation::Rotated(f.clone()));
    let (old, _) = s.refresh_token("t1").await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(now));
    let (new, fam) = s.refresh_token("t2").await.unwrap().unwrap();
    assert_eq!(new, token("t2", "f1", now, now + 3600));
    assert_eq!(fam.revoked_at, None);

    // The new token is current in turn.
    let later = now + 60;
    assert_eq!(
        s.rotate_refresh_token(
            "t2",
            "kubelogin",
            token("t3", "f1", later, later + 3600),
            "sealed-successor",
            later,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Rotated(f)
    );
}

pub async fn refresh_rotate_within_grace(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let f = family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    let now = T0 + 60;
    s.rotate_refresh_token(
        "t1",
        "kubelogin",
        token("t2", "f1", now, now + 3600),
        "sealed-t2",
        now,
        5,
        None,
    )
    .await
    .unwrap();

    // A retry presents t1 again 5 s later (the edge of a 5 s grace window): the store hands back
    // the sealed successor of the first rotation and writes nothing, so the family cannot fork.
    let race = now + 5;
    let r = s
        .rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2b", "f1", race, race + 3600),
            "sealed-t2b",
            race,
            5,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        Rotation::WithinGrace(f.clone(), Some("sealed-t2".into()))
    );
    assert_eq!(s.family("f1").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        s.refresh_token("t2b").await.unwrap(),
        None,
        "no sibling token is stored within the grace window"
    );
    // The grace window counts from the first rotation, not from the retry.
    let (old, _) = s.refresh_token("t1").await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(now));
    // The one successor is current.
    assert!(matches!(
        s.rotate_refresh_token(
            "t2",
            "kubelogin",
            token("t3", "f1", race, race + 3600),
            "sealed-t3",
            race,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Rotated(_)
    ));
    // Once the longest grace window has passed, purging erases the kept successor.
    let later = race + idp::store::MAX_REUSE_GRACE_SECS;
    s.purge_expired(later, 0).await.unwrap();
    assert_eq!(
        s.rotate_refresh_token(
            "t2",
            "kubelogin",
            token("t3x", "f1", race, race + 3600),
            "sealed-t3x",
            race,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::WithinGrace(f, None),
        "the successor of t2 is erased too"
    );
}

pub async fn refresh_reuse_after_grace_revokes_family(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let f = family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    let now = T0 + 60;
    s.rotate_refresh_token(
        "t1",
        "kubelogin",
        token("t2", "f1", now, now + 3600),
        "sealed-successor",
        now,
        5,
        None,
    )
    .await
    .unwrap();

    let stolen = now + 6;
    let r = s
        .rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2x", "f1", stolen, stolen + 3600),
            "sealed-successor",
            stolen,
            5,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        Rotation::Reused(f),
        "the family as it was before revocation"
    );
    assert_eq!(
        s.family("f1").await.unwrap().unwrap().revoked_at,
        Some(stolen)
    );
    assert_eq!(
        s.refresh_token("t2x").await.unwrap(),
        None,
        "no token is issued on reuse"
    );

    // Every token of the family is dead now, the current one included.
    let after = stolen + 1;
    for t in ["t2", "t1"] {
        assert!(
            matches!(
                s.rotate_refresh_token(
                    t,
                    "kubelogin",
                    token("t9", "f1", after, after + 3600),
                    "sealed-successor",
                    after,
                    5,
                    None
                )
                .await
                .unwrap(),
                Rotation::Refused(_)
            ),
            "{t}"
        );
    }
    assert_eq!(s.refresh_token("t9").await.unwrap(), None);
}

pub async fn refresh_expired_or_unknown_is_invalid(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    let at_expiry = T0 + 3600;
    assert!(matches!(
        s.rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2", "f1", at_expiry, at_expiry + 3600),
            "sealed-successor",
            at_expiry,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Refused(_)
    ));
    assert_eq!(s.refresh_token("t2").await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh_token(
            "unknown",
            "kubelogin",
            token("t3", "f1", T0, T0 + 3600),
            "sealed-successor",
            T0,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Invalid
    );
}

pub async fn refresh_revoke_family(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    family(s, "f2", "kubelogin", &alice.id, "t2", T0).await;

    s.revoke_family("f1", T0 + 10).await.unwrap();
    assert_eq!(
        s.family("f1").await.unwrap().unwrap().revoked_at,
        Some(T0 + 10)
    );
    // Revoking again keeps the first time; unknown families are not an error (RFC 7009 §2.2).
    s.revoke_family("f1", T0 + 20).await.unwrap();
    assert_eq!(
        s.family("f1").await.unwrap().unwrap().revoked_at,
        Some(T0 + 10)
    );
    s.revoke_family("nope", T0).await.unwrap();

    assert!(matches!(
        s.rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t1b", "f1", T0 + 30, T0 + 99),
            "sealed-successor",
            T0 + 30,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Refused(_)
    ));
    assert!(matches!(
        s.rotate_refresh_token(
            "t2",
            "kubelogin",
            token("t2b", "f2", T0 + 30, T0 + 99),
            "sealed-successor",
            T0 + 30,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Rotated(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Access token denylist
// ---------------------------------------------------------------------------------------------

pub async fn jti_denylist(s: &dyn Store) {
    assert!(!s.is_jti_revoked("jti-1").await.unwrap());
    s.revoke_jti("jti-1", T0 + 3600).await.unwrap();
    assert!(s.is_jti_revoked("jti-1").await.unwrap());
    // Revoking twice is harmless.
    s.revoke_jti("jti-1", T0 + 3600).await.unwrap();
    assert!(s.is_jti_revoked("jti-1").await.unwrap());
    assert!(!s.is_jti_revoked("jti-2").await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Device authorization
// ---------------------------------------------------------------------------------------------

pub async fn device_insert_and_lookup(s: &dyn Store) {
    client(s, "kubelogin", true).await;
    let d = device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0);
    s.insert_device_code(d.clone()).await.unwrap();
    assert_eq!(s.device_by_user_code("BCDF-GHJK").await.unwrap(), Some(d));
    assert_eq!(s.device_by_user_code("XXXX-XXXX").await.unwrap(), None);
    assert_eq!(
        s.device_by_hash_client("dh1").await.unwrap(),
        Some("kubelogin".into())
    );
    assert_eq!(s.device_by_hash_client("nope").await.unwrap(), None);
}

pub async fn device_user_code_collision_is_conflict(s: &dyn Store) {
    client(s, "kubelogin", true).await;
    s.insert_device_code(device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0))
        .await
        .unwrap();
    assert_conflict(
        s.insert_device_code(device_fixture("dh2", "BCDF-GHJK", "kubelogin", T0))
            .await,
    );
    assert_eq!(s.device_by_hash_client("dh2").await.unwrap(), None);
}

pub async fn device_poll_pending_and_slow_down(s: &dyn Store) {
    client(s, "kubelogin", true).await;
    s.insert_device_code(device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0))
        .await
        .unwrap();
    assert_eq!(
        s.poll_device("dh1", T0 + 1).await.unwrap(),
        DevicePoll::Pending
    );
    // Again after 2 s with a 5 s interval: slow_down, and the interval grows by 5 s
    // (RFC 8628 §3.5).
    assert_eq!(
        s.poll_device("dh1", T0 + 3).await.unwrap(),
        DevicePoll::SlowDown
    );
    let d = s.device_by_user_code("BCDF-GHJK").await.unwrap().unwrap();
    assert_eq!(d.interval, 10);
    assert_eq!(d.last_polled_at, Some(T0 + 3));
    assert_eq!(d.status, DeviceStatus::Pending);
    // 5 s later is now too fast as well ...
    assert_eq!(
        s.poll_device("dh1", T0 + 8).await.unwrap(),
        DevicePoll::SlowDown
    );
    assert_eq!(
        s.device_by_user_code("BCDF-GHJK")
            .await
            .unwrap()
            .unwrap()
            .interval,
        15
    );
    // ... but waiting the whole new interval is fine.
    assert_eq!(
        s.poll_device("dh1", T0 + 23).await.unwrap(),
        DevicePoll::Pending
    );
    assert_eq!(
        s.poll_device("unknown", T0).await.unwrap(),
        DevicePoll::NotFound
    );
}

pub async fn device_approve_then_consumed(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_device_code(device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0))
        .await
        .unwrap();
    assert_eq!(
        s.poll_device("dh1", T0 + 1).await.unwrap(),
        DevicePoll::Pending
    );
    assert!(s
        .decide_device("BCDF-GHJK", true, &alice.id, T0 + 2, T0 + 3)
        .await
        .unwrap());
    // A decision is final.
    assert!(!s
        .decide_device("BCDF-GHJK", false, &alice.id, T0 + 2, T0 + 4)
        .await
        .unwrap());

    match s.poll_device("dh1", T0 + 6).await.unwrap() {
        DevicePoll::Approved(d) => {
            assert_eq!(d.device_code_hash, "dh1");
            assert_eq!(d.client_id, "kubelogin");
            assert_eq!(d.scope, "openid groups");
            assert_eq!(d.user_id.as_deref(), Some(alice.id.as_str()));
            assert_eq!(d.auth_time, Some(T0 + 2));
        }
        other => panic!("expected Approved, got {other:?}"),
    }
    // Consumed: a second poller gets nothing, however long it waits.
    assert_eq!(
        s.poll_device("dh1", T0 + 20).await.unwrap(),
        DevicePoll::NotFound
    );
    assert_eq!(
        s.device_by_user_code("BCDF-GHJK")
            .await
            .unwrap()
            .unwrap()
            .status,
        DeviceStatus::Consumed
    );
}

pub async fn device_deny(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_device_code(device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0))
        .await
        .unwrap();
    assert!(s
        .decide_device("BCDF-GHJK", false, &alice.id, T0, T0 + 1)
        .await
        .unwrap());
    assert_eq!(
        s.poll_device("dh1", T0 + 6).await.unwrap(),
        DevicePoll::Denied
    );
    assert_ne!(
        s.poll_device("dh1", T0 + 20).await.unwrap(),
        DevicePoll::Pending,
        "a denial never turns back into pending"
    );
}

pub async fn device_expired(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_device_code(device_fixture("dh1", "BCDF-GHJK", "kubelogin", T0))
        .await
        .unwrap();
    let expiry = T0 + 600;
    assert!(
        !s.decide_device("BCDF-GHJK", true, &alice.id, expiry, expiry)
            .await
            .unwrap(),
        "an expired code cannot be approved"
    );
    assert_eq!(
        s.poll_device("dh1", expiry).await.unwrap(),
        DevicePoll::Expired
    );

    // Approved in time but polled too late: still expired.
    s.insert_device_code(device_fixture("dh2", "MNPQ-RSTV", "kubelogin", T0))
        .await
        .unwrap();
    assert!(s
        .decide_device("MNPQ-RSTV", true, &alice.id, T0, T0 + 10)
        .await
        .unwrap());
    assert_eq!(
        s.poll_device("dh2", expiry + 1).await.unwrap(),
        DevicePoll::Expired
    );
}

// ---------------------------------------------------------------------------------------------
// Browser sessions
// ---------------------------------------------------------------------------------------------

pub async fn session_create_get_expire_delete(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let sess = session_fixture("sid1", &alice.id, T0, 3600);
    s.create_session(sess.clone()).await.unwrap();
    s.create_session(session_fixture("sid2", &alice.id, T0, 3600))
        .await
        .unwrap();

    assert_eq!(s.session("sid1", T0 + 1).await.unwrap(), Some(sess.clone()));
    assert_eq!(
        s.session("sid1", T0 + 3599).await.unwrap(),
        Some(sess.clone())
    );
    assert_eq!(
        s.session("sid1", T0 + 3600).await.unwrap(),
        None,
        "a session is dead at expires_at"
    );
    assert_eq!(s.session("unknown", T0).await.unwrap(), None);

    s.delete_session("sid1").await.unwrap();
    assert_eq!(s.session("sid1", T0 + 1).await.unwrap(), None);
    assert!(s.session("sid2", T0 + 1).await.unwrap().is_some());
    // Deleting an unknown session (a second logout) is not an error.
    s.delete_session("sid1").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

pub async fn keys_activate_retires_previous(s: &dyn Store) {
    assert!(s.keys().await.unwrap().is_empty());
    s.activate_key(key_fixture("k1", T0), T0).await.unwrap();
    assert_eq!(s.keys().await.unwrap(), [key_fixture("k1", T0)]);

    let t2 = T0 + 86_400;
    s.activate_key(key_fixture("k2", t2), t2).await.unwrap();
    let keys = s.keys().await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], key_fixture("k2", t2), "newest first, active");
    assert_eq!(keys[1].kid, "k1");
    assert_eq!(
        keys[1].retired_at,
        Some(t2),
        "the previous key is retired, not deleted"
    );
    assert_eq!(keys[1].private_pem, key_fixture("k1", T0).private_pem);

    let t3 = t2 + 86_400;
    s.activate_key(key_fixture("k3", t3), t3).await.unwrap();
    let keys = s.keys().await.unwrap();
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| k.kid.as_str())
        .collect();
    assert_eq!(active, ["k3"], "exactly one active key");
    assert_eq!(
        keys.iter().find(|k| k.kid == "k1").unwrap().retired_at,
        Some(t2),
        "an older retirement time is kept"
    );
}

/// Issue 7 item 10b: a retired key's row (its private key) is deleted once nothing it signed
/// can be live; the active key and keys retired later stay.
pub async fn keys_delete_retired_keeps_active_and_recent(s: &dyn Store) {
    let (t1, t2, t3) = (T0 + 100, T0 + 200, T0 + 300);
    s.activate_key(key_fixture("k1", T0), T0).await.unwrap();
    s.activate_key(key_fixture("k2", t1), t1).await.unwrap(); // k1 retired at t1
    s.activate_key(key_fixture("k3", t2), t2).await.unwrap(); // k2 retired at t2
    s.activate_key(key_fixture("k4", t3), t3).await.unwrap(); // k3 retired at t3
    assert_eq!(
        s.delete_retired_keys(T0).await.unwrap(),
        0,
        "nothing retired by T0"
    );
    assert_eq!(s.keys().await.unwrap().len(), 4);

    // The cutoff is inclusive: k1 (retired at t1) and k2 (at t2) go, k3 (at t3) stays.
    assert_eq!(s.delete_retired_keys(t2).await.unwrap(), 2);
    let kids: Vec<String> = s.keys().await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, ["k4", "k3"]);

    // The active key is never deleted, however late the cutoff.
    assert_eq!(s.delete_retired_keys(u64::MAX / 4).await.unwrap(), 1);
    let keys = s.keys().await.unwrap();
    assert_eq!(keys, [key_fixture("k4", t3)]);
    assert_eq!(s.delete_retired_keys(u64::MAX / 4).await.unwrap(), 0);
}

/// Issue 7 item 10b: a stored key is re-encrypted in place, only if nobody changed it meanwhile
/// (two servers starting at once both try), and nothing else about the key changes.
pub async fn keys_replace_material_only_if_unchanged(s: &dyn Store) {
    s.activate_key(key_fixture("k1", T0), T0).await.unwrap();
    s.activate_key(key_fixture("k2", T0 + 1), T0 + 1)
        .await
        .unwrap();
    let plain = key_fixture("k1", T0).private_pem;
    assert!(s
        .replace_key_material("k1", &plain, "enc:v1:first")
        .await
        .unwrap());
    // The second process compares against the plaintext it read: too late.
    assert!(!s
        .replace_key_material("k1", &plain, "enc:v1:second")
        .await
        .unwrap());
    assert!(!s
        .replace_key_material("unknown", &plain, "enc:v1:x")
        .await
        .unwrap());
    let keys = s.keys().await.unwrap();
    let k1 = keys.iter().find(|k| k.kid == "k1").unwrap();
    assert_eq!(
        k1,
        &StoredKey {
            private_pem: "enc:v1:first".into(),
            retired_at: Some(T0 + 1),
            ..key_fixture("k1", T0)
        }
    );
    assert_eq!(
        keys.iter().find(|k| k.kid == "k2").unwrap(),
        &key_fixture("k2", T0 + 1),
        "other keys are untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

pub async fn audit_record_filter_and_order(s: &dyn Store) {
    let events = [
        audit_fixture(T0, "login_succeeded", "alice"),
        audit_fixture(T0 + 10, "login_failed", "bob"),
        audit_fixture(T0 + 20, "login_succeeded", "bob"),
        audit_fixture(T0 + 30, "user_created", "cli"),
        audit_fixture(T0 + 40, "login_succeeded", "alice"),
    ];
    for e in &events {
        s.record_audit(e.clone()).await.unwrap();
    }
    let ats = |v: &[AuditEvent]| v.iter().map(|e| e.at).collect::<Vec<_>>();

    let all = s.audit_events(AuditFilter::default()).await.unwrap();
    assert_eq!(
        ats(&all),
        [T0 + 40, T0 + 30, T0 + 20, T0 + 10, T0],
        "newest first"
    );
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "ids are assigned in order"
    );
    let newest = &all[0];
    assert_eq!(
        AuditEvent {
            id: 0,
            ..newest.clone()
        },
        events[4],
        "every field is stored"
    );

    let by_event = s
        .audit_events(AuditFilter {
            event: Some("login_succeeded".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ats(&by_event), [T0 + 40, T0 + 20, T0]);

    let by_actor = s
        .audit_events(AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ats(&by_actor), [T0 + 20, T0 + 10]);

    let both = s
        .audit_events(AuditFilter {
            event: Some("login_succeeded".into()),
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ats(&both), [T0 + 40, T0]);

    let window = s
        .audit_events(AuditFilter {
            since: Some(T0 + 10),
            until: Some(T0 + 30),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ats(&window),
        [T0 + 30, T0 + 20, T0 + 10],
        "bounds inclusive"
    );

    let limited = s
        .audit_events(AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ats(&limited), [T0 + 40, T0 + 30], "the newest N");

    let none = s
        .audit_events(AuditFilter {
            event: Some("no_such_event".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Purging
// ---------------------------------------------------------------------------------------------

pub async fn purge_expired_keeps_live_rows(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    let now = T0 + 1000;

    // One expired and one live row of each kind.
    s.insert_auth_code(code_fixture("c-old", "kubelogin", &alice.id, T0, 120))
        .await
        .unwrap();
    s.insert_auth_code(code_fixture("c-new", "kubelogin", &alice.id, now, 120))
        .await
        .unwrap();
    s.insert_device_code(device_fixture("d-old", "OLDD-OLDD", "kubelogin", T0))
        .await
        .unwrap();
    s.insert_device_code(device_fixture("d-new", "NEWW-NEWW", "kubelogin", now))
        .await
        .unwrap();
    s.create_session(session_fixture("s-old", &alice.id, T0, 60))
        .await
        .unwrap();
    s.create_session(session_fixture("s-new", &alice.id, now, 60))
        .await
        .unwrap();
    s.revoke_jti("j-old", T0 + 60).await.unwrap();
    s.revoke_jti("j-new", now + 60).await.unwrap();
    // A family whose only token has expired is dead; a family with a live token is kept.
    s.create_family(
        family_fixture("f-old", "kubelogin", &alice.id, T0),
        token("t-old", "f-old", T0, T0 + 60),
    )
    .await
    .unwrap();
    family(s, "f-new", "kubelogin", &alice.id, "t-new", now).await;

    let n = s.purge_expired(now, 0).await.unwrap();
    // code, device code, session, jti, refresh token and its now empty family.
    assert_eq!(n, 6, "rows purged");

    assert_eq!(s.device_by_user_code("OLDD-OLDD").await.unwrap(), None);
    assert!(s.device_by_user_code("NEWW-NEWW").await.unwrap().is_some());
    // Looked up "in the past" so only deletion can hide it.
    assert_eq!(s.session("s-old", T0).await.unwrap(), None);
    assert!(s.session("s-new", now).await.unwrap().is_some());
    assert!(!s.is_jti_revoked("j-old").await.unwrap());
    assert!(s.is_jti_revoked("j-new").await.unwrap());
    assert_eq!(s.refresh_token("t-old").await.unwrap(), None);
    assert_eq!(s.family("f-old").await.unwrap(), None);
    assert!(s.refresh_token("t-new").await.unwrap().is_some());
    assert!(s.family("f-new").await.unwrap().is_some());
    assert!(matches!(
        s.redeem_auth_code("c-new", now + 1).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    // Nothing else is expired: a second purge removes nothing.
    assert_eq!(s.purge_expired(now, 0).await.unwrap(), 0);
}

pub async fn purge_keeps_used_codes_until_expiry(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    s.insert_auth_code(code_fixture("c1", "kubelogin", &alice.id, T0, 120))
        .await
        .unwrap();
    assert!(matches!(
        s.redeem_auth_code("c1", T0 + 1).await.unwrap(),
        CodeRedemption::Fresh(_)
    ));
    assert_eq!(s.purge_expired(T0 + 2, 0).await.unwrap(), 0);
    assert_eq!(
        s.redeem_auth_code("c1", T0 + 3).await.unwrap(),
        CodeRedemption::Replayed,
        "a used code is remembered until it expires, so a replay is still detected"
    );
}

pub async fn purge_drops_audit_events_past_retention(s: &dyn Store) {
    let day = 86_400;
    let now = T0 + 1000 * day;
    s.record_audit(audit_fixture(now - 400 * day, "login_failed", "old"))
        .await
        .unwrap();
    s.record_audit(audit_fixture(now - 365 * day, "login_failed", "edge"))
        .await
        .unwrap();
    s.record_audit(audit_fixture(now - 10 * day, "login_failed", "recent"))
        .await
        .unwrap();
    assert_eq!(s.purge_expired(now, 0).await.unwrap(), 0, "0 keeps all");
    assert_eq!(s.purge_expired(now, now - 365 * day).await.unwrap(), 1);
    let left: Vec<String> = s
        .audit_events(AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(left, ["recent", "edge"], "events at the cutoff are kept");
}

pub async fn audit_aggregated_one_row_per_subject_and_window(s: &dyn Store) {
    let throttled = |at: u64, subject: &str, n: u32| AuditEvent {
        subject: subject.into(),
        details: format!("{n} attempts"),
        ..audit_fixture(at, "login_throttled", "mallory")
    };
    // Many refusals of one key within one window: one row, the newest details.
    for n in 1..=50 {
        s.record_audit_aggregated(throttled(T0 + u64::from(n), "ip 192.0.2.1", n), T0)
            .await
            .unwrap();
    }
    // Another key, and another event with the same subject, get rows of their own.
    s.record_audit_aggregated(throttled(T0 + 60, "ip 192.0.2.2", 1), T0)
        .await
        .unwrap();
    s.record_audit(audit_fixture(T0 + 61, "login_failed", "mallory"))
        .await
        .unwrap();
    s.record_audit_aggregated(
        AuditEvent {
            subject: "ip 192.0.2.1".into(),
            ..audit_fixture(T0 + 62, "device_code_throttled", "mallory")
        },
        T0,
    )
    .await
    .unwrap();
    let rows = |subject: &'static str| async move {
        s.audit_events(AuditFilter {
            event: Some("login_throttled".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == subject)
        .collect::<Vec<_>>()
    };
    let one = rows("ip 192.0.2.1").await;
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].details, "50 attempts");
    assert_eq!(one[0].at, T0 + 1, "the row keeps the first refusal's time");
    assert_eq!(rows("ip 192.0.2.2").await.len(), 1);
    assert_eq!(
        s.audit_events(AuditFilter::default()).await.unwrap().len(),
        4
    );
    // A new window (a new lock) starts a new row.
    s.record_audit_aggregated(throttled(T0 + 2000, "ip 192.0.2.1", 1), T0 + 1900)
        .await
        .unwrap();
    let two = rows("ip 192.0.2.1").await;
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].details, "1 attempts");
    assert_eq!(two[1].details, "50 attempts");
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// One `#[tokio::test]` per behaviour, each on a fresh database in its own temporary directory.
pub async fn refresh_rotate_checks_the_client_and_audits_in_the_transaction(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    let now = T0 + 60;
    // Another client presenting the token changes nothing.
    assert_eq!(
        s.rotate_refresh_token(
            "t1",
            "other",
            token("tx", "f1", now, now + 3600),
            "sealed-successor",
            now,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::WrongClient
    );
    assert_eq!(
        s.refresh_token("t1").await.unwrap().unwrap().0.rotated_at,
        None
    );
    assert_eq!(s.refresh_token("tx").await.unwrap(), None);
    // The owner's rotation records the audit event with the username as actor.
    let ev = AuditEvent {
        at: now,
        event: "token_refreshed".into(),
        severity: "info".into(),
        client_id: "kubelogin".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2", "f1", now, now + 3600),
            "sealed-successor",
            now,
            5,
            Some(ev)
        )
        .await
        .unwrap(),
        Rotation::Rotated(_)
    ));
    let events = s
        .audit_events(AuditFilter {
            event: Some("token_refreshed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "alice");
    assert_eq!(events[0].at, now);
}

pub async fn refresh_rotate_refuses_a_disabled_user(s: &dyn Store) {
    let alice = user(s, "alice").await;
    client(s, "kubelogin", true).await;
    family(s, "f1", "kubelogin", &alice.id, "t1", T0).await;
    // Disabling revokes the family; a rotation afterwards is refused.
    s.set_user_disabled(&alice.id, true, T0 + 1).await.unwrap();
    assert!(matches!(
        s.rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2", "f1", T0 + 2, T0 + 99),
            "sealed-successor",
            T0 + 2,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Refused(_)
    ));
}

pub async fn user_with_groups_in_one_read(s: &dyn Store) {
    let alice = user(s, "alice").await;
    s.create_group("zeta", T0).await.unwrap();
    s.create_group("alpha", T0).await.unwrap();
    s.add_group_member("zeta", &alice.id).await.unwrap();
    s.add_group_member("alpha", &alice.id).await.unwrap();
    let (u, g) = s.user_with_groups(&alice.id).await.unwrap().unwrap();
    assert_eq!(u, alice);
    assert_eq!(g, vec!["alpha".to_string(), "zeta".to_string()]);
    let bob = user(s, "bob").await;
    assert_eq!(
        s.user_with_groups(&bob.id).await.unwrap().unwrap().1,
        Vec::<String>::new()
    );
    assert_eq!(s.user_with_groups("nobody").await.unwrap(), None);
}

pub async fn server_secret_first_writer_wins(s: &dyn Store) {
    assert_eq!(s.server_secret("csrf", "first", T0).await.unwrap(), "first");
    // A second replica offering its own candidate gets the stored one.
    assert_eq!(
        s.server_secret("csrf", "second", T0 + 1).await.unwrap(),
        "first"
    );
    assert_eq!(s.server_secret("other", "x", T0).await.unwrap(), "x");
}

// ---------------------------------------------------------------------------------------------
// Admin reads and writes (the use cases of `idp::admin`)
// ---------------------------------------------------------------------------------------------

pub async fn users_page_searches_and_pages_by_username(s: &dyn Store) {
    for name in ["dave", "alice", "carol", "bob", "erin"] {
        user(s, name).await;
    }
    let mut odd = new_user("frank");
    odd.email = "100%_sure@example.com".into();
    odd.name = "Frank O'Neil".into();
    s.create_user(odd, T0).await.unwrap();
    let names = |v: &[User]| v.iter().map(|u| u.username.clone()).collect::<Vec<_>>();

    let page = |after: Option<&str>, search: Option<&str>, limit: u32| UserQuery {
        after: after.map(str::to_string),
        search: search.map(str::to_string),
        limit,
    };
    assert_eq!(
        names(&s.users_page(page(None, None, 2)).await.unwrap()),
        ["alice", "bob"]
    );
    assert_eq!(
        names(&s.users_page(page(Some("bob"), None, 2)).await.unwrap()),
        ["carol", "dave"],
        "keyset: strictly after the cursor"
    );
    assert_eq!(
        names(&s.users_page(page(Some("erin"), None, 2)).await.unwrap()),
        ["frank"]
    );
    assert!(s
        .users_page(page(Some("frank"), None, 2))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.users_page(page(None, None, 0)).await.unwrap().len(),
        6,
        "0 is the default page"
    );

    // Username, email or display name; ASCII letters without case.
    assert_eq!(
        names(&s.users_page(page(None, Some("AR"), 10)).await.unwrap()),
        ["carol"]
    );
    assert_eq!(
        names(&s.users_page(page(None, Some("erin@"), 10)).await.unwrap()),
        ["erin"]
    );
    assert_eq!(
        names(&s.users_page(page(None, Some("o'neil"), 10)).await.unwrap()),
        ["frank"]
    );
    // `%` and `_` are themselves, not wildcards.
    assert_eq!(
        names(&s.users_page(page(None, Some("%_"), 10)).await.unwrap()),
        ["frank"]
    );
    assert!(s
        .users_page(page(None, Some("_"), 10))
        .await
        .unwrap()
        .iter()
        .all(|u| u.username == "frank"));
    assert_eq!(
        names(
            &s.users_page(page(Some("alice"), Some("example"), 2))
                .await
                .unwrap()
        ),
        ["bob", "carol"],
        "search and cursor together"
    );
}

pub async fn user_update_and_set_groups(s: &dyn Store) {
    let alice = user(s, "alice").await;
    s.create_group("devs", T0).await.unwrap();
    s.create_group("ops", T0).await.unwrap();
    s.update_user(&alice.id, "new@example.com", "Alice A.", T0 + 1)
        .await
        .unwrap();
    let u = s.user_by_id(&alice.id).await.unwrap().unwrap();
    assert_eq!(
        (u.email.as_str(), u.name.as_str()),
        ("new@example.com", "Alice A.")
    );
    assert_eq!(u.username, "alice");
    assert_not_found(s.update_user("nobody", "x@example.com", "", T0).await);

    s.set_user_groups(&alice.id, &["ops".into(), "devs".into()])
        .await
        .unwrap();
    assert_eq!(s.groups_of_user(&alice.id).await.unwrap(), ["devs", "ops"]);
    s.set_user_groups(&alice.id, &["ops".into()]).await.unwrap();
    assert_eq!(s.groups_of_user(&alice.id).await.unwrap(), ["ops"]);
    // An unknown group changes nothing.
    assert_not_found(
        s.set_user_groups(&alice.id, &["devs".into(), "nope".into()])
            .await,
    );
    assert_eq!(s.groups_of_user(&alice.id).await.unwrap(), ["ops"]);
    assert_not_found(s.set_user_groups("nobody", &["ops".into()]).await);
    s.set_user_groups(&alice.id, &[]).await.unwrap();
    assert!(s.groups_of_user(&alice.id).await.unwrap().is_empty());
}

/// Touching a session moves its last use only; a re-authentication moves its `auth_time` too;
/// neither changes another session.
pub async fn session_touch_moves_last_use_and_reauthentication(s: &dyn Store) {
    let alice = user(s, "alice").await;
    s.create_session(session_fixture("t1", &alice.id, T0, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("t2", &alice.id, T0, 3600))
        .await
        .unwrap();
    assert_eq!(s.session("t1", T0).await.unwrap().unwrap().last_used_at, T0);
    s.touch_session("t1", T0 + 100).await.unwrap();
    let t1 = s.session("t1", T0 + 100).await.unwrap().unwrap();
    assert_eq!((t1.last_used_at, t1.auth_time), (T0 + 100, T0));
    s.reauthenticate_session("t1", T0 + 200).await.unwrap();
    let t1 = s.session("t1", T0 + 200).await.unwrap().unwrap();
    assert_eq!((t1.last_used_at, t1.auth_time), (T0 + 200, T0 + 200));
    assert_eq!(
        t1.expires_at,
        T0 + 3600,
        "touching never extends the lifetime"
    );
    let t2 = s.session("t2", T0 + 200).await.unwrap().unwrap();
    assert_eq!((t2.last_used_at, t2.auth_time), (T0, T0));
    // An unknown id changes nothing and is not an error.
    s.reauthenticate_session("nope", T0 + 300).await.unwrap();
    // Both count as live until they expire.
    assert_eq!(s.count_live_sessions(T0 + 3599).await.unwrap(), 2);
    assert_eq!(s.count_live_sessions(T0 + 3600).await.unwrap(), 0);
}

pub async fn sessions_of_user_and_delete_user_session(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    s.create_session(session_fixture("a-old", &alice.id, T0, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("a-new", &alice.id, T0 + 10, 3600))
        .await
        .unwrap();
    s.create_session(session_fixture("a-short", &alice.id, T0, 5))
        .await
        .unwrap();
    s.create_session(session_fixture("b", &bob.id, T0, 3600))
        .await
        .unwrap();
    let ids = |v: Vec<Session>| v.into_iter().map(|x| x.id_hash).collect::<Vec<_>>();
    assert_eq!(
        ids(s.sessions_of_user(&alice.id, T0 + 20).await.unwrap()),
        ["a-new", "a-old"],
        "unexpired only, newest first"
    );
    assert_eq!(
        s.sessions_of_user(&alice.id, T0 + 20).await.unwrap()[1],
        session_fixture("a-old", &alice.id, T0, 3600)
    );
    // Another user's session is not alice's to end.
    assert!(!s.delete_user_session(&alice.id, "b").await.unwrap());
    assert!(s.session("b", T0 + 20).await.unwrap().is_some());
    assert!(s.delete_user_session(&alice.id, "a-old").await.unwrap());
    assert!(!s.delete_user_session(&alice.id, "a-old").await.unwrap());
    assert_eq!(
        ids(s.sessions_of_user(&alice.id, T0 + 20).await.unwrap()),
        ["a-new"]
    );
}

pub async fn session_last_use_is_touched_at_most_once_a_minute(s: &dyn Store) {
    let alice = user(s, "alice").await;
    s.create_session(session_fixture("sa", &alice.id, T0, 3600))
        .await
        .unwrap();
    let last = |now| async move { s.session("sa", now).await.unwrap().unwrap().last_used_at };
    assert_eq!(last(T0).await, T0, "recorded at sign-in");
    s.touch_session("sa", T0 + 59).await.unwrap();
    assert_eq!(last(T0 + 59).await, T0, "not rewritten within the minute");
    s.touch_session("sa", T0 + 60).await.unwrap();
    assert_eq!(last(T0 + 60).await, T0 + 60);
    // An unknown session is no error and creates nothing.
    s.touch_session("nobody", T0 + 60).await.unwrap();
    assert!(s.session("nobody", T0 + 60).await.unwrap().is_none());
}

pub async fn family_activity_is_the_current_tokens_issue(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    let mut first = token("t1", "fa", T0, T0 + 3600);
    first.ip = "192.0.2.1".into();
    first.user_agent = "kubectl/issue".into();
    s.create_family(family_fixture("fa", "kubelogin", &alice.id, T0), first)
        .await
        .unwrap();
    family(s, "fb", "kubelogin", &bob.id, "tb", T0).await;
    family(s, "dead", "kubelogin", &alice.id, "td", T0).await;
    s.revoke_family("dead", T0).await.unwrap();
    let a = s.family_activity(&alice.id, T0 + 1).await.unwrap();
    assert_eq!(a.len(), 1, "live families of alice only: {a:?}");
    assert_eq!(
        (
            a[0].family_id.as_str(),
            a[0].last_used_at,
            a[0].ip.as_str(),
            a[0].user_agent.as_str()
        ),
        ("fa", T0, "192.0.2.1", "kubectl/issue")
    );
    let mut next = token("t2", "fa", T0 + 100, T0 + 3700);
    next.ip = "198.51.100.2".into();
    next.user_agent = "kubectl/refresh".into();
    let r = s
        .rotate_refresh_token("t1", "kubelogin", next, "sealed", T0 + 100, 5, None)
        .await
        .unwrap();
    assert!(matches!(r, Rotation::Rotated(_)), "{r:?}");
    let a = s.family_activity(&alice.id, T0 + 101).await.unwrap();
    assert_eq!(
        (
            a[0].last_used_at,
            a[0].ip.as_str(),
            a[0].user_agent.as_str()
        ),
        (T0 + 100, "198.51.100.2", "kubectl/refresh")
    );
    let (t, _) = s.refresh_token("t2").await.unwrap().unwrap();
    assert_eq!(
        (t.ip.as_str(), t.user_agent.as_str()),
        ("198.51.100.2", "kubectl/refresh")
    );
    assert!(
        s.family_activity(&alice.id, T0 + 3701)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
}

pub async fn consents_of_user_and_revoke_authorization(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    client(s, "grafana", false).await;
    let scopes = vec!["openid".to_string(), "groups".to_string()];
    s.save_consent(&alice.id, "kubelogin", &scopes, T0)
        .await
        .unwrap();
    s.save_consent(&alice.id, "grafana", &scopes[..1], T0 + 1)
        .await
        .unwrap();
    s.save_consent(&bob.id, "kubelogin", &scopes, T0)
        .await
        .unwrap();
    family(s, "fa1", "kubelogin", &alice.id, "ta1", T0).await;
    family(s, "fa2", "kubelogin", &alice.id, "ta2", T0).await;
    family(s, "fg", "grafana", &alice.id, "tg", T0).await;
    family(s, "fb", "kubelogin", &bob.id, "tb", T0).await;

    let consents = s.consents_of_user(&alice.id).await.unwrap();
    assert_eq!(
        consents,
        [
            Consent {
                client_id: "grafana".into(),
                scopes: scopes[..1].to_vec(),
                granted_at: T0 + 1
            },
            Consent {
                client_id: "kubelogin".into(),
                scopes: scopes.clone(),
                granted_at: T0
            },
        ]
    );

    let now = T0 + 50;
    assert_eq!(
        s.revoke_authorization(&alice.id, "kubelogin", now)
            .await
            .unwrap(),
        2
    );
    for f in ["fa1", "fa2"] {
        assert_eq!(s.family(f).await.unwrap().unwrap().revoked_at, Some(now));
    }
    assert!(s
        .consented_scopes(&alice.id, "kubelogin")
        .await
        .unwrap()
        .is_empty());
    // Other clients and other users are untouched.
    assert_eq!(s.family("fg").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(s.family("fb").await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        s.consented_scopes(&bob.id, "kubelogin").await.unwrap(),
        scopes
    );
    assert_eq!(s.consents_of_user(&alice.id).await.unwrap().len(), 1);
    // A second revocation finds nothing left.
    assert_eq!(
        s.revoke_authorization(&alice.id, "kubelogin", now + 1)
            .await
            .unwrap(),
        0
    );
}

pub async fn live_families_and_their_count(s: &dyn Store) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    client(s, "kubelogin", true).await;
    client(s, "grafana", false).await;
    family(s, "live-a", "kubelogin", &alice.id, "t1", T0).await;
    family(s, "live-b", "kubelogin", &bob.id, "t2", T0 + 1).await;
    family(s, "grafana-a", "grafana", &alice.id, "t3", T0 + 2).await;
    family(s, "revoked", "kubelogin", &alice.id, "t4", T0).await;
    s.revoke_family("revoked", T0 + 3).await.unwrap();
    let short = family_fixture("expired", "kubelogin", &alice.id, T0);
    s.create_family(short, token("t5", "expired", T0, T0 + 10))
        .await
        .unwrap();
    // A rotated family is live through its successor.
    family(s, "rotated", "kubelogin", &bob.id, "t6", T0 - 5).await;
    assert!(matches!(
        s.rotate_refresh_token(
            "t6",
            "kubelogin",
            token("t7", "rotated", T0 + 4, T0 + 3600),
            "sealed",
            T0 + 4,
            5,
            None
        )
        .await
        .unwrap(),
        Rotation::Rotated(_)
    ));

    let now = T0 + 100;
    let ids = |v: Vec<Family>| v.into_iter().map(|f| f.id).collect::<Vec<_>>();
    let q = |user_id: Option<&str>, client_id: Option<&str>| FamilyQuery {
        user_id: user_id.map(str::to_string),
        client_id: client_id.map(str::to_string),
        limit: 0,
    };
    assert_eq!(
        ids(s
            .live_families(q(None, Some("kubelogin")), now)
            .await
            .unwrap()),
        ["live-b", "live-a", "rotated"],
        "newest first; revoked and expired ones are not live"
    );
    assert_eq!(
        ids(s
            .live_families(q(Some(&alice.id), None), now)
            .await
            .unwrap()),
        ["grafana-a", "live-a"]
    );
    assert_eq!(
        ids(s
            .live_families(q(Some(&alice.id), Some("kubelogin")), now)
            .await
            .unwrap()),
        ["live-a"]
    );
    let one = FamilyQuery {
        limit: 1,
        ..q(None, None)
    };
    assert_eq!(ids(s.live_families(one, now).await.unwrap()), ["grafana-a"]);
    assert_eq!(
        s.count_live_families(Some("kubelogin"), now).await.unwrap(),
        3
    );
    assert_eq!(
        s.count_live_families(Some("grafana"), now).await.unwrap(),
        1
    );
    assert_eq!(s.count_live_families(None, now).await.unwrap(), 4);
    assert_eq!(
        s.count_live_families(None, T0 + 5).await.unwrap(),
        5,
        "the short family was live before it expired"
    );
    assert_eq!(s.count_live_families(Some("nope"), now).await.unwrap(), 0);
}

pub async fn audit_filters_every_field_and_pages_by_id(s: &dyn Store) {
    let ev =
        |at: u64, event: &str, actor: &str, subject: &str, client: &str, ip: &str| AuditEvent {
            at,
            event: event.into(),
            severity: "info".into(),
            actor: actor.into(),
            subject: subject.into(),
            client_id: client.into(),
            ip: ip.into(),
            ..Default::default()
        };
    let all = [
        ev(T0, "login_failed", "alice", "", "kubelogin", "192.0.2.1"),
        ev(
            T0 + 1,
            "login_succeeded",
            "alice",
            "",
            "kubelogin",
            "192.0.2.1",
        ),
        ev(T0 + 2, "user_disabled", "root", "alice", "", "198.51.100.9"),
        ev(T0 + 3, "token_issued", "bob", "", "grafana", "192.0.2.2"),
        ev(
            T0 + 4,
            "client_tokens_revoked",
            "cli:ops",
            "grafana",
            "grafana",
            "",
        ),
    ];
    for e in &all {
        s.record_audit(e.clone()).await.unwrap();
    }
    let ats = |f: AuditFilter| async move {
        s.audit_events(f)
            .await
            .unwrap()
            .iter()
            .map(|e| e.at - T0)
            .collect::<Vec<_>>()
    };
    let f = AuditFilter::default;
    assert_eq!(
        ats(AuditFilter {
            subject: Some("alice".into()),
            ..f()
        })
        .await,
        [2]
    );
    assert_eq!(
        ats(AuditFilter {
            client_id: Some("grafana".into()),
            ..f()
        })
        .await,
        [4, 3]
    );
    assert_eq!(
        ats(AuditFilter {
            ip: Some("192.0.2.1".into()),
            ..f()
        })
        .await,
        [1, 0]
    );
    assert_eq!(
        ats(AuditFilter {
            user: Some("alice".into()),
            ..f()
        })
        .await,
        [2, 1, 0],
        "actor or subject"
    );
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ats(AuditFilter {
            event_in: names(&["login_failed", "token_issued"]),
            ..f()
        })
        .await,
        [3, 0]
    );
    assert_eq!(
        ats(AuditFilter {
            event_not_in: names(&["login_failed", "token_issued"]),
            ..f()
        })
        .await,
        [4, 2, 1]
    );
    assert_eq!(
        ats(AuditFilter {
            user: Some("alice".into()),
            event_not_in: names(&["login_failed"]),
            until: Some(T0 + 1),
            ..f()
        })
        .await,
        [1],
        "every condition holds at once"
    );

    // Keyset paging: each page starts below the last id of the one before, and together the
    // pages hold every event exactly once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .audit_events(AuditFilter {
                before_id: before,
                limit: 2,
                ..f()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        before = page.last().map(|e| e.id);
        seen.extend(page.iter().map(|e| e.at - T0));
    }
    assert_eq!(seen, [4, 3, 2, 1, 0]);
}

/// Every client write moves `clients_version` (what a client cache on another replica compares)
/// and `local_client_writes` (what this process's cache compares); reads and other writes do
/// not.
async fn clients_version_moves_with_every_client_write(s: &dyn Store) {
    let versions = || async { (s.clients_version().await.unwrap(), s.local_client_writes()) };
    let mut last = versions().await;
    let mut moved = |now: (u64, u64), what: &str| {
        assert!(now.0 != last.0, "{what}: clients_version did not move");
        assert!(now.1 > last.1, "{what}: local_client_writes did not move");
        last = now;
    };
    client(s, "ci", false).await;
    moved(versions().await, "create");
    s.set_client_secret_hash("ci", "new-hash").await.unwrap();
    moved(versions().await, "secret");
    s.revoke_all_for_client("ci", T0).await.unwrap();
    moved(versions().await, "revoke-all");
    let before_reads = versions().await;
    s.client("ci").await.unwrap();
    s.list_clients().await.unwrap();
    s.create_group("ops", T0).await.unwrap();
    assert_eq!(versions().await.0, before_reads.0, "reads and other writes");
    s.delete_client("ci").await.unwrap();
    moved(versions().await, "delete");
}

// ---------------------------------------------------------------------------------------------
// Login throttle (the state machine is `rules::throttle`'s, unit-tested there; these check that
// a backend loads, applies and writes it, one key at a time)
// ---------------------------------------------------------------------------------------------

use idp::store::rules::{
    MAX_THROTTLE_KEY_LEN, STRIKE_MEMORY_SECS, THROTTLE_SWEEP_EVERY, THROTTLE_WINDOW_SECS,
};

async fn fail_times(s: &dyn Store, key: &str, n: u32, max: u32, now: u64) {
    for _ in 0..n {
        s.throttle_fail(key, max, now).await.unwrap();
    }
}

pub async fn throttle_locks_at_max_and_counts_refusals(s: &dyn Store) {
    let key = "user alice from 203.0.113.7";
    fail_times(s, key, 4, 5, T0).await;
    assert_eq!(s.throttle_check(key, T0).await.unwrap(), None);
    assert!(s.throttle_has_history(key, T0).await.unwrap());
    s.throttle_fail(key, 5, T0 + 10).await.unwrap();
    let b = s.throttle_check(key, T0 + 10).await.unwrap().unwrap();
    assert_eq!(
        (b.wait, b.since, b.until, b.refused),
        (
            THROTTLE_WINDOW_SECS,
            T0 + 10,
            T0 + 10 + THROTTLE_WINDOW_SECS,
            1
        )
    );
    let b = s.throttle_check(key, T0 + 11).await.unwrap().unwrap();
    assert_eq!((b.wait, b.refused), (THROTTLE_WINDOW_SECS - 1, 2));
    assert_eq!(
        s.throttle_check(key, T0 + 10 + THROTTLE_WINDOW_SECS)
            .await
            .unwrap(),
        None,
        "the lock ends"
    );
    assert_eq!(
        s.throttle_check("ip 203.0.113.7", T0 + 10).await.unwrap(),
        None
    );
    assert!(!s.throttle_has_history("ip 203.0.113.7", T0).await.unwrap());
    assert_eq!(s.throttle_keys().await.unwrap(), [key]);
}

pub async fn throttle_each_lock_is_twice_as_long(s: &dyn Store) {
    let key = "ip 198.51.100.1";
    let mut now = T0;
    let mut locks = Vec::new();
    for _ in 0..4 {
        fail_times(s, key, 3, 3, now).await;
        let b = s.throttle_check(key, now).await.unwrap().unwrap();
        locks.push(b.wait / 60);
        now = b.until;
    }
    assert_eq!(locks, [15, 30, 60, 120]);
    // A day without failures forgets the past locks.
    now += STRIKE_MEMORY_SECS;
    fail_times(s, key, 3, 3, now).await;
    assert_eq!(
        s.throttle_check(key, now).await.unwrap().unwrap().wait,
        THROTTLE_WINDOW_SECS
    );
}

pub async fn throttle_reset_forgets_a_key(s: &dyn Store) {
    fail_times(s, "account alice", 5, 5, T0).await;
    fail_times(s, "account bob", 1, 5, T0).await;
    assert!(s
        .throttle_check("account alice", T0)
        .await
        .unwrap()
        .is_some());
    s.throttle_reset("account alice").await.unwrap();
    assert_eq!(s.throttle_check("account alice", T0).await.unwrap(), None);
    assert!(!s.throttle_has_history("account alice", T0).await.unwrap());
    assert_eq!(s.throttle_keys().await.unwrap(), ["account bob"]);
    // Resetting an unknown key is not an error.
    s.throttle_reset("account nobody").await.unwrap();
}

pub async fn throttle_sweep_bounds_the_table_and_keeps_locked_keys(s: &dyn Store) {
    fail_times(s, "locked", 5, 5, T0).await;
    for i in 0..150 {
        s.throttle_fail(&format!("k{i:03}"), 5, T0 + 1 + i)
            .await
            .unwrap();
    }
    let dropped = s.throttle_sweep(T0 + 200, 100).await.unwrap();
    let keys = s.throttle_keys().await.unwrap();
    assert!(keys.len() <= 100, "{} keys", keys.len());
    assert_eq!(dropped as usize, 151 - keys.len());
    assert!(keys.contains(&"locked".to_string()), "a locked key stays");
    assert!(
        s.throttle_check("locked", T0 + 200)
            .await
            .unwrap()
            .is_some(),
        "and stays locked"
    );
    // The oldest unlocked keys went first.
    assert!(!keys.contains(&"k000".to_string()));
    assert!(keys.contains(&"k149".to_string()));
    // Once window, lock and strike memory are over, everything is forgotten.
    let later = T0 + THROTTLE_WINDOW_SECS + 200 + STRIKE_MEMORY_SECS;
    s.throttle_sweep(later, 100).await.unwrap();
    assert_eq!(s.throttle_keys().await.unwrap(), Vec::<String>::new());
}

pub async fn throttle_failures_sweep_forgettable_keys(s: &dyn Store) {
    for i in 0..10 {
        s.throttle_fail(&format!("old{i}"), 5, T0).await.unwrap();
    }
    // Past every window (no key was locked): forgettable, but only a sweep drops them.
    let later = T0 + THROTTLE_WINDOW_SECS;
    assert_eq!(s.throttle_keys().await.unwrap().len(), 10);
    let rest = u32::try_from(THROTTLE_SWEEP_EVERY).unwrap() - 10;
    fail_times(s, "new", rest, u32::MAX, later).await;
    assert_eq!(s.throttle_keys().await.unwrap(), ["new"]);
}

pub async fn throttle_refuses_an_overlong_key(s: &dyn Store) {
    let long = "k".repeat(MAX_THROTTLE_KEY_LEN + 1);
    assert!(s.throttle_fail(&long, 5, T0).await.is_err());
    assert!(s.throttle_check(&long, T0).await.is_err());
    assert_eq!(s.throttle_keys().await.unwrap(), Vec::<String>::new());
    let longest = "k".repeat(MAX_THROTTLE_KEY_LEN);
    s.throttle_fail(&longest, 5, T0).await.unwrap();
    assert_eq!(s.throttle_keys().await.unwrap(), [longest]);
}

pub async fn throttle_concurrent_failures_all_count(s: &dyn Store) {
    let tries = (0..20).map(|_| s.throttle_fail("ip 192.0.2.1", 20, T0));
    for r in futures_util::future::join_all(tries).await {
        r.unwrap();
    }
    let b = s.throttle_check("ip 192.0.2.1", T0).await.unwrap();
    assert!(b.is_some(), "20 failures at once with max 20 lock the key");
}

/// Instantiates each behaviour once per backend: `store::sqlite::<name>` on a fresh SQLite file,
/// `store::postgres::<name>` on a fresh database of the throwaway PostgreSQL cluster this test
/// binary starts on first use (`idp::testing::pg`; a missing PostgreSQL fails these tests).
macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("t.db").display());
                    let store = idp::store::SqliteStore::open(&url).await.unwrap();
                    super::$name(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let url = idp::testing::pg::PgCluster::shared().database().await.unwrap();
                    let store = idp::store::PgStore::open_with(&url, 4).await.unwrap();
                    super::$name(&store).await;
                    store.close().await;
                }
            )*
        }
    };
}

backend_suite!(
    server_secret_first_writer_wins,
    refresh_rotate_checks_the_client_and_audits_in_the_transaction,
    refresh_rotate_refuses_a_disabled_user,
    user_with_groups_in_one_read,
    user_create_and_lookup,
    user_duplicate_is_conflict,
    user_list_sorted_by_username,
    user_set_password,
    user_disable_revokes_families_and_sessions,
    user_delete,
    group_create_duplicate_and_list,
    group_add_and_remove_member,
    group_delete,
    client_create_lookup_list,
    client_duplicate_is_conflict,
    client_delete,
    client_secret_rotation,
    client_revoke_all,
    consent_save_and_merge,
    code_redeem_once_then_replay_revokes_family,
    code_replay_without_family,
    code_expired_or_unknown_is_not_found,
    refresh_create_family_and_lookup,
    refresh_rotate_current,
    refresh_rotate_within_grace,
    refresh_reuse_after_grace_revokes_family,
    refresh_expired_or_unknown_is_invalid,
    refresh_revoke_family,
    jti_denylist,
    device_insert_and_lookup,
    device_user_code_collision_is_conflict,
    device_poll_pending_and_slow_down,
    device_approve_then_consumed,
    device_deny,
    device_expired,
    session_create_get_expire_delete,
    keys_activate_retires_previous,
    keys_delete_retired_keeps_active_and_recent,
    keys_replace_material_only_if_unchanged,
    audit_record_filter_and_order,
    purge_expired_keeps_live_rows,
    purge_keeps_used_codes_until_expiry,
    purge_drops_audit_events_past_retention,
    audit_aggregated_one_row_per_subject_and_window,
    users_page_searches_and_pages_by_username,
    user_update_and_set_groups,
    sessions_of_user_and_delete_user_session,
    session_last_use_is_touched_at_most_once_a_minute,
    family_activity_is_the_current_tokens_issue,
    session_touch_moves_last_use_and_reauthentication,
    consents_of_user_and_revoke_authorization,
    live_families_and_their_count,
    audit_filters_every_field_and_pages_by_id,
    clients_version_moves_with_every_client_write,
    throttle_locks_at_max_and_counts_refusals,
    throttle_each_lock_is_twice_as_long,
    throttle_reset_forgets_a_key,
    throttle_sweep_bounds_the_table_and_keeps_locked_keys,
    throttle_failures_sweep_forgettable_keys,
    throttle_refuses_an_overlong_key,
    throttle_concurrent_failures_all_count,
);

/// A database made by the first release (schema version 1) is brought up to date at open, and
/// its rows survive: each numbered migration runs once, in order.
#[tokio::test]
async fn a_version_1_database_is_migrated_in_place() {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let mut c = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(include_str!(
            "../src/store/migrations/sqlite/0001_initial.sql"
        ))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::raw_sql(
            "PRAGMA user_version = 1;
             INSERT INTO users (id, username, email, created_at, updated_at)
                 VALUES ('u1', 'alice', 'a@example.com', 1, 1);",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let store = idp::store::SqliteStore::open(&url).await.unwrap();
    assert_eq!(
        store.user_by_id("u1").await.unwrap().unwrap().username,
        "alice"
    );
    // The version-2 column is there: a rotation keeps its sealed successor.
    client(&store, "kubelogin", true).await;
    family(&store, "f1", "kubelogin", "u1", "t1", T0).await;
    store
        .rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t2", "f1", T0 + 1, T0 + 3600),
            "sealed",
            T0 + 1,
            5,
            None,
        )
        .await
        .unwrap();
    let again = store
        .rotate_refresh_token(
            "t1",
            "kubelogin",
            token("t3", "f1", T0 + 2, T0 + 3600),
            "other",
            T0 + 2,
            5,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(again, Rotation::WithinGrace(_, Some(s)) if s == "sealed"));
    // Version 4: the server secrets table.
    assert_eq!(store.server_secret("csrf", "k", T0).await.unwrap(), "k");
    store.close().await;
    // Opening again runs nothing twice.
    let store = idp::store::SqliteStore::open(&url).await.unwrap();
    store.close().await;
}

/// A database made by the first release (schema version 1) is upgraded in place when opened:
/// its rows stay, and the columns added since work.
#[tokio::test]
async fn sqlite_upgrades_a_version_1_database() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    {
        let mut c = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(include_str!(
            "../src/store/migrations/sqlite/0001_initial.sql"
        ))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::raw_sql(
            "PRAGMA user_version = 1;
             INSERT INTO clients (client_id, redirect_uris, post_logout_redirect_uris, grant_types, scopes, created_at)
                 VALUES ('kubelogin', '[]', '[]', '[]', '[]', 1);
             INSERT INTO device_codes (device_code_hash, user_code, client_id, scope, created_at, expires_at, interval_secs, status)
                 VALUES ('old', 'OLDDOLDD', 'kubelogin', 'openid', 1, 9999999999, 5, 'pending');",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let s = idp::store::SqliteStore::open(&url).await.unwrap();
    let old = s.device_by_user_code("OLDDOLDD").await.unwrap().unwrap();
    assert_eq!(
        (old.request_ip.as_str(), old.request_user_agent.as_str()),
        ("", "")
    );
    let d = device_fixture("new", "NEWWNEWW", "kubelogin", T0);
    s.insert_device_code(d.clone()).await.unwrap();
    assert_eq!(s.device_by_user_code("NEWWNEWW").await.unwrap(), Some(d));
    audit_aggregated_one_row_per_subject_and_window(&s).await;
    s.close().await;
    // Opening again finds nothing left to do.
    let again = idp::store::SqliteStore::open(&url).await.unwrap();
    assert!(again
        .device_by_user_code("NEWWNEWW")
        .await
        .unwrap()
        .is_some());
    again.close().await;
}

/// Replicas starting together on a fresh PostgreSQL database: the migrations run once, under
/// the advisory lock, and every replica comes up on the one schema (without the lock, all of
/// them read version 0 and all but one fail on `CREATE TABLE`).
#[tokio::test]
async fn postgres_replicas_starting_at_once_migrate_once() {
    let url = idp::testing::pg::PgCluster::shared()
        .database()
        .await
        .unwrap();
    let opened =
        futures_util::future::join_all((0..4).map(|_| idp::store::PgStore::open_with(&url, 2)))
            .await;
    let stores: Vec<idp::store::PgStore> = opened
        .into_iter()
        .map(|s| s.expect("every replica opens"))
        .collect();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(stores[0].pool())
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3], "each migration once");
    // Each replica works on the one schema: what one writes, another reads.
    let alice = user(&stores[1], "alice").await;
    assert_eq!(
        stores[3].user_by_username("alice").await.unwrap(),
        Some(alice)
    );
    for s in stores {
        s.close().await;
    }
}

/// 50 presentations of one refresh token at once, split across two replicas (two pools on one
/// database): one rotates, the 49 others wait on the row lock and get the same successor back
/// (the grace window), and the family is left with one current token.
#[tokio::test]
async fn postgres_concurrent_rotations_across_replicas_leave_one_chain() {
    let url = idp::testing::pg::PgCluster::shared()
        .database()
        .await
        .unwrap();
    let a = idp::store::PgStore::open_with(&url, 8).await.unwrap();
    let b = idp::store::PgStore::open_with(&url, 8).await.unwrap();
    let alice = user(&a, "alice").await;
    client(&a, "kubelogin", true).await;
    family(&a, "f1", "kubelogin", &alice.id, "t1", T0).await;
    let now = T0 + 10;
    let tries = (0..50).map(|n| {
        let s: &dyn Store = if n % 2 == 0 { &a } else { &b };
        async move {
            s.rotate_refresh_token(
                "t1",
                "kubelogin",
                token(&format!("next-{n}"), "f1", now, now + 3600),
                &format!("sealed-{n}"),
                now,
                5,
                None,
            )
            .await
            .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(tries).await;
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, Rotation::Rotated(_)))
        .count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    let kept: Vec<&Option<String>> = outcomes
        .iter()
        .filter_map(|o| match o {
            Rotation::WithinGrace(_, kept) => Some(kept),
            _ => None,
        })
        .collect();
    assert_eq!(kept.len(), 49, "{outcomes:?}");
    assert!(kept.windows(2).all(|w| w[0] == w[1] && w[0].is_some()));
    let current: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = 'f1' AND rotated_at IS NULL",
    )
    .fetch_one(b.pool())
    .await
    .unwrap();
    assert_eq!(current, 1);
    assert_eq!(a.family("f1").await.unwrap().unwrap().revoked_at, None);
    a.close().await;
    b.close().await;
}

/// Failures of one key counted at once through two replicas' pools all count: the row lock
/// makes each load-apply-write see the other's failure, so `max` failures in total lock it, and
/// `max - 1` do not.
#[tokio::test]
async fn postgres_throttle_failures_across_replicas_add_up() {
    let url = idp::testing::pg::PgCluster::shared()
        .database()
        .await
        .unwrap();
    let a = idp::store::PgStore::open_with(&url, 8).await.unwrap();
    let b = idp::store::PgStore::open_with(&url, 8).await.unwrap();
    let fail = |key: &'static str, n: usize, max: u32| {
        let (a, b) = (&a, &b);
        futures_util::future::join_all((0..n).map(move |i| {
            let s: &dyn Store = if i % 2 == 0 { a } else { b };
            s.throttle_fail(key, max, T0)
        }))
    };
    for r in fail("account alice", 30, 30).await {
        r.unwrap();
    }
    assert!(b
        .throttle_check("account alice", T0)
        .await
        .unwrap()
        .is_some());
    for r in fail("account bob", 29, 30).await {
        r.unwrap();
    }
    assert_eq!(a.throttle_check("account bob", T0).await.unwrap(), None);
    a.close().await;
    b.close().await;
}
