//! Accessibility in real Chromium: axe-core (npm, installed by `tests/run-all.sh` into
//! `tests/axe/node_modules`, never vendored) runs on every page a person meets: the root page
//! signed out and in, login (and its error), consent, the out-of-band code page, the device
//! page (empty and confirming a request), the logout confirmation, every `/account` page with
//! its confirmations, and every page of the `/admin` console (overview, users, a user, a new
//! user, groups, a group, clients, a client, a new client, the force re-authentication
//! confirmation, signing keys, the audit log filtered, the password prompt). Any `serious` or `critical` violation of the WCAG 2.0/2.1 A and AA rules
//! (and axe's best practices) fails the test, listed with its nodes. The window is 360 CSS
//! pixels wide, and no page may scroll sideways there.
//!
//! axe is injected with WebDriver's Execute Script, which Chromium runs through DevTools: the
//! IdP's strict CSP (no inline script) stays as it is and does not block it; the test checks
//! that the CSP header is still the strict one.

use e2e::webdriver::{chromium_args, Driver, Session};
use idp::testing::{TestIdp, ALICE, ALICE_PASSWORD};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// WCAG 2.0 and 2.1, levels A and AA, and axe's best practices.
const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"];

pub fn axe_source() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/axe/node_modules/axe-core/axe.min.js"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "axe-core is not installed ({path}: {e}). Install it with \
             `npm ci --prefix tests/axe` (tests/run-all.sh does)."
        )
    })
}

/// Runs axe on the page the browser shows; returns the serious and critical violations as
/// readable lines.
pub fn axe_violations(s: &Session, axe: &str) -> Vec<String> {
    let loaded = s
        .execute(&format!("{axe}\n;return typeof axe.run;"), json!([]), false)
        .unwrap();
    assert_eq!(loaded, "function", "axe did not load");
    let run = "const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})
           .then(r => done(r.violations), e => done({error: String(e)}));";
    let v = s.execute(run, json!([AXE_TAGS]), true).unwrap();
    assert!(v.get("error").is_none(), "axe failed: {v}");
    let mut out = Vec::new();
    for violation in v.as_array().unwrap() {
        let impact = violation["impact"].as_str().unwrap_or("");
        if impact != "serious" && impact != "critical" {
            continue;
        }
        let nodes: Vec<String> = violation["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .map(|n| format!("{} ({})", n["target"], n["failureSummary"]))
                    .collect()
            })
            .unwrap_or_default();
        out.push(format!(
            "{impact} {}: {} — {}",
            violation["id"].as_str().unwrap_or(""),
            violation["help"].as_str().unwrap_or(""),
            nodes.join("; ")
        ));
    }
    out
}

/// The page may not be wider than the 360 px window (no sideways scrolling).
pub fn overflow(s: &Session) -> Option<String> {
    let v = s
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            json!([]),
            false,
        )
        .unwrap();
    let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    (scroll > inner).then(|| format!("{scroll} px wide in a {inner} px window"))
}

/// Runs axe (and the width check) on pages one after another and collects the failures, so
/// one run reports every page's (the journey test uses it too).
pub struct Checker<'a> {
    pub s: &'a Session<'a>,
    pub axe: String,
    pub failures: Vec<String>,
    pub checked: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(s: &'a Session<'a>) -> Self {
        Checker {
            s,
            axe: axe_source(),
            failures: Vec::new(),
            checked: Vec::new(),
        }
    }

    /// Checks the page the browser shows now, named `what`.
    pub fn check(&mut self, what: &str) {
        let url = self.s.current_url().unwrap();
        for v in axe_violations(self.s, &self.axe) {
            self.failures.push(format!("{what} ({url}): {v}"));
        }
        if let Some(o) = overflow(self.s) {
            self.failures.push(format!("{what} ({url}): {o}"));
        }
        self.checked.push(what.to_string());
    }

    pub fn visit(&mut self, what: &str, url: &str) {
        self.s.navigate(url).unwrap();
        self.check(what);
    }

    /// Fails the test with every page's failures, if any.
    pub fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "accessibility failures on {} pages:\n{}",
            self.checked.len(),
            self.failures.join("\n")
        );
    }
}

fn element(s: &Session, css: &str) -> String {
    s.find(css)
        .unwrap()
        .unwrap_or_else(|| panic!("no {css} on {}", s.current_url().unwrap()))
}

fn sign_in(s: &Session, password: &str) {
    sign_in_as(s, ALICE, password);
}

fn sign_in_as(s: &Session, username: &str, password: &str) {
    s.type_into(&element(s, "#username"), username).unwrap();
    s.type_into(&element(s, "#password"), password).unwrap();
    s.click(&element(s, "#submit")).unwrap();
}

