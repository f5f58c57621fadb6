//! The `/device` page (RFC 8628 §3.3): enter or confirm the user code, see the client and
//! scopes, allow or deny.

use super::{csrf, page, ClientMeta};
use crate::audit;
use crate::error::PageError;
use crate::oidc::authorize::describe_scopes;
use crate::state::AppState;
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

/// GET /device[?user_code=...]
pub async fn device_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(q): Query<DeviceQuery>,
) -> Result<Response, PageError> {
    let Some((_, user)) = super::current_user(&state, &headers).await? else {
        let back = match raw {
            Some(r) if !r.is_empty() => format!("{}/device?{r}", state.config.base_path),
            _ => format!("{}/device", state.config.base_path),
        };
        return Ok(super::login_redirect(&state, &back));
    };
    let csrf = csrf::session_token(&state, &headers).await?;
    let mut error = None;
    let mut confirm = None;
    if !q.user_code.is_empty() {
        let code = normalize_user_code(&q.user_code);
        match state.store.device_by_user_code(&code).await? {
            Some(d)
                if d.status == crate::store::DeviceStatus::Pending
                    && d.expires_at > state.now() =>
            {
                let client = state.store.client(&d.client_id).await?;
                let client_name = client
                    .map(|c| {
                        if c.name.is_empty() {
                            c.client_id
                        } else {
                            c.name
                        }
                    })
                    .unwrap_or_default();
                let scopes: Vec<String> = d.scope.split_whitespace().map(str::to_string).collect();
                confirm = Some(Confirm {
                    user_code: format_user_code(&d.user_code),
                    client_id: d.client_id.clone(),
                    client_name,
                    scopes: describe_scopes(&scopes),
                });
            }
            _ => {
                error = Some(
                    "That code is unknown, expired or already used. Check the code on your device.",
                )
            }
        }
    }
    let p = DevicePage {
        base: &state.config.base_path,
        csrf: &csrf,
        username: &user.username,
        error,
        confirm,
    };
    let status = if error.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
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
    let Some((session, user)) = super::current_user(&state, &headers).await? else {
        return Err(PageError {
            status: StatusCode::UNAUTHORIZED,
            title: "Signed out".into(),
            message: "Sign in again and re-enter the code.".into(),
        });
    };
    let code = normalize_user_code(&form.user_code);
    let approve = form.decision == "allow";
    let client_id = state
        .store
        .device_by_user_code(&code)
        .await?
        .map(|d| d.client_id)
        .unwrap_or_default();
    let done = state
        .store
        .decide_device(&code, approve, &user.id, session.auth_time, state.now())
        .await?;
    if !done {
        return Err(PageError::bad_request(
            "Code not usable",
            "That code is unknown, expired or already used.",
        ));
    }
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
    Ok(super::message_page(&state, StatusCode::OK, title, msg))
}
