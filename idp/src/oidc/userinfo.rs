//! The UserInfo endpoint, OpenID Connect Core §5.3, and the access-token check it shares with
//! introspection.

use crate::error::{IdpError, OAuthError};
use crate::state::AppState;
use crate::store::User;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

pub use shared::claims::AccessTokenClaims;

/// Verifies one of our access tokens and that it is still good: signature by a published key,
/// our issuer, unexpired, not revoked (RFC 7009 §2: by its own id, or with the grant it came
/// from: a revoked refresh family, a replayed code), user enabled, client not
/// force-reauthenticated since.
/// Returns the claims and the user (none for client-credentials tokens).
pub async fn check_access_token(
    state: &AppState,
    token: &str,
) -> Result<Option<(AccessTokenClaims, Option<User>)>, IdpError> {
    let keys = state.keys().await?;
    let Ok(claims) = crate::keys::verify_jwt::<AccessTokenClaims>(&keys.published, token) else {
        return Ok(None);
    };
    let now = state.now();
    if claims.iss != state.config.issuer || claims.exp <= now {
        return Ok(None);
    }
    if state.store.is_jti_revoked(&claims.jti).await? {
        return Ok(None);
    }
    let Some(client) = state.store.client(&claims.client_id).await? else {
        return Ok(None);
    };
    if claims.iat < client.tokens_valid_after {
        return Ok(None);
    }
    if let Some(grant) = &claims.grant_id {
        match state.store.family(grant).await? {
            Some(f) if f.revoked_at.is_none() => {}
            _ => return Ok(None),
        }
    }
    if claims.sub == claims.client_id {
        return Ok(Some((claims, None)));
    }
    match state.store.user_by_id(&claims.sub).await? {
        Some(u) if !u.disabled => Ok(Some((claims, Some(u)))),
        _ => Ok(None),
    }
}

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
