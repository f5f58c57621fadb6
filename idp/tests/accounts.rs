//! Accounts through the router: bounded login input, throttling keyed on the client address
//! (IPv6 /64, behind a trusted proxy), progressive locks that never lock an owner out from a
//! clean address, one audit row per lock, device user-code limits and the device request's
//! origin on the approval page, audit retention. Client addresses are set the way the server
//! sets them (`ConnectInfo`), the clock is moved by hand.

use super::common::*;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use idp::audit::TRUNCATION_MARK;
use idp::clock::Clock;
use idp::store::{AuditEvent, AuditFilter};
use idp::testing::{form_value, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, PASSWORD_CLIENT};
use std::net::SocketAddr;
use std::time::Duration;

/// A request as it reaches the router from `peer`, with extra headers.
async fn send(h: &Harness, mut req: Request<Body>, peer: &str, extra: &[(&str, &str)]) -> Resp {
    for (k, v) in extra {
        req.headers_mut().insert(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let addr = SocketAddr::new(peer.parse().unwrap(), 40_000);
    req.extensions_mut().insert(ConnectInfo(addr));
    h.call(req).await
}

async fn post_from(
    h: &Harness,
    path: &str,
    form: &[(&str, &str)],
    cookies: &[String],
    peer: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookies.join("; "))
        .body(Body::from(body))
        .unwrap();
    send(h, req, peer, extra).await
}

async fn get_from(h: &Harness, path: &str, cookies: &[String], peer: &str) -> Resp {
    let req = Request::get(path)
        .header(header::COOKIE, cookies.join("; "))
        .body(Body::empty())
        .unwrap();
    send(h, req, peer, &[]).await
}

/// A login attempt from `peer` (a fresh login form each time, as a browser would have).
async fn login_from(
    h: &Harness,
    peer: &str,
    forwarded_for: Option<&str>,
    user: &str,
    password: &str,
) -> Resp {
    let page = get_from(h, "/login", &[], peer).await;
    let cookies = page.cookies();
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    let extra: Vec<(&str, &str)> = forwarded_for
        .map(|f| ("x-forwarded-for", f))
        .into_iter()
        .collect();
    post_from(
        h,
        "/login",
        &[
            ("csrf_token", &csrf),
            ("return_to", ""),
            ("username", user),
            ("password", password),
        ],
        &cookies,
        peer,
        &extra,
    )
    .await
}

async fn audit(h: &Harness, event: &str) -> Vec<AuditEvent> {
    h.state
        .store
        .audit_events(AuditFilter {
            event: Some(event.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn fields(e: &AuditEvent) -> [&String; 8] {
    [
        &e.event,
        &e.severity,
        &e.actor,
        &e.subject,
        &e.client_id,
        &e.ip,
        &e.user_agent,
        &e.details,
    ]
}

// ---------------------------------------------------------------------------------------------
// Bounded input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_overlong_username_is_wrong_and_never_stored_or_kept() {
    let h = harness_with(|c| c.login_max_failures_per_ip = 3).await;
    let long = "a".repeat(60 * 1024);
    // Even an account with that name (which the CLI could never create) is not looked up.
    let pw = idp::crypto::hash_password("long-name-password").unwrap();
    h.state
        .store
        .create_user(
            idp::store::NewUser {
                username: long.clone(),
                email: "long@example.com".into(),
                name: String::new(),
                password_hash: Some(pw),
                is_admin: false,
            },
            h.clock_now(),
        )
        .await
        .unwrap();
    let r = login_from(&h, "203.0.113.9", None, &long, "long-name-password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", &r.body[..200]);
    assert!(r.body.contains("Wrong username or password."));
    assert!(!r.body.contains(&"a".repeat(65)), "the name is not echoed");
    // The password grant shares the check.
    let r = post_from(
        &h,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", &long),
            ("password", "long-name-password"),
        ],
        &[],
        "203.0.113.9",
        &[],
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // The address counts the failures: the third locks it, and a locked address's over-long
    // names reach the audit table bounded too.
    login_from(&h, "203.0.113.9", None, &long, "x").await;
    let r = login_from(&h, "203.0.113.9", None, &long, "x").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let all = h
        .state
        .store
        .audit_events(AuditFilter::default())
        .await
        .unwrap();
    assert!(all.iter().any(|e| e.event == "login_throttled"));
    for e in &all {
        for f in fields(e) {
            assert!(f.chars().count() <= 512, "{}: {} chars", e.event, f.len());
            assert!(!f.contains(&"a".repeat(65)), "raw name in {e:?}");
        }
    }
    let failed = audit(&h, "login_failed").await;
    assert_eq!(failed.len(), 3);
    for e in &failed {
        assert_eq!(e.actor.chars().count(), 64, "a marked truncation");
        assert!(e.actor.ends_with(TRUNCATION_MARK));
    }
    for k in h.state.store.throttle_keys().await.unwrap() {
        assert!(k.len() <= 128 && !k.contains(&"a".repeat(65)), "{k}");
    }
}

#[tokio::test]
async fn many_throttled_attempts_leave_one_audit_row_with_a_count() {
    let h = harness().await;
    for _ in 0..5 {
        login_from(&h, "203.0.113.66", None, ALICE, "nope").await;
    }
    for _ in 0..100 {
        let r = login_from(&h, "203.0.113.66", None, ALICE, "nope").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let rows = audit(&h, "login_throttled").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].subject, "user alice from 203.0.113.66");
    assert!(
        rows[0].details.starts_with("100 attempts refused"),
        "{}",
        rows[0].details
    );
    // The next lock gets its own row.
    h.clock.advance(16 * 60);
    for _ in 0..6 {
        login_from(&h, "203.0.113.66", None, ALICE, "nope").await;
    }
    let rows = audit(&h, "login_throttled").await;
    assert_eq!(rows.len(), 2);
    assert!(rows[0].details.starts_with("1 attempts refused"));
}

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_attacker_cannot_lock_the_owner_out_from_a_clean_address() {
    let h = harness().await;
    for _ in 0..5 {
        let r = login_from(&h, "203.0.113.66", None, ALICE, "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&h, "203.0.113.66", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the failing address waits, even with the right password"
    );
    let r = login_from(&h, "198.51.100.7", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "the owner from an address that has not failed signs in"
    );
    let r = login_from(&h, "198.51.100.8", None, ALICE, "typo").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another clean address gets a plain answer"
    );
}

#[tokio::test]
async fn guesses_spread_over_many_addresses_lock_the_account_for_failing_addresses_only() {
    let h = harness().await;
    // 20 addresses, each staying under its own limits (one guess each).
    for i in 1..=20 {
        let r = login_from(&h, &format!("203.0.113.{i}"), None, ALICE, "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The next guess from any of them is held back, account-wide.
    let r = login_from(&h, "203.0.113.7", None, ALICE, "guess-again").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Other accounts are not affected, and the owner from a clean address still signs in.
    let r = login_from(&h, "203.0.113.7", None, BOB, "wrong").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = login_from(&h, "198.51.100.7", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn each_lock_of_an_address_lasts_longer() {
    let h = harness().await;
    let attacker = "203.0.113.66";
    for _ in 0..5 {
        login_from(&h, attacker, None, ALICE, "guess").await;
    }
    h.clock.advance(16 * 60);
    for _ in 0..5 {
        let r = login_from(&h, attacker, None, ALICE, "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the first lock is over");
    }
    h.clock.advance(16 * 60);
    let r = login_from(&h, attacker, None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the second lock lasts 30 minutes"
    );
    assert!(r.body.contains("Try again in 14 minutes"), "{}", r.body);
    h.clock.advance(14 * 60);
    let r = login_from(&h, attacker, None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn ipv6_addresses_of_one_64_share_their_counters() {
    let h = harness_with(|c| c.login_max_failures_per_ip = 6).await;
    // Per account and address: failures spread over one /64 add up.
    for (i, peer) in [
        "2001:db8:1:2::10",
        "2001:db8:1:2::11",
        "2001:db8:1:2:ffff::1",
    ]
    .iter()
    .cycle()
    .take(5)
    .enumerate()
    {
        let r = login_from(&h, peer, None, ALICE, &format!("guess{i}")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&h, "2001:db8:1:2::12", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = login_from(&h, "2001:db8:1:3::12", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "the next /64 is another address"
    );
    // Per address: one more failure in the /64, with another name, reaches the address limit.
    let r = login_from(&h, "2001:db8:1:2::99", None, "nobody", "x").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = login_from(&h, "2001:db8:1:2:abcd::1", None, BOB, BOB_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(h
        .state
        .store
        .throttle_keys()
        .await
        .unwrap()
        .contains(&"ip 2001:db8:1:2::/64".to_string()));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_is_throttled_alone() {
    let proxy = "10.0.0.1";
    let h = harness_with(|c| {
        c.trusted_proxies = vec![proxy.parse().unwrap()];
        c.login_max_failures_per_ip = 6;
    })
    .await;
    // Per account and address.
    for _ in 0..5 {
        let r = login_from(&h, proxy, Some("203.0.113.5"), ALICE, "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&h, proxy, Some("203.0.113.5"), ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = login_from(&h, proxy, Some("203.0.113.6"), ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "another client behind the same proxy"
    );
    // Per address, whatever the names.
    for i in 0..6 {
        let r = login_from(&h, proxy, Some("203.0.113.7"), &format!("user{i}"), "x").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&h, proxy, Some("203.0.113.7"), BOB, BOB_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = login_from(&h, proxy, Some("203.0.113.8"), BOB, BOB_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // The proxy's own address was never the key.
    let keys = h.state.store.throttle_keys().await.unwrap();
    assert!(keys.iter().all(|k| !k.contains(proxy)), "{keys:?}");
}

/// The throttle fails closed: while the database cannot check or count (its table made
/// unreadable by another connection, a real SQLite error), neither the right password nor a
/// wrong one gets through, both answered with the generic 500 and no session; once the table is
/// back, the owner signs in and the earlier failure still counts.
#[tokio::test]
async fn a_throttle_the_database_cannot_check_refuses_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let h = harness_on(&format!("sqlite://{}", db.display())).await;
    idp::testing::seed(h.state.store.as_ref(), h.clock.now()).await;
    let r = login_from(&h, "203.0.113.40", None, ALICE, "wrong").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let other = rusqlite::Connection::open(&db).unwrap();
    other.busy_timeout(Duration::from_secs(10)).unwrap();
    other
        .execute_batch("ALTER TABLE throttle RENAME TO throttle_away")
        .unwrap();
    for password in [ALICE_PASSWORD, "wrong"] {
        let r = login_from(&h, "203.0.113.40", None, ALICE, password).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
        assert!(
            r.cookies().iter().all(|c| !c.contains("session")),
            "{:?}",
            r.cookies()
        );
    }
    assert!(audit(&h, "login_succeeded").await.is_empty());
    other
        .execute_batch("ALTER TABLE throttle_away RENAME TO throttle")
        .unwrap();
    let r = login_from(&h, "203.0.113.40", None, ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(h
        .state
        .store
        .throttle_has_history("ip 203.0.113.40", h.clock.now())
        .await
        .unwrap());
}

// ---------------------------------------------------------------------------------------------
// Device user codes
// ---------------------------------------------------------------------------------------------

/// Starts a device authorization from `peer` with a user agent; returns the user code.
async fn device_start_from(h: &Harness, peer: &str, user_agent: &str) -> String {
    let r = post_from(
        h,
        "/oauth/device/code",
        &[("client_id", "kubelogin"), ("scope", "openid")],
        &[],
        peer,
        &[("user-agent", user_agent)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()["user_code"].as_str().unwrap().to_string()
}

async fn enter_code(h: &Harness, cookies: &[String], peer: &str, code: &str) -> StatusCode {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", code)
        .finish();
    get_from(h, &format!("/device?{q}"), cookies, peer)
        .await
        .status
}

#[tokio::test]
async fn device_code_entry_is_limited_per_session_and_per_address() {
    let h = harness_with(|c| c.login_max_failures_per_ip = 8).await;
    let code = device_start_from(&h, "198.51.100.1", "kubectl-oidc_login").await;
    let (a, b) = ("203.0.113.1", "203.0.113.2");
    let s1 = h.login(ALICE, ALICE_PASSWORD).await;
    let s2 = h.login(BOB, BOB_PASSWORD).await;
    // The approval form of s1, for deciding later.
    let q = format!("/device?user_code={code}");
    let csrf = form_value(&get_from(&h, &q, &s1, b).await.body, "csrf_token").unwrap();
    for _ in 0..5 {
        assert_eq!(
            enter_code(&h, &s1, a, "BCDF-GHJK").await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        enter_code(&h, &s1, b, &code).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the session is locked wherever it comes from"
    );
    let long = "B".repeat(10_000);
    assert_eq!(
        enter_code(&h, &s2, a, &code).await,
        StatusCode::OK,
        "another session on that address is not"
    );
    for wrong in ["BCDF-GHJK", &long, "XXXX"] {
        assert_eq!(enter_code(&h, &s2, a, wrong).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        enter_code(&h, &s2, a, &code).await,
        StatusCode::TOO_MANY_REQUESTS,
        "eight wrong codes lock the address"
    );
    assert_eq!(enter_code(&h, &s2, b, &code).await, StatusCode::OK);
    // Deciding goes through the same lock.
    let r = post_from(
        &h,
        "/device",
        &[
            ("csrf_token", &csrf),
            ("user_code", &code),
            ("decision", "allow"),
        ],
        &s1,
        b,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        audit(&h, "device_code_throttled").await.len(),
        2,
        "one row per lock"
    );
    // Locks end.
    h.clock.advance(15 * 60);
    let code = device_start_from(&h, "198.51.100.1", "kubectl-oidc_login").await;
    assert_eq!(enter_code(&h, &s1, a, &code).await, StatusCode::OK);
}

#[tokio::test]
async fn the_approval_page_shows_when_and_from_where_the_device_asked() {
    let h = harness().await;
    let code = device_start_from(&h, "198.51.100.23", "relay-1.0 <b>x").await;
    h.clock.advance(180);
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let q = format!("/device?user_code={code}");
    let page = get_from(&h, &q, &cookies, "203.0.113.5").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Requested 3 minutes ago"),
        "{}",
        page.body
    );
    assert!(page.body.contains("198.51.100.23"));
    assert!(page.body.contains("relay-1.0 &lt;b&gt;x"), "escaped");
    assert!(!page.body.contains("the address this page is open from"));
    let page = get_from(&h, &q, &cookies, "198.51.100.23").await;
    assert!(page.body.contains("the address this page is open from"));
}

// ---------------------------------------------------------------------------------------------
// Audit retention
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_periodic_purge_drops_audit_events_past_retention() {
    let h = harness_with(|c| c.audit_retention = 30 * 86_400).await;
    let event = |name: &str| idp::audit::Event::new(name, idp::audit::INFO);
    idp::audit::record(&h.state, event("old_event")).await;
    h.clock.advance(31 * 86_400);
    idp::audit::record(&h.state, event("new_event")).await;
    idp::server::purge_expired(&h.state).await.unwrap();
    let left: Vec<String> = h
        .state
        .store
        .audit_events(AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(left, ["new_event"]);
}
