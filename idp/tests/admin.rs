//! The admin layer (`idp::admin`) against real SQLite with a manual clock: every use case, and
//! that each action records exactly one audit event naming its actor, target, address and user
//! agent, the same whichever front end runs it.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers a test module
// shares; failing loudly is what a test helper should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idp::admin::audit::{AuditQuery, Outcome, CSV_CHUNK, CSV_HEADER, FAILURE_EVENTS};
use idp::admin::clients::{check_redirect_uri, NewClientRequest};
use idp::admin::users::{NewUserRequest, UserEdit};
use idp::admin::{Actor, Admin, PasswordChoice, Secret};
use idp::clock::{Clock, ManualClock};
use idp::error::IdpError;
use idp::store::{
    AuditEvent, AuditFilter, Family, RefreshToken, Session, SqliteStore, Store, UserQuery,
};

const T0: u64 = 1_800_000_000;

/// A fresh database, a clock, and the actor of the console.
struct Fx {
    store: SqliteStore,
    clock: ManualClock,
    actor: Actor,
    _dir: tempfile::TempDir,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Fx {
            store: SqliteStore::open(&url).await.unwrap(),
            clock: ManualClock::new(T0),
            actor: Actor::admin("root", "192.0.2.7", "Firefox/128"),
            _dir: dir,
        }
    }

    fn admin(&self) -> Admin<'_> {
        Admin::new(&self.store, &self.clock)
    }

    async fn events(&self) -> Vec<AuditEvent> {
        self.store
            .audit_events(AuditFilter::default())
            .await
            .unwrap()
    }

    /// The one event recorded since there were `before`, checked to name the console actor,
    /// its address and user agent, and `subject`.
    async fn one_new_event(&self, before: usize, name: &str, subject: &str) -> AuditEvent {
        let events = self.events().await;
        assert_eq!(
            events.len(),
            before + 1,
            "one event per action: {events:#?}"
        );
        let e = events[0].clone();
        assert_eq!(e.event, name, "{e:#?}");
        assert_eq!(e.subject, subject, "{e:#?}");
        assert_eq!(e.actor, "root");
        assert_eq!(
            (e.ip.as_str(), e.user_agent.as_str()),
            ("192.0.2.7", "Firefox/128")
        );
        assert_eq!(e.at, self.clock.now());
        e
    }

    async fn count(&self) -> usize {
        self.events().await.len()
    }

    async fn user(&self, name: &str, groups: &[&str]) -> idp::store::User {
        let req = NewUserRequest {
            username: name.into(),
            email: format!("{name}@example.com"),
            name: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            password: PasswordChoice::Given(Secret::new(format!("{name}-password"))),
            is_admin: false,
        };
        self.admin()
            .create_user(&self.actor, req)
            .await
            .unwrap()
            .user
    }

    async fn session(&self, id: &str, user_id: &str) {
        let now = self.clock.now();
        self.store
            .create_session(Session {
                id_hash: id.into(),
                user_id: user_id.into(),
                auth_time: now,
                created_at: now,
                expires_at: now + 3600,
                ip: "203.0.113.5".into(),
                user_agent: "Chromium".into(),
                last_used_at: now,
            })
            .await
            .unwrap();
    }

    async fn family(&self, id: &str, client_id: &str, user_id: &str) {
        let now = self.clock.now();
        let f = Family {
            id: id.into(),
            client_id: client_id.into(),
            user_id: user_id.into(),
            scope: "openid groups".into(),
            auth_time: now,
            created_at: now,
            revoked_at: None,
        };
        let t = RefreshToken {
            token_hash: format!("hash-{id}"),
            family_id: id.into(),
            created_at: now,
            expires_at: now + 3600,
            rotated_at: None,
            ip: String::new(),
            user_agent: String::new(),
        };
        self.store.create_family(f, t).await.unwrap();
    }

    async fn public_client(&self, id: &str) {
        self.admin()
            .create_client(&self.actor, client_request(id, true))
            .await
            .unwrap();
    }
}

