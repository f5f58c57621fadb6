//! The story's journey (issue 9) in real headless Chromium, two people in two browsers:
//!
//! 1. the admin signs in at `/admin`, creates a group, a user in it and a public client for
//!    kubectl, through the console's forms;
//! 2. the real `kubectl-oidc_login` logs that user in through Chromium (`chromium-browser`);
//! 3. the user sees that login on `/account/sessions` and `/account/authorizations`, revokes the
//!    authorization, and the plugin's next refresh fails with `invalid_grant`;
//! 4. the user logs in again; the admin presses Force re-authentication on the client; the next
//!    refresh fails;
//! 5. the admin disables the user: their session page is gone and their login is refused;
//! 6. the admin filters the audit log by that user, sees every step with IP and user agent, and
//!    downloads the CSV: parsed with the `csv` crate, its rows are the page's rows, and the
//!    username, which begins with a formula character, comes out escaped.
//!
//! The admin layer allows only letters, digits and `. _ - @` in a username, so no account's
//! name can begin with `=`; the user is `-dave`: `-` starts a formula in a spreadsheet as `=`
//! does (OWASP "CSV injection"), and the export escapes both the same way (`audit::defuse`).
//! A name beginning with `=` still reaches the log as what someone typed into the login form;
//! the test exports that one too and finds it escaped.
//!
//! axe-core runs on every page either browser shows (the accessibility test's checker).
//! Nothing waits on the wall clock: page states are polled with a deadline.

use crate::accessibility::Checker;
use e2e::run_plugin;
use e2e::webdriver::{chromium_args, Driver, Session};
use idp::testing::TestIdp;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "root-password-789";
const USER: &str = "-dave";
/// The user's name as a path segment of the console's links, which percent-encode a leading
/// `-` (`web::admin::seg`).
const USER_SEG: &str = "%2Ddave";
const CLIENT: &str = "kubectl";

fn el(s: &Session<'_>, css: &str) -> String {
    s.find(css)
        .unwrap()
        .unwrap_or_else(|| panic!("no {css} on {}", s.current_url().unwrap()))
}

/// Polls the browser (bounded) until `css` is on the page; its element.
fn wait_for(s: &Session<'_>, css: &str) -> String {
    s.wait_for(css).unwrap()
}

