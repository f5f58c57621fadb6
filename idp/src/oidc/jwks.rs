//! The JWK Set (RFC 7517 §5): the active key and retired keys whose tokens may still be live.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// GET /.well-known/jwks.json
pub async fn jwks(State(state): State<AppState>) -> Result<Response, crate::error::PageError> {
    let keys = state.keys().await?;
    Ok((
        // Short caching: verifiers re-fetch on an unknown kid anyway, and rotation should show
        // up quickly.
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        keys.jwks_json.clone(),
    )
        .into_response())
}
