//! Who may do what on the admin console and the account pages: every route of
//! `routes::ADMIN_ROUTES` and `routes::ACCOUNT_ROUTES`, each method, times {anonymous, user,
//! admin, admin with a stale authentication}, with the exact status or redirect. The
//! expectations are tables keyed by route; the routers are built from the route tables, and a
//! route without a row here (or a row without a route) fails the test, so no page is added
//! unchecked.

use crate::common::{harness, Harness, Resp};
use axum::http::{header, Method, StatusCode};
use idp::clock::Clock;
use idp::routes::{ACCOUNT_ROUTES, ADMIN_ROUTES};
use idp::store::NewUser;
use idp::testing::{form_value, ALICE, ALICE_PASSWORD};

pub const ADMIN: &str = "root";
pub const ADMIN_PASSWORD: &str = "root-password-789";

/// One route's expectations: the path as registered, a concrete path for it (its targets
/// name nobody, so an admin's POST is refused without changing anything), and what a fresh
/// admin gets for GET and for a POST with a valid CSRF token and an empty form.
struct Row {
    route: &'static str,
    path: &'static str,
    admin_get: Option<u16>,
    admin_post: Option<u16>,
}

const fn row(route: &'static str, path: &'static str, get: Option<u16>, post: Option<u16>) -> Row {
    Row {
        route,
        path,
        admin_get: get,
        admin_post: post,
    }
}

const TABLE: &[Row] = &[
    row("/admin", "/admin", Some(200), None),
    // An empty password is asked for again.
    row("/admin/reauth", "/admin/reauth", Some(200), Some(400)),
    row("/admin/users", "/admin/users", Some(200), None),
    // An empty form is refused by the admin layer's validation.
    row("/admin/users/new", "/admin/users/new", Some(200), Some(400)),
    row(
        "/admin/users/{username}",
        "/admin/users/ghost",
        Some(404),
        None,
    ),
    row(
        "/admin/users/{username}/edit",
        "/admin/users/ghost/edit",
        Some(404),
        Some(404),
    ),
    row(
        "/admin/users/{username}/password",
        "/admin/users/ghost/password",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/users/{username}/disable",
        "/admin/users/ghost/disable",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/users/{username}/enable",
        "/admin/users/ghost/enable",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/users/{username}/delete",
        "/admin/users/ghost/delete",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/users/{username}/sessions/revoke",
        "/admin/users/ghost/sessions/revoke?session=s1",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/users/{username}/authorizations/revoke",
        "/admin/users/ghost/authorizations/revoke?client=kubelogin",
        Some(200),
        Some(404),
    ),
    row("/admin/groups", "/admin/groups", Some(200), Some(400)),
    row(
        "/admin/groups/{name}",
        "/admin/groups/ghost",
        Some(404),
        None,
    ),
    row(
        "/admin/groups/{name}/members",
        "/admin/groups/ghost/members",
        Some(404),
        Some(404),
    ),
    row(
        "/admin/groups/{name}/members/remove",
        "/admin/groups/ghost/members/remove?username=alice",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/groups/{name}/delete",
        "/admin/groups/ghost/delete",
        Some(200),
        Some(404),
    ),
    row("/admin/clients", "/admin/clients", Some(200), None),
    row(
        "/admin/clients/new",
        "/admin/clients/new",
        Some(200),
        Some(400),
    ),
    row(
        "/admin/clients/{client_id}",
        "/admin/clients/ghost",
        Some(404),
        None,
    ),
    row(
        "/admin/clients/{client_id}/rotate-secret",
        "/admin/clients/ghost/rotate-secret",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/clients/{client_id}/force-reauthentication",
        "/admin/clients/ghost/force-reauthentication",
        Some(200),
        Some(404),
    ),
    row(
        "/admin/clients/{client_id}/delete",
        "/admin/clients/ghost/delete",
        Some(200),
        Some(404),
    ),
    row("/admin/keys", "/admin/keys", Some(200), None),
    // Rotating the signing key is the one harmless action a POST really runs.
    row(
        "/admin/keys/rotate",
        "/admin/keys/rotate",
        Some(200),
        Some(200),
    ),
    row("/admin/audit", "/admin/audit", Some(200), None),
    row("/admin/audit.csv", "/admin/audit.csv", Some(200), None),
];

