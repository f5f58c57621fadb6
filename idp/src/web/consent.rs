//! The consent page: which client, which scopes, allow or deny.

use super::{code, csrf, page};
use crate::error::IdpError;
use crate::oidc::authorize::{describe_scopes, ValidRequest};
use crate::state::AppState;
use crate::store::User;
use askama::Template;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

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
    let name = if req.client.name.is_empty() {
        &req.client.client_id
    } else {
        &req.client.name
    };
    let p = ConsentPage {
        base: &state.config.base_path,
        csrf: &csrf,
        request: &req.raw_query,
        client_id: &req.client.client_id,
        client_name: name,
        username: &user.username,
        scopes: describe_scopes(&req.scopes),
        redirect_host,
        oob: code::is_oob(&req.redirect_uri),
    };
    Ok(page(&p, StatusCode::OK, None))
}
