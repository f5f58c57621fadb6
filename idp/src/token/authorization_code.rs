//! The authorization code grant, RFC 6749 §4.1.3, with PKCE (RFC 7636 §4.6).

use super::{active_user, audit_issued, check_pkce, mint, GrantContext, Mint, RefreshPlan};
use crate::audit;
use crate::crypto;
use crate::error::OAuthError;
use crate::store::CodeRedemption;
use shared::token::TokenResponse;

pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    let state = ctx.state;
    let code = ctx
        .params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let code_hash = crypto::hash_secret(code);
    let now = state.now();

    // 1. The code must exist, be unexpired and unused (§4.1.2: single use); a replay revokes
    //    the tokens the first use produced.
    let stored = match state.store.redeem_auth_code(&code_hash, now).await? {
        CodeRedemption::Fresh(c) => c,
        CodeRedemption::Replayed => {
            audit::record(
                state,
                audit::Event::new("authorization_code_replayed", audit::CRITICAL)
                    .client(&ctx.client.client_id)
                    .meta(ctx.meta)
                    .details("tokens issued from this code were revoked"),
            )
            .await;
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used; tokens issued from it are revoked",
            ));
        }
        CodeRedemption::NotFound => {
            return Err(OAuthError::invalid_grant(
                "the authorization code is invalid or expired",
            ))
        }
    };
    // 2. It must have been issued to this client (§4.1.3).
    if stored.client_id != ctx.client.client_id {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    // 3. redirect_uri must be identical to the one in the authorization request (§4.1.3).
    if ctx.params.get("redirect_uri") != Some(&stored.redirect_uri) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    // 4. PKCE (RFC 7636 §4.6), for every client that sent a challenge.
    check_pkce(
        stored.code_challenge.as_deref(),
        ctx.params.get("code_verifier"),
    )?;
    // 5. The user must still be allowed in, and the client not force-reauthenticated since.
    let (user, groups) = active_user(state, &stored.user_id).await?;
    if stored.created_at < ctx.client.tokens_valid_after {
        return Err(OAuthError::invalid_grant(
            "the client's sessions were revoked; sign in again",
        ));
    }
    let minted = mint(
        ctx,
        Mint {
            user: Some(&user),
            groups: &groups,
            scope: &stored.scope,
            nonce: stored.nonce.as_deref(),
            auth_time: Some(stored.auth_time),
            refresh: RefreshPlan::NewFamily,
        },
    )
    .await?;
    if let Some(f) = &minted.family_id {
        state.store.link_code_family(&code_hash, f).await?;
    }
    audit_issued(ctx, &user.username, "authorization_code").await;
    Ok(minted.response)
}