fn client_request(id: &str, public: bool) -> NewClientRequest {
    NewClientRequest {
        client_id: id.into(),
        name: format!("{id} app"),
        public,
        redirect_uris: vec!["http://127.0.0.1:8000".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec![],
        scopes: vec![],
    }
}

fn given(p: &str) -> PasswordChoice {
    PasswordChoice::Given(Secret::new(p.into()))
}

fn invalid<T: std::fmt::Debug>(r: Result<T, IdpError>) -> String {
    match r {
        Err(IdpError::Invalid(m)) => m,
        other => panic!("expected IdpError::Invalid, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T, IdpError>) -> String {
    match r {
        Err(e) if e.not_found().is_some() => e.to_string(),
        other => panic!("expected not found, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_user_with_a_generated_or_a_given_password() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    admin.create_group(&fx.actor, "devs").await.unwrap();
    let n = fx.count().await;
    let created = admin
        .create_user(
            &fx.actor,
            NewUserRequest {
                username: "alice".into(),
                email: "alice@example.com".into(),
                name: "Alice".into(),
                groups: vec!["devs".into()],
                password: PasswordChoice::Generate,
                is_admin: false,
            },
        )
        .await
        .unwrap();
    let password = created
        .password
        .expect("a generated password is returned once");
    assert!(password.expose().len() >= 16);
    let stored = fx.store.user_by_username("alice").await.unwrap().unwrap();
    assert!(idp::crypto::verify_password(
        password.expose(),
        stored.password_hash.as_deref().unwrap()
    ));
    assert!(stored.email_verified, "an admin vouches for the address");
    assert_eq!(admin.user("alice").await.unwrap().groups, ["devs"]);
    fx.one_new_event(n, "user_created", "alice").await;

    let mut req = NewUserRequest {
        username: "bob".into(),
        email: "bob@example.com".into(),
        name: String::new(),
        groups: vec![],
        password: given("correct horse battery"),
        is_admin: true,
    };
    let bob = admin.create_user(&fx.actor, req.clone()).await.unwrap();
    assert!(bob.password.is_none(), "a given password is not echoed");
    assert!(bob.user.is_admin);
    let hash = fx.store.user_by_username("bob").await.unwrap().unwrap();
    assert!(idp::crypto::verify_password(
        "correct horse battery",
        hash.password_hash.as_deref().unwrap()
    ));

    // Refusals create nothing and record nothing.
    let n = fx.count().await;
    req.username = "carol".into();
    req.password = given("short");
    assert!(invalid(admin.create_user(&fx.actor, req.clone()).await).contains("at least 8"));
    req.password = given(&"x".repeat(1025));
    assert!(invalid(admin.create_user(&fx.actor, req.clone()).await).contains("at most 1024"));
    req.password = PasswordChoice::Generate;
    req.email = "carol".into();
    assert!(invalid(admin.create_user(&fx.actor, req.clone()).await).contains("email"));
    req.email = format!("{}@example.com", "c".repeat(250));
    invalid(admin.create_user(&fx.actor, req.clone()).await);
    req.email = "carol@example.com".into();
    req.name = "Carol\n".into();
    assert!(invalid(admin.create_user(&fx.actor, req.clone()).await).contains("control"));
    req.name = String::new();
    req.groups = vec!["nope".into()];
    let err = not_found(admin.create_user(&fx.actor, req.clone()).await);
    assert!(err.contains("nope") && err.contains("group add"), "{err}");
    req.groups = vec![];
    req.username = "carol smith".into();
    assert!(invalid(admin.create_user(&fx.actor, req.clone()).await).contains("not a valid name"));
    assert!(fx.store.user_by_username("carol").await.unwrap().is_none());
    assert_eq!(fx.count().await, n);
    req.username = "bob".into();
    let r = admin.create_user(&fx.actor, req).await;
    assert!(matches!(&r, Err(e) if e.conflict().is_some()), "{r:?}");
    assert_eq!(fx.count().await, n);
}

#[tokio::test]
async fn edit_user_changes_email_name_and_groups() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    admin.create_group(&fx.actor, "devs").await.unwrap();
    admin.create_group(&fx.actor, "ops").await.unwrap();
    fx.user("alice", &["devs"]).await;
    let n = fx.count().await;
    fx.clock.advance(10);
    let edit = UserEdit {
        email: Some("alice@corp.example".into()),
        name: Some("Alice Liddell".into()),
        groups: Some(vec!["ops".into()]),
    };
    let d = admin.edit_user(&fx.actor, "alice", edit).await.unwrap();
    assert_eq!(d.user.email, "alice@corp.example");
    assert_eq!(d.user.name, "Alice Liddell");
    assert_eq!(d.groups, ["ops"]);
    let e = fx.one_new_event(n, "user_updated", "alice").await;
    assert_eq!(e.details, "email name groups");

    // Only what is given changes.
    let only_name = UserEdit {
        name: Some("A. L.".into()),
        ..Default::default()
    };
    let d = admin
        .edit_user(&fx.actor, "alice", only_name)
        .await
        .unwrap();
    assert_eq!(
        (d.user.email.as_str(), d.user.name.as_str()),
        ("alice@corp.example", "A. L.")
    );
    assert_eq!(d.groups, ["ops"]);
    let clear = UserEdit {
        groups: Some(vec![]),
        ..Default::default()
    };
    assert!(admin
        .edit_user(&fx.actor, "alice", clear)
        .await
        .unwrap()
        .groups
        .is_empty());

    // A bad field refuses the whole edit before anything is written.
    let n = fx.count().await;
    let bad = UserEdit {
        email: Some("x@example.com".into()),
        groups: Some(vec!["nope".into()]),
        ..Default::default()
    };
    not_found(admin.edit_user(&fx.actor, "alice", bad).await);
    let bad = UserEdit {
        email: Some("no-at-sign".into()),
        groups: Some(vec!["devs".into()]),
        ..Default::default()
    };
    invalid(admin.edit_user(&fx.actor, "alice", bad).await);
    let d = admin.user("alice").await.unwrap();
    assert_eq!(d.user.email, "alice@corp.example");
    assert!(d.groups.is_empty());
    not_found(
        admin
            .edit_user(&fx.actor, "nobody", UserEdit::default())
            .await,
    );
    assert_eq!(fx.count().await, n);
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_refresh_families_at_once() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.public_client("kubectl").await;
    let alice = fx.user("alice", &[]).await;
    let bob = fx.user("bob", &[]).await;
    fx.session("sa", &alice.id).await;
    fx.session("sb", &bob.id).await;
    fx.family("fa", "kubectl", &alice.id).await;
    fx.family("fb", "kubectl", &bob.id).await;
    let n = fx.count().await;
    fx.clock.advance(60);

    admin
        .set_user_disabled(&fx.actor, "alice", true)
        .await
        .unwrap();
    fx.one_new_event(n, "user_disabled", "alice").await;
    assert!(admin.user("alice").await.unwrap().user.disabled);
    assert!(admin.sessions("alice").await.unwrap().is_empty());
    assert!(admin.authorizations("alice").await.unwrap().is_empty());
    assert_eq!(
        fx.store.family("fa").await.unwrap().unwrap().revoked_at,
        Some(fx.clock.now())
    );
    // Bob keeps his.
    assert_eq!(admin.sessions("bob").await.unwrap().len(), 1);
    assert_eq!(
        fx.store.family("fb").await.unwrap().unwrap().revoked_at,
        None
    );

    admin
        .set_user_disabled(&fx.actor, "alice", false)
        .await
        .unwrap();
    fx.one_new_event(n + 1, "user_enabled", "alice").await;
    assert!(!admin.user("alice").await.unwrap().user.disabled);
    not_found(admin.set_user_disabled(&fx.actor, "nobody", true).await);
    assert_eq!(fx.count().await, n + 2);
}

#[tokio::test]
async fn resetting_a_password_ends_every_session_and_refresh_family() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.public_client("kubectl").await;
    let alice = fx.user("alice", &[]).await;
    fx.session("s1", &alice.id).await;
    fx.family("f1", "kubectl", &alice.id).await;
    let n = fx.count().await;

    let generated = admin
        .reset_password(&fx.actor, "alice", PasswordChoice::Generate)
        .await
        .unwrap()
        .expect("a generated password is returned");
    fx.one_new_event(n, "user_password_changed", "alice").await;
    let hash = |u: idp::store::User| u.password_hash.unwrap();
    let stored = hash(fx.store.user_by_username("alice").await.unwrap().unwrap());
    assert!(idp::crypto::verify_password(generated.expose(), &stored));
    assert!(!idp::crypto::verify_password("alice-password", &stored));
    assert!(admin.sessions("alice").await.unwrap().is_empty());
    assert!(fx
        .store
        .family("f1")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());

    let none = admin
        .reset_password(&fx.actor, "alice", given("a new long password"))
        .await
        .unwrap();
    assert!(none.is_none());
    let stored = hash(fx.store.user_by_username("alice").await.unwrap().unwrap());
    assert!(idp::crypto::verify_password("a new long password", &stored));
    invalid(
        admin
            .reset_password(&fx.actor, "alice", given("short"))
            .await,
    );
    not_found(
        admin
            .reset_password(&fx.actor, "nobody", PasswordChoice::Generate)
            .await,
    );
    assert_eq!(fx.count().await, n + 2);
}

#[tokio::test]
async fn delete_user() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.user("alice", &[]).await;
    let n = fx.count().await;
    admin.delete_user(&fx.actor, "alice").await.unwrap();
    fx.one_new_event(n, "user_deleted", "alice").await;
    not_found(admin.user("alice").await);
    not_found(admin.delete_user(&fx.actor, "alice").await);
    assert_eq!(fx.count().await, n + 1);
}

#[tokio::test]
async fn list_users_with_search_and_keyset_paging() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    for i in 0..25 {
        fx.user(&format!("user{i:02}"), &[]).await;
    }
    fx.user("zed", &[]).await;
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = admin
            .list_users(UserQuery {
                search: Some("user".into()),
                after: after.take(),
                limit: 10,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.users.len() <= 10);
        seen.extend(page.users.iter().map(|u| u.username.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    seen.last(),
                    "the cursor is the page's last name"
                );
                after = Some(next);
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("user{i:02}")).collect();
    assert_eq!(seen, expected, "every match once, in order");
    assert_eq!(pages, 3);
    // A full last page has no next page.
    let page = admin
        .list_users(UserQuery {
            search: Some("user2".into()),
            after: None,
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(page.users.len(), 5);
    assert_eq!(page.next, None);
    // The page size is bounded.
    let all = admin
        .list_users(UserQuery {
            limit: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.users.len(), 26);
    invalid(
        admin
            .list_users(UserQuery {
                search: Some("x".repeat(200)),
                ..Default::default()
            })
            .await,
    );
}

#[tokio::test]
async fn a_users_sessions_and_their_revocation() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let alice = fx.user("alice", &[]).await;
    let bob = fx.user("bob", &[]).await;
    fx.session("s-old", &alice.id).await;
    fx.clock.advance(5);
    fx.session("s-new", &alice.id).await;
    fx.session("s-bob", &bob.id).await;
    let sessions = admin.sessions("alice").await.unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s.id_hash.as_str()).collect();
    assert_eq!(ids, ["s-new", "s-old"]);
    assert_eq!(sessions[0].ip, "203.0.113.5");
    assert_eq!(sessions[0].user_agent, "Chromium");

    let n = fx.count().await;
    admin
        .revoke_session(&fx.actor, "alice", "s-old")
        .await
        .unwrap();
    fx.one_new_event(n, "session_revoked", "alice").await;
    assert_eq!(admin.sessions("alice").await.unwrap().len(), 1);
    // Bob's session is not alice's to end.
    not_found(admin.revoke_session(&fx.actor, "alice", "s-bob").await);
    assert_eq!(admin.sessions("bob").await.unwrap().len(), 1);
    not_found(admin.revoke_session(&fx.actor, "alice", "s-old").await);
    assert_eq!(fx.count().await, n + 1);
}

#[tokio::test]
async fn a_users_authorizations_and_their_revocation() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.public_client("kubectl").await;
    admin
        .create_client(&fx.actor, client_request("ci", false))
        .await
        .unwrap();
    let alice = fx.user("alice", &[]).await;
    let scopes = vec!["openid".to_string(), "groups".to_string()];
    fx.store
        .save_consent(&alice.id, "kubectl", &scopes, T0)
        .await
        .unwrap();
    fx.family("k1", "kubectl", &alice.id).await;
    fx.family("k2", "kubectl", &alice.id).await;
    // A grant without consent (the password grant) still shows.
    fx.family("c1", "ci", &alice.id).await;

    let auths = admin.authorizations("alice").await.unwrap();
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0].client_id, "ci");
    assert!(auths[0].consent.is_none());
    assert_eq!(auths[0].live_families.len(), 1);
    assert_eq!(auths[1].client_id, "kubectl");
    assert_eq!(auths[1].consent.as_ref().unwrap().scopes, scopes);
    assert_eq!(auths[1].live_families.len(), 2);

    let n = fx.count().await;
    let revoked = admin
        .revoke_authorization(&fx.actor, "alice", "kubectl")
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let e = fx.one_new_event(n, "authorization_revoked", "alice").await;
    assert_eq!(e.client_id, "kubectl");
    assert!(e.details.contains('2'), "{e:?}");
    let auths = admin.authorizations("alice").await.unwrap();
    assert_eq!(
        auths.len(),
        1,
        "consent forgotten, families dead: {auths:?}"
    );
    assert!(fx
        .store
        .consented_scopes(&alice.id, "kubectl")
        .await
        .unwrap()
        .is_empty());
    not_found(
        admin
            .revoke_authorization(&fx.actor, "alice", "kubectl")
            .await,
    );
    not_found(admin.revoke_authorization(&fx.actor, "nobody", "ci").await);
    assert_eq!(fx.count().await, n + 1);
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn groups_and_their_members() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.user("alice", &[]).await;
    let n = fx.count().await;
    admin.create_group(&fx.actor, "devs").await.unwrap();
    fx.one_new_event(n, "group_created", "devs").await;
    admin.add_member(&fx.actor, "devs", "alice").await.unwrap();
    let e = fx.one_new_event(n + 1, "group_member_added", "alice").await;
    assert_eq!(e.details, "devs");
    assert_eq!(admin.groups().await.unwrap()[0].members, ["alice"]);
    admin
        .remove_member(&fx.actor, "devs", "alice")
        .await
        .unwrap();
    let e = fx
        .one_new_event(n + 2, "group_member_removed", "alice")
        .await;
    assert_eq!(e.details, "devs");
    admin.delete_group(&fx.actor, "devs").await.unwrap();
    fx.one_new_event(n + 3, "group_deleted", "devs").await;
    assert!(admin.groups().await.unwrap().is_empty());

    invalid(admin.create_group(&fx.actor, "no spaces").await);
    not_found(admin.delete_group(&fx.actor, "devs").await);
    not_found(admin.add_member(&fx.actor, "devs", "alice").await);
    admin.create_group(&fx.actor, "ops").await.unwrap();
    not_found(admin.add_member(&fx.actor, "ops", "nobody").await);
    not_found(admin.remove_member(&fx.actor, "ops", "alice").await);
    assert_eq!(fx.count().await, n + 5);
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

#[test]
fn redirect_uris_are_https_or_loopback_without_fragment() {
    for ok in [
        "https://app.example/callback",
        "https://app.example:8443/cb?x=1",
        "http://127.0.0.1:8000",
        "http://127.0.0.1/cb",
        "http://localhost:18000",
        "http://[::1]:8000/",
        "urn:ietf:wg:oauth:2.0:oob",
    ] {
        check_redirect_uri(ok, true).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        ("http://app.example/callback", "https"),
        ("http://10.0.0.5:8000", "https"),
        ("https://app.example/cb#frag", "fragment"),
        ("http://127.0.0.1:8000/#x", "fragment"),
        ("ftp://app.example/", "https"),
        ("com.example.app:/cb", "https"),
        ("not a url", "redirect URI"),
        ("/relative/cb", "redirect URI"),
        ("https://user:pw@app.example/cb", "user name"),
        ("http://user@localhost:8000", "user name"),
    ] {
        let err = invalid(check_redirect_uri(bad, true));
        assert!(err.contains(why), "{bad}: {err}");
    }
    let long = format!("https://app.example/{}", "a".repeat(2100));
    assert!(invalid(check_redirect_uri(&long, true)).contains("longer"));
    assert!(
        invalid(check_redirect_uri("urn:ietf:wg:oauth:2.0:oob", false)).contains("https"),
        "no out-of-band URN after logout"
    );
}

#[tokio::test]
async fn create_client_public_and_confidential() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let n = fx.count().await;
    let public = admin
        .create_client(&fx.actor, client_request("kubectl", true))
        .await
        .unwrap();
    assert!(public.secret.is_none());
    assert!(public.client.is_public());
    assert_eq!(
        public.client.grant_types,
        [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code"
        ]
    );
    assert!(public.client.allows_scope("groups"), "default scopes");
    let e = fx.one_new_event(n, "client_created", "kubectl").await;
    assert_eq!(e.client_id, "kubectl");

    let mut req = client_request("ci", false);
    req.grant_types = vec![
        "client_credentials".into(),
        "authcode".into(),
        "authorization_code".into(),
    ];
    req.scopes = vec!["openid".into(), "groups".into()];
    req.post_logout_redirect_uris = vec!["https://ci.example/bye".into()];
    let conf = admin.create_client(&fx.actor, req).await.unwrap();
    let secret = conf.secret.expect("the secret is returned once");
    assert_eq!(
        conf.client.secret_hash.as_deref(),
        Some(idp::crypto::hash_secret(secret.expose()).as_str())
    );
    assert_eq!(
        conf.client.grant_types,
        ["client_credentials", "authorization_code"],
        "names normalised, each once"
    );
    assert_eq!(admin.client("ci").await.unwrap(), conf.client);
    assert_eq!(admin.clients().await.unwrap().len(), 2);
}

