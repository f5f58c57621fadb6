//! The discovery endpoint, OpenID Connect Discovery 1.0 §4: serves the document `metadata`
//! built once at start.
//!
//! May depend on: `state`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// GET /.well-known/openid-configuration
pub async fn discovery(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.discovery_json.clone(),
    )
        .into_response()
}
