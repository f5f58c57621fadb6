//! One audit row per event: every grant of the token endpoint, run once, leaves exactly the
//! events it stands for, each once (issue 10 §1: a refresh used to write two `token_refreshed`
//! rows).

use super::common::*;
use axum::http::StatusCode;
use idp::store::AuditFilter;
use idp::testing::{form_value, ALICE, ALICE_PASSWORD, CONFIDENTIAL_CLIENT, PASSWORD_CLIENT};

/// The newest audit event's id (0 when there is none).
async fn last_id(h: &Harness) -> i64 {
    let newest = h
        .state
        .store
        .audit_events(AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    newest.first().map(|e| e.id).unwrap_or(0)
}

/// The events recorded after `since`, as `name (details)`, sorted.
async fn events_after(h: &Harness, since: i64) -> Vec<String> {
    let mut all: Vec<String> = h
        .state
        .store
        .audit_events(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.id > since)
        .map(|e| format!("{} ({})", e.event, e.details))
        .collect();
    all.sort();
    all
}

/// Runs one token request and returns its response and the events it recorded.
async fn grant(h: &Harness, form: &[(&str, &str)]) -> (Resp, Vec<String>) {
    let since = last_id(h).await;
    let r = h.token(form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (r, events_after(h, since).await)
}

#[tokio::test]
async fn every_grant_records_each_of_its_events_once() {
    let h = harness().await;

    // authorization_code
    let (code, verifier) = h.code_for_alice("openid offline_access").await;
    let (r, rows) = grant(
        &h,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(rows, ["token_issued (authorization_code)"]);

    // refresh_token
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    h.clock.advance(1);
    let (_, rows) = grant(
        &h,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", "kubelogin"),
        ],
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].starts_with("token_refreshed"), "{rows:?}");

    // device_code: authorize the device in the browser, then one poll gets the tokens.
    let d = h
        .post(
            "/oauth/device/code",
            &[("client_id", "kubelogin"), ("scope", "openid")],
            &[],
            &[],
        )
        .await
        .json();
    let user_code = d["user_code"].as_str().unwrap().to_string();
    let device_code = d["device_code"].as_str().unwrap().to_string();
    let cookies = h.login(ALICE, ALICE_PASSWORD).await;
    let page = h
        .get(&format!("/device?user_code={user_code}"), &cookies)
        .await;
    let csrf = form_value(&page.body, "csrf_token").unwrap_or_default();
    let approved = h
        .post(
            "/device",
            &[
                ("csrf_token", &csrf),
                ("user_code", &user_code),
                ("decision", "allow"),
            ],
            &cookies,
            &[],
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let (_, rows) = grant(
        &h,
        &[
            ("grant_type", shared::token::grant_type::DEVICE_CODE),
            ("device_code", &device_code),
            ("client_id", "kubelogin"),
        ],
    )
    .await;
    assert_eq!(rows, ["token_issued (device_code)"]);

    // client_credentials
    let (_, rows) = grant(
        &h,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", &h.secret),
        ],
    )
    .await;
    assert_eq!(rows, ["token_issued (client_credentials)"]);

    // password (RFC 6749 §4.3, for the clients that enable it): a login and an issue.
    let (_, rows) = grant(
        &h,
        &[
            ("grant_type", "password"),
            ("client_id", PASSWORD_CLIENT),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(
        rows,
        [
            "login_succeeded (password grant)",
            "token_issued (password)"
        ]
    );
}
