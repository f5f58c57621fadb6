//! The whole `get-token` / `setup` / `clean` commands in-process against the stub provider.

use std::time::Duration;

use kubelogin::Error;

use crate::harness::{token_of, Harness};
use crate::stub::Config;

#[test]
fn authcode_login_then_cache_hit_then_refresh_then_refresh_again() {
    let h = Harness::new(Config {
        id_token_lifetime: 600,
        ..Config::default()
    });
    // none → valid
    let out = h.run(&[]).unwrap();
    let (first, exp) = token_of(&out);
    assert_eq!(h.stub.grants("authorization_code"), 1);
    assert_eq!(exp, "2030-01-01T00:10:00Z");
    let authorize = &h.stub.seen_path("/authorize")[0];
    assert_eq!(authorize.query["code_challenge_method"], "S256");
    assert!(authorize.query.contains_key("nonce") && authorize.query.contains_key("state"));
    assert_eq!(authorize.query["scope"], "openid");
    assert!(authorize.query["redirect_uri"].starts_with("http://localhost:"));
    let landed = h.landed.lock().unwrap().clone();
    assert!(landed[0].2.contains("Authenticated"), "{landed:?}");
    assert_eq!(h.cache_entries().len(), 1);

    // valid → cache hit: no request at all.
    let before = h.stub.seen().len();
    assert_eq!(token_of(&h.run(&[]).unwrap()).0, first);
    assert_eq!(h.stub.seen().len(), before);

    // Within the 60 s margin of exp → refreshed (#754), not handed out.
    h.fake.clock.advance(Duration::from_secs(545));
    let second = token_of(&h.run(&[]).unwrap()).0;
    assert_ne!(second, first);
    assert_eq!(h.stub.grants("refresh_token"), 1);
    assert_eq!(h.fake.browser.opened().len(), 1);

    // refreshed again with the rotated refresh token.
    h.fake.clock.advance(Duration::from_secs(700));
    let third = token_of(&h.run(&[]).unwrap()).0;
    assert_ne!(third, second);
    assert_eq!(h.stub.grants("refresh_token"), 2);
    assert_eq!(h.stub.grants("authorization_code"), 1);
}

#[test]
fn v1_exec_info_is_answered_in_v1() {
    let mut h = Harness::new(Config::default());
    h.fake.deps.env.exec_info = Some(
        r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#.into(),
    );
    let out = h.run(&[]).unwrap();
    assert!(out.contains("\"apiVersion\":\"client.authentication.k8s.io/v1\""));
    assert!(out.ends_with("}\n") && out.lines().count() == 1);
}

#[test]
fn no_pkce_in_discovery_means_no_challenge_unless_forced() {
    let h = Harness::new(Config {
        pkce_in_discovery: false,
        ..Config::default()
    });
    h.run(&[]).unwrap();
    assert!(!h.stub.seen_path("/authorize")[0]
        .query
        .contains_key("code_challenge"));
    h.run(&[
        "--force-refresh",
        "--oidc-pkce-method=S256",
        "--token-cache-name=b",
    ])
    .unwrap();
    assert_eq!(
        h.stub.seen_path("/authorize")[1].query["code_challenge_method"],
        "S256"
    );
    h.run(&["--oidc-pkce-method=no", "--token-cache-name=c"])
        .unwrap();
    assert_eq!(h.stub.seen_path("/authorize").len(), 3);
}

/// `--oidc-pkce-method=no` sends no PKCE even to a provider that supports S256.
#[test]
fn pkce_method_no_sends_no_challenge_and_no_verifier() {
    let h = Harness::new(Config::default());
    h.run(&["--oidc-pkce-method=no"]).unwrap();
    let q = &h.stub.seen_path("/authorize")[0].query;
    assert!(!q.contains_key("code_challenge"), "{q:?}");
    assert!(!q.contains_key("code_challenge_method"), "{q:?}");
    let form = &h.stub.seen_path("/token")[0].form;
    assert_eq!(form["grant_type"], "authorization_code");
    assert!(!form.contains_key("code_verifier"), "{form:?}");
}

