//! The login page and the home page. The password check and its throttling live in
//! `accounts`; signing out in `logout.rs`.
//!
//! May depend on: `accounts`, `audit`, `crypto`, `http`, `state`, `store`, `error`.

use super::{csrf, current_user, message_page, page, safe_return_path};
use super::{PRE_SESSION_COOKIE, SESSION_COOKIE};
use crate::accounts::{check_password, PasswordCheck, MAX_USERNAME_LEN};
use crate::audit;
use crate::crypto;
use crate::error::PageError;
use crate::http::{our_cookie, set_cookie, ClientMeta};
use crate::state::AppState;
use crate::store::Session;
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

pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    csrf::check_login(&state, &headers, &form.csrf_token).await?;
    let return_to = safe_return_path(&state, &form.return_to).unwrap_or_default();
    // The name is echoed back into the form, bounded like everything else.
    let shown_username = audit::bounded(&form.username, MAX_USERNAME_LEN);
    let rerender = |error: &str, status: StatusCode| {
        let p = LoginPage {
            base: &state.config.base_path,
            csrf: &form.csrf_token,
            return_to: &return_to,
            username: &shown_username,
            error: Some(error),
            client_name: None,
        };
        page(&p, status, None)
    };
    if form.username.is_empty() || form.password.is_empty() {
        return Ok(rerender(
            "Enter your username and password.",
            StatusCode::BAD_REQUEST,
        ));
    }
    let user = match check_password(&state, &form.username, &form.password, &meta, "").await? {
        PasswordCheck::Ok(u) => u,
        PasswordCheck::Wrong | PasswordCheck::Disabled => {
            return Ok(rerender(
                "Wrong username or password.",
                StatusCode::UNAUTHORIZED,
            ))
        }
        PasswordCheck::Throttled(wait) => {
            let msg = format!(
                "Too many failed attempts. Try again in {} minutes.",
                wait.div_ceil(60)
            );
            return Ok(rerender(&msg, StatusCode::TOO_MANY_REQUESTS));
        }
    };
    let now = state.now();
    // A new session id at every sign-in (no fixation), and the browser's previous session, if
    // any, ends here rather than lingering until it expires.
    if let Some(old) = our_cookie(&state, &headers, SESSION_COOKIE) {
        state
            .store
            .delete_session(&crypto::hash_secret(&old))
            .await?;
    }
    let sid = crypto::random_token(32);
    state
        .store
        .create_session(Session {
            id_hash: crypto::hash_secret(&sid),
            user_id: user.id.clone(),
            auth_time: now,
            created_at: now,
            expires_at: now + state.config.session_lifetime,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        })
        .await?;
    audit::record(
        &state,
        audit::Event::new("login_succeeded", audit::INFO)
            .actor(&user.username)
            .meta(&meta),
    )
    .await;
    let target = if return_to.is_empty() {
        format!("{}/", state.config.base_path)
    } else {
        return_to
    };
    let mut resp = Redirect::to(&target).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &state,
            SESSION_COOKIE,
            &sid,
            Some(state.config.session_lifetime),
        ),
    );
    // The pre-login session has served its purpose: its CSRF token must not outlive the login.
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, PRE_SESSION_COOKIE, "", Some(0)),
    );
    Ok(resp)
}

/// `/`: who is signed in, with a sign-out button.
pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let who = current_user(&state, &headers).await?;
    let msg = match who {
        Some((_, u)) => format!("Signed in as {}.", u.username),
        None => "Not signed in.".to_string(),
    };
    Ok(message_page(&state, StatusCode::OK, "kubelogin-idp", &msg))
}
