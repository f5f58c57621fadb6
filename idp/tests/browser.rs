//! Browser-facing security of the IdP's pages, through the router: where a sign-in may return
//! to, CSRF tokens bound to the session, cookie names, logout confirmation, `iss` in every
//! authorization response (RFC 9207), and the out-of-band code page.

use super::common::*;
use axum::http::{header, StatusCode};
use idp::testing::{form_value, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD};

const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Where a browser lands on a `Location`, resolved as WHATWG URL does (TAB/CR/LF stripped,
/// `\` read as `/`), from the login page.
fn landing(location: &str) -> url::Url {
    url::Url::parse(&format!("{ISSUER}/login"))
        .unwrap()
        .join(location)
        .unwrap()
}

fn issuer_origin() -> url::Origin {
    url::Url::parse(ISSUER).unwrap().origin()
}

/// Signs in with a given `return_to` and returns the redirect's Location.
async fn login_returning_to(h: &Harness, return_to: &str) -> String {
    let page = h.get("/login", &[]).await;
    let csrf = form_value(&page.body, "csrf_token").unwrap();
    let r = h
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("return_to", return_to),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &page.cookies(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    r.location()
}

fn authorize_query(redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let (_, challenge) = pkce_pair();
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.extend_pairs([
        ("client_id", "kubelogin"),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    q.extend_pairs(extra);
    format!("/oauth/authorize?{}", q.finish())
}

// ---- Item 1: return_to -----------------------------------------------------------------------

#[tokio::test]
async fn return_to_with_a_tab_never_sends_the_browser_to_another_origin() {
    let h = harness().await;
    // The login page does not carry the value on.
    let page = h.get("/login?return_to=%2F%09%2Fevil.example", &[]).await;
    let carried = form_value(&page.body, "return_to").unwrap();
    assert!(!carried.contains("evil"), "carried on: {carried:?}");
    // Nor does the form post, whatever it is given.
    for hostile in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/%5Cevil.example",
        "\\\\evil.example",
        "https://evil.example/oauth/authorize",
        "http://idp.test:8080@evil.example/",
        "/ /evil.example",
        "/device/..//evil.example",
        "javascript:alert(1)",
    ] {
        let loc = login_returning_to(&h, hostile).await;
        let to = landing(&loc);
        assert_eq!(to.origin(), issuer_origin(), "{hostile:?} sent to {loc:?}");
        assert_eq!(to.path(), "/", "{hostile:?}: not one of our pages, so home");
    }
}

#[tokio::test]
async fn return_to_only_reaches_our_own_pages() {
    let h = harness().await;
    let authorize = authorize_query(LOOPBACK, &[("state", "s")]);
    let loc = login_returning_to(&h, &authorize).await;
    assert_eq!(
        loc,
        format!("{ISSUER}{authorize}"),
        "an authorization request"
    );
    let loc = login_returning_to(&h, "/device?user_code=BCDF-GHJK").await;
    assert_eq!(loc, format!("{ISSUER}/device?user_code=BCDF-GHJK"));
    for other in ["/login", "/logout", "/devices", "/.well-known/jwks.json"] {
        let loc = login_returning_to(&h, other).await;
        assert_eq!(
            landing(&loc).as_str(),
            format!("{ISSUER}/"),
            "{other} is not a return page"
        );
    }
}

// ---- Item 7 and item 19: CSRF bound to the session -------------------------------------------

/// A value an attacker chose, 43 characters like a real token.
const PLANTED: &str = "AttackerChosenValueAttackerChosenValue12345";

#[tokio::test]
async fn a_planted_cookie_and_matching_token_do_not_pass_the_login_form() {
    let h = harness().await;
    // Double-submit pair planted by a sibling subdomain (under the old and the current names).
    let planted = vec![
        format!("kl_csrf={PLANTED}"),
        format!("kl_presession={PLANTED}"),
    ];
    let r = h
        .post(
            "/login",
            &[
                ("csrf_token", PLANTED),
                ("return_to", ""),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &planted,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookies().iter().all(|c| !c.contains("kl_session")));
}

#[tokio::test]
async fn a_planted_cookie_and_matching_token_do_not_pass_signed_in_forms() {
    let h = harness().await;
    let mut cookies = h.login(ALICE, ALICE_PASSWORD).await;
    cookies.retain(|c| !c.starts_with("kl_csrf="));
    cookies.push(format!("kl_csrf={PLANTED}"));
    let r = h.get(&authorize_query(LOOPBACK, &[]), &cookies).await;
    let request = form_value(&r.body, "request").unwrap();
    let r = h
        .post(
            "/oauth/authorize/consent",
            &[
                ("csrf_token", PLANTED),
                ("request", &request),
                ("decision", "allow"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "consent");
    assert!(r.location().is_empty());
    let r = h
        .post(
            "/device",
            &[
                ("csrf_token", PLANTED),
                ("user_code", "BCDF-GHJK"),
                ("decision", "allow"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "device");
    let r = h
        .post("/logout", &[("csrf_token", PLANTED)], &cookies, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "logout");
    assert!(h
        .get("/", &cookies)
        .await
        .body
        .contains("Signed in as alice"));
}

#[tokio::test]
async fn a_token_from_another_session_is_refused_on_consent_device_and_logout() {
    let h = harness().await;
    let alice = h.login(ALICE, ALICE_PASSWORD).await;
    let bob = h.login(BOB, BOB_PASSWORD).await;
    // Bob's own, valid token, sent with Alice's cookies.
    let bobs_page = h.get(&authorize_query(LOOPBACK, &[]), &bob).await;
    let bobs_token = form_value(&bobs_page.body, "csrf_token").unwrap();
    let alices_page = h.get(&authorize_query(LOOPBACK, &[]), &alice).await;
    let alices_token = form_value(&alices_page.body, "csrf_token").unwrap();
    assert_ne!(bobs_token, alices_token, "tokens are per session");
    let request = form_value(&alices_page.body, "request").unwrap();
    for (path, form) in [
        (
            "/oauth/authorize/consent",
            vec![
                ("csrf_token", bobs_token.as_str()),
                ("request", request.as_str()),
                ("decision", "allow"),
            ],
        ),
        (
            "/device",
            vec![
                ("csrf_token", bobs_token.as_str()),
                ("user_code", "BCDF-GHJK"),
                ("decision", "allow"),
            ],
        ),
        ("/logout", vec![("csrf_token", bobs_token.as_str())]),
        (
            "/oauth/logout",
            vec![("csrf_token", bobs_token.as_str()), ("state", "x")],
        ),
    ] {
        let r = h.post(path, &form, &alice, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    // A wrong (not missing) token of the right shape is refused too.
    let r = h
        .post("/logout", &[("csrf_token", &"x".repeat(43))], &alice, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(h.get("/", &alice).await.body.contains("Signed in as alice"));
    // The login form's token (pre-session) does not pass a signed-in form either.
    let login_page = h.get("/login", &alice).await;
    let login_token = form_value(&login_page.body, "csrf_token").unwrap();
    let r = h
        .post("/logout", &[("csrf_token", &login_token)], &alice, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Alice's own token works.
    let r = h
        .post("/logout", &[("csrf_token", &alices_token)], &alice, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(h.get("/", &alice).await.body.contains("Not signed in"));
}

#[tokio::test]
async fn after_signing_in_again_in_the_same_browser_an_old_token_is_refused() {
    let h = harness().await;
    let first = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h.get(&authorize_query(LOOPBACK, &[]), &first).await;
    let old = form_value(&page.body, "csrf_token").unwrap();
    // The same browser (same cookies) signs in again: a new session.
    let login = h.get("/login", &first).await;
    let r = h
        .post(
            "/login",
            &[
                (
                    "csrf_token",
                    &form_value(&login.body, "csrf_token").unwrap(),
                ),
                ("return_to", ""),
                ("username", ALICE),
                ("password", ALICE_PASSWORD),
            ],
            &first,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let new_session: Vec<String> = r.cookies();
    let mut second: Vec<String> = first
        .iter()
        .filter(|c| {
            let name = c.split('=').next().unwrap_or_default();
            !new_session
                .iter()
                .any(|n| n.starts_with(&format!("{name}=")))
        })
        .cloned()
        .collect();
    second.extend(new_session);
    assert_ne!(second, first, "a new session cookie");
    let r = h
        .post("/logout", &[("csrf_token", &old)], &second, &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn https_cookies_use_the_host_prefix_even_under_a_base_path() {
    let h = harness_with(|c| {
        c.issuer = "https://idp.test".into();
        c.secure_cookies = true;
    })
    .await;
    let page = h.get("/login", &[]).await;
    let set = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("__Host-kl_presession="), "{set}");
    assert!(set.contains("; Path=/;") && set.contains("Secure") && !set.contains("Domain"));
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    assert!(
        cookies.iter().any(|c| c.starts_with("__Host-kl_session=")),
        "{cookies:?}"
    );
    assert!(h
        .get("/", &cookies)
        .await
        .body
        .contains("Signed in as alice"));
    // The same value under the unprefixed name (as a sibling subdomain could plant) is ignored.
    let unprefixed: Vec<String> = cookies
        .iter()
        .map(|c| c.trim_start_matches("__Host-").to_string())
        .collect();
    assert!(h.get("/", &unprefixed).await.body.contains("Not signed in"));

    let h = harness_with(|c| {
        c.issuer = "https://idp.test/idp".into();
        c.base_path = "/idp".into();
        c.secure_cookies = true;
    })
    .await;
    let page = h.get("/idp/login", &[]).await;
    let set = page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.starts_with("__Host-kl_presession-idp=") && set.contains("; Path=/;"),
        "{set}"
    );
    let cookies = h.login_at("/idp", ALICE, ALICE_PASSWORD).await;
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-kl_session-idp=")),
        "{cookies:?}"
    );
}

// ---- Item 8: logout confirmation -------------------------------------------------------------

const LOGOUT_LINK: &str = "/oauth/logout?client_id=automation&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fbye&state=z";

#[tokio::test]
async fn a_logout_link_without_a_hint_asks_before_signing_out() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = h.get(LOGOUT_LINK, &cookies).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a confirmation page, not a redirect"
    );
    assert!(r.location().is_empty());
    assert!(r.body.contains("Sign out?") && r.body.contains("CI automation"));
    assert!(
        h.get("/", &cookies)
            .await
            .body
            .contains("Signed in as alice"),
        "still signed in"
    );
    // The same request POSTed by a web page (no CSRF token) only asks too.
    let r = h
        .post(
            "/oauth/logout",
            &[("client_id", "automation"), ("state", "z")],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Sign out?"));
    assert!(h
        .get("/", &cookies)
        .await
        .body
        .contains("Signed in as alice"));
    // Confirming signs out and goes back to the registered URI with state.
    let page = h.get(LOGOUT_LINK, &cookies).await;
    let form: Vec<(String, String)> = [
        "csrf_token",
        "post_logout_redirect_uri",
        "state",
        "client_id",
    ]
    .iter()
    .map(|k| (k.to_string(), form_value(&page.body, k).unwrap()))
    .collect();
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = h.post("/oauth/logout", &form, &cookies, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "https://app.example.com/bye?state=z");
    assert!(h.get("/", &cookies).await.body.contains("Not signed in"));
}

#[tokio::test]
async fn a_wrong_token_on_the_logout_confirmation_is_refused() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = h
        .post(
            "/oauth/logout",
            &[("csrf_token", &"y".repeat(43)), ("state", "z")],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(h
        .get("/", &cookies)
        .await
        .body
        .contains("Signed in as alice"));
}

/// An ID token of `automation` for the user of `cookies`.
async fn id_token(h: &Harness, cookies: &[String]) -> String {
    let r = h
        .authorize(
            cookies,
            &[
                ("client_id", "automation"),
                ("redirect_uri", LOOPBACK),
                ("response_type", "code"),
                ("scope", "openid"),
            ],
        )
        .await;
    let code = query_of(&r.location())["code"].clone();
    let r = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "automation"),
            ("client_secret", &h.secret),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.json()["id_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_logout_with_the_signed_in_users_id_token_hint_signs_out_at_once() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let hint = id_token(&h, &cookies).await;
    let r = h
        .get(
            &format!("/oauth/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fbye&state=z"),
            &cookies,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "https://app.example.com/bye?state=z");
    assert!(h.get("/", &cookies).await.body.contains("Not signed in"));
}

#[tokio::test]
async fn an_access_token_as_hint_does_not_skip_the_confirmation() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    // One of alice's own access tokens, as any resource server that received it holds it.
    let t = h.tokens_for_alice("openid").await;
    let at = t["access_token"].as_str().unwrap();
    let r = h
        .get(&format!("/oauth/logout?id_token_hint={at}"), &cookies)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Sign out?"));
    assert!(h
        .get("/", &cookies)
        .await
        .body
        .contains("Signed in as alice"));
}

#[tokio::test]
async fn a_logout_with_another_users_hint_asks_first() {
    let h = harness().await;
    let alice = h.login(ALICE, ALICE_PASSWORD).await;
    let alices_hint = id_token(&h, &alice).await;
    let bob = h.login(BOB, BOB_PASSWORD).await;
    let r = h
        .get(&format!("/oauth/logout?id_token_hint={alices_hint}"), &bob)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Sign out?"));
    assert!(h.get("/", &bob).await.body.contains("Signed in as bob"));
    // A hint for one client with another client's id is refused (§2).
    let r = h
        .get(
            &format!("/oauth/logout?id_token_hint={alices_hint}&client_id=kubelogin"),
            &alice,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(h.get("/", &alice).await.body.contains("Signed in as alice"));
}

// ---- Item 12: RFC 9207 `iss` -----------------------------------------------------------------

#[tokio::test]
async fn every_authorization_response_carries_iss() {
    let h = harness().await;
    let d = h.get("/.well-known/openid-configuration", &[]).await.json();
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    // Error before login (prompt=none).
    let r = h
        .get(
            &authorize_query(LOOPBACK, &[("prompt", "none"), ("state", "a")]),
            &[],
        )
        .await;
    let q = query_of(&r.location());
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["iss"], ISSUER);
    // Error from a bad parameter.
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let r = h
        .get(
            &authorize_query(LOOPBACK, &[("response_mode", "fragment")]),
            &cookies,
        )
        .await;
    assert_eq!(query_of(&r.location())["iss"], ISSUER);
    // Denied consent.
    let page = h.get(&authorize_query(LOOPBACK, &[]), &cookies).await;
    let r = h
        .post(
            "/oauth/authorize/consent",
            &[
                ("csrf_token", &form_value(&page.body, "csrf_token").unwrap()),
                ("request", &form_value(&page.body, "request").unwrap()),
                ("decision", "deny"),
            ],
            &cookies,
            &[],
        )
        .await;
    let q = query_of(&r.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["iss"], ISSUER);
    // Success, after consent and when consent is remembered.
    let challenge = pkce_pair().1;
    let r = h
        .authorize(
            &cookies,
            &[
                ("client_id", "kubelogin"),
                ("redirect_uri", LOOPBACK),
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
    let q = query_of(&r.location());
    assert!(q.contains_key("code"));
    assert_eq!(q["iss"], ISSUER);
    let r = h.get(&authorize_query(LOOPBACK, &[]), &cookies).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(query_of(&r.location())["iss"], ISSUER);
}

// ---- Item 17: the out-of-band code page ------------------------------------------------------

/// The code shown in the page's `<input id="code" ... value="...">`.
fn shown_code(body: &str) -> String {
    let at = body.find("id=\"code\"").expect("a #code element");
    let rest = &body[at..];
    let v = rest.find("value=\"").unwrap() + "value=\"".len();
    let end = rest[v..].find('"').unwrap() + v;
    rest[v..end].to_string()
}

fn assert_code_page(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.location().is_empty(), "no redirect to {}", r.location());
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"));
    assert!(!r.body.contains("<script"), "no script");
    assert!(r.body.contains("terminal") && r.body.contains("2 minutes"));
    shown_code(&r.body)
}

#[tokio::test]
async fn the_out_of_band_redirect_uri_shows_the_code_on_a_page() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let (verifier, challenge) = pkce_pair();
    let params = [
        ("client_id", "kubelogin"),
        ("redirect_uri", OOB),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let consent = h.get(&format!("/oauth/authorize?{q}"), &cookies).await;
    assert!(
        consent.body.contains("paste into your terminal"),
        "{}",
        consent.body
    );
    assert!(!consent.body.contains("sent back to"));
    let r = h.authorize(&cookies, &params).await;
    let code = assert_code_page(&r);
    let t = h
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", OOB),
            ("client_id", "kubelogin"),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(
        t.status,
        StatusCode::OK,
        "the shown code is redeemable: {}",
        t.body
    );
    // Consent remembered: the authorization request itself answers with the page.
    let r = h.get(&authorize_query(OOB, &[]), &cookies).await;
    let second = assert_code_page(&r);
    assert_ne!(second, code);
}

#[tokio::test]
async fn the_out_of_band_redirect_uri_shows_errors_as_pages() {
    let h = harness().await;
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h.get(&authorize_query(OOB, &[]), &cookies).await;
    let r = h
        .post(
            "/oauth/authorize/consent",
            &[
                ("csrf_token", &form_value(&page.body, "csrf_token").unwrap()),
                ("request", &form_value(&page.body, "request").unwrap()),
                ("decision", "deny"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert!(r.location().is_empty(), "no redirect to {}", r.location());
    assert!(r.body.contains("Access denied"), "{}", r.body);
}

#[tokio::test]
async fn signing_in_again_ends_the_previous_session_and_the_pre_login_cookie() {
    let h = harness().await;
    let first = h.login(ALICE, ALICE_PASSWORD).await;
    let session = |c: &[String]| -> Vec<String> {
        c.iter()
            .filter(|c| c.starts_with("kl_session="))
            .cloned()
            .collect()
    };
    let old = session(&first);
    assert!(h.get("/", &old).await.body.contains("Signed in as alice"));
    // The same browser signs in again.
    let (r, _) = h.login_attempt("", &first, ALICE, ALICE_PASSWORD).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        r.cookies().iter().any(|c| c == "kl_presession="),
        "the pre-login cookie is cleared: {:?}",
        r.cookies()
    );
    assert!(
        h.get("/", &old).await.body.contains("Not signed in"),
        "the previous session ended"
    );
    assert!(h
        .get("/", &session(&r.cookies()))
        .await
        .body
        .contains("Signed in as alice"));
}