#[test]
fn refused_refresh_leads_to_a_new_login() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    h.stub
        .config(|c| c.refresh_error = Some("invalid_grant".into()));
    h.run(&["--force-refresh"]).unwrap();
    assert_eq!(h.stub.grants("authorization_code"), 2);
    assert_eq!(h.fake.browser.opened().len(), 2);
}

#[test]
fn refresh_without_id_token_leads_to_a_new_login() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    h.stub.config(|c| c.refresh_without_id_token = true);
    h.run(&["--force-refresh"]).unwrap();
    assert_eq!(h.stub.grants("refresh_token"), 1);
    assert_eq!(h.stub.grants("authorization_code"), 2);
}

#[test]
fn network_failure_on_refresh_is_reported_not_a_browser() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    let cached = std::fs::read(h.cache_dir().join(&h.cache_entries()[0])).unwrap();
    h.stub
        .config(|c| c.token_endpoint = Some("http://127.0.0.1:1/token".into()));
    let err = h.run(&["--force-refresh"]).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert_eq!(h.fake.browser.opened().len(), 1);
    // The cache is untouched.
    assert_eq!(
        std::fs::read(h.cache_dir().join(&h.cache_entries()[0])).unwrap(),
        cached
    );
}

#[test]
fn request_headers_go_on_every_request_and_extra_params_on_authorize() {
    let h = Harness::new(Config::default());
    h.run(&[
        "--oidc-request-header=X-Tenant=blue",
        "--oidc-auth-request-extra-params=prompt=login,audience=k8s",
        "--oidc-extra-scope=email,groups",
    ])
    .unwrap();
    for s in h.stub.seen() {
        if s.path != "/authorize" {
            assert_eq!(
                s.headers.get("x-tenant").map(String::as_str),
                Some("blue"),
                "{}",
                s.path
            );
        }
    }
    let q = &h.stub.seen_path("/authorize")[0].query;
    assert_eq!(q["prompt"], "login");
    assert_eq!(q["audience"], "k8s");
    assert_eq!(q["scope"], "openid email groups");
}

#[test]
fn open_url_after_authentication_redirects_the_browser() {
    let h = Harness::new(Config::default());
    let after = format!("{}/after-login", h.stub.issuer);
    h.run(&[&format!("--open-url-after-authentication={after}")])
        .unwrap();
    // Give the browser thread a moment to record where it landed.
    for _ in 0..50 {
        if !h.landed.lock().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.landed.lock().unwrap()[0].0, after);
}

#[test]
fn skip_open_browser_prints_the_url_on_stderr() {
    let h = Harness::new(Config::default());
    h.fake.browser.on_open(|_| Ok(()));
    let err = h
        .run(&["--skip-open-browser", "--authentication-timeout-sec=1"])
        .unwrap_err();
    assert!(
        err.to_string().contains("--authentication-timeout-sec"),
        "{err}"
    );
    assert!(h.fake.browser.opened().is_empty());
    assert!(h
        .console()
        .contains("Please visit the following URL in your browser: http://localhost:"));
}

#[test]
fn authorization_error_then_backoff_keeps_the_browser_closed() {
    let mut h = Harness::new(Config {
        authorize_error: Some("access_denied".into()),
        ..Config::default()
    });
    let err = h.run(&[]).unwrap_err();
    assert!(err.to_string().contains("access_denied"), "{err}");
    assert_eq!(h.fake.browser.opened().len(), 1);
    // kubectl in an IDE loop: non-interactive calls are held back.
    h.fake.deps.env.exec_info = Some(
        r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#.into(),
    );
    let err = h.run(&[]).unwrap_err();
    assert!(err.to_string().contains("not interactive"), "{err}");
    assert_eq!(h.fake.browser.opened().len(), 1);
    // After the back-off a login is tried again; success clears it.
    h.fake.clock.advance(Duration::from_secs(31));
    h.stub.config(|c| c.authorize_error = None);
    h.run(&[]).unwrap();
    assert_eq!(h.fake.browser.opened().len(), 2);
    assert!(!h
        .cache_dir()
        .join(format!("{}.backoff", h.cache_entries()[0]))
        .exists());
}

