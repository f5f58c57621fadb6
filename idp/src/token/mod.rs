//! The token endpoint (RFC 6749 §3.2): client authentication, one file per grant, the minting
//! of ID, access and refresh tokens shared by all grants, and the check of our access tokens
//! (`access_token`) that userinfo, introspection and revocation share.
//!
//! May depend on: `state`, `store`, `keys`, `crypto`, `error`, `http`, `audit`, `accounts` (the
//! password grant). Never on `oidc` or `web`, which sit above it.

pub mod access_token;
pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod password;
pub mod refresh_token;

use crate::crypto;
use crate::error::{IdpError, OAuthError};
use crate::http::{ClientMeta, FormParams};
use crate::keys::SigningKey;
use crate::state::AppState;
use crate::store::{Client, Family, RefreshToken, User};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use shared::claims::{AccessTokenClaims, Audience, IdTokenClaims};
use shared::token::{grant_type, TokenResponse};
use std::collections::BTreeMap;

/// Authenticates the client (RFC 6749 §2.3): `client_secret_basic` (§2.3.1, credentials
/// form-urlencoded inside Basic), `client_secret_post`, or `none` for a public client
/// identified by `client_id`. Using two methods at once is refused (§2.3).
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> Result<Client, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let (client_id, secret) = match basic {
        Some(b64) => {
            if params.contains_key("client_secret") {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not Basic and client_secret together",
                ));
            }
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, sec) = raw
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let id = url_decode(id);
            if let Some(body_id) = params.get("client_id") {
                if *body_id != id {
                    return Err(OAuthError::invalid_client(
                        "client_id in the body differs from the authenticated client",
                    ));
                }
            }
            (id, Some(url_decode(sec)))
        }
        None => {
            let id = params.get("client_id").cloned().ok_or_else(|| {
                OAuthError::invalid_client("client authentication is missing (no client_id)")
            })?;
            (id, params.get("client_secret").cloned())
        }
    };
    // One answer for every way authentication can fail (unknown client, wrong secret, secret
    // missing or not expected), so the endpoint does not tell which client ids exist or which of
    // them are confidential (RFC 6749 §5.2 invalid_client; RFC 9700 §4.17 client
    // impersonation). The secret is hashed even for an unknown id, so timing says no more.
    let failed = || OAuthError::invalid_client("client authentication failed");
    let presented = secret.as_deref().map(crypto::hash_secret);
    let Some(client) = state.client(&client_id).await? else {
        return Err(failed());
    };
    match (&client.secret_hash, presented) {
        (None, None) => Ok(client),
        (Some(h), Some(p)) if crypto::ct_eq(h, &p) => Ok(client),
        _ => Err(failed()),
    }
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// POST /oauth/token, counted and timed for `/metrics` (two atomic adds, no allocation).
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    form: FormParams,
) -> Result<Response, OAuthError> {
    let started = std::time::Instant::now();
    let grant = crate::metrics::grant_index(form.0.get("grant_type").map(String::as_str));
    let result = grant_request(&state, headers, meta, form).await;
    let error = result.as_ref().err().map(|e| e.code);
    let outcome = crate::metrics::outcome_index(error);
    state
        .metrics
        .token_request(grant, outcome, started.elapsed());
    result
}

async fn grant_request(
    state: &AppState,
    headers: HeaderMap,
    meta: ClientMeta,
    form: FormParams,
) -> Result<Response, OAuthError> {
    let params = form.0;
    let grant = params
        .get("grant_type")
        .cloned()
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    let client = authenticate_client(state, &headers, &params).await?;
    let known = [
        grant_type::AUTHORIZATION_CODE,
        grant_type::REFRESH_TOKEN,
        grant_type::DEVICE_CODE,
        grant_type::CLIENT_CREDENTIALS,
        grant_type::PASSWORD,
    ];
    if !known.contains(&grant.as_str()) {
        return Err(OAuthError::new(
            shared::token::error_code::UNSUPPORTED_GRANT_TYPE,
            format!("grant_type {grant:?} is not supported"),
        ));
    }
    // RFC 6749 §5.2 unauthorized_client: the client may not use this grant.
    if !client.allows_grant(&grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the {grant} grant"
        )));
    }
    let ctx = GrantContext {
        state,
        client: &client,
        params: &params,
        meta: &meta,
    };
    let resp = match grant.as_str() {
        grant_type::AUTHORIZATION_CODE => authorization_code::grant(ctx).await?,
        grant_type::REFRESH_TOKEN => refresh_token::grant(ctx).await?,
        grant_type::DEVICE_CODE => device_code::grant(ctx).await?,
        grant_type::CLIENT_CREDENTIALS => client_credentials::grant(ctx).await?,
        _ => password::grant(ctx).await?,
    };
    Ok(token_response(&resp))
}

