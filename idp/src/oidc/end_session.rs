//! RP-initiated logout, OpenID Connect RP-Initiated Logout 1.0 §2–§3.

use crate::error::PageError;
use crate::oidc::authorize::{parse_unique, redirect_with};
use crate::state::AppState;
use crate::web::{self, ClientMeta};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

/// GET /oauth/logout[?id_token_hint&post_logout_redirect_uri&state&client_id]: ends the IdP
/// session; redirects only to a post-logout URI registered for the client (§3).
pub async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let p = parse_unique(raw.as_deref().unwrap_or(""))
        .map_err(|e| PageError::bad_request("Invalid request", e))?;
    let mut client_id = p.get("client_id").cloned();
    if let Some(hint) = p.get("id_token_hint") {
        // The hint may be expired (§2), so only its signature is checked.
        #[derive(serde::Deserialize)]
        struct Hint {
            aud: shared::claims::Audience,
        }
        let keys = state.keys().await?;
        if let Ok(h) = crate::keys::verify_jwt::<Hint>(&keys.published, hint) {
            if let shared::claims::Audience::One(a) = h.aud {
                client_id = client_id.or(Some(a));
            }
        }
    }
    web::login::end_session(&state, &headers, &meta).await?;
    let clear = web::set_cookie(&state, web::SESSION_COOKIE, "", Some(0));
    if let (Some(uri), Some(cid)) = (p.get("post_logout_redirect_uri"), client_id) {
        let client = state.store.client(&cid).await?;
        if client
            .map(|c| c.post_logout_redirect_uris.contains(uri))
            .unwrap_or(false)
        {
            let mut pairs = Vec::new();
            if let Some(s) = p.get("state") {
                pairs.push(("state", s.clone()));
            }
            let mut r = redirect_with(uri, &pairs);
            r.headers_mut().append(header::SET_COOKIE, clear);
            return Ok(r);
        }
        return Err(PageError::bad_request("Signed out", "You are signed out, but the application's return address is not registered, so you were not sent back."));
    }
    let mut r = web::message_page(
        &state,
        StatusCode::OK,
        "Signed out",
        "You are signed out of kubelogin-idp.",
    );
    r.headers_mut().append(header::SET_COOKIE, clear);
    Ok(r)
}