/// RFC 6749 §10.12: a callback with another state is refused and does not end the login
/// (whoever sent it cannot abort it either); the login times out naming the refusal.
#[test]
fn state_mismatch_is_refused() {
    let h = Harness::new(Config {
        tamper_state: true,
        ..Config::default()
    });
    let err = h.run(&["--authentication-timeout-sec=3"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("1 callback(s) with a wrong state were refused"),
        "{err}"
    );
    assert_eq!(h.stub.grants("authorization_code"), 0);
    assert!(h.cache_entries().is_empty());
    let landed = h.landed.lock().unwrap().clone();
    assert_eq!(landed[0].1, 400, "{landed:?}");
}

/// Answers the keyboard flow's prompt as a person would: opens the URL the plugin printed
/// (without following the redirect) and types the code the IdP put in the out-of-band redirect.
fn type_the_code_from_the_browser_page(h: &Harness) {
    let console = h.fake.console.clone();
    h.fake.prompt.answer_with(move |_| {
        let text = console.0.lock().unwrap().join("\n");
        let url = text.rsplit("browser: ").next().unwrap().trim().to_string();
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let loc = client.get(&url).send().unwrap().headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        let loc =
            url::Url::parse(&loc.replace("urn:ietf:wg:oauth:2.0:oob", "http://oob/")).unwrap();
        loc.query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    });
}

#[test]
fn authcode_keyboard_reads_the_code() {
    let h = Harness::new(Config::default());
    type_the_code_from_the_browser_page(&h);
    h.run(&["--grant-type=authcode-keyboard"]).unwrap();
    assert_eq!(h.fake.prompt.asked(), vec!["Enter code: "]);
    assert_eq!(
        h.stub.seen_path("/authorize")[0].query["redirect_uri"],
        "urn:ietf:wg:oauth:2.0:oob"
    );
}

#[test]
fn authcode_keyboard_without_a_terminal_does_not_prompt() {
    let mut h = Harness::new(Config::default());
    h.fake.deps.env.exec_info = Some(
        r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#.into(),
    );
    let err = h.run(&["--grant-type=authcode-keyboard"]).unwrap_err();
    assert!(matches!(err, Error::NoTerminal(_)), "{err}");
    assert!(h.fake.prompt.asked().is_empty());
}

#[test]
fn device_code_honours_interval_pending_and_slow_down_with_pkce() {
    let h = Harness::new(Config {
        device_answers: [
            "authorization_pending",
            "slow_down",
            "authorization_pending",
        ]
        .map(String::from)
        .into(),
        device_interval: Some(2),
        ..Config::default()
    });
    h.run(&[
        "--grant-type=device-code",
        "--authentication-timeout-sec=60",
    ])
    .unwrap();
    let slept = h.fake.sleeper.slept.lock().unwrap().clone();
    let secs: Vec<u64> = slept.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, vec![2, 2, 7, 7]);
    assert_eq!(
        h.stub
            .grants("urn:ietf:params:oauth:grant-type:device_code"),
        0
    );
    assert_eq!(h.stub.grants("device_code"), 1);
    assert_eq!(
        h.stub.seen_path("/device")[0].form["code_challenge_method"],
        "S256"
    );
    assert!(h.fake.browser.opened()[0].contains("/device-page?user_code=BCDFGHJK"));
}

#[test]
fn device_code_without_complete_uri_prints_the_user_code() {
    let h = Harness::new(Config {
        device_complete_uri: false,
        device_interval: None,
        ..Config::default()
    });
    h.fake.browser.on_open(|_| Ok(()));
    h.run(&["--grant-type=device-code"]).unwrap();
    assert!(
        h.console().contains("enter the code BCDF-GHJK"),
        "{}",
        h.console()
    );
    // RFC 8628 §3.2: 5 s when the server gives no interval.
    assert_eq!(h.fake.sleeper.slept.lock().unwrap()[0].as_secs(), 5);
}