/// Polls the browser (bounded) until the current URL's path is `path`.
fn wait_for_path(s: &Session<'_>, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = s.current_url().unwrap();
        if url::Url::parse(&url).is_ok_and(|u| u.path() == path) {
            return;
        }
        assert!(Instant::now() < deadline, "never reached {path}; at {url}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fill(s: &Session<'_>, fields: &[(&str, &str)]) {
    for (css, v) in fields {
        s.type_into(&el(s, css), v).unwrap();
    }
}

fn sign_in(s: &Session<'_>, user: &str, password: &str) {
    fill(s, &[("#username", user), ("#password", password)]);
    s.click(&el(s, "#submit")).unwrap();
}

/// The plugin as kubectl runs it, for the console's `kubectl` client.
fn plugin_args(idp: &TestIdp, cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "get-token".to_string(),
        format!("--oidc-issuer-url={}", idp.issuer()),
        format!("--oidc-client-id={CLIENT}"),
        format!("--token-cache-dir={}", cache.join("cache").display()),
        "--listen-address=127.0.0.1:0".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A login by the plugin, the user signing in (and consenting) in real Chromium.
fn plugin_login(idp: &TestIdp, cache: &Path, password: &str) {
    let browser = format!(
        "--browser-command={}",
        env!("CARGO_BIN_EXE_chromium-browser")
    );
    let args = plugin_args(
        idp,
        cache,
        &[
            &browser,
            "--authentication-timeout-sec=45",
            "--force-refresh",
        ],
    );
    let env = [
        ("CHROMIUM_USER", USER.to_string()),
        ("CHROMIUM_PASSWORD", password.to_string()),
    ];
    let out = run_plugin(&args, &env).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plugin login: {err}");
    assert!(e2e::token_of(&out).is_some(), "no token: {err}");
}

/// A refresh by the plugin that must be refused; its fallback login is left unanswered (the
/// fake browser ignores the URL), so the run fails on the refusal.
fn refresh_refused(idp: &TestIdp, cache: &Path) {
    let browser = format!("--browser-command={}", env!("CARGO_BIN_EXE_fake-browser"));
    let args = plugin_args(
        idp,
        cache,
        &[
            &browser,
            "--force-refresh",
            "--authentication-timeout-sec=2",
        ],
    );
    let env = [("FAKE_BROWSER_ACTION", "ignore".to_string())];
    let out = run_plugin(&args, &env).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the refresh went through: {err}");
    assert!(
        err.contains("refresh token was not accepted") && err.contains("invalid_grant"),
        "{err}"
    );
}

/// The audit table's rows as the page shows them (one array of cell texts per row).
fn page_rows(s: &Session<'_>) -> Vec<Vec<String>> {
    let v = s
        .execute(
            "return Array.from(document.querySelectorAll('#events tbody tr'))
               .map(tr => Array.from(tr.cells).map(td => td.textContent));",
            json!([]),
            false,
        )
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// The admin's session cookie, read from Chromium, for fetching the CSV outside the browser.
fn session_cookie(s: &Session<'_>) -> String {
    let v = s.cmd(reqwest::Method::GET, "/cookie", None).unwrap();
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kl_session")
        .unwrap_or_else(|| panic!("no session cookie in {v}"));
    format!("kl_session={}", c["value"].as_str().unwrap())
}

/// A CSV field as the page shows it: the export's formula escape (a leading `'`) undone.
fn undefused(f: &str) -> &str {
    match f.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => f,
    }
}

/// The CSV export of the audit page the admin's browser shows, fetched with the admin's
/// session and parsed with the `csv` crate; its rows are the page's rows, field for field (the
/// page shows times in RFC 3339, the CSV in Unix seconds; the CSV escapes formulas).
fn csv_of_page(
    a: &Session<'_>,
    http: &reqwest::blocking::Client,
    rows: &[Vec<String>],
) -> Vec<csv::StringRecord> {
    let csv_url = a.property(&el(a, "#csv"), "href").unwrap();
    let body = http
        .get(&csv_url)
        .header("cookie", session_cookie(a))
        .send()
        .unwrap();
    assert_eq!(body.status(), 200);
    let body = body.text().unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let want = "id at event severity actor subject client_id ip user_agent details";
    assert_eq!(header.join(" "), want);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), rows.len(), "{body}");
    for (rec, row) in records.iter().zip(rows) {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(rec[1].parse().unwrap());
        let csv_row = [
            humantime::format_rfc3339_seconds(at).to_string(),
            rec[2].to_string(),
            undefused(&rec[4]).to_string(),
            undefused(&rec[5]).to_string(),
            rec[6].to_string(),
            rec[7].to_string(),
            rec[8].to_string(),
            rec[9].to_string(),
        ];
        assert_eq!(&csv_row[..], &row[..], "CSV {rec:?}");
    }
    records
}

