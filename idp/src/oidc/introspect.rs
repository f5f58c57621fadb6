//! Token introspection, RFC 7662 — for authenticated (confidential) clients only (§2.1: the
//! endpoint MUST require some form of authorization).
//!
//! May depend on: `token` (client authentication, access-token checks), `http`, `state`,
//! `store`, `crypto`, `error`.

use crate::crypto;
use crate::error::OAuthError;
use crate::http::FormParams;
use crate::state::AppState;
use crate::token::access_token::check_access_token;
use crate::token::authenticate_client;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use shared::introspection::IntrospectionResponse;

/// POST /oauth/introspect
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormParams,
) -> Result<Response, OAuthError> {
    let params = form.0;
    let client = authenticate_client(&state, &headers, &params).await?;
    if client.is_public() {
        return Err(OAuthError::invalid_client(
            "introspection needs a confidential client",
        ));
    }
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let now = state.now();
    let mut out = IntrospectionResponse::default();
    if let Some((claims, user)) = check_access_token(&state, token).await? {
        out = IntrospectionResponse {
            active: true,
            scope: Some(claims.scope),
            client_id: Some(claims.client_id),
            username: user.map(|u| u.username),
            token_type: Some("Bearer".into()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
        };
    } else if let Some((t, f)) = state
        .store
        .refresh_token(&crypto::hash_secret(token))
        .await?
    {
        let user = state.store.user_by_id(&f.user_id).await?;
        let live = f.revoked_at.is_none()
            && t.rotated_at.is_none()
            && t.expires_at > now
            && user.as_ref().map(|u| !u.disabled).unwrap_or(false);
        if live {
            out = IntrospectionResponse {
                active: true,
                scope: Some(f.scope),
                client_id: Some(f.client_id),
                username: user.map(|u| u.username),
                token_type: Some("refresh_token".into()),
                exp: Some(t.expires_at),
                iat: Some(t.created_at),
                sub: Some(f.user_id),
                aud: None,
                iss: Some(state.config.issuer.clone()),
            };
        }
    }
    let mut r = axum::Json(out).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