#[test]
fn device_code_expired_denied_and_client_timeout() {
    for (answer, words) in [("expired_token", "expired"), ("access_denied", "denied")] {
        let h = Harness::new(Config {
            device_answers: [answer.to_string()].into(),
            ..Config::default()
        });
        h.fake.browser.on_open(|_| Ok(()));
        let err = h.run(&["--grant-type=device-code"]).unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
        assert!(h.cache_entries().is_empty());
    }
    let h = Harness::new(Config {
        device_answers: std::iter::repeat_n("authorization_pending".to_string(), 100).collect(),
        ..Config::default()
    });
    h.fake.browser.on_open(|_| Ok(()));
    let err = h
        .run(&["--grant-type=device-code", "--authentication-timeout-sec=5"])
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn device_endpoint_flag_when_discovery_has_none() {
    let h = Harness::new(Config {
        device_endpoint_in_discovery: false,
        ..Config::default()
    });
    h.fake.browser.on_open(|_| Ok(()));
    let err = h.run(&["--grant-type=device-code"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("--oidc-device-authorization-endpoint"),
        "{err}"
    );
    let flag = format!(
        "--oidc-device-authorization-endpoint={}/device",
        h.stub.issuer
    );
    h.run(&["--grant-type=device-code", &flag]).unwrap();
}

#[test]
fn password_grant_with_flags_and_prompts() {
    let h = Harness::new(Config::default());
    h.run(&["--username=alice", "--password=alice-password-123"])
        .unwrap();
    assert_eq!(h.stub.grants("password"), 1);

    // Missing password and no terminal: a clear error, no prompt, no hang.
    let err = h
        .run(&["--username=alice", "--token-cache-name=x"])
        .unwrap_err();
    assert!(matches!(err, Error::NoTerminal(_)), "{err}");
    assert!(err.to_string().contains("--password"), "{err}");

    h.fake.prompt.answer("alice-password-123");
    h.run(&["--username=alice", "--token-cache-name=y"])
        .unwrap();
    assert_eq!(h.fake.prompt.asked(), vec!["Password: "]);
    assert_eq!(h.stub.grants("password"), 2);
}

#[test]
fn client_credentials_with_opaque_access_token() {
    let h = Harness::new(Config {
        client_secret: Some("ci-secret".into()),
        expires_in: 300,
        ..Config::default()
    });
    let out = h
        .run(&[
            "--grant-type=client-credentials",
            "--oidc-client-secret=ci-secret",
            "--oidc-use-access-token",
        ])
        .unwrap();
    let (token, exp) = token_of(&out);
    assert!(token.starts_with("opaque-cc-"));
    assert_eq!(exp, "2030-01-01T00:05:00Z");
    let seen = &h.stub.seen_path("/token")[0];
    assert!(seen.headers["authorization"].starts_with("Basic "));
    assert!(!seen.form.contains_key("client_secret"));
    // A cache hit serves the opaque token with the stored expiry (#1459).
    let before = h.stub.seen().len();
    assert_eq!(
        token_of(
            &h.run(&[
                "--grant-type=client-credentials",
                "--oidc-client-secret=ci-secret",
                "--oidc-use-access-token",
            ])
            .unwrap()
        ),
        (token, exp)
    );
    assert_eq!(h.stub.seen().len(), before);
}

#[test]
fn use_access_token_with_authcode_hands_out_the_access_token() {
    let h = Harness::new(Config::default());
    let (token, _) = token_of(&h.run(&["--oidc-use-access-token"]).unwrap());
    assert!(token.starts_with("opaque-access-"));
}

#[test]
fn two_accounts_on_one_issuer_and_client() {
    let h = Harness::new(Config::default());
    let a = token_of(&h.run(&["--token-cache-name=work"]).unwrap()).0;
    let b = token_of(&h.run(&["--token-cache-name=admin"]).unwrap()).0;
    assert_ne!(a, b);
    assert_eq!(h.cache_entries().len(), 2);
    assert_eq!(token_of(&h.run(&["--token-cache-name=work"]).unwrap()).0, a);
}

#[test]
fn storage_none_and_keyring_leave_no_token_file() {
    let h = Harness::new(Config::default());
    h.run(&["--token-cache-storage=none"]).unwrap();
    assert!(h.cache_entries().is_empty());
    h.run(&["--token-cache-storage=none"]).unwrap();
    assert_eq!(h.stub.grants("authorization_code"), 2);

    h.run(&["--token-cache-storage=keyring"]).unwrap();
    assert!(h.cache_entries().is_empty());
    assert_eq!(h.fake.keyring.items().len(), 1);
    h.run(&["--token-cache-storage=keyring"]).unwrap();
    assert_eq!(h.stub.grants("authorization_code"), 3);
}

#[test]
fn logs_show_the_flow_but_no_token_below_v3() {
    let h = Harness::new(Config::default());
    let (token, _) = token_of(&h.run(&["-v", "2"]).unwrap());
    let log = h.console();
    assert!(log.contains("GET ") && log.contains("< HTTP 200"), "{log}");
    assert!(!log.contains(&token));
    assert!(!log.contains("refresh-"), "{log}");
    let h = Harness::new(Config::default());
    h.run(&["-v", "3"]).unwrap();
    assert!(h.console().contains("warning: -v 3 logs HTTP bodies"));
}

#[test]
fn setup_prints_claims_kubeconfig_rbac_and_apiserver_flags() {
    let h = Harness::new(Config::default());
    let out = h
        .run_command("setup", &["--oidc-extra-scope=groups"])
        .unwrap();
    assert!(out.contains("\"sub\": \"alice-sub\""), "{out}");
    assert!(out.contains("kubectl config set-credentials oidc"));
    assert!(out.contains(&format!("--exec-arg=--oidc-issuer-url={}", h.stub.issuer)));
    assert!(out.contains("--exec-arg=--oidc-extra-scope=groups"));
    assert!(out.contains(&format!("--user={}#alice-sub", h.stub.issuer)));
    assert!(out.contains("--group=oidc:developers"));
    assert!(out.contains("--oidc-groups-claim=groups"));
    assert!(out.contains("kube-apiserver-arg:"));
    assert!(h.cache_entries().is_empty(), "setup bypasses the cache");
}

#[test]
fn clean_revokes_then_deletes() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    h.run(&["--token-cache-storage=keyring", "--token-cache-name=k"])
        .unwrap();
    assert_eq!(h.fake.keyring.items().len(), 1);
    h.run_command("clean", &["--revoke"]).unwrap();
    assert_eq!(h.stub.revoked().len(), 1);
    assert!(h.stub.revoked()[0].starts_with("refresh-"));
    assert!(!h.cache_dir().exists());
    // The keyring entry was found through its lock file and deleted too.
    assert!(h.fake.keyring.items().is_empty());
}

#[test]
fn loopback_over_https_with_local_server_cert() {
    let h = Harness::new(Config::default());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = h.dir.path().join("tls.crt");
    let key_path = h.dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    h.run(&[
        &format!("--local-server-cert={}", cert_path.display()),
        &format!("--local-server-key={}", key_path.display()),
    ])
    .unwrap();
    assert!(
        h.stub.seen_path("/authorize")[0].query["redirect_uri"].starts_with("https://localhost:")
    );
    assert!(h.fake.browser.opened()[0].starts_with("https://localhost:"));

    // A key tiny_http cannot read is refused with an error, not a panic.
    std::fs::write(
        &key_path,
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = h
        .run(&[
            "--force-refresh",
            "--token-cache-name=x",
            &format!("--local-server-cert={}", cert_path.display()),
            &format!("--local-server-key={}", key_path.display()),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("--local-server-key"), "{err}");
}

/// kubelogin #1151: a browser that resolves `localhost` to ::1 still reaches the callback.
#[test]
fn callback_over_ipv6_loopback() {
    if !crate::harness::ipv6_loopback() {
        return;
    }
    let h = Harness::new(Config::default());
    h.fake.browser.on_open(|url| {
        // Only the host: the encoded redirect_uri in the query must stay as it was sent.
        let url = url.replace("://localhost:", "://[::1]:");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut next = url;
            for _ in 0..5 {
                let r = client.get(&next).send().unwrap();
                match r.headers().get("location") {
                    Some(l) => next = l.to_str().unwrap().replace("://localhost:", "://[::1]:"),
                    None => break,
                }
            }
        });
        Ok(())
    });
    h.run(&[]).unwrap();
    assert_eq!(h.stub.grants("authorization_code"), 1);
}

#[test]
fn busy_listen_addresses_are_named() {
    let h = Harness::new(Config::default());
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // Like pflag, a repeated --listen-address appends, so build the command line without
    // the harness's own 127.0.0.1:0.
    let args: Vec<String> = h
        .args("get-token", &[&format!("--listen-address={a},{b}")])
        .into_iter()
        .filter(|a| a != "--listen-address=127.0.0.1:0")
        .collect();
    let cli = <kubelogin::Cli as clap::Parser>::try_parse_from(args).unwrap();
    let err = kubelogin::run(cli, h.fake.deps.clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&a.to_string()) && err.contains(&b.to_string()),
        "{err}"
    );
    assert!(err.contains("--listen-address"), "{err}");
    assert!(h.fake.browser.opened().is_empty());
}