#[tokio::test]
async fn create_client_refusals_write_nothing() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let n = fx.count().await;
    let cases: Vec<(NewClientRequest, &str)> = vec![
        (
            NewClientRequest {
                grant_types: vec!["client_credentials".into()],
                ..client_request("cron", true)
            },
            "client_credentials",
        ),
        (
            NewClientRequest {
                redirect_uris: vec![],
                ..client_request("web", true)
            },
            "redirect",
        ),
        (
            NewClientRequest {
                redirect_uris: vec!["http://app.example/cb".into()],
                ..client_request("web", true)
            },
            "https",
        ),
        (
            NewClientRequest {
                post_logout_redirect_uris: vec!["https://app.example/#bye".into()],
                ..client_request("web", true)
            },
            "fragment",
        ),
        (
            NewClientRequest {
                grant_types: vec!["implicit".into()],
                ..client_request("web", true)
            },
            "unknown grant type",
        ),
        (
            NewClientRequest {
                scopes: vec!["open id".into()],
                ..client_request("web", true)
            },
            "scope",
        ),
        (
            NewClientRequest {
                redirect_uris: vec!["http://127.0.0.1:1".into(); 33],
                ..client_request("web", true)
            },
            "at most 32",
        ),
        (
            NewClientRequest {
                name: "n".repeat(129),
                ..client_request("web", true)
            },
            "at most 128",
        ),
        (client_request("no/slash", true), "not a valid name"),
    ];
    for (req, why) in cases {
        let err = invalid(admin.create_client(&fx.actor, req.clone()).await);
        assert!(err.contains(why), "{req:?}: {err}");
    }
    assert!(admin.clients().await.unwrap().is_empty());
    assert_eq!(fx.count().await, n);
    // Password-only clients need no redirect URI.
    let req = NewClientRequest {
        redirect_uris: vec![],
        grant_types: vec!["password".into(), "refresh_token".into()],
        ..client_request("legacy", true)
    };
    admin.create_client(&fx.actor, req).await.unwrap();
    let r = admin
        .create_client(&fx.actor, client_request("legacy", true))
        .await;
    assert!(matches!(&r, Err(e) if e.conflict().is_some()), "{r:?}");
}

