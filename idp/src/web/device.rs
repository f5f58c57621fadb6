//! The `/device` page (RFC 8628 §3.3): enter or confirm the user code, see the client, the
//! scopes and when and from where the device asked, allow or deny. Wrong codes are throttled
//! per session and per address (RFC 8628 §5.1, see `accounts`).
//!
//! May depend on: `accounts`, `audit`, `http`, `state`, `store`, `error`.

use super::{client_name, csrf, current_user, describe_scopes, login_redirect, message_page, page};
use crate::accounts;
use crate::audit;
use crate::error::{IdpError, PageError};
use crate::http::ClientMeta;
use crate::state::AppState;
use crate::store::{DeviceCode, DeviceStatus};
use askama::Template;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use shared::device::{format_user_code, normalize_user_code};

pub struct Confirm {
    pub user_code: String,
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<(String, String)>,
    /// When and from where the device asked (a request relayed by a phisher stands out).
    pub requested_ago: String,
    pub request_ip: String,
    pub request_user_agent: String,
    /// The request came from the address this page is open from.
    pub same_address: bool,
}

#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub confirm: Option<Confirm>,
}

#[derive(Deserialize)]
pub struct DeviceQuery {
    #[serde(default)]
    pub user_code: String,
}

const WRONG_CODE: &str =
    "That code is unknown, expired or already used. Check the code on your device.";

fn too_many(wait: u64) -> String {
    format!(
        "Too many wrong codes. Try again in {} minutes.",
        wait.div_ceil(60)
    )
}

/// "3 minutes ago" for a time `secs` seconds back (device codes live minutes, not days).
fn ago(secs: u64) -> String {
    match secs {
        0..=59 => "less than a minute ago".into(),
        60..=119 => "1 minute ago".into(),
        120..=3599 => format!("{} minutes ago", secs / 60),
        3600..=7199 => "1 hour ago".into(),
        _ => format!("{} hours ago", secs / 3600),
    }
}

/// The pending, unexpired device request for a typed code; input longer than any code is not
/// looked up.
async fn pending_request(state: &AppState, typed: &str) -> Result<Option<DeviceCode>, IdpError> {
    if typed.len() > accounts::MAX_USER_CODE_INPUT {
        return Ok(None);
    }
    let code = normalize_user_code(typed);
    Ok(state
        .store
        .device_by_user_code(&code)
        .await?
        .filter(|d| d.status == DeviceStatus::Pending && d.expires_at > state.now()))
}

/// What the page shows about a pending request before the user allows or denies it.
async fn confirmation(
    state: &AppState,
    d: DeviceCode,
    meta: &ClientMeta,
) -> Result<Confirm, IdpError> {
    let client = state.store.client(&d.client_id).await?;
    let client_name = client
        .map(|c| client_name(&c).to_string())
        .unwrap_or_default();
    let scopes: Vec<String> = d.scope.split_whitespace().map(str::to_string).collect();
    Ok(Confirm {
        user_code: format_user_code(&d.user_code),
        client_id: d.client_id.clone(),
        client_name,
        scopes: describe_scopes(&scopes),
        requested_ago: ago(state.now().saturating_sub(d.created_at)),
        same_address: !d.request_ip.is_empty()
            && accounts::address_key(&d.request_ip) == accounts::address_key(&meta.ip),
        request_ip: if d.request_ip.is_empty() {
            "an unknown address".into()
        } else {
            d.request_ip
        },
        request_user_agent: if d.request_user_agent.is_empty() {
            "none".into()
        } else {
            d.request_user_agent
        },
    })
}

/// GET /device[?user_code=...]
pub async fn device_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, PageError> {
    let Some((session, user)) = current_user(&state, &headers).await? else {
        let back = match raw {
            Some(r) if !r.is_empty() => format!("{}/device?{r}", state.config.base_path),
            _ => format!("{}/device", state.config.base_path),
        };
        return Ok(login_redirect(&state, &back));
    };
    let csrf = csrf::session_token(&state, &headers).await?;
    let mut error = None;
    let mut status = StatusCode::OK;
    let mut confirm = None;
    if !q.user_code.is_empty() {
        if let Some(wait) =
            accounts::user_code_blocked(&state, &session.id_hash, &user.username, &meta).await?
        {
            error = Some(too_many(wait));
            status = StatusCode::TOO_MANY_REQUESTS;
        } else if let Some(d) = pending_request(&state, &q.user_code).await? {
            confirm = Some(confirmation(&state, d, &meta).await?);
        } else {
            accounts::user_code_failed(&state, &session.id_hash, &meta).await?;
            error = Some(WRONG_CODE.to_string());
            status = StatusCode::NOT_FOUND;
        }
    }
    let p = DevicePage {
        base: &state.config.base_path,
        csrf: &csrf,
        username: &user.username,
        error: error.as_deref(),
        confirm,
    };
    Ok(page(&p, status, None))
}

#[derive(Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub user_code: String,
    #[serde(default)]
    pub decision: String,
}

/// POST /device: allow or deny.
pub async fn device_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<DeviceForm>,
) -> Result<Response, PageError> {
    csrf::check_session(&state, &headers, &form.csrf_token).await?;
    let Some((session, user)) = current_user(&state, &headers).await? else {
        return Err(PageError {
            status: StatusCode::UNAUTHORIZED,
            title: "Signed out".into(),
            message: "Sign in again and re-enter the code.".into(),
        });
    };
    if let Some(wait) =
        accounts::user_code_blocked(&state, &session.id_hash, &user.username, &meta).await?
    {
        return Err(PageError {
            status: StatusCode::TOO_MANY_REQUESTS,
            title: "Too many attempts".into(),
            message: too_many(wait),
        });
    }
    let approve = form.decision == "allow";
    let done = match pending_request(&state, &form.user_code).await? {
        Some(d) => state
            .store
            .decide_device(
                &d.user_code,
                approve,
                &user.id,
                session.auth_time,
                state.now(),
            )
            .await?
            .then_some(d.client_id),
        None => None,
    };
    let Some(client_id) = done else {
        accounts::user_code_failed(&state, &session.id_hash, &meta).await?;
        return Err(PageError::bad_request(
            "Code not usable",
            "That code is unknown, expired or already used.",
        ));
    };
    let (event, title, msg) = if approve {
        (
            "device_approved",
            "Device signed in",
            "You can return to your device; it will finish signing in by itself.",
        )
    } else {
        (
            "device_denied",
            "Request denied",
            "The device was not signed in.",
        )
    };
    audit::record(
        &state,
        audit::Event::new(event, audit::INFO)
            .actor(&user.username)
            .client(&client_id)
            .meta(&meta),
    )
    .await;
    Ok(message_page(&state, StatusCode::OK, title, msg))
}