/// The browser is opened on a one-time random path; `/` tells nobody the authorization URL
/// (state, nonce, PKCE challenge) that another local user could use to inject a code.
#[test]
fn the_browser_starts_on_a_one_time_path_not_the_root() {
    let h = Harness::new(Config::default());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    h.fake.browser.on_open(move |start| {
        let start = start.to_string();
        let sink = sink.clone();
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let root = url::Url::parse(&start).unwrap().join("/").unwrap();
            let at_root = c.get(root.clone()).send().unwrap();
            let first = c.get(&start).send().unwrap();
            let location = first.headers()["location"].to_str().unwrap().to_string();
            sink.lock().unwrap().push((
                at_root.status().as_u16(),
                at_root.headers().contains_key("location"),
            ));
            // Finish the login like a browser: provider, then the callback.
            let mut next = location;
            for _ in 0..3 {
                let r = c.get(&next).send().unwrap();
                match r.headers().get("location") {
                    Some(l) => next = l.to_str().unwrap().to_string(),
                    None => break,
                }
            }
        });
        Ok(())
    });
    h.run(&[]).unwrap();
    let start = &h.fake.browser.opened()[0];
    let path = url::Url::parse(start).unwrap().path().to_string();
    assert!(path.len() > 40, "not a random path: {start}");
    assert_eq!(seen.lock().unwrap()[0], (404, false));
}

