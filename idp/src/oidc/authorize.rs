//! The authorization endpoint: RFC 6749 §4.1.1 with PKCE (RFC 7636) and OpenID Connect Core
//! §3.1.2. Steps are numbered as the checks happen.

use crate::audit;
use crate::crypto;
use crate::error::PageError;
use crate::state::AppState;
use crate::store::{AuthCode, Client, User};
use crate::web::{self, ClientMeta};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use shared::token::error_code;
use std::collections::BTreeMap;

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<u64>,
    pub raw_query: String,
}

/// Why a request failed: before the redirect URI is trusted the user sees a page (RFC 6749
/// §4.1.2.1: "MUST NOT automatically redirect the user-agent to the invalid redirection URI");
/// after, the client gets an error redirect.
pub enum AuthzError {
    Page(PageError),
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

impl From<crate::error::IdpError> for AuthzError {
    fn from(e: crate::error::IdpError) -> Self {
        AuthzError::Page(e.into())
    }
}

impl AuthzError {
    /// The response: a page, or an error redirect to the client carrying `iss` (RFC 9207 §2:
    /// "in every authorization response", error responses included), or, for the out-of-band
    /// redirect URI that a browser cannot follow, the error shown as a page.
    pub fn respond(self, state: &AppState) -> Response {
        match self {
            AuthzError::Page(p) => p.into_response(),
            AuthzError::Redirect {
                redirect_uri,
                error,
                description,
                state: st,
            } => {
                if web::code::is_oob(&redirect_uri) {
                    let title = if error == error_code::ACCESS_DENIED {
                        "Access denied"
                    } else {
                        "Sign-in failed"
                    };
                    let msg = format!("{description} ({error}). No code was issued; stop the command waiting in your terminal (Ctrl-C).");
                    return web::message_page(state, StatusCode::BAD_REQUEST, title, &msg);
                }
                let mut pairs = vec![
                    ("error", error.to_string()),
                    ("error_description", description),
                ];
                if let Some(s) = st {
                    pairs.push(("state", s));
                }
                pairs.push(("iss", state.config.issuer.clone()));
                redirect_with(&redirect_uri, &pairs)
            }
        }
    }
}

/// A 303 to `uri` with `pairs` added to its query (never built with `format!`).
pub fn redirect_with(uri: &str, pairs: &[(&str, String)]) -> Response {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            Redirect::to(u.as_str()).into_response()
        }
        Err(_) => PageError::bad_request(
            "Invalid redirect URI",
            "The redirect URI is not a valid URL.",
        )
        .into_response(),
    }
}

fn page_err(title: &str, msg: impl Into<String>) -> AuthzError {
    AuthzError::Page(PageError::bad_request(title, msg))
}

/// Human descriptions of the scopes on the consent and device pages.
pub fn describe_scopes(scopes: &[String]) -> Vec<(String, String)> {
    scopes
        .iter()
        .map(|s| {
            let d = match s.as_str() {
                "openid" => "sign you in (your account identifier)",
                "profile" => "your name and username",
                "email" => "your email address",
                "groups" => "your group memberships (used for Kubernetes RBAC)",
                "offline_access" => "stay signed in (refresh tokens)",
                _ => "an application-defined permission",
            };
            (s.clone(), d.to_string())
        })
        .collect()
}

/// Parses a query string, refusing repeated parameters (RFC 6749 §3.1: "Request and response
/// parameters MUST NOT be included more than once").
pub fn parse_unique(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("the parameter {k:?} appears more than once"));
        }
    }
    Ok(m)
}

