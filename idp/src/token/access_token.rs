//! The check of our own access tokens, shared by userinfo, introspection and revocation.
//!
//! May depend on: `state`, `store`, `keys`, `error`.

use crate::error::IdpError;
use crate::state::AppState;
use crate::store::User;
use shared::claims::AccessTokenClaims;

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
    let Some(client) = state.client(&claims.client_id).await? else {
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