/// The start URL is on the browser's command line, which other local users can read in
/// /proc. One of them fetching it first gets the authorization URL (state, PKCE challenge);
/// when the real browser then asks for it, the login is aborted with a one-line error and no
/// code is ever exchanged, rather than answering 404 and waiting for the intruder's callback.
#[test]
fn start_url_opened_twice_aborts_the_login() {
    let h = Harness::new(Config::default());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    h.fake.browser.on_open(move |start| {
        let start = start.to_string();
        let sink = sink.clone();
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            // The intruder, then the real browser.
            let intruder = c.get(&start).send().unwrap();
            let browser = c.get(&start).send().unwrap();
            sink.lock().unwrap().push((
                intruder.status().as_u16(),
                browser.status().as_u16(),
                browser.text().unwrap(),
            ));
        });
        Ok(())
    });
    let err = h.run(&[]).unwrap_err();
    assert!(matches!(err, Error::Login(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("opened twice"), "{text}");
    assert!(text.contains("another local user"), "{text}");
    assert!(text.contains("retry"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!((seen[0].0, seen[0].1), (302, 409), "{seen:?}");
    assert!(seen[0].2.contains("aborted"), "{seen:?}");
    assert_eq!(h.stub.grants("authorization_code"), 0);
    assert!(h.cache_entries().is_empty());
}

#[test]
fn setup_write_kubeconfig_keeps_the_secret_out_of_the_shown_diff() {
    let h = Harness::new(Config {
        client_secret: Some("s3cret-value".into()),
        ..Config::default()
    });
    let path = h.dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: other-users-token\n",
    )
    .unwrap();
    h.run_command(
        "setup",
        &[
            "--oidc-client-secret=s3cret-value",
            &format!("--write-kubeconfig={}", path.display()),
        ],
    )
    .unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains("--oidc-client-secret=s3cret-value"),
        "{written}"
    );
    assert!(written.contains("token: other-users-token"), "{written}");
    let shown = h.console();
    assert!(shown.contains("+    exec:"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert!(!shown.contains("other-users-token"), "{shown}");
    assert!(shown.contains("--oidc-client-secret=<redacted>"), "{shown}");
}

#[test]
fn setup_refuses_to_write_apiserver_files_for_an_http_issuer_before_logging_in() {
    let h = Harness::new(Config::default());
    let path = h.dir.path().join("authn.yaml");
    let err = h
        .run_command(
            "setup",
            &[
                &format!("--write-authentication-config={}", path.display()),
                "--kubernetes-version=1.33",
            ],
        )
        .unwrap_err();
    assert!(err.to_string().contains("requires https"), "{err}");
    assert!(!path.exists());
    assert_eq!(h.stub.grants("authorization_code"), 0, "no login happened");
}

/// `status` lists a disk login and a named keyring login with who they are for, their expiry
/// and refresh token, and shows no token in text or JSON.
#[test]
fn status_lists_disk_and_keyring_logins_without_tokens() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    h.run(&["--token-cache-storage=keyring", "--token-cache-name=work"])
        .unwrap();
    let text = h.run_bare("status", &[]).unwrap();
    let json = h.run_bare("status", &["-o", "json"]).unwrap();
    let items: Vec<String> = h.fake.keyring.items().into_values().collect();
    assert_eq!(items.len(), 1);
    let tokens = h.cached_tokens(&items);
    assert!(tokens.len() >= 4, "{tokens:?}");
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "token shown: {t}");
        assert!(!json.contains(t.as_str()), "token shown: {t}");
        assert!(!h.console().contains(t.as_str()), "token shown: {t}");
    }

    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json}");
    let disk = &entries[0];
    let kr = &entries[1];
    assert_eq!(disk["storage"], "disk");
    assert_eq!(kr["storage"], "keyring");
    for e in entries {
        assert_eq!(e["issuer"], h.stub.issuer.as_str());
        assert_eq!(e["client_id"], h.stub.client_id.as_str());
        assert_eq!(e["origin_source"], "recorded");
        assert_eq!(e["id_token"]["claims_unverified"]["sub"], "alice-sub");
        assert_eq!(
            e["id_token"]["claims_unverified"]["email"],
            "alice@example.com"
        );
        assert_eq!(e["id_token"]["expired"], false);
        assert_eq!(e["refresh_token"], true);
    }
    assert_eq!(disk["token_cache_name"], serde_json::Value::Null);
    assert_eq!(kr["token_cache_name"], "work");
    let exp = disk["id_token"]["expires_at"].as_str().unwrap();
    assert!(exp.starts_with("20"), "{exp}");

    assert!(text.contains("2 cached login(s)"), "{text}");
    assert!(text.contains("without verifying it"), "{text}");
    assert!(text.contains(&format!("issuer:        {}", h.stub.issuer)));
    assert!(text.contains("account name:  work"));
    assert!(text.contains("email:         alice@example.com"));
    assert!(text.contains(&format!("ID token:      expires {exp}")));
    assert!(text.contains("refresh token: held"));

    // After expiry the same entries say so.
    h.fake.clock.advance(Duration::from_secs(365 * 24 * 3600));
    let later = h.run_bare("status", &[]).unwrap();
    assert!(
        later.contains(&format!("ID token:      expired {exp}")),
        "{later}"
    );
}

