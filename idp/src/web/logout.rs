//! Signing out: the sign-out button (POST /logout) and RP-initiated logout (GET or POST
//! /oauth/logout) with its confirmation page. `oidc::end_session` reads the logout request and
//! decides the post-logout redirect; this module asks the person when it must, ends the session
//! and clears its cookie.
//!
//! May depend on: `oidc::end_session`, `accounts`, `http`, `state`, `store`, `error`.

use super::{client_name, csrf, current_user, message_page, page, SESSION_COOKIE};
use crate::accounts;
use crate::error::{IdpError, PageError};
use crate::http::{parse_unique, set_cookie, ClientMeta};
use crate::oidc::end_session::{post_logout_redirect, LogoutRequest};
use crate::state::AppState;
use crate::store::{Session, User};
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Template)]
#[template(path = "logout.html")]
pub struct ConfirmPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub client_name: Option<String>,
    /// The request's parameters, carried to the confirming POST.
    pub params: Vec<(String, String)>,
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// Signs the browser out (POST with CSRF, so another site cannot sign a user out).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    csrf::check_session(&state, &headers, &form.csrf_token).await?;
    let current = current_user(&state, &headers).await?;
    sign_out(&state, current, &meta).await?;
    Ok(signed_out_page(&state))
}

/// "Signed out", with the session cookie cleared.
fn signed_out_page(state: &AppState) -> Response {
    let r = message_page(
        state,
        StatusCode::OK,
        "Signed out",
        "You are signed out of kubelogin-idp.",
    );
    with_cleared_session(state, r)
}

fn with_cleared_session(state: &AppState, mut r: Response) -> Response {
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, "", Some(0)),
    );
    r
}

/// Ends the browser's session, if any (audited by `accounts`).
async fn sign_out(
    state: &AppState,
    current: Option<(Session, User)>,
    meta: &ClientMeta,
) -> Result<(), IdpError> {
    match current {
        Some((s, u)) => accounts::end_session(state, &s, &u, meta).await,
        None => Ok(()),
    }
}

/// GET /oauth/logout[?id_token_hint&post_logout_redirect_uri&state&client_id]
pub async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let p = parse_unique(raw.as_deref().unwrap_or(""))
        .map_err(|e| PageError::bad_request("Invalid request", e))?;
    rp_logout(&state, &headers, &meta, p).await
}

/// POST /oauth/logout: the same request form-encoded (§2: the OP must support GET and POST), or
/// the confirmation page's form, told apart by its `csrf_token`.
pub async fn end_session_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    body: String,
) -> Result<Response, PageError> {
    let p = parse_unique(&body).map_err(|e| PageError::bad_request("Invalid request", e))?;
    rp_logout(&state, &headers, &meta, p).await
}

/// A signed-in user is signed out at once only with a hint naming them or the confirmation
/// form (its CSRF token checked); otherwise asked first. Then the browser goes back to the
/// client if it may.
async fn rp_logout(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    p: BTreeMap<String, String>,
) -> Result<Response, PageError> {
    let req = LogoutRequest::read(state, p).await?;
    let current = current_user(state, headers).await?;
    if let Some((_, user)) = &current {
        let confirmed = match &req.confirmation {
            Some(token) => {
                csrf::check_session(state, headers, token).await?;
                true
            }
            None => false,
        };
        if !confirmed && !req.hint_names(&user.id) {
            return confirm_page(state, headers, &user.username, &req).await;
        }
    }
    sign_out(state, current, meta).await?;
    match post_logout_redirect(state, &req).await? {
        Some(r) => Ok(with_cleared_session(state, r)),
        None => Ok(signed_out_page(state)),
    }
}

/// "Sign out of kubelogin-idp?" with the request carried in hidden fields.
async fn confirm_page(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    req: &LogoutRequest,
) -> Result<Response, PageError> {
    let csrf = csrf::session_token(state, headers).await?;
    let client_name = match &req.client_id {
        Some(c) => state
            .store
            .client(c)
            .await?
            .map(|c| client_name(&c).to_string()),
        None => None,
    };
    let page_ = ConfirmPage {
        base: &state.config.base_path,
        csrf: &csrf,
        username,
        client_name,
        params: req.carried_params(),
    };
    Ok(page(&page_, StatusCode::OK, None))
}