/// An administrator (`is_admin`) next to the seeded users.
pub async fn add_admin(h: &Harness) {
    let hash = idp::crypto::hash_password(ADMIN_PASSWORD).unwrap();
    h.state
        .store
        .create_user(
            NewUser {
                username: ADMIN.into(),
                email: "root@example.com".into(),
                name: "Root Admin".into(),
                password_hash: Some(hash),
                is_admin: true,
            },
            h.clock.now(),
        )
        .await
        .unwrap();
}

/// The CSRF token of the session in `cookies`, read from a console page's form.
pub async fn csrf(h: &Harness, cookies: &[String]) -> String {
    let r = h.get("/admin/groups", cookies).await;
    form_value(&r.body, "csrf_token").unwrap_or_else(|| panic!("no form token: {}", r.body))
}

fn login_redirect(path: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", path)
        .finish();
    format!("/login?{q}")
}

fn reauth_redirect(path: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", path)
        .finish();
    format!("/admin/reauth?{q}")
}

async fn send(h: &Harness, method: &Method, path: &str, cookies: &[String], csrf: &str) -> Resp {
    if method == Method::GET {
        return h.get(path, cookies).await;
    }
    let body = if csrf.is_empty() {
        String::new()
    } else {
        format!("csrf_token={csrf}")
    };
    let req = axum::http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookies.join("; "))
        .body(axum::body::Body::from(body))
        .unwrap();
    h.call(req).await
}

#[tokio::test]
async fn every_admin_route_method_and_persona() {
    // The table and the router name the same routes, each once.
    for r in ADMIN_ROUTES {
        assert_eq!(
            TABLE.iter().filter(|t| t.route == r.path).count(),
            1,
            "route {} has no row (or several) in the access-control table",
            r.path
        );
    }
    for t in TABLE {
        let route = ADMIN_ROUTES.iter().find(|r| r.path == t.route);
        let route = route.unwrap_or_else(|| panic!("{} is in the table but not routed", t.route));
        let has = |m: &str| route.methods.contains(&m);
        assert_eq!(has("GET"), t.admin_get.is_some(), "{}: GET", t.route);
        assert_eq!(has("POST"), t.admin_post.is_some(), "{}: POST", t.route);
    }

    let h = harness().await;
    add_admin(&h).await;
    let user = h.login(ALICE, ALICE_PASSWORD).await;
    // The stale admin signed in 16 minutes ago (ADMIN_REAUTH_AFTER is 15), the fresh one now;
    // neither is idle (30 minutes).
    let stale = h.login(ADMIN, ADMIN_PASSWORD).await;
    h.clock.advance(16 * 60);
    let admin = h.login(ADMIN, ADMIN_PASSWORD).await;
    let admin_csrf = csrf(&h, &admin).await;
    let stale_csrf = csrf(&h, &stale).await;
    let user_csrf = idp::web::csrf::session_token(&h.state, &{
        let mut m = axum::http::HeaderMap::new();
        m.insert(header::COOKIE, user.join("; ").parse().unwrap());
        m
    })
    .await
    .unwrap();

    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    for t in TABLE {
        let route = ADMIN_ROUTES.iter().find(|r| r.path == t.route).unwrap();
        let bare = t.path.split('?').next().unwrap();
        for m in &methods {
            let served = route.methods.contains(&m.as_str());
            let ctx = format!("{m} {}", t.path);
            if !served {
                for (who, cookies) in [("anonymous", &vec![]), ("user", &user), ("admin", &admin)] {
                    let r = send(&h, m, t.path, cookies, &admin_csrf).await;
                    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{ctx} as {who}");
                }
                continue;
            }
            // Anonymous: the login page, coming back to the page (a POST: to its path).
            let r = send(&h, m, t.path, &[], "").await;
            assert_eq!(
                r.status,
                StatusCode::SEE_OTHER,
                "{ctx} anonymous: {}",
                r.body
            );
            let back = if m == Method::GET { t.path } else { bare };
            assert_eq!(r.location(), login_redirect(back), "{ctx} anonymous");
            // A signed-in user who is not an admin: 403, even with their own valid token.
            let r = send(&h, m, t.path, &user, &user_csrf).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{ctx} as user");
            // The admin.
            let want = if m == Method::GET {
                t.admin_get
            } else {
                t.admin_post
            }
            .unwrap();
            let r = send(&h, m, t.path, &admin, &admin_csrf).await;
            assert_eq!(r.status.as_u16(), want, "{ctx} as admin: {}", r.body);
            if m == Method::POST {
                // Without the session's token: refused, whatever the route.
                let r = send(&h, m, t.path, &admin, "").await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{ctx} as admin without CSRF"
                );
                let r = send(&h, m, t.path, &admin, &stale_csrf).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{ctx} as admin with another session's token"
                );
            }
            // The admin whose authentication is stale: pages as usual; actions ask for the
            // password first (the re-authentication itself excepted).
            let r = send(&h, m, t.path, &stale, &stale_csrf).await;
            if m == Method::GET || t.route == "/admin/reauth" {
                assert_eq!(r.status.as_u16(), want, "{ctx} as stale admin: {}", r.body);
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::SEE_OTHER,
                    "{ctx} as stale admin: {}",
                    r.body
                );
                assert_eq!(r.location(), reauth_redirect(bare), "{ctx} as stale admin");
            }
        }
    }
}

