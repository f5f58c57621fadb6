//! The client credentials grant, RFC 6749 §4.4: confidential clients only, an access token
//! for the client itself (no user, so no ID token and no refresh token, §4.4.3).

use super::{audit_issued, mint, requested_scopes, GrantContext, Mint, RefreshPlan};
use crate::error::OAuthError;
use shared::token::TokenResponse;

pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    // §4.4: "MUST only be used by confidential clients".
    if ctx.client.is_public() {
        return Err(OAuthError::unauthorized_client(
            "the client credentials grant needs a confidential client",
        ));
    }
    let scopes: Vec<String> = requested_scopes(ctx.client, ctx.params)?
        .into_iter()
        .filter(|s| s != "openid" && s != "offline_access")
        .collect();
    let scope = scopes.join(" ");
    let minted = mint(
        ctx,
        Mint {
            user: None,
            groups: &[],
            scope: &scope,
            nonce: None,
            auth_time: None,
            refresh: RefreshPlan::None,
        },
    )
    .await?;
    audit_issued(ctx, &ctx.client.client_id, "client_credentials").await;
    Ok(minted.response)
}
