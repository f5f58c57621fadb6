//! The login page and sign-out. Passwords are checked with argon2id on a blocking thread;
//! failures are throttled per account and per client IP.

use super::{csrf, page, safe_return_path, set_cookie, ClientMeta, SESSION_COOKIE};
use crate::audit;
use crate::crypto;
use crate::error::PageError;
use crate::state::AppState;
use crate::store::{Session, User};
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

/// Why a username/password pair was not accepted.
pub enum PasswordCheck {
    Ok(User),
    Wrong,
    Disabled,
    Throttled(u64),
}

/// Verifies a username and password with throttling and audit. Shared by the login page and the
/// password grant.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
    meta: &ClientMeta,
    client_id: &str,
) -> Result<PasswordCheck, crate::error::IdpError> {
    let now = state.now();
    let account_key = format!("user:{}", username.to_lowercase());
    let ip_key = format!("ip:{}", meta.ip);
    let blocked = state
        .throttle
        .blocked_for(&account_key, state.config.login_max_failures, now)
        .or_else(|| {
            state
                .throttle
                .blocked_for(&ip_key, state.config.login_max_failures_per_ip, now)
        });
    if let Some(wait) = blocked {
        audit::record(
            state,
            audit::Event::new("login_throttled", audit::WARNING)
                .actor(username)
                .client(client_id)
                .meta(meta),
        )
        .await;
        return Ok(PasswordCheck::Throttled(wait));
    }
    let user = state.store.user_by_username(username).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| crypto::dummy_password_hash().to_string());
    let pw = password.to_string();
    let ok = {
        let _slot = state.password_slots.acquire().await;
        tokio::task::spawn_blocking(move || crypto::verify_password(&pw, &hash))
            .await
            .unwrap_or(false)
    };
    match user {
        Some(u) if ok && !u.disabled => {
            state.throttle.reset(&account_key);
            Ok(PasswordCheck::Ok(u))
        }
        Some(u) if ok => {
            audit::record(
                state,
                audit::Event::new("login_failed", audit::WARNING)
                    .actor(&u.username)
                    .client(client_id)
                    .meta(meta)
                    .details("account disabled"),
            )
            .await;
            Ok(PasswordCheck::Disabled)
        }
        _ => {
            state.throttle.fail(&account_key, now);
            state.throttle.fail(&ip_key, now);
            audit::record(
                state,
                audit::Event::new("login_failed", audit::WARNING)
                    .actor(username)
                    .client(client_id)
                    .meta(meta)
                    .details("wrong username or password"),
            )
            .await;
            Ok(PasswordCheck::Wrong)
        }
    }
}

pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    csrf::check_login(&state, &headers, &form.csrf_token).await?;
    let return_to = safe_return_path(&state, &form.return_to).unwrap_or_default();
    let rerender = |error: &str, status: StatusCode| {
        let p = LoginPage {
            base: &state.config.base_path,
            csrf: &form.csrf_token,
            return_to: &return_to,
            username: &form.username,
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
    Ok(resp)
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
    end_session(&state, &headers, &meta).await?;
    let mut r = super::message_page(
        &state,
        StatusCode::OK,
        "Signed out",
        "You are signed out of kubelogin-idp.",
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    Ok(r)
}

/// Deletes the browser's session, if any, with an audit event.
pub async fn end_session(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
) -> Result<(), crate::error::IdpError> {
    if let Some((s, u)) = super::current_user(state, headers).await? {
        state.store.delete_session(&s.id_hash).await?;
        audit::record(
            state,
            audit::Event::new("logout", audit::INFO)
                .actor(&u.username)
                .meta(meta),
        )
        .await;
    }
    Ok(())
}

/// `/`: who is signed in, with a sign-out button.
pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let who = super::current_user(&state, &headers).await?;
    let msg = match who {
        Some((_, u)) => format!("Signed in as {}.", u.username),
        None => "Not signed in.".to_string(),
    };
    Ok(super::message_page(
        &state,
        StatusCode::OK,
        "kubelogin-idp",
        &msg,
    ))
}