#[tokio::test]
async fn rotate_secret_and_delete_client() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let first = admin
        .create_client(&fx.actor, client_request("ci", false))
        .await
        .unwrap()
        .secret
        .unwrap();
    fx.public_client("kubectl").await;
    let n = fx.count().await;
    let second = admin.rotate_client_secret(&fx.actor, "ci").await.unwrap();
    assert_ne!(first, second);
    let e = fx.one_new_event(n, "client_secret_rotated", "ci").await;
    assert_eq!(e.client_id, "ci");
    assert_eq!(
        admin.client("ci").await.unwrap().secret_hash,
        Some(idp::crypto::hash_secret(second.expose()))
    );
    not_found(admin.rotate_client_secret(&fx.actor, "kubectl").await);
    not_found(admin.rotate_client_secret(&fx.actor, "nope").await);
    assert_eq!(fx.count().await, n + 1);

    admin.delete_client(&fx.actor, "ci").await.unwrap();
    fx.one_new_event(n + 1, "client_deleted", "ci").await;
    not_found(admin.client("ci").await);
    not_found(admin.delete_client(&fx.actor, "ci").await);
}

#[tokio::test]
async fn live_tokens_per_client_and_forced_reauthentication() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.public_client("kubectl").await;
    fx.public_client("other").await;
    let alice = fx.user("alice", &[]).await;
    let bob = fx.user("bob", &[]).await;
    fx.family("a1", "kubectl", &alice.id).await;
    fx.clock.advance(1);
    fx.family("b1", "kubectl", &bob.id).await;
    fx.family("o1", "other", &bob.id).await;
    fx.session("sa", &alice.id).await;
    fx.store
        .save_consent(&alice.id, "kubectl", &["openid".into()], T0)
        .await
        .unwrap();

    let t = admin.client_tokens("kubectl", 1).await.unwrap();
    assert_eq!(t.live, 2);
    assert_eq!(t.newest.len(), 1, "at most the limit");
    assert_eq!(t.newest[0].username, "bob");
    assert_eq!(t.newest[0].family.id, "b1");
    not_found(admin.client_tokens("nope", 10).await);

    let n = fx.count().await;
    fx.clock.advance(10);
    let revoked = admin
        .force_reauthentication(&fx.actor, "kubectl")
        .await
        .unwrap();
    assert_eq!(revoked, 2);
    let e = fx
        .one_new_event(n, "client_tokens_revoked", "kubectl")
        .await;
    assert_eq!(e.severity, "warning");
    assert_eq!(e.client_id, "kubectl");
    assert!(e.details.starts_with("2 "), "{e:?}");
    assert_eq!(admin.client_tokens("kubectl", 10).await.unwrap().live, 0);
    assert_eq!(
        admin.client("kubectl").await.unwrap().tokens_valid_after,
        fx.clock.now(),
        "tokens issued before now are refused"
    );
    assert!(
        admin.sessions("alice").await.unwrap().is_empty(),
        "signed out"
    );
    assert_eq!(admin.client_tokens("other", 10).await.unwrap().live, 1);
    not_found(admin.force_reauthentication(&fx.actor, "nope").await);
    assert_eq!(fx.count().await, n + 1);
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rotating_a_key_keeps_the_old_one_published() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let n = fx.count().await;
    let k1 = admin
        .rotate_key(&fx.actor, idp::keys::Algorithm::Es256, None)
        .await
        .unwrap();
    fx.one_new_event(n, "signing_key_rotated", &k1.kid).await;
    assert!(k1.is_active() && !k1.encrypted);
    assert_eq!(k1.alg, "ES256");
    fx.clock.advance(3600);
    let k2 = admin
        .rotate_key(&fx.actor, idp::keys::Algorithm::Es256, None)
        .await
        .unwrap();
    let e = fx
        .one_new_event(n + 1, "signing_key_rotated", &k2.kid)
        .await;
    assert_eq!(e.severity, "warning");

    let keys = admin.keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, k2.kid);
    assert!(keys[0].is_active());
    assert_eq!(keys[0].age_secs, 0);
    assert_eq!(keys[1].kid, k1.kid);
    assert_eq!(keys[1].retired_at, Some(fx.clock.now()));
    assert_eq!(keys[1].age_secs, 3600);

    // The retired key still verifies the tokens it signed: JWKS publishes both.
    let config = idp::config::Config::for_issuer("http://idp.test").unwrap();
    let set = idp::state::load_keys(&config, &fx.store, fx.clock.now())
        .await
        .unwrap();
    assert_eq!(set.active.kid(), k2.kid);
    let mut published: Vec<&str> = set.published.iter().map(|k| k.kid()).collect();
    published.sort();
    let mut both = vec![k1.kid.as_str(), k2.kid.as_str()];
    both.sort();
    assert_eq!(published, both);
}

