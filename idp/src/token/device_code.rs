//! The device code grant, RFC 8628 §3.4–§3.5.

use super::{active_user, audit_issued, check_pkce, mint, GrantContext, Mint, RefreshPlan};
use crate::crypto;
use crate::error::OAuthError;
use crate::store::DevicePoll;
use shared::token::{error_code, TokenResponse};

pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    let state = ctx.state;
    let code = ctx
        .params
        .get("device_code")
        .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
    let hash = crypto::hash_secret(code);
    // The code must have been issued to this client (§3.4) — checked before the poll counts.
    match state.store.device_by_hash_client(&hash).await? {
        Some(c) if c == ctx.client.client_id => {}
        Some(_) => {
            return Err(OAuthError::invalid_grant(
                "the device code was issued to another client",
            ))
        }
        None => {
            return Err(OAuthError::invalid_grant(
                "the device code is invalid or already used",
            ))
        }
    }
    // §3.5: pending, slow_down (interval +5 s), access_denied, expired_token.
    let d = match state.store.poll_device(&hash, state.now()).await? {
        DevicePoll::Approved(d) => d,
        DevicePoll::Pending => {
            return Err(OAuthError::new(
                error_code::AUTHORIZATION_PENDING,
                "the user has not yet approved the request",
            ))
        }
        DevicePoll::SlowDown => {
            return Err(OAuthError::new(
                error_code::SLOW_DOWN,
                "polling too fast; add 5 seconds to the interval",
            ))
        }
        DevicePoll::Denied => {
            return Err(OAuthError::new(
                error_code::ACCESS_DENIED,
                "the user denied the request",
            ))
        }
        DevicePoll::Expired => {
            return Err(OAuthError::new(
                error_code::EXPIRED_TOKEN,
                "the device code expired; start again",
            ))
        }
        DevicePoll::NotFound => {
            return Err(OAuthError::invalid_grant(
                "the device code is invalid or already used",
            ))
        }
    };
    check_pkce(d.code_challenge.as_deref(), ctx.params.get("code_verifier"))?;
    let (user, groups) = active_user(state, d.user_id.as_deref().unwrap_or("")).await?;
    // Like every grant: nothing issued before a forced re-authentication of the client counts.
    if d.created_at < ctx.client.tokens_valid_after {
        return Err(OAuthError::invalid_grant(
            "the client's sessions were revoked; start the device flow again",
        ));
    }
    let minted = mint(
        ctx,
        Mint {
            user: Some(&user),
            groups: &groups,
            scope: &d.scope,
            nonce: None,
            auth_time: d.auth_time,
            refresh: RefreshPlan::NewFamily,
        },
    )
    .await?;
    audit_issued(ctx, &user.username, "device_code").await;
    Ok(minted.response)
}
