//! The root page: it leads somewhere. Signed out, a sign-in link; signed in, who is signed
//! in, a link to their account pages and a sign-out button; for administrators, the console.

use super::{csrf, current_user, page};
use crate::error::PageError;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    base: &'a str,
    username: Option<&'a str>,
    admin: bool,
    csrf: &'a str,
}

pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let who = current_user(&state, &headers).await?;
    let admin = match &who {
        Some((_, u)) => super::admin::is_administrator(&state, u).await?,
        None => false,
    };
    let csrf = match &who {
        Some(_) => csrf::session_token(&state, &headers).await?,
        None => String::new(),
    };
    let p = HomePage {
        base: &state.config.base_path,
        username: who.as_ref().map(|(_, u)| u.username.as_str()),
        admin,
        csrf: &csrf,
    };
    Ok(page(&p, StatusCode::OK, None))
}