/// `clean --issuer` with a client and a cache name deletes just that login; with only the
/// issuer and --revoke it revokes then deletes that issuer's logins in both storages; another
/// issuer's login (an older entry without a recorded origin) stays until named.
#[test]
fn clean_issuer_deletes_only_the_selected_logins() {
    let h = Harness::new(Config::default());
    h.run(&[]).unwrap();
    h.run(&["--token-cache-name=home"]).unwrap();
    h.run(&["--token-cache-storage=keyring", "--token-cache-name=work"])
        .unwrap();
    let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
    let other = format!(
        "{}.{}.c2ln",
        b(serde_json::json!({"alg":"RS256"})),
        b(
            serde_json::json!({"iss":"https://other.example","aud":"k","sub":"bob","exp":4102444800u64})
        )
    );
    let other_key = "e".repeat(64);
    std::fs::write(
        h.cache_dir().join(&other_key),
        serde_json::json!({"id_token": other, "refresh_token": "r"}).to_string(),
    )
    .unwrap();
    assert_eq!(h.cache_entries().len(), 3);
    assert_eq!(h.fake.keyring.items().len(), 1);
    // Sorted here: status lists disk entries in file-name (cache key) order, and the key
    // depends on the stub's random port.
    let listed = || -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&h.run_bare("status", &["-o=json"]).unwrap()).unwrap();
        let mut entries: Vec<String> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e["storage"], e["issuer"], e["token_cache_name"]))
            .collect();
        entries.sort();
        entries
    };
    let issuer = h.stub.issuer.clone();

    // A client that matches nothing deletes nothing.
    h.run_bare("clean", &["--issuer", &issuer, "--client-id=nope"])
        .unwrap();
    assert_eq!(listed().len(), 4);
    assert!(h.console().contains("No cached login matches"));

    h.run_bare(
        "clean",
        &[
            "--issuer",
            &issuer,
            "--client-id",
            &h.stub.client_id,
            "--token-cache-name=home",
        ],
    )
    .unwrap();
    let mut expected = vec![
        format!("\"disk\" \"{issuer}\" null"),
        "\"disk\" \"https://other.example\" null".to_string(),
        format!("\"keyring\" \"{issuer}\" \"work\""),
    ];
    expected.sort();
    assert_eq!(listed(), expected);
    assert!(h.stub.revoked().is_empty());

    // Only the issuer, with --revoke: its disk and keyring logins are revoked, then deleted.
    h.run_bare("clean", &["--issuer", &issuer, "--revoke"])
        .unwrap();
    assert_eq!(h.stub.revoked().len(), 2);
    assert!(h.stub.revoked().iter().all(|t| t.starts_with("refresh-")));
    assert!(h.fake.keyring.items().is_empty());
    assert_eq!(h.cache_entries(), vec![other_key.clone()]);
    assert!(h.console().contains(&format!(
        "Deleted 2 cached login(s) of {issuer} (1 on disk, 1 in the keyring)"
    )));

    // The older entry is selected by its token's iss and aud.
    h.run_bare(
        "clean",
        &["--issuer=https://other.example", "--client-id=k"],
    )
    .unwrap();
    assert!(h.cache_entries().is_empty());
    assert!(h
        .console()
        .contains("Deleted 1 cached login(s) of https://other.example"));
}