#[tokio::test]
async fn rotating_with_a_key_encryption_key_encrypts_every_key() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    admin
        .rotate_key(&fx.actor, idp::keys::Algorithm::Es256, None)
        .await
        .unwrap();
    let kek = idp::crypto::KeyEncryptionKey::from_bytes(&[7u8; 32]).unwrap();
    admin
        .rotate_key(&fx.actor, idp::keys::Algorithm::Es256, Some(&kek))
        .await
        .unwrap();
    assert!(admin.keys().await.unwrap().iter().all(|k| k.encrypted));
    // Without the key the stored keys cannot be read: refused before anything is written.
    let n = fx.count().await;
    let err = admin
        .rotate_key(&fx.actor, idp::keys::Algorithm::Es256, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("KEY_ENCRYPTION_KEY_FILE"), "{err}");
    assert_eq!(admin.keys().await.unwrap().len(), 2);
    assert_eq!(fx.count().await, n);
}

// ---------------------------------------------------------------------------------------------
// Audit queries
// ---------------------------------------------------------------------------------------------

/// Records a mixed log: logins of alice and bob from two addresses, failures, and admin actions.
async fn mixed_log(fx: &Fx) {
    let ev =
        |at: u64, event: &str, actor: &str, subject: &str, client: &str, ip: &str| AuditEvent {
            at,
            event: event.into(),
            severity: "info".into(),
            actor: actor.into(),
            subject: subject.into(),
            client_id: client.into(),
            ip: ip.into(),
            user_agent: "kubectl".into(),
            ..Default::default()
        };
    for e in [
        ev(T0, "login_failed", "alice", "", "kubectl", "192.0.2.1"),
        ev(
            T0 + 10,
            "login_succeeded",
            "alice",
            "",
            "kubectl",
            "192.0.2.1",
        ),
        ev(T0 + 20, "token_issued", "alice", "", "kubectl", "192.0.2.1"),
        ev(
            T0 + 30,
            "login_throttled",
            "bob",
            "",
            "kubectl",
            "198.51.100.2",
        ),
        ev(T0 + 40, "user_disabled", "root", "alice", "", "192.0.2.7"),
        ev(
            T0 + 50,
            "client_tokens_revoked",
            "cli:ops",
            "kubectl",
            "kubectl",
            "",
        ),
    ] {
        fx.store.record_audit(e).await.unwrap();
    }
}