/// A token response with the headers RFC 6749 §5.1 requires.
pub fn token_response(body: &TokenResponse) -> Response {
    let mut r = axum::Json(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Everything a grant handler needs.
#[derive(Clone, Copy)]
pub struct GrantContext<'a> {
    pub state: &'a AppState,
    pub client: &'a Client,
    pub params: &'a BTreeMap<String, String>,
    pub meta: &'a ClientMeta,
}

/// Whether a refresh token comes with the tokens.
pub enum RefreshPlan {
    None,
    /// Start a new family (a fresh authentication).
    NewFamily,
    /// The family already holds the new token's hash (a rotation).
    Rotated {
        token: String,
        family_id: String,
    },
}

/// What to put in the tokens.
pub struct Mint<'a> {
    pub user: Option<&'a User>,
    /// The user's groups (put in the tokens when the `groups` scope was granted).
    pub groups: &'a [String],
    pub scope: &'a str,
    pub nonce: Option<&'a str>,
    pub auth_time: Option<u64>,
    pub refresh: RefreshPlan,
}

/// Signs the access token and, when `openid` was granted, the ID token (OpenID Connect Core
/// §3.1.3.3, and for refresh §12.2: same iss/sub/aud, auth_time of the original login, no
/// nonce); then creates or continues the refresh family.
pub async fn mint(ctx: GrantContext<'_>, m: Mint<'_>) -> Result<Minted, OAuthError> {
    let state = ctx.state;
    let now = state.now();
    let keys = state.keys().await?;
    // The grant the tokens belong to: a rotation continues its family; a fresh authentication
    // that may refresh starts one, named before signing so the access token can carry it.
    let new_family = match (&m.refresh, m.user) {
        (RefreshPlan::NewFamily, Some(_)) if ctx.client.allows_grant(grant_type::REFRESH_TOKEN) => {
            Some(crypto::random_token(16))
        }
        _ => None,
    };
    let grant_id = match &m.refresh {
        RefreshPlan::Rotated { family_id, .. } => Some(family_id.clone()),
        _ => new_family.clone(),
    };
    let access_token = sign(&keys.active, &access_claims(ctx, &m, now, grant_id))?;
    let id_token = match m.user {
        Some(u) if m.has_scope("openid") => Some(sign(
            &keys.active,
            &id_claims(ctx, &m, u, now, &access_token),
        )?),
        _ => None,
    };
    let scope = m.scope.to_string();
    let auth_time = m.auth_time;
    let (refresh_token, family_id) = match (m.refresh, m.user, new_family) {
        (RefreshPlan::Rotated { token, .. }, _, _) => (Some(token), None),
        (RefreshPlan::NewFamily, Some(u), Some(id)) => {
            let token = start_family(ctx, u, id.clone(), &scope, auth_time, now).await?;
            (Some(token), Some(id))
        }
        _ => (None, None),
    };
    let response = TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_in: Some(state.config.token_lifetime),
        refresh_token,
        id_token,
        scope: Some(scope),
    };
    Ok(Minted {
        response,
        family_id,
    })
}

impl Mint<'_> {
    fn has_scope(&self, s: &str) -> bool {
        self.scope.split_whitespace().any(|x| x == s)
    }

    /// The user's groups, when there is a user and the `groups` scope was granted.
    fn groups_claim(&self) -> Option<Vec<String>> {
        (self.user.is_some() && self.has_scope("groups")).then(|| self.groups.to_vec())
    }
}

/// The access token's claims (RFC 9068 §2.2): the user, or the client itself for the client
/// credentials grant.
fn access_claims(
    ctx: GrantContext<'_>,
    m: &Mint<'_>,
    now: u64,
    grant_id: Option<String>,
) -> AccessTokenClaims {
    let state = ctx.state;
    let client_id = &ctx.client.client_id;
    let email = m.user.filter(|_| m.has_scope("email"));
    AccessTokenClaims {
        iss: state.config.issuer.clone(),
        sub: m
            .user
            .map(|u| u.id.as_str())
            .unwrap_or(client_id)
            .to_string(),
        aud: client_id.clone(),
        exp: now + state.config.token_lifetime,
        iat: now,
        jti: crypto::random_token(16),
        client_id: client_id.clone(),
        scope: m.scope.to_string(),
        auth_time: m.auth_time,
        email: email.map(|u| u.email.clone()),
        email_verified: email.map(|u| u.email_verified),
        preferred_username: m
            .user
            .filter(|_| m.has_scope("profile"))
            .map(|u| u.username.clone()),
        groups: m.groups_claim(),
        grant_id,
    }
}