/// A device authorization request of the `kubelogin` client: its user code.
fn device_request(idp: &TestIdp) -> String {
    let r: Value = idp
        .http_client()
        .post(format!("{}/oauth/device/code", idp.issuer()))
        .form(&[("client_id", "kubelogin"), ("scope", "openid groups")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["user_code"].as_str().unwrap().to_string()
}

#[test]
fn every_page_passes_axe_in_chromium_at_360_px() {
    let idp = TestIdp::start();
    let base = idp.issuer();
    let csp = idp
        .http_client()
        .get(format!("{base}/login"))
        .send()
        .unwrap()
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "the strict CSP stays: {csp}"
    );

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&http, Instant::now() + Duration::from_secs(30)).unwrap();
    let s = Session::new(&http, &driver.url, &chromium_args(profile.path()).unwrap()).unwrap();
    s.set_window_size(360, 800).unwrap();
    let mut c = Checker::new(&s);

    c.visit("root, signed out", &format!("{base}/"));
    c.visit("login", &format!("{base}/login?return_to=%2Faccount"));
    sign_in(&s, "not-the-password");
    c.check("login with an error");
    sign_in(&s, ALICE_PASSWORD);
    c.check("account (after signing in)");
    c.visit("root, signed in", &format!("{base}/"));

    let authorize = format!(
        "{base}/oauth/authorize?client_id=kubelogin&redirect_uri=urn%3Aietf%3Awg%3Aoauth%3A2.0%3Aoob\
         &response_type=code&scope=openid+email+groups+offline_access&state=st&nonce=n0\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    );
    c.visit("consent", &authorize);
    s.click(&element(&s, "#allow")).unwrap();
    c.check("out-of-band code");

    c.visit("device, empty", &format!("{base}/device"));
    let code = device_request(&idp);
    c.visit(
        "device, confirming a request",
        &format!("{base}/device?user_code={code}"),
    );
    c.visit(
        "device, a wrong code",
        &format!("{base}/device?user_code=WRONGXXX"),
    );

    c.visit("account", &format!("{base}/account"));
    c.visit("sessions", &format!("{base}/account/sessions"));
    c.visit(
        "sign out the other sessions?",
        &format!("{base}/account/sessions/revoke-others"),
    );
    c.visit("authorizations", &format!("{base}/account/authorizations"));
    c.visit(
        "revoke an authorization?",
        &format!("{base}/account/authorizations/revoke?client_id=kubelogin"),
    );
    c.visit("logout confirmation", &format!("{base}/oauth/logout"));
    s.click(&element(&s, "#confirm")).unwrap();
    c.check("signed out");

    admin_pages(&idp, &mut c);
    c.assert_clean();
}

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "root-password-789";

/// The console, signed in as an administrator, on the seeded data (alice, the `developers`
/// group, the `kubelogin` client), with the password prompt of a stale session last.
fn admin_pages(idp: &TestIdp, c: &mut Checker) {
    let st = idp.state.clone();
    idp.block_on(async move {
        let hash = idp::crypto::hash_password(ADMIN_PASSWORD).unwrap();
        let admin = idp::store::NewUser {
            username: ADMIN.into(),
            email: "root@example.com".into(),
            name: "Root".into(),
            password_hash: Some(hash),
            is_admin: true,
        };
        st.store.create_user(admin, st.now()).await.unwrap();
    });
    let base = idp.issuer();
    let s = c.s;
    s.navigate(&format!("{base}/admin")).unwrap();
    sign_in_as(s, ADMIN, ADMIN_PASSWORD);
    c.check("admin overview (after signing in)");
    let pages = [
        ("admin overview", "/admin"),
        ("admin users", "/admin/users"),
        ("admin users, searched", "/admin/users?q=al"),
        ("admin user", "/admin/users/alice"),
        ("admin new user", "/admin/users/new"),
        ("admin edit user", "/admin/users/alice/edit"),
        ("admin disable user?", "/admin/users/alice/disable"),
        ("admin groups", "/admin/groups"),
        ("admin group", "/admin/groups/developers"),
        ("admin clients", "/admin/clients"),
        ("admin client", "/admin/clients/kubelogin"),
        ("admin new client", "/admin/clients/new"),
        (
            "admin force re-authentication?",
            "/admin/clients/kubelogin/force-reauthentication",
        ),
        ("admin keys", "/admin/keys"),
        ("admin audit", "/admin/audit"),
        (
            "admin audit, filtered",
            "/admin/audit?event=login_succeeded&user=alice&outcome=success",
        ),
        ("admin audit, a bad filter", "/admin/audit?since=yesterday"),
    ];
    for (what, path) in pages {
        c.visit(what, &format!("{base}{path}"));
    }
    // A session whose authentication is older than ADMIN_REAUTH_AFTER (15 min).
    idp.clock().advance(16 * 60);
    c.visit(
        "admin password prompt",
        &format!("{base}/admin/reauth?return_to=%2Fadmin%2Fgroups"),
    );
}