#[tokio::test]
async fn audit_filters_by_every_field_and_outcome() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    mixed_log(&fx).await;
    let offsets = |q: AuditQuery| {
        let admin = &admin;
        async move {
            admin
                .audit_page(&q, None, 100)
                .await
                .unwrap()
                .events
                .iter()
                .map(|e| e.at - T0)
                .collect::<Vec<_>>()
        }
    };
    let q = AuditQuery::default;
    assert_eq!(offsets(q()).await, [50, 40, 30, 20, 10, 0]);
    assert_eq!(
        offsets(AuditQuery {
            event: Some("token_issued".into()),
            ..q()
        })
        .await,
        [20]
    );
    assert_eq!(
        offsets(AuditQuery {
            actor: Some("alice".into()),
            ..q()
        })
        .await,
        [20, 10, 0]
    );
    assert_eq!(
        offsets(AuditQuery {
            subject: Some("alice".into()),
            ..q()
        })
        .await,
        [40]
    );
    assert_eq!(
        offsets(AuditQuery {
            user: Some("alice".into()),
            ..q()
        })
        .await,
        [40, 20, 10, 0],
        "what alice did and what was done to her"
    );
    assert_eq!(
        offsets(AuditQuery {
            client_id: Some("kubectl".into()),
            ..q()
        })
        .await,
        [50, 30, 20, 10, 0]
    );
    assert_eq!(
        offsets(AuditQuery {
            ip: Some("198.51.100.2".into()),
            ..q()
        })
        .await,
        [30]
    );
    assert_eq!(
        offsets(AuditQuery {
            since: Some(T0 + 10),
            until: Some(T0 + 30),
            ..q()
        })
        .await,
        [30, 20, 10],
        "both bounds inclusive"
    );
    assert_eq!(
        offsets(AuditQuery {
            outcome: Some(Outcome::Failure),
            ..q()
        })
        .await,
        [30, 0]
    );
    assert_eq!(
        offsets(AuditQuery {
            outcome: Some(Outcome::Success),
            ..q()
        })
        .await,
        [50, 40, 20, 10]
    );
    assert_eq!(
        offsets(AuditQuery {
            user: Some("alice".into()),
            outcome: Some(Outcome::Success),
            until: Some(T0 + 20),
            ..q()
        })
        .await,
        [20, 10]
    );
    assert_eq!(Outcome::of("login_failed"), Outcome::Failure);
    assert_eq!(Outcome::of("login_succeeded"), Outcome::Success);
    assert!(FAILURE_EVENTS.contains(&"refresh_token_reused"));
    // A filter longer than the field it compares with is refused, not run.
    invalid(
        admin
            .audit_page(
                &AuditQuery {
                    actor: Some("a".repeat(65)),
                    ..q()
                },
                None,
                10,
            )
            .await,
    );
    invalid(
        admin
            .audit_csv(AuditQuery {
                ip: Some("1".repeat(65)),
                ..q()
            })
            .map(|_| ()),
    );
}

