//! Re-authentication before admin actions: when the session's last authentication is older
//! than `ADMIN_REAUTH_AFTER`, an action goes here first; the right password moves the
//! session's `auth_time` to now and sends the browser back to the action's page.
//!
//! The password check is the login page's (`accounts::check_password`: throttled and
//! audited), so this form is no easier to guess through than the login form.

use super::{AdminRead, Console};
use crate::accounts::{check_password, PasswordCheck};
use crate::audit;
use crate::error::PageError;
use crate::http::ClientMeta;
use crate::state::AppState;
use crate::web::csrf::Posted;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

#[derive(Template)]
#[template(path = "admin/reauth.html")]
struct ReauthPage<'a> {
    c: &'a Console,
    return_to: &'a str,
    error: Option<&'a str>,
}

/// The longest `return_to` echoed back into the form (console paths are short).
const MAX_RETURN_TO: usize = 2048;

/// The way to `/admin/reauth`, coming back to `back` (a path below the base path).
pub fn redirect(state: &AppState, back: &str) -> Response {
    let mut to = url::form_urlencoded::Serializer::new(String::new());
    to.append_pair("return_to", back);
    Redirect::to(&format!(
        "{}/admin/reauth?{}",
        state.config.base_path,
        to.finish()
    ))
    .into_response()
}

/// Where to go back to: an admin page of this server, else the overview.
fn back_to(state: &AppState, return_to: &str) -> String {
    let base = &state.config.base_path;
    match super::super::safe_return_path(state, return_to) {
        Some(url)
            if url::Url::parse(&url).is_ok_and(|u| {
                u.path()
                    .strip_prefix(base.as_str())
                    .is_some_and(|p| p == "/admin" || p.starts_with("/admin/"))
            }) =>
        {
            url
        }
        _ => format!("{base}/admin"),
    }
}

#[derive(Deserialize)]
pub struct ReauthQuery {
    #[serde(default)]
    return_to: String,
}

pub async fn page(AdminRead(c): AdminRead, Query(q): Query<ReauthQuery>) -> Response {
    let return_to = audit::bounded(&q.return_to, MAX_RETURN_TO);
    let p = ReauthPage {
        c: &c,
        return_to: &return_to,
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct ReauthForm {
    #[serde(default)]
    return_to: String,
    #[serde(default)]
    password: String,
}

pub async fn submit(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    meta: ClientMeta,
    Posted(f): Posted<ReauthForm>,
) -> Result<Response, PageError> {
    let rerender = |error: &str, status| {
        let return_to = audit::bounded(&f.return_to, MAX_RETURN_TO);
        let p = ReauthPage {
            c: &c,
            return_to: &return_to,
            error: Some(error),
        };
        super::page(&p, status, None)
    };
    if f.password.is_empty() || f.password.len() > crate::admin::users::MAX_PASSWORD * 4 {
        return Ok(rerender("Enter your password.", StatusCode::BAD_REQUEST));
    }
    match check_password(&state, &c.user.username, &f.password, &meta, "").await? {
        PasswordCheck::Ok(_) => {}
        PasswordCheck::Wrong | PasswordCheck::Disabled => {
            return Ok(rerender("Wrong password.", StatusCode::UNAUTHORIZED));
        }
        PasswordCheck::Throttled(wait) => {
            let m = format!(
                "Too many failed attempts. Try again in {} minutes.",
                wait.div_ceil(60)
            );
            return Ok(rerender(&m, StatusCode::TOO_MANY_REQUESTS));
        }
    }
    state
        .store
        .reauthenticate_session(&c.session.id_hash, state.now())
        .await?;
    audit::record(
        &state,
        audit::Event::new("admin_reauthenticated", audit::INFO)
            .actor(&c.user.username)
            .meta(&meta),
    )
    .await;
    Ok(Redirect::to(&back_to(&state, &f.return_to)).into_response())
}
