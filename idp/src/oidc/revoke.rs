//! Token revocation, RFC 7009.
//!
//! May depend on: `token` (client authentication, access-token checks), `audit`, `http`,
//! `state`, `store`, `crypto`, `error`.

use crate::audit;
use crate::crypto;
use crate::error::OAuthError;
use crate::http::ClientMeta;
use crate::http::FormParams;
use crate::state::AppState;
use crate::token::access_token::check_access_token;
use crate::token::authenticate_client;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// POST /oauth/revoke. §2.2: the answer is 200 whether or not the token was valid, so the
/// endpoint reveals nothing; a token of another client is left alone.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    form: FormParams,
) -> Result<Response, OAuthError> {
    let params = form.0;
    let client = authenticate_client(&state, &headers, &params).await?;
    let token = params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let now = state.now();
    let hint = params.get("token_type_hint").map(String::as_str);
    // Refresh token first unless hinted otherwise (§2.1: the hint only speeds up the lookup).
    if hint != Some("access_token") || !token.contains('.') {
        if let Some((_, family)) = state
            .store
            .refresh_token(&crypto::hash_secret(token))
            .await?
        {
            if family.client_id == client.client_id {
                // Revoking a refresh token revokes its whole family (§2.1 allows more).
                state.store.revoke_family(&family.id, now).await?;
                audit::record(
                    &state,
                    audit::Event::new("token_revoked", audit::INFO)
                        .subject(&audit::username_of(state.store.as_ref(), &family.user_id).await)
                        .client(&client.client_id)
                        .meta(&meta)
                        .details("refresh token family"),
                )
                .await;
            }
            return Ok(StatusCode::OK.into_response());
        }
    }
    if let Some((claims, _)) = check_access_token(&state, token).await? {
        if claims.client_id == client.client_id {
            state.store.revoke_jti(&claims.jti, claims.exp).await?;
            audit::record(
                &state,
                audit::Event::new("token_revoked", audit::INFO)
                    .subject(&audit::username_of(state.store.as_ref(), &claims.sub).await)
                    .client(&client.client_id)
                    .meta(&meta)
                    .details("access token"),
            )
            .await;
        }
    }
    Ok(StatusCode::OK.into_response())
}