#[tokio::test]
async fn an_admin_group_member_is_an_admin_and_leaving_it_ends_that() {
    let h = crate::common::harness_with(|c| c.admin_group = Some("developers".into())).await;
    // Alice is in `developers` (the seed), Bob is not.
    let alice = h.login(ALICE, ALICE_PASSWORD).await;
    assert_eq!(h.get("/admin", &alice).await.status, StatusCode::OK);
    let bob = h.login(idp::testing::BOB, idp::testing::BOB_PASSWORD).await;
    assert_eq!(h.get("/admin", &bob).await.status, StatusCode::FORBIDDEN);
    let a = h
        .state
        .store
        .user_by_username(ALICE)
        .await
        .unwrap()
        .unwrap();
    h.state
        .store
        .remove_group_member("developers", &a.id)
        .await
        .unwrap();
    assert_eq!(h.get("/admin", &alice).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_idle_admin_session_signs_in_again() {
    let h = harness().await;
    add_admin(&h).await;
    let admin = h.login(ADMIN, ADMIN_PASSWORD).await;
    // Used every 20 minutes, the session stays (each admin request marks it used)...
    for _ in 0..3 {
        h.clock.advance(20 * 60);
        assert_eq!(h.get("/admin/users", &admin).await.status, StatusCode::OK);
    }
    // ...but 31 minutes without an admin page is too long.
    h.clock.advance(31 * 60);
    let r = h.get("/admin/users", &admin).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), login_redirect("/admin/users"));
}

