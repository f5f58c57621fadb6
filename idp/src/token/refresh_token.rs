//! The refresh token grant, RFC 6749 §6, with rotation and reuse detection (OAuth 2.0
//! Security BCP, RFC 9700 §4.14.2) and an ID token on every refresh (OpenID Connect Core §12.2).
//!
//! A retry inside the grace window (a client whose first response was lost) gets the *same*
//! successor as the first presentation, never a sibling: a sibling would be a branch of the
//! family that reuse detection never sees, so a thief replaying the token within the window would
//! keep a session of their own. The successor is kept on the rotated row, sealed with AES-256-GCM
//! under a key derived (HKDF-SHA256) from the presented token, which the database never holds,
//! and erased when the window has passed.
//!
//! May depend on: `token` (minting), `audit`, `store`, `crypto`, `error`.

use super::{active_user, mint, GrantContext, Mint, RefreshPlan};
use crate::audit;
use crate::crypto;
use crate::error::{IdpError, OAuthError};
use crate::store::{Family, RefreshToken, Rotation};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use shared::token::TokenResponse;

const SUCCESSOR_KDF_SALT: &[u8] = b"kubelogin-idp refresh-token successor v1";

/// The AEAD key only the holder of `presented` can derive (HKDF, RFC 5869).
fn successor_key(presented: &str) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, SUCCESSOR_KDF_SALT).extract(presented.as_bytes());
    let okm = prk.expand(&[b"aes-256-gcm"], &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seals `successor` for whoever presents `presented`; bound to the rotated token's hash.
pub fn seal_successor(
    presented: &str,
    old_hash: &str,
    successor: &str,
) -> Result<String, IdpError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| IdpError::Internal("no randomness for the refresh-token successor".into()))?;
    let mut buf = successor.as_bytes().to_vec();
    successor_key(presented)
        .ok_or_else(|| {
            IdpError::Internal("deriving the refresh-token successor key failed".into())
        })?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(old_hash.as_bytes()),
            &mut buf,
        )
        .map_err(|_| IdpError::Internal("sealing the refresh-token successor failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// Opens a successor sealed by [`seal_successor`]; `None` when it does not open.
pub fn open_successor(presented: &str, old_hash: &str, sealed: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (n, ct) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).ok()?;
    let mut buf = ct.to_vec();
    let plain = successor_key(presented)?
        .open_in_place(nonce, Aad::from(old_hash.as_bytes()), &mut buf)
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// The grant, in the order of RFC 6749 §6: the token (rotated), the user and client still
/// allowed, the scope no wider than granted; then the tokens.
pub async fn grant(ctx: GrantContext<'_>) -> Result<TokenResponse, OAuthError> {
    let presented = ctx
        .params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let (family, token) = rotate(ctx, presented).await?;

    // 2. The user must still be enabled (the store refused disabled users' tokens; this read also
    //    brings the claims), and the client not force-reauthenticated since.
    let (user, groups) = active_user(ctx.state, &family.user_id).await?;
    if family.created_at < ctx.client.tokens_valid_after {
        refused(
            ctx,
            &family,
            "the client's sessions were revoked (force re-authentication) after this refresh token was issued",
        )
        .await;
        return Err(OAuthError::invalid_grant(
            "the client's sessions were revoked; sign in again",
        ));
    }

    let scope = narrowed_scope(&family, ctx.params.get("scope"))?;
    let minted = mint(
        ctx,
        Mint {
            user: Some(&user),
            groups: &groups,
            scope: &scope,
            nonce: None,
            auth_time: Some(family.auth_time),
            refresh: RefreshPlan::Rotated {
                token,
                family_id: family.id.clone(),
            },
        },
    )
    .await?;
    Ok(minted.response)
}

/// 1. Rotates the presented token atomically, in one transaction that also checks the token
///    belongs to the authenticated client (§6: "ensure that it was issued to the authenticated
///    client" — before anything is written, so a foreign client cannot burn someone else's
///    token) and records the audit event: a current token is replaced; one rotated within the
///    grace window gets the same successor back; one rotated earlier is reuse and kills the
///    family (RFC 9700 §4.14.2). Returns the family and the refresh token to hand out.
async fn rotate(ctx: GrantContext<'_>, presented: &str) -> Result<(Family, String), OAuthError> {
    let state = ctx.state;
    let now = state.now();
    let new_token = crypto::random_token(32);
    let old_hash = crypto::hash_secret(presented);
    let next = RefreshToken {
        token_hash: crypto::hash_secret(&new_token),
        family_id: String::new(),
        created_at: now,
        expires_at: now + state.config.refresh_token_lifetime,
        rotated_at: None,
        ip: audit::bounded(&ctx.meta.ip, audit::MAX_IP),
        user_agent: audit::bounded(&ctx.meta.user_agent, audit::MAX_USER_AGENT),
    };
    let audit = audit::Event::new("token_refreshed", audit::INFO)
        .client(&ctx.client.client_id)
        .meta(ctx.meta)
        .into_event();
    let sealed = seal_successor(presented, &old_hash, &new_token)?;
    let rotation = state
        .store
        .rotate_refresh_token(
            &old_hash,
            &ctx.client.client_id,
            next,
            &sealed,
            now,
            state.config.refresh_reuse_grace,
            Some(audit),
        )
        .await?;
    match rotation {
        Rotation::Rotated(f) => Ok((f, new_token)),
        Rotation::WithinGrace(f, kept) => {
            let Some(successor) = kept.and_then(|k| open_successor(presented, &old_hash, &k))
            else {
                return Err(OAuthError::invalid_grant(
                    "the refresh token was just rotated; use its successor or sign in again",
                ));
            };
            audit::record(
                state,
                audit::Event::new("refresh_token_grace_reuse", audit::WARNING)
                    .subject(&audit::username_of(state.store.as_ref(), &f.user_id).await)
                    .client(&f.client_id)
                    .meta(ctx.meta)
                    .details("a just-rotated refresh token was presented again within the grace window; the same successor was returned"),
            )
            .await;
            Ok((f, successor))
        }
        Rotation::Reused(f) => {
            audit::record(
                state,
                audit::Event::new("refresh_token_reused", audit::CRITICAL)
                    .subject(&audit::username_of(state.store.as_ref(), &f.user_id).await)
                    .client(&f.client_id)
                    .meta(ctx.meta)
                    .details(
                        "a rotated refresh token was presented again; the whole family is revoked",
                    ),
            )
            .await;
            Err(OAuthError::invalid_grant(
                "the refresh token was already used; this session is revoked, sign in again",
            ))
        }
        Rotation::WrongClient => Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        )),
        Rotation::Refused(f) => {
            refused(
                ctx,
                &f,
                "a refresh token that expired, was revoked or belongs to a disabled user was presented",
            )
            .await;
            Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
        Rotation::Invalid => Err(OAuthError::invalid_grant(
            "the refresh token is invalid, expired or revoked",
        )),
    }
}

/// Records a refused refresh of a known family against its user, so the audit log shows the
/// refresh that failed after a revocation, a disable or a forced re-authentication. At most one
/// row per user and minute: a client retrying a dead token in a loop adds no rows.
async fn refused(ctx: GrantContext<'_>, family: &Family, why: &str) {
    let state = ctx.state;
    let user = audit::username_of(state.store.as_ref(), &family.user_id).await;
    audit::record_aggregated(
        state,
        audit::Event::new("refresh_token_refused", audit::WARNING)
            .actor(&user)
            .subject(&user)
            .client(&family.client_id)
            .meta(ctx.meta)
            .details(why),
        state.now().saturating_sub(REFUSAL_AUDIT_WINDOW_SECS),
    )
    .await;
}

/// One `refresh_token_refused` row per user within this many seconds.
const REFUSAL_AUDIT_WINDOW_SECS: u64 = 60;

/// 3. A narrower scope may be asked for, never a wider one (§6).
fn narrowed_scope(family: &Family, asked: Option<&String>) -> Result<String, OAuthError> {
    let Some(s) = asked else {
        return Ok(family.scope.clone());
    };
    let granted: Vec<&str> = family.scope.split_whitespace().collect();
    if let Some(bad) = s.split_whitespace().find(|x| !granted.contains(x)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {bad:?} was not granted originally"
        )));
    }
    Ok(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_presented_token_opens_its_successor() {
        let sealed = seal_successor("old-token", "old-hash", "the-successor").unwrap();
        assert!(!sealed.contains("the-successor"));
        assert_eq!(
            open_successor("old-token", "old-hash", &sealed).as_deref(),
            Some("the-successor")
        );
        assert_eq!(open_successor("other-token", "old-hash", &sealed), None);
        assert_eq!(open_successor("old-token", "other-hash", &sealed), None);
        assert_eq!(open_successor("old-token", "old-hash", "garbage!"), None);
        assert_eq!(open_successor("old-token", "old-hash", ""), None);
    }
}
