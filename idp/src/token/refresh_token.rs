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

    // 1. Rotate atomically, in one transaction that also checks the token belongs to the
    //    authenticated client (§6: "ensure that it was issued to the authenticated client" —
    //    before anything is written, so a foreign client cannot burn someone else's token) and
    //    records the audit event: a current token is replaced; one rotated within the grace
    //    window (a racing kubectl) gets a sibling; one rotated earlier is reuse and kills the
    //    family.
    let next = RefreshToken {
        token_hash: crypto::hash_secret(&new_token),
        family_id: String::new(),
        created_at: now,
        expires_at: now + state.config.refresh_token_lifetime,
        rotated_at: None,
    };
    let audit = audit::Event::new("token_refreshed", audit::INFO)
        .client(&ctx.client.client_id)
        .meta(ctx.meta)
        .into_event();
    let family = match state
        .store
        .rotate_refresh_token(
            &old_hash,
            &ctx.client.client_id,
            next,
            now,
            state.config.refresh_reuse_grace,
            Some(audit),
        )
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
        Rotation::WrongClient => {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ))
        }
        Rotation::Invalid => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
    };

    // 2. The user must still be enabled (the store refused disabled users' tokens; this read also
    //    brings the claims), and the client not force-reauthenticated since.
    let (user, groups) = active_user(state, &family.user_id).await?;
    if family.created_at < ctx.client.tokens_valid_after {
        return Err(OAuthError::invalid_grant(
            "the client's sessions were revoked; sign in again",
        ));
    }

    // 3. A narrower scope may be asked for, never a wider one (§6).
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
            groups: &groups,
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