#[tokio::test]
async fn reauthentication_asks_for_the_password_then_goes_back() {
    let h = harness().await;
    add_admin(&h).await;
    let admin = h.login(ADMIN, ADMIN_PASSWORD).await;
    let token = csrf(&h, &admin).await;
    h.clock.advance(16 * 60);
    let form = [("csrf_token", token.as_str()), ("name", "ops")];
    let r = h.post("/admin/groups", &form, &admin, &[]).await;
    assert_eq!(r.location(), reauth_redirect("/admin/groups"));
    assert!(h
        .state
        .store
        .list_groups()
        .await
        .unwrap()
        .iter()
        .all(|g| g.name != "ops"));

    let page = h.get(&r.location(), &admin).await;
    assert_eq!(page.status, StatusCode::OK);
    let return_to = form_value(&page.body, "return_to").unwrap();
    assert_eq!(return_to, "/admin/groups");
    // Without the token, and with a wrong password: refused, still stale.
    let r = h
        .post(
            "/admin/reauth",
            &[("password", ADMIN_PASSWORD)],
            &admin,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let wrong = [
        ("csrf_token", token.as_str()),
        ("return_to", "/admin/groups"),
        ("password", "nope-nope-nope"),
    ];
    let r = h.post("/admin/reauth", &wrong, &admin, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Wrong password"), "{}", r.body);
    // A foreign return_to is not followed.
    let evil = [
        ("csrf_token", token.as_str()),
        ("return_to", "https://evil.example/admin"),
        ("password", ADMIN_PASSWORD),
    ];
    let r = h.post("/admin/reauth", &evil, &admin, &[]).await;
    assert_eq!(r.location(), "/admin");
    // Now fresh: the action goes through.
    let r = h.post("/admin/groups", &form, &admin, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/admin/groups/ops");
    assert!(h
        .state
        .store
        .list_groups()
        .await
        .unwrap()
        .iter()
        .any(|g| g.name == "ops"));
    let events = h
        .state
        .store
        .audit_events(idp::store::AuditFilter {
            event: Some("admin_reauthenticated".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, ADMIN);
}

#[tokio::test]
async fn the_root_page_leads_to_sign_in_the_account_and_for_admins_the_console() {
    let h = harness().await;
    add_admin(&h).await;
    let anon = h.get("/", &[]).await;
    assert_eq!(anon.status, StatusCode::OK);
    assert!(anon.body.contains("href=\"/login\""), "{}", anon.body);
    assert!(!anon.body.contains("/account\"") && !anon.body.contains("/admin\""));
    let alice = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h.get("/", &alice).await;
    assert!(page.body.contains("Signed in as alice"));
    assert!(page.body.contains("href=\"/account\""));
    assert!(
        !page.body.contains("href=\"/admin\""),
        "no console link for a user"
    );
    let admin = h.login(ADMIN, ADMIN_PASSWORD).await;
    let page = h.get("/", &admin).await;
    assert!(page.body.contains("href=\"/account\""));
    assert!(page.body.contains("href=\"/admin\""));
}

/// One account route's expectations: the path as registered, a concrete path for it, where an
/// anonymous GET is sent to sign in first (the page comes back to its list, not to a
/// confirmation of something that may be gone), and what any signed-in person (user, admin,
/// stale admin alike: the account pages ask no re-authentication) gets for GET and for a POST
/// with their valid CSRF token and an otherwise empty form, with the redirect if it is one.
struct AccountRow {
    route: &'static str,
    path: &'static str,
    login_back: &'static str,
    get: Option<u16>,
    post: Option<(u16, &'static str)>,
}

const ANY_SESSION: &str = "/account/sessions/revoke?session=0000000000000000000000000000000000000000000000000000000000000000";

const ACCOUNT_TABLE: &[AccountRow] = &[
    AccountRow {
        route: "/account",
        path: "/account",
        login_back: "/account",
        get: Some(200),
        post: None,
    },
    // An empty display name is allowed (the admin layer bounds it, nothing more).
    AccountRow {
        route: "/account/profile",
        path: "/account/profile",
        login_back: "",
        get: None,
        post: Some((303, "/account?done=profile")),
    },
    // An empty current password is wrong: the page again, with the error.
    AccountRow {
        route: "/account/password",
        path: "/account/password",
        login_back: "",
        get: None,
        post: Some((400, "")),
    },
    AccountRow {
        route: "/account/sessions",
        path: "/account/sessions",
        login_back: "/account/sessions",
        get: Some(200),
        post: None,
    },
    // A form without a session reference is refused before anything is looked up.
    AccountRow {
        route: "/account/sessions/revoke",
        path: ANY_SESSION,
        login_back: "/account/sessions",
        get: Some(200),
        post: Some((400, "")),
    },
    // Signs out the person's other sessions (each persona below is a fresh session, so this
    // ends only earlier ones the test no longer uses).
    AccountRow {
        route: "/account/sessions/revoke-others",
        path: "/account/sessions/revoke-others",
        login_back: "/account/sessions",
        get: Some(200),
        post: Some((303, "/account/sessions?done=others")),
    },
    AccountRow {
        route: "/account/authorizations",
        path: "/account/authorizations",
        login_back: "/account/authorizations",
        get: Some(200),
        post: None,
    },
    AccountRow {
        route: "/account/authorizations/revoke",
        path: "/account/authorizations/revoke?client_id=kubelogin",
        login_back: "/account/authorizations",
        get: Some(200),
        post: Some((400, "")),
    },
];

/// A fresh session of `who` and its form token; the stale admin's authentication is 16
/// minutes old (ADMIN_REAUTH_AFTER is 15).
async fn persona(h: &Harness, who: &str) -> (Vec<String>, String) {
    let cookies = match who {
        "user" => h.login(ALICE, ALICE_PASSWORD).await,
        "admin" => h.login(ADMIN, ADMIN_PASSWORD).await,
        _ => {
            let c = h.login(ADMIN, ADMIN_PASSWORD).await;
            h.clock.advance(16 * 60);
            c
        }
    };
    let mut m = axum::http::HeaderMap::new();
    m.insert(header::COOKIE, cookies.join("; ").parse().unwrap());
    let token = idp::web::csrf::session_token(&h.state, &m).await.unwrap();
    assert!(!token.is_empty());
    (cookies, token)
}

#[tokio::test]
async fn every_account_route_method_and_persona() {
    for r in ACCOUNT_ROUTES {
        assert_eq!(
            ACCOUNT_TABLE.iter().filter(|t| t.route == r.path).count(),
            1,
            "route {} has no row (or several) in the account access-control table",
            r.path
        );
    }
    for t in ACCOUNT_TABLE {
        let route = ACCOUNT_ROUTES.iter().find(|r| r.path == t.route);
        let route = route.unwrap_or_else(|| panic!("{} is in the table but not routed", t.route));
        assert_eq!(
            route.methods.contains(&"GET"),
            t.get.is_some(),
            "{}",
            t.route
        );
        assert_eq!(
            route.methods.contains(&"POST"),
            t.post.is_some(),
            "{}",
            t.route
        );
    }

    let h = harness().await;
    add_admin(&h).await;
    // Someone else's session, whose token must not pass for anyone's.
    let (_, foreign) = persona(&h, "user").await;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let personas = ["user", "admin", "stale admin"];
    for t in ACCOUNT_TABLE {
        let route = ACCOUNT_ROUTES.iter().find(|r| r.path == t.route).unwrap();
        for m in &methods {
            let ctx = format!("{m} {}", t.path);
            if !route.methods.contains(&m.as_str()) {
                let (user, token) = persona(&h, "user").await;
                for (who, cookies) in [("anonymous", &vec![]), ("user", &user)] {
                    let r = send(&h, m, t.path, cookies, &token).await;
                    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{ctx} as {who}");
                }
                continue;
            }
            if m == Method::GET {
                // Anonymous: the login page, coming back.
                let r = send(&h, m, t.path, &[], "").await;
                assert_eq!(r.status, StatusCode::SEE_OTHER, "{ctx} anonymous");
                assert_eq!(
                    r.location(),
                    login_redirect(t.login_back),
                    "{ctx} anonymous"
                );
                for who in personas {
                    let (cookies, token) = persona(&h, who).await;
                    let r = send(&h, m, t.path, &cookies, &token).await;
                    assert_eq!(
                        r.status.as_u16(),
                        t.get.unwrap(),
                        "{ctx} as {who}: {}",
                        r.body
                    );
                }
                continue;
            }
            // POST. Anonymous, with or without a token: the CSRF check refuses first (no
            // session, so no token can be right), before any sign-in redirect.
            for token in ["", foreign.as_str()] {
                let r = send(&h, m, t.path, &[], token).await;
                assert_eq!(
                    r.status,
                    StatusCode::FORBIDDEN,
                    "{ctx} anonymous: {}",
                    r.body
                );
                assert!(r.body.contains("CSRF check failed"), "{ctx}: {}", r.body);
            }
            let (want, to) = t.post.unwrap();
            for who in personas {
                let (cookies, token) = persona(&h, who).await;
                for wrong in ["", foreign.as_str()] {
                    let r = send(&h, m, t.path, &cookies, wrong).await;
                    assert_eq!(r.status, StatusCode::FORBIDDEN, "{ctx} as {who}, bad token");
                }
                let r = send(&h, m, t.path, &cookies, &token).await;
                assert_eq!(r.status.as_u16(), want, "{ctx} as {who}: {}", r.body);
                assert_eq!(r.location(), to, "{ctx} as {who}");
                // The session is still there (an action on one's own account never asks for
                // re-authentication, stale or not).
                let r = h.get("/account", &cookies).await;
                assert_eq!(r.status, StatusCode::OK, "{ctx} as {who}: signed out after");
            }
        }
    }
}