/// The ID token's claims (OpenID Connect Core §2, §3.1.3.6 `at_hash`), with the claims of the
/// granted `profile`, `email` and `groups` scopes (§5.4).
fn id_claims(
    ctx: GrantContext<'_>,
    m: &Mint<'_>,
    u: &User,
    now: u64,
    access_token: &str,
) -> IdTokenClaims {
    let state = ctx.state;
    let client_id = &ctx.client.client_id;
    let email = m.has_scope("email");
    let profile = m.has_scope("profile");
    IdTokenClaims {
        iss: state.config.issuer.clone(),
        sub: u.id.clone(),
        aud: Audience::One(client_id.clone()),
        exp: now + state.config.token_lifetime,
        iat: now,
        nbf: None,
        auth_time: m.auth_time,
        nonce: m.nonce.map(str::to_string),
        azp: Some(client_id.clone()),
        at_hash: Some(shared::jwt::at_hash_sha256(access_token)),
        email: email.then(|| u.email.clone()),
        email_verified: email.then_some(u.email_verified),
        name: profile.then(|| u.name.clone()).filter(|n| !n.is_empty()),
        preferred_username: profile.then(|| u.username.clone()),
        groups: m.groups_claim(),
        jti: None,
        scope: None,
        client_id: None,
    }
}

fn sign<T: serde::Serialize>(key: &SigningKey, claims: &T) -> Result<String, OAuthError> {
    key.sign_jwt(claims)
        .map_err(|e| OAuthError::from(IdpError::from(e)))
}

/// Starts refresh family `id` for a fresh authentication and returns its first refresh token.
async fn start_family(
    ctx: GrantContext<'_>,
    u: &User,
    id: String,
    scope: &str,
    auth_time: Option<u64>,
    now: u64,
) -> Result<String, OAuthError> {
    let state = ctx.state;
    let token = crypto::random_token(32);
    let family = Family {
        id,
        client_id: ctx.client.client_id.clone(),
        user_id: u.id.clone(),
        scope: scope.to_string(),
        auth_time: auth_time.unwrap_or(now),
        created_at: now,
        revoked_at: None,
    };
    let first = RefreshToken {
        token_hash: crypto::hash_secret(&token),
        family_id: family.id.clone(),
        created_at: now,
        expires_at: now + state.config.refresh_token_lifetime,
        rotated_at: None,
        ip: crate::audit::bounded(&ctx.meta.ip, crate::audit::MAX_IP),
        user_agent: crate::audit::bounded(&ctx.meta.user_agent, crate::audit::MAX_USER_AGENT),
    };
    state.store.create_family(family, first).await?;
    Ok(token)
}

/// Minted tokens, and the refresh family started for them (if any).
pub struct Minted {
    pub response: TokenResponse,
    pub family_id: Option<String>,
}

/// Records that tokens were issued by a grant.
pub async fn audit_issued(ctx: GrantContext<'_>, actor: &str, grant: &str) {
    crate::audit::record(
        ctx.state,
        crate::audit::Event::new("token_issued", crate::audit::INFO)
            .actor(actor)
            .client(&ctx.client.client_id)
            .meta(ctx.meta)
            .details(grant),
    )
    .await;
}

/// Checks a PKCE verifier against the stored challenge (RFC 7636 §4.6); a verifier without a
/// challenge is refused too (RFC 9700 §2.1.1: the server must reject it).
pub fn check_pkce(challenge: Option<&str>, verifier: Option<&String>) -> Result<(), OAuthError> {
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(OAuthError::invalid_grant("code_verifier is missing (PKCE)")),
        (None, Some(_)) => Err(OAuthError::invalid_grant(
            "code_verifier sent but the authorization request had no code_challenge",
        )),
        (Some(c), Some(v)) => {
            if !shared::pkce::is_valid_verifier(v) {
                return Err(OAuthError::invalid_grant(
                    "code_verifier is malformed (RFC 7636 §4.1)",
                ));
            }
            if crypto::ct_eq(&shared::pkce::s256_challenge(v), c) {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
        }
    }
}

/// A user who may still receive tokens (exists, not disabled), with their groups.
pub async fn active_user(
    state: &AppState,
    user_id: &str,
) -> Result<(User, Vec<String>), OAuthError> {
    match state.store.user_with_groups(user_id).await? {
        Some((u, g)) if !u.disabled => Ok((u, g)),
        Some(_) => Err(OAuthError::invalid_grant("the user account is disabled")),
        None => Err(OAuthError::invalid_grant("the user no longer exists")),
    }
}

/// Requested scopes, all allowed for the client (RFC 6749 §3.3).
pub fn requested_scopes(
    client: &Client,
    params: &BTreeMap<String, String>,
) -> Result<Vec<String>, OAuthError> {
    let scopes: Vec<String> = params
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(bad) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {bad:?} is not allowed for this client"
        )));
    }
    Ok(scopes)
}