/// Validates an authorization request.
pub async fn validate(state: &AppState, raw_query: &str) -> Result<ValidRequest, AuthzError> {
    let p = parse_unique(raw_query).map_err(|e| page_err("Invalid request", e))?;
    let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();

    // 1. The client must be known (RFC 6749 §4.1.2.1: shown to the user, not redirected).
    let client_id =
        get("client_id").ok_or_else(|| page_err("Invalid request", "client_id is missing."))?;
    let client = state.store.client(&client_id).await?.ok_or_else(|| {
        page_err(
            "Unknown application",
            format!("No client {client_id:?} is registered at this identity provider."),
        )
    })?;

    // 2. redirect_uri is required (OpenID Connect Core §3.1.2.1) and must match a registered one
    //    exactly, except the port of a loopback URI (RFC 8252 §7.3).
    let redirect_uri = get("redirect_uri")
        .ok_or_else(|| page_err("Invalid request", "redirect_uri is missing."))?;
    if !client
        .redirect_uris
        .iter()
        .any(|r| shared::loopback::redirect_uri_matches(r, &redirect_uri))
    {
        return Err(page_err(
            "Redirect URI not registered",
            format!("{redirect_uri:?} is not a registered redirect URI of client {client_id:?}. An administrator can add it with `kubelogin-idp client add` or use a registered one."),
        ));
    }
    let st = get("state");
    let fail = |error: &'static str, description: String| AuthzError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description,
        state: st.clone(),
    };

    // 3. Only the authorization code flow (RFC 6749 §4.1.1; OAuth 2.0 Security BCP §2.1.2).
    match get("response_type").as_deref() {
        Some("code") => {}
        Some(other) => {
            return Err(fail(
                error_code::UNSUPPORTED_RESPONSE_TYPE,
                format!("response_type {other:?} is not supported; use \"code\""),
            ))
        }
        None => {
            return Err(fail(
                error_code::INVALID_REQUEST,
                "response_type is missing".into(),
            ))
        }
    }
    if !client.allows_grant(shared::token::grant_type::AUTHORIZATION_CODE) {
        return Err(fail(
            error_code::UNAUTHORIZED_CLIENT,
            "this client may not use the authorization code grant".into(),
        ));
    }
    if let Some(mode) = get("response_mode") {
        if mode != "query" {
            return Err(fail(
                error_code::INVALID_REQUEST,
                format!("response_mode {mode:?} is not supported"),
            ));
        }
    }

    // 4. Scopes must all be allowed for the client (RFC 6749 §3.3).
    let scopes: Vec<String> = get("scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if let Some(bad) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(fail(
            error_code::INVALID_SCOPE,
            format!("scope {bad:?} is not allowed for this client"),
        ));
    }

    // 5. PKCE (RFC 7636 §4.3, §4.4.1): only S256; required of public clients (RFC 9700 §2.1.1).
    let code_challenge = get("code_challenge");
    match (get("code_challenge_method").as_deref(), &code_challenge) {
        (Some("S256"), Some(_)) | (None, None) => {}
        (None, Some(_)) | (Some("plain"), _) => {
            return Err(fail(
                error_code::INVALID_REQUEST,
                "code_challenge_method must be S256 (plain is not accepted)".into(),
            ))
        }
        (Some(m), Some(_)) => {
            return Err(fail(
                error_code::INVALID_REQUEST,
                format!("code_challenge_method {m:?} is not supported; use S256"),
            ))
        }
        (Some(_), None) => {
            return Err(fail(
                error_code::INVALID_REQUEST,
                "code_challenge is missing".into(),
            ))
        }
    }
    if let Some(c) = &code_challenge {
        if !shared::pkce::is_s256_challenge(c) {
            return Err(fail(
                error_code::INVALID_REQUEST,
                "code_challenge is not a base64url SHA-256 value".into(),
            ));
        }
    } else if client.is_public() {
        return Err(fail(error_code::INVALID_REQUEST, "PKCE is required for public clients: send code_challenge with code_challenge_method=S256".into()));
    }

    // 6. prompt (OpenID Connect Core §3.1.2.1): `none` must stand alone.
    let prompt: Vec<String> = get("prompt")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(fail(
            error_code::INVALID_REQUEST,
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    if let Some(bad) = prompt
        .iter()
        .find(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
    {
        return Err(fail(
            error_code::INVALID_REQUEST,
            format!("unknown prompt value {bad:?}"),
        ));
    }
    let max_age = match get("max_age") {
        Some(m) => Some(m.parse::<u64>().map_err(|_| {
            fail(
                error_code::INVALID_REQUEST,
                "max_age must be a number of seconds".into(),
            )
        })?),
        None => None,
    };
    if get("request").is_some() || get("request_uri").is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported".into(),
        ));
    }

    Ok(ValidRequest {
        client,
        redirect_uri,
        scopes,
        state: st,
        nonce: get("nonce"),
        code_challenge,
        prompt,
        max_age,
        raw_query: raw_query.to_string(),
    })
}

