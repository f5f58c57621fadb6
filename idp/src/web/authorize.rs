//! The browser side of the authorization endpoint (GET /oauth/authorize): `oidc::authorize`
//! validates the request and decides the next step; this module renders it: the login
//! redirect, the consent page, the code (a redirect, or the out-of-band page), or the error (a
//! page, or an error redirect to the client).
//!
//! May depend on: `oidc::authorize`, the pages beside it, `http`, `state`, `store`.

use super::{client_name, code, consent, current_user, login_redirect, message_page};
use crate::http::ClientMeta;
use crate::oidc::authorize::{self, is_oob, AuthzError, Next, ValidRequest};
use crate::state::AppState;
use crate::store::User;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::token::error_code;

/// GET /oauth/authorize
pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    authorize_request(&state, &headers, &meta, &raw)
        .await
        .unwrap_or_else(|e| refusal(&state, e))
}

async fn authorize_request(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    raw: &str,
) -> Result<Response, AuthzError> {
    let req = authorize::validate(state, raw).await?;
    let session = current_user(state, headers).await?;
    match authorize::next_step(state, &req, session).await? {
        Next::SignIn { back } => Ok(login_redirect(state, &back)),
        Next::Consent { user } => Ok(consent::render(state, headers, &req, &user).await?),
        Next::Issue { user, auth_time } => send_code(state, &req, &user, auth_time, meta).await,
    }
}

/// Issues a code and sends it to the client; for the out-of-band redirect URI the code is shown
/// on a page instead (`code.rs`).
pub async fn send_code(
    state: &AppState,
    req: &ValidRequest,
    user: &User,
    auth_time: u64,
    meta: &ClientMeta,
) -> Result<Response, AuthzError> {
    let code = authorize::issue_code(state, req, user, auth_time, meta).await?;
    if is_oob(&req.redirect_uri) {
        return Ok(code::render(state, &code, client_name(&req.client)));
    }
    Ok(authorize::code_redirect(state, req, code))
}

/// The response to a refused request: a page, or an error redirect to the client, or, for the
/// out-of-band redirect URI that a browser cannot follow, the error shown as a page.
pub fn refusal(state: &AppState, e: AuthzError) -> Response {
    match e {
        AuthzError::Page(p) => p.into_response(),
        AuthzError::Redirect(r) if is_oob(&r.redirect_uri) => {
            let title = if r.error == error_code::ACCESS_DENIED {
                "Access denied"
            } else {
                "Sign-in failed"
            };
            let msg = format!(
                "{} ({}). No code was issued; stop the command waiting in your terminal (Ctrl-C).",
                r.description, r.error
            );
            message_page(state, StatusCode::BAD_REQUEST, title, &msg)
        }
        AuthzError::Redirect(r) => r.to_client(&state.config.issuer),
    }
}
