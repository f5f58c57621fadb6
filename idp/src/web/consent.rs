//! The consent page: which client, which scopes, allow or deny (POST /oauth/authorize/consent).
//! The decision is recorded by `oidc::authorize`; an allowed request gets its code here.
//!
//! May depend on: `oidc::authorize`, the pages beside it, `http`, `state`, `store`, `error`.

use super::authorize::{refusal, send_code};
use super::{client_name, csrf, current_user, describe_scopes, page};
use crate::error::{IdpError, PageError};
use crate::http::ClientMeta;
use crate::oidc::authorize::{self, is_oob, AuthzError, ValidRequest};
use crate::state::AppState;
use crate::store::User;
use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub request: &'a str,
    pub client_id: &'a str,
    pub client_name: &'a str,
    pub username: &'a str,
    pub scopes: Vec<(String, String)>,
    pub redirect_host: String,
    /// The out-of-band redirect URI: the code is shown, not sent (`code.rs`).
    pub oob: bool,
}

pub async fn render(
    state: &AppState,
    headers: &HeaderMap,
    req: &ValidRequest,
    user: &User,
) -> Result<Response, IdpError> {
    let csrf = csrf::session_token(state, headers).await?;
    let redirect_host = url::Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_default();
    let p = ConsentPage {
        base: &state.config.base_path,
        csrf: &csrf,
        request: &req.raw_query,
        client_id: &req.client.client_id,
        client_name: client_name(&req.client),
        username: &user.username,
        scopes: describe_scopes(&req.scopes),
        redirect_host,
        oob: is_oob(&req.redirect_uri),
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub request: String,
    #[serde(default)]
    pub decision: String,
}

/// POST /oauth/authorize/consent
pub async fn consent_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<ConsentForm>,
) -> Response {
    consent_decision(&state, &headers, &meta, &form)
        .await
        .unwrap_or_else(|e| refusal(&state, e))
}

/// The form must come from the browser's own session (CSRF), carry a request that is still
/// valid, and its user still be signed in; then the answer is recorded and, if allowed, the
/// code issued.
async fn consent_decision(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    form: &ConsentForm,
) -> Result<Response, AuthzError> {
    csrf::check_session(state, headers, &form.csrf_token)
        .await
        .map_err(AuthzError::Page)?;
    let req = authorize::validate(state, &form.request).await?;
    let Some((session, user)) = current_user(state, headers).await? else {
        return Err(AuthzError::Page(PageError {
            status: StatusCode::UNAUTHORIZED,
            title: "Signed out".into(),
            message: "Your session ended. Start the sign-in again from your application.".into(),
        }));
    };
    authorize::record_consent(state, &req, &user, meta, form.decision == "allow").await?;
    send_code(state, &req, &user, session.auth_time, meta).await
}