/// The request's query with some `prompt` values removed (so that, after the login page, the
/// request does not ask for another login).
fn without_prompt(raw: &str, drop: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if k == "prompt" {
            let kept: Vec<&str> = v.split_whitespace().filter(|p| *p != drop).collect();
            if !kept.is_empty() {
                out.append_pair("prompt", &kept.join(" "));
            }
        } else {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

/// GET /oauth/authorize
pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    authorize_request(&state, &headers, &meta, &raw)
        .await
        .unwrap_or_else(|e| e.respond(&state))
}

async fn authorize_request(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    raw: &str,
) -> Result<Response, AuthzError> {
    let req = validate(state, raw).await?;
    let now = state.now();
    let session = web::current_user(state, headers).await?;

    // 7. Authentication (OpenID Connect Core §3.1.2.3): a session younger than max_age, unless
    //    prompt=login demands a fresh one.
    let fresh_enough = |auth_time: u64| {
        req.max_age
            .map(|m| now.saturating_sub(auth_time) <= m)
            .unwrap_or(true)
    };
    let user = match session {
        Some((s, u)) if !req.prompt.iter().any(|p| p == "login") && fresh_enough(s.auth_time) => {
            (s, u)
        }
        _ => {
            if req.prompt.iter().any(|p| p == "none") {
                return Err(AuthzError::Redirect {
                    redirect_uri: req.redirect_uri,
                    error: error_code::LOGIN_REQUIRED,
                    description: "the user is not signed in".into(),
                    state: req.state,
                });
            }
            let back = format!(
                "{}/oauth/authorize?{}",
                state.config.base_path,
                without_prompt(raw, "login")
            );
            return Ok(web::login_redirect(state, &back));
        }
    };
    let (session, user) = user;

    // 8. Consent (OpenID Connect Core §3.1.2.4), remembered per user and client.
    let granted = state
        .store
        .consented_scopes(&user.id, &req.client.client_id)
        .await?;
    let covered = req.scopes.iter().all(|s| granted.contains(s));
    if !covered || req.prompt.iter().any(|p| p == "consent") {
        if req.prompt.iter().any(|p| p == "none") {
            return Err(AuthzError::Redirect {
                redirect_uri: req.redirect_uri,
                error: error_code::CONSENT_REQUIRED,
                description: "the user has not yet allowed this client".into(),
                state: req.state,
            });
        }
        return Ok(web::consent::render(state, headers, &req, &user).await?);
    }
    issue_code(state, &req, &user, session.auth_time, meta).await
}

/// Stores a new code and redirects to the client with it, `state` unchanged (RFC 6749 §4.1.2)
/// and `iss` (RFC 9207 §2, the mix-up defence of RFC 9700 §4.4.2); for the out-of-band
/// redirect URI the code is shown on a page instead (`web::code`).
pub async fn issue_code(
    state: &AppState,
    req: &ValidRequest,
    user: &User,
    auth_time: u64,
    meta: &ClientMeta,
) -> Result<Response, AuthzError> {
    let now = state.now();
    let code = crypto::random_token(32);
    state
        .store
        .insert_auth_code(AuthCode {
            code_hash: crypto::hash_secret(&code),
            client_id: req.client.client_id.clone(),
            user_id: user.id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scopes.join(" "),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time,
            created_at: now,
            expires_at: now + state.config.auth_code_lifetime,
        })
        .await?;
    audit::record(
        state,
        audit::Event::new("authorization_code_issued", audit::INFO)
            .actor(&user.username)
            .client(&req.client.client_id)
            .meta(meta),
    )
    .await;
    if web::code::is_oob(&req.redirect_uri) {
        let name = if req.client.name.is_empty() {
            &req.client.client_id
        } else {
            &req.client.name
        };
        return Ok(web::code::render(state, &code, name));
    }
    let mut pairs = vec![("code", code)];
    if let Some(s) = &req.state {
        pairs.push(("state", s.clone()));
    }
    pairs.push(("iss", state.config.issuer.clone()));
    Ok(redirect_with(&req.redirect_uri, &pairs))
}

#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub request: String,
    #[serde(default)]
    pub decision: String,
}

/// POST /oauth/authorize/consent
pub async fn consent_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<ConsentForm>,
) -> Response {
    consent_decision(&state, &headers, &meta, &form)
        .await
        .unwrap_or_else(|e| e.respond(&state))
}

async fn consent_decision(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    form: &ConsentForm,
) -> Result<Response, AuthzError> {
    web::csrf::check_session(state, headers, &form.csrf_token)
        .await
        .map_err(AuthzError::Page)?;
    let req = validate(state, &form.request).await?;
    let Some((session, user)) = web::current_user(state, headers).await? else {
        return Err(AuthzError::Page(PageError {
            status: StatusCode::UNAUTHORIZED,
            title: "Signed out".into(),
            message: "Your session ended. Start the sign-in again from your application.".into(),
        }));
    };
    if form.decision != "allow" {
        audit::record(
            state,
            audit::Event::new("consent_denied", audit::INFO)
                .actor(&user.username)
                .client(&req.client.client_id)
                .meta(meta),
        )
        .await;
        return Err(AuthzError::Redirect {
            redirect_uri: req.redirect_uri,
            error: error_code::ACCESS_DENIED,
            description: "the user denied the request".into(),
            state: req.state,
        });
    }
    let mut granted = state
        .store
        .consented_scopes(&user.id, &req.client.client_id)
        .await?;
    for s in &req.scopes {
        if !granted.contains(s) {
            granted.push(s.clone());
        }
    }
    state
        .store
        .save_consent(&user.id, &req.client.client_id, &granted, state.now())
        .await?;
    audit::record(
        state,
        audit::Event::new("consent_granted", audit::INFO)
            .actor(&user.username)
            .client(&req.client.client_id)
            .meta(meta)
            .details(&req.scopes.join(" ")),
    )
    .await;
    issue_code(state, &req, &user, session.auth_time, meta).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_login_is_removed_but_others_kept() {
        let q = without_prompt("a=1&prompt=login+consent&b=2", "login");
        assert_eq!(q, "a=1&prompt=consent&b=2");
        assert_eq!(without_prompt("prompt=login", "login"), "");
    }

    #[test]
    fn duplicates_are_refused() {
        assert!(parse_unique("a=1&a=2").is_err());
        assert_eq!(parse_unique("a=1&b=2").unwrap().len(), 2);
    }
}
