//! The admin console in real headless Chromium, the first step of the story's journey: the
//! admin opens `/admin`, is sent to sign in and comes back, then creates a group, a user in it
//! (with a generated password, which then signs that user in) and a public client for kubectl,
//! each through the pages' forms as a person would.

use e2e::webdriver::{chromium_args, Driver, Session};
use idp::testing::TestIdp;
use std::time::{Duration, Instant};

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "root-password-789";

/// Waits (polling the browser, bounded) until the current URL's path is `path`.
fn wait_for_path(s: &Session<'_>, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = s.current_url().unwrap();
        if url::Url::parse(&url).is_ok_and(|u| u.path() == path) {
            return url;
        }
        assert!(Instant::now() < deadline, "never reached {path}; at {url}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn el(s: &Session<'_>, css: &str) -> String {
    s.find(css)
        .unwrap()
        .unwrap_or_else(|| panic!("no {css} on {}", s.current_url().unwrap()))
}

fn fill(s: &Session<'_>, fields: &[(&str, &str)]) {
    for (css, v) in fields {
        s.type_into(&el(s, css), v).unwrap();
    }
}

#[test]
fn an_admin_creates_a_group_a_user_in_it_and_a_public_client_in_chromium() {
    let idp = TestIdp::start();
    let st = idp.state.clone();
    idp.block_on(async move {
        let hash = idp::crypto::hash_password(ADMIN_PASSWORD).unwrap();
        st.store
            .create_user(
                idp::store::NewUser {
                    username: ADMIN.into(),
                    email: "root@example.com".into(),
                    name: "Root".into(),
                    password_hash: Some(hash),
                    is_admin: true,
                },
                st.now(),
            )
            .await
            .unwrap();
    });
    let issuer = idp.issuer();
    let profile = tempfile::tempdir().unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let driver = Driver::start(&http, Instant::now() + Duration::from_secs(30)).unwrap();
    let s = Session::new(&http, &driver.url, &chromium_args(profile.path()).unwrap()).unwrap();

    // 1. /admin sends the admin to sign in, and back.
    s.navigate(&format!("{issuer}/admin")).unwrap();
    wait_for_path(&s, "/login");
    fill(&s, &[("#username", ADMIN), ("#password", ADMIN_PASSWORD)]);
    s.click(&el(&s, "#submit")).unwrap();
    wait_for_path(&s, "/admin");
    assert_eq!(s.title().unwrap(), "Overview · kubelogin-idp admin");

    // 2. A group.
    s.click(&el(&s, "a[href='/admin/groups']")).unwrap();
    wait_for_path(&s, "/admin/groups");
    fill(&s, &[("#name", "sre")]);
    s.click(&el(&s, "#create-group")).unwrap();
    wait_for_path(&s, "/admin/groups/sre");

    // 3. A user in it, with a generated password shown once.
    s.navigate(&format!("{issuer}/admin/users/new")).unwrap();
    wait_for_path(&s, "/admin/users/new");
    fill(
        &s,
        &[
            ("#username", "dave"),
            ("#name", "Dave Ops"),
            ("#email", "dave@example.com"),
            ("#groups", "sre"),
        ],
    );
    s.click(&el(&s, "#create")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let password = loop {
        if let Some(secret) = s.find("#secret").unwrap() {
            break s.text(&secret).unwrap();
        }
        assert!(Instant::now() < deadline, "no password shown");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(password.len() >= 12);

    // 4. A public client for kubectl.
    s.navigate(&format!("{issuer}/admin/clients/new")).unwrap();
    wait_for_path(&s, "/admin/clients/new");
    fill(
        &s,
        &[
            ("#client_id", "kubectl"),
            ("#name", "kubectl"),
            (
                "#redirect_uris",
                "http://localhost:8000\nhttp://localhost:18000",
            ),
        ],
    );
    s.click(&el(&s, "#kind-public")).unwrap();
    s.click(&el(&s, "#create")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.find("#back").unwrap().is_none() {
        assert!(Instant::now() < deadline, "no result page");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.find("#secret").unwrap().is_none(),
        "a public client has no secret"
    );
    s.click(&el(&s, "#back")).unwrap();
    wait_for_path(&s, "/admin/clients/kubectl");
    assert_eq!(s.text(&el(&s, "#kind")).unwrap(), "public");

    // What the pages did is in the store, and the generated password signs dave in.
    let st = idp.state.clone();
    let (groups, client) = idp.block_on(async move {
        let dave = st.store.user_by_username("dave").await.unwrap().unwrap();
        (
            st.store.groups_of_user(&dave.id).await.unwrap(),
            st.store.client("kubectl").await.unwrap().unwrap(),
        )
    });
    assert_eq!(groups, ["sre"]);
    assert!(client.is_public());
    assert_eq!(
        client.redirect_uris,
        ["http://localhost:8000", "http://localhost:18000"]
    );
    let mut browser = idp::testing::Browser::new(idp.http_client());
    let login = browser.login(&format!("{issuer}/login"), "dave", &password, false);
    assert!(login.is_ok(), "{login:?}");
}
