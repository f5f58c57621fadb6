//! The resource owner password credentials grant, RFC 6749 §4.3 — only for clients that enable
//! it, with the same throttling and audit as the login page.

use super::{audit_issued, mint, requested_scopes, GrantContext, Mint, RefreshPlan};
use crate::accounts::{check_password, PasswordCheck};
use crate::audit;
use crate::error::OAuthError;
use shared::token::TokenResponse;

pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    let username = ctx
        .params
        .get("username")
        .ok_or_else(|| OAuthError::invalid_request("username is missing"))?;
    let password = ctx
        .params
        .get("password")
        .ok_or_else(|| OAuthError::invalid_request("password is missing"))?;
    let scopes = requested_scopes(ctx.client, ctx.params)?.join(" ");
    let user = match check_password(
        ctx.state,
        username,
        password,
        ctx.meta,
        &ctx.client.client_id,
    )
    .await?
    {
        PasswordCheck::Ok(u) => u,
        PasswordCheck::Throttled(_) => {
            return Err(
                OAuthError::invalid_grant("too many failed attempts; try again later")
                    .with_status(axum::http::StatusCode::TOO_MANY_REQUESTS),
            )
        }
        _ => return Err(OAuthError::invalid_grant("wrong username or password")),
    };
    let groups = ctx.state.store.groups_of_user(&user.id).await?;
    let now = ctx.state.now();
    let minted = mint(
        ctx,
        Mint {
            user: Some(&user),
            groups: &groups,
            scope: &scopes,
            nonce: None,
            auth_time: Some(now),
            refresh: RefreshPlan::NewFamily,
        },
    )
    .await?;
    audit::record(
        ctx.state,
        audit::Event::new("login_succeeded", audit::INFO)
            .actor(&user.username)
            .client(&ctx.client.client_id)
            .meta(ctx.meta)
            .details("password grant"),
    )
    .await;
    audit_issued(ctx, &user.username, "password").await;
    Ok(minted.response)
}