#[test]
fn clean_issuer_and_oidc_issuer_url_conflict() {
    use clap::Parser;
    let err = kubelogin::Cli::try_parse_from([
        "kubectl-oidc_login",
        "clean",
        "--issuer=https://a",
        "--oidc-issuer-url=https://a",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    let err = kubelogin::Cli::try_parse_from(["kubectl-oidc_login", "clean", "--client-id=x"])
        .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
}

/// `setup` with `--grant-type=auto` on a machine without a display and a provider without
/// device authorization logs in with authcode-keyboard, which reads the code on stdin: the
/// kubeconfig it recommends must let kubectl give the plugin stdin (`IfAvailable`), where a
/// browser login keeps `Never`.
#[test]
fn setup_recommends_if_available_when_auto_picks_authcode_keyboard() {
    let browser = Harness::new(Config::default());
    let out = browser.run_command("setup", &[]).unwrap();
    assert!(
        browser
            .console()
            .contains("Using the browser login (authcode)"),
        "{}",
        browser.console()
    );
    assert!(out.contains("--exec-interactive-mode=Never"), "{out}");

    let h = Harness::new(Config {
        device_endpoint_in_discovery: false,
        ..Config::default()
    });
    h.fake.host.unset("DISPLAY");
    type_the_code_from_the_browser_page(&h);
    let out = h.run_command("setup", &[]).unwrap();
    assert!(
        h.console()
            .contains("Using the login by typed code (authcode-keyboard)"),
        "{}",
        h.console()
    );
    assert_eq!(h.fake.prompt.asked(), vec!["Enter code: "]);
    assert!(out.contains("--exec-interactive-mode=IfAvailable"), "{out}");
    assert!(!out.contains("--exec-interactive-mode=Never"), "{out}");
}
