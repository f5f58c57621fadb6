//! The refresh token grant, RFC 6749 §6, with rotation and reuse detection (OAuth 2.0
//! Security BCP, RFC 9700 §4.14.2) and an ID token on every refresh (OpenID Connect Core §12.2).

use super::{active_user, mint, GrantContext, Mint, RefreshPlan};
use crate::audit;
use crate::crypto;
use crate::error::OAuthError;
use crate::store::{RefreshToken, Rotation};
use shared::token::TokenResponse;

pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    let state = ctx.state;
    let presented = ctx
        .params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let now = state.now();
    let new_token = crypto::random_token(32);
    let old_hash = crypto::hash_secret(presented);

    // 1. The token must belong to the authenticated client (§6: "validate the refresh token
    //    and ensure that it was issued to the authenticated client"). Checked before rotating
    //    so a foreign client cannot burn someone else's token.
    match state.store.refresh_token(&old_hash).await? {
        Some((_, f)) if f.client_id == ctx.client.client_id => {}
        Some(_) => {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ))
        }
        None => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
    }

    // 2. Rotate atomically: a current token is replaced; one rotated within the grace window
    //    (a racing kubectl) gets a sibling; one rotated earlier is reuse and kills the family.
    let next = RefreshToken {
        token_hash: crypto::hash_secret(&new_token),
        family_id: String::new(),
        created_at: now,
        expires_at: now + state.config.refresh_token_lifetime,
        rotated_at: None,
    };
    let family = match state
        .store
        .rotate_refresh_token(&old_hash, next, now, state.config.refresh_reuse_grace)
        .await?
    {
        Rotation::Rotated(f) | Rotation::WithinGrace(f) => f,
        Rotation::Reused(f) => {
            audit::record(
                state,
                audit::Event::new("refresh_token_reused", audit::CRITICAL)
                    .subject(&f.user_id)
                    .client(&f.client_id)
                    .meta(ctx.meta)
                    .details(
                        "a rotated refresh token was presented again; the whole family is revoked",
                    ),
            )
            .await;
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used; this session is revoked, sign in again",
            ));
        }
        Rotation::Invalid => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
    };

    // 3. The user must still be enabled, and the client not force-reauthenticated since.
    let user = match active_user(state, &family.user_id).await {
        Ok(u) => u,
        Err(e) => {
            state.store.revoke_family(&family.id, now).await?;
            return Err(e);
        }
    };
    if family.created_at < ctx.client.tokens_valid_after {
        return Err(OAuthError::invalid_grant(
            "the client's sessions were revoked; sign in again",
        ));
    }

    // 4. A narrower scope may be asked for, never a wider one (§6).
    let granted: Vec<&str> = family.scope.split_whitespace().collect();
    let scope = match ctx.params.get("scope") {
        Some(s) => {
            if let Some(bad) = s.split_whitespace().find(|x| !granted.contains(x)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {bad:?} was not granted originally"
                )));
            }
            s.clone()
        }
        None => family.scope.clone(),
    };
    let minted = mint(
        ctx,
        Mint {
            user: Some(&user),
            scope: &scope,
            nonce: None,
            auth_time: Some(family.auth_time),
            refresh: RefreshPlan::Rotated { token: new_token },
        },
    )
    .await?;
    audit::record(
        state,
        audit::Event::new("token_refreshed", audit::INFO)
            .actor(&user.username)
            .client(&ctx.client.client_id)
            .meta(ctx.meta),
    )
    .await;
    Ok(minted.response)
}
