//! The UserInfo endpoint, OpenID Connect Core §5.3. The access token is checked by
//! `token::access_token`, as for introspection and revocation.
//!
//! May depend on: `token`, `state`, `store`, `error`.

use crate::error::OAuthError;
use crate::state::AppState;
use crate::token::access_token::check_access_token;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

fn bearer_error(desc: &str) -> Response {
    // RFC 6750 §3: the error goes in WWW-Authenticate.
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid_token", "error_description": desc})),
    )
        .into_response();
    let v = format!("Bearer error=\"invalid_token\", error_description=\"{desc}\"");
    if let Ok(h) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, h);
    }
    r
}

/// GET or POST /oauth/userinfo with `Authorization: Bearer` (RFC 6750 §2.1).
pub async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        let mut r = (StatusCode::UNAUTHORIZED, "").into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(r);
    };
    let Some((claims, Some(user))) = check_access_token(&state, token.trim()).await? else {
        return Ok(bearer_error(
            "the access token is invalid, expired or revoked",
        ));
    };
    let scopes: Vec<&str> = claims.scope.split_whitespace().collect();
    if !scopes.contains(&"openid") {
        return Ok(bearer_error(
            "the access token was not issued with the openid scope",
        ));
    }
    let mut m = Map::new();
    m.insert("sub".into(), json!(user.id));
    if scopes.contains(&"profile") {
        m.insert("preferred_username".into(), json!(user.username));
        if !user.name.is_empty() {
            m.insert("name".into(), json!(user.name));
        }
    }
    if scopes.contains(&"email") {
        m.insert("email".into(), json!(user.email));
        m.insert("email_verified".into(), json!(user.email_verified));
    }
    if scopes.contains(&"groups") {
        m.insert(
            "groups".into(),
            json!(state.store.groups_of_user(&user.id).await?),
        );
    }
    let mut r = axum::Json(Value::Object(m)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
