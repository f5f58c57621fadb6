//! The login page. The password check, its throttling and the session
//! live in `accounts`; signing out in `logout.rs`.
//!
//! May depend on: `accounts`, `audit`, `http`, `state`, `store`, `error`.

use super::{csrf, page, safe_return_path};
use super::{PRE_SESSION_COOKIE, SESSION_COOKIE};
use crate::accounts::{self, check_password, PasswordCheck, MAX_USERNAME_LEN};
use crate::audit;
use crate::error::{IdpError, PageError};
use crate::http::{our_cookie, set_cookie, ClientMeta};
use crate::state::AppState;
use crate::store::User;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub return_to: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub client_name: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub return_to: String,
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let (csrf, cookie) = csrf::login_token(&state, &headers).await?;
    let return_to = safe_return_path(&state, &q.return_to).unwrap_or_default();
    let p = LoginPage {
        base: &state.config.base_path,
        csrf: &csrf,
        return_to: &return_to,
        username: "",
        error: None,
        client_name: None,
    };
    Ok(page(&p, StatusCode::OK, cookie))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub return_to: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// POST /login: the steps of signing in, each its own function so a second factor can join
/// between the password and the session.
pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    // 1. The form came from this browser's login page (CSRF bound to its pre-session).
    csrf::check_login(&state, &headers, &form.csrf_token).await?;
    let return_to = safe_return_path(&state, &form.return_to).unwrap_or_default();
    // 2. The password (throttled and audited in `accounts`).
    let user = match password_step(&state, &form, &meta).await? {
        Ok(user) => user,
        Err((error, status)) => return Ok(rerender(&state, &form, &return_to, &error, status)),
    };
    // 3. A new session, replacing the browser's previous one.
    let previous = our_cookie(&state, &headers, SESSION_COOKIE);
    let sid = accounts::start_session(&state, &user, &meta, previous.as_deref()).await?;
    // 4. Back to where the sign-in began.
    Ok(signed_in(&state, return_to, &sid))
}

/// The signed-in user, or what to tell the person on the form and with which status.
async fn password_step(
    state: &AppState,
    form: &LoginForm,
    meta: &ClientMeta,
) -> Result<Result<User, (String, StatusCode)>, IdpError> {
    if form.username.is_empty() || form.password.is_empty() {
        let error = "Enter your username and password.".to_string();
        return Ok(Err((error, StatusCode::BAD_REQUEST)));
    }
    let refusal = match check_password(state, &form.username, &form.password, meta, "").await? {
        PasswordCheck::Ok(u) => return Ok(Ok(u)),
        PasswordCheck::Wrong | PasswordCheck::Disabled => (
            "Wrong username or password.".to_string(),
            StatusCode::UNAUTHORIZED,
        ),
        PasswordCheck::Throttled(wait) => (
            format!(
                "Too many failed attempts. Try again in {} minutes.",
                wait.div_ceil(60)
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ),
    };
    Ok(Err(refusal))
}

/// The login form again, with the name typed and what went wrong.
fn rerender(
    state: &AppState,
    form: &LoginForm,
    return_to: &str,
    error: &str,
    status: StatusCode,
) -> Response {
    // The name is echoed back into the form, bounded like everything else.
    let shown_username = audit::bounded(&form.username, MAX_USERNAME_LEN);
    let p = LoginPage {
        base: &state.config.base_path,
        csrf: &form.csrf_token,
        return_to,
        username: &shown_username,
        error: Some(error),
        client_name: None,
    };
    page(&p, status, None)
}

/// The redirect back (or home), setting the session cookie and clearing the pre-session one.
fn signed_in(state: &AppState, return_to: String, sid: &str) -> Response {
    let target = if return_to.is_empty() {
        format!("{}/", state.config.base_path)
    } else {
        return_to
    };
    let mut resp = Redirect::to(&target).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            state,
            SESSION_COOKIE,
            sid,
            Some(state.config.session_lifetime),
        ),
    );
    // The pre-login session has served its purpose: its CSRF token must not outlive the login.
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, PRE_SESSION_COOKIE, "", Some(0)),
    );
    resp
}