#[tokio::test]
async fn audit_keyset_paging_visits_every_event_once() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    for i in 0..23 {
        admin
            .create_group(&fx.actor, &format!("g{i:02}"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = admin
            .audit_page(&AuditQuery::default(), before, 10)
            .await
            .unwrap();
        // An event recorded while paging sorts above every page already read.
        admin
            .create_group(&fx.actor, &format!("late{}", seen.len()))
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.subject.clone()));
        match page.next {
            Some(id) => {
                assert_eq!(Some(id), page.events.last().map(|e| e.id));
                before = Some(id);
            }
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..23).map(|i| format!("g{i:02}")).collect();
    expected.reverse();
    assert_eq!(
        seen, expected,
        "newest first, each once, none recorded later"
    );
}

#[tokio::test]
async fn audit_csv_export_streams_exactly_the_filtered_set() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let rows = CSV_CHUNK as usize * 2 + 500;
    for i in 0..rows {
        let actor = if i % 2 == 0 {
            "=HYPERLINK(\"x\")"
        } else {
            "bob"
        };
        let e = AuditEvent {
            at: T0 + i as u64,
            event: "login_succeeded".into(),
            severity: "info".into(),
            actor: actor.into(),
            subject: String::new(),
            client_id: "kubectl".into(),
            ip: "192.0.2.1".into(),
            user_agent: "Mozilla/5.0 (X11, Linux)".into(),
            details: format!("n={i}"),
            ..Default::default()
        };
        fx.store.record_audit(e).await.unwrap();
    }
    let query = AuditQuery {
        actor: Some("=HYPERLINK(\"x\")".into()),
        ..Default::default()
    };
    let mut csv = admin.audit_csv(query.clone()).unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = csv.next_chunk().await.unwrap() {
        if chunks.is_empty() {
            // Recorded after the export started: not part of it.
            fx.store
                .record_audit(AuditEvent {
                    event: "login_succeeded".into(),
                    actor: "=HYPERLINK(\"x\")".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        chunks.push(chunk);
    }
    assert!(chunks.len() >= 2, "more than one chunk: {}", chunks.len());
    assert!(chunks[0].starts_with(CSV_HEADER));
    assert!(
        chunks[1..].iter().all(|c| !c.contains("id,at,event")),
        "one header"
    );
    let text = chunks.concat();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), rows.div_ceil(2), "exactly the filtered set");
    // Every row, in the order and with the bytes `audit::to_csv` gives the same events.
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = admin.audit_page(&query, before, 1000).await.unwrap();
        all.extend(page.events);
        match page.next {
            Some(id) => before = Some(id),
            None => break,
        }
    }
    let all: Vec<AuditEvent> = all.into_iter().filter(|e| e.at >= T0).collect();
    assert_eq!(text, idp::audit::to_csv(&all).unwrap());
    assert!(
        lines
            .iter()
            .all(|l| l.contains(",\"'=HYPERLINK(\"\"x\"\")\",")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("n={}", rows - 2)),
        "newest first: {}",
        lines[0]
    );

    // Nothing matches: the header alone.
    let mut none = admin
        .audit_csv(AuditQuery {
            actor: Some("nobody".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        none.next_chunk().await.unwrap().as_deref(),
        Some(CSV_HEADER)
    );
    assert_eq!(none.next_chunk().await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// One event whichever front end
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_command_line_and_the_console_record_the_same_event() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let cli = Actor::cli_user(Some("ops".into()), None, Some(1000));
    admin.create_group(&cli, "devs").await.unwrap();
    admin.create_group(&fx.actor, "ops").await.unwrap();
    let events = fx.events().await;
    let (console, command_line) = (&events[0], &events[1]);
    assert_eq!(command_line.actor, "cli:ops");
    assert_eq!(
        (command_line.ip.as_str(), command_line.user_agent.as_str()),
        ("", "")
    );
    assert_eq!(console.actor, "root");
    let same = |e: &AuditEvent| {
        (
            e.event.clone(),
            e.severity.clone(),
            e.client_id.clone(),
            e.details.clone(),
        )
    };
    assert_eq!(same(console), same(command_line));
}