#[test]
fn the_story_admin_console_kubectl_self_service_and_audit_in_chromium() {
    let idp = TestIdp::start();
    let st = idp.state.clone();
    idp.block_on(async move {
        let hash = idp::crypto::hash_password(ADMIN_PASSWORD).unwrap();
        let root = idp::store::NewUser {
            username: ADMIN.into(),
            email: "root@example.com".into(),
            name: "Root".into(),
            password_hash: Some(hash),
            is_admin: true,
        };
        st.store.create_user(root, st.now()).await.unwrap();
    });
    let base = idp.issuer();
    let kube = tempfile::tempdir().unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let driver = Driver::start(&http, Instant::now() + Duration::from_secs(30)).unwrap();
    let (pa, pu) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Session::new(&http, &driver.url, &chromium_args(pa.path()).unwrap()).unwrap();
    let u = Session::new(&http, &driver.url, &chromium_args(pu.path()).unwrap()).unwrap();
    a.set_window_size(360, 800).unwrap();
    u.set_window_size(360, 800).unwrap();
    let mut ca = Checker::new(&a);
    let mut cu = Checker::new(&u);

    // 1. The admin signs in at /admin and creates a group, a user in it and the client.
    a.navigate(&format!("{base}/admin")).unwrap();
    wait_for_path(&a, "/login");
    ca.check("admin: sign in");
    sign_in(&a, ADMIN, ADMIN_PASSWORD);
    wait_for_path(&a, "/admin");
    ca.check("admin: overview");
    a.click(&el(&a, "a[href='/admin/groups']")).unwrap();
    wait_for_path(&a, "/admin/groups");
    ca.check("admin: groups");
    fill(&a, &[("#name", "sre")]);
    a.click(&el(&a, "#create-group")).unwrap();
    wait_for_path(&a, "/admin/groups/sre");
    ca.check("admin: the new group");

    ca.visit("admin: new user", &format!("{base}/admin/users/new"));
    fill(
        &a,
        &[
            ("#username", USER),
            ("#name", "Dave Ops"),
            ("#email", "dave@example.com"),
            ("#groups", "sre"),
        ],
    );
    a.click(&el(&a, "#create")).unwrap();
    let password = a.text(&wait_for(&a, "#secret")).unwrap();
    ca.check("admin: user created, password shown once");

    ca.visit("admin: new client", &format!("{base}/admin/clients/new"));
    fill(
        &a,
        &[
            ("#client_id", CLIENT),
            ("#name", "kubectl"),
            ("#redirect_uris", "http://localhost:8000"),
        ],
    );
    a.click(&el(&a, "#kind-public")).unwrap();
    a.click(&el(&a, "#grant_authorization_code")).unwrap();
    a.click(&el(&a, "#grant_refresh_token")).unwrap();
    a.click(&el(&a, "#create")).unwrap();
    a.click(&wait_for(&a, "#back")).unwrap();
    wait_for_path(&a, &format!("/admin/clients/{CLIENT}"));
    assert_eq!(a.text(&el(&a, "#kind")).unwrap(), "public");
    ca.check("admin: the new client");

    // 2. The plugin logs the user in through Chromium.
    plugin_login(&idp, kube.path(), &password);

    // 3. The user sees that login and revokes the authorization.
    u.navigate(&format!("{base}/account/sessions")).unwrap();
    wait_for_path(&u, "/login");
    cu.check("user: sign in");
    sign_in(&u, USER, &password);
    wait_for_path(&u, "/account/sessions");
    wait_for(&u, "#current-session");
    let sessions = u.text(&el(&u, "#sessions")).unwrap();
    let others = u
        .execute(
            "return document.querySelectorAll('#sessions li:not(#current-session)').length;",
            json!([]),
            false,
        )
        .unwrap();
    assert_eq!(
        others, 1,
        "the plugin's browser session is listed: {sessions}"
    );
    assert!(sessions.contains("127.0.0.1"), "{sessions}");
    cu.check("user: sessions");
    u.navigate(&format!("{base}/account/authorizations"))
        .unwrap();
    let entry = u.text(&wait_for(&u, &format!("#client-{CLIENT}"))).unwrap();
    assert!(
        entry.contains("Last used") && entry.contains("127.0.0.1"),
        "{entry}"
    );
    cu.check("user: authorizations");
    u.click(&el(&u, &format!("#client-{CLIENT} .revoke")))
        .unwrap();
    wait_for_path(&u, "/account/authorizations/revoke");
    cu.check("user: revoke the authorization?");
    u.click(&el(&u, "#confirm")).unwrap();
    let notice = u.text(&wait_for(&u, "#notice")).unwrap();
    assert!(notice.contains("revoked"), "{notice}");
    assert!(u.find(&format!("#client-{CLIENT}")).unwrap().is_none());
    cu.check("user: authorization revoked");
    refresh_refused(&idp, kube.path());

    // 4. The user logs in again (consenting again); the admin forces re-authentication. The
    // plugin holds back a new login right after a failed one in a non-interactive call (its
    // backoff, in the token cache), so this login uses a second cache, as from a terminal.
    let kube = tempfile::tempdir().unwrap();
    plugin_login(&idp, kube.path(), &password);
    a.navigate(&format!("{base}/admin/clients/{CLIENT}"))
        .unwrap();
    a.click(&wait_for(&a, "#force-reauthentication")).unwrap();
    wait_for_path(
        &a,
        &format!("/admin/clients/{CLIENT}/force-reauthentication"),
    );
    ca.check("admin: force re-authentication?");
    a.click(&el(&a, "#confirm")).unwrap();
    wait_for(&a, "#back");
    ca.check("admin: re-authentication forced");
    refresh_refused(&idp, kube.path());

    // The forced re-authentication signed out every user of the client, this browser too
    // (`Admin::force_reauthentication`): the user signs in again.
    u.navigate(&format!("{base}/account/sessions")).unwrap();
    wait_for_path(&u, "/login");
    sign_in(&u, USER, &password);
    wait_for(&u, "#current-session");
    wait_for_path(&u, "/account/sessions");

    // 5. The admin disables the user: their session page is gone, their login refused.
    a.navigate(&format!("{base}/admin/users/{USER}")).unwrap();
    a.click(&wait_for(&a, "#disable")).unwrap();
    wait_for_path(&a, &format!("/admin/users/{USER_SEG}/disable"));
    ca.check("admin: disable the user?");
    a.click(&el(&a, "#confirm")).unwrap();
    a.navigate(&format!("{base}/admin/users/{USER}")).unwrap();
    assert!(a
        .text(&wait_for(&a, "#status"))
        .unwrap()
        .starts_with("disabled"));
    ca.check("admin: the disabled user");
    u.navigate(&format!("{base}/account/sessions")).unwrap();
    wait_for_path(&u, "/login");
    sign_in(&u, USER, &password);
    let refused = u.text(&wait_for(&u, "#error")).unwrap();
    assert!(!refused.is_empty());
    wait_for_path(&u, "/login");
    cu.check("user: login refused");

    // 6. The admin filters the audit log by the user and downloads the CSV.
    a.navigate(&format!("{base}/admin/audit")).unwrap();
    fill(&a, &[("#user", USER)]);
    a.click(&el(&a, "#filter")).unwrap();
    wait_for(&a, "#events");
    let url = a.current_url().unwrap();
    assert!(url.contains("user=-dave"), "{url}");
    ca.check("admin: audit filtered by the user");
    let rows = page_rows(&a);
    // Every step, newest first: the account created by the admin; each plugin login (the
    // sign-in in its Chromium, consent, the code, the token for the plugin); the user's own
    // sign-in and revoke; the sign-in after the forced re-authentication; the disable; the
    // refused login. Browser steps carry Chromium's user agent, token requests the plugin's.
    let events: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    let plugin_login = [
        "token_issued",
        "authorization_code_issued",
        "consent_granted",
        "login_succeeded",
    ];
    // The plugin's refresh after the revoke is refused and recorded against the user (the one
    // after the forced re-authentication, within the same minute, joins that row).
    let want: Vec<&str> = [
        &["login_failed", "user_disabled", "login_succeeded"][..],
        &plugin_login,
        &[
            "refresh_token_refused",
            "authorization_revoked",
            "login_succeeded",
        ],
        &plugin_login,
        &["user_created"],
    ]
    .concat();
    assert_eq!(events, want, "{rows:#?}");
    for r in &rows {
        let actor = if r[1].starts_with("user_") {
            ADMIN
        } else {
            USER
        };
        assert_eq!(r[2], actor, "{r:?}");
        assert_eq!(r[5], "127.0.0.1", "{r:?}");
        let ua = if r[1] == "token_issued" || r[1] == "refresh_token_refused" {
            "kubectl-oidc_login/"
        } else {
            "Mozilla/5.0"
        };
        assert!(r[6].starts_with(ua), "{r:?}");
    }

    let records = csv_of_page(&a, &http, &rows);
    for rec in &records {
        // Every row names the user (the filter), and always escaped.
        assert!(rec[4] != *USER && rec[5] != *USER, "unescaped: {rec:?}");
        let escaped = format!("'{USER}");
        assert!(rec[4] == *escaped || rec[5] == *escaped, "{rec:?}");
    }

    // A name beginning with `=` reaches the log the only way one can: typed into the login
    // form (a refused login records what was typed). The admin finds it and exports it.
    let formula = r#"=HYPERLINK("https://evil.example","x")"#;
    u.navigate(&format!("{base}/login")).unwrap();
    sign_in(&u, formula, "whatever-password");
    wait_for(&u, "#error");
    a.navigate(&format!("{base}/admin/audit")).unwrap();
    fill(&a, &[("#actor", formula)]);
    a.click(&el(&a, "#filter")).unwrap();
    wait_for(&a, "#events");
    ca.check("admin: audit filtered by a formula");
    let rows = page_rows(&a);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0][1].as_str(), rows[0][2].as_str()),
        ("login_failed", formula)
    );
    let records = csv_of_page(&a, &http, &rows);
    assert_eq!(&records[0][4], format!("'{formula}"));

    // The forced re-authentication names the client, not the user: found by its client.
    a.navigate(&format!("{base}/admin/audit")).unwrap();
    fill(
        &a,
        &[("#event", "client_tokens_revoked"), ("#client", CLIENT)],
    );
    a.click(&el(&a, "#filter")).unwrap();
    wait_for(&a, "#events");
    let rows = page_rows(&a);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][2], ADMIN);
    assert_eq!(rows[0][5], "127.0.0.1");
    assert!(rows[0][6].starts_with("Mozilla/5.0"), "{rows:?}");
    csv_of_page(&a, &http, &rows);

    ca.assert_clean();
    cu.assert_clean();
}
