//! The authorization endpoint's protocol: RFC 6749 §4.1.1 with PKCE (RFC 7636) and OpenID
//! Connect Core §3.1.2. Steps are numbered as the checks happen: the request is validated
//! (1–6), the next step decided (7 authentication, 8 consent), consent recorded and the code
//! issued. What the person sees (the login redirect, the consent page, the code or an error) is
//! chosen and rendered by `web::authorize`; this module never renders a page.
//!
//! May depend on: `state`, `store`, `crypto`, `error`, `http`, `audit`.

use crate::audit;
use crate::crypto;
use crate::error::{IdpError, PageError};
use crate::http::{parse_unique, redirect_with, ClientMeta};
use crate::state::AppState;
use crate::store::{AuthCode, Client, Session, User};
use axum::response::Response;
use shared::token::error_code;
use std::collections::BTreeMap;

/// The out-of-band redirect URI kubelogin (and Google's installed-app flow) uses: the code is
/// shown to the person instead of sent (`web::code`).
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

pub fn is_oob(redirect_uri: &str) -> bool {
    redirect_uri == OOB_REDIRECT_URI
}

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
    Redirect(ErrorRedirect),
}

/// An error response for the client (RFC 6749 §4.1.2.1), sent to its verified redirect URI.
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub error: &'static str,
    pub description: String,
    pub state: Option<String>,
}

impl ErrorRedirect {
    /// The redirect to the client, carrying `iss` (RFC 9207 §2: "in every authorization
    /// response", error responses included).
    pub fn to_client(self, issuer: &str) -> Response {
        let mut pairs = vec![
            ("error", self.error.to_string()),
            ("error_description", self.description),
        ];
        if let Some(s) = self.state {
            pairs.push(("state", s));
        }
        pairs.push(("iss", issuer.to_string()));
        redirect_with(&self.redirect_uri, &pairs)
    }
}

impl From<IdpError> for AuthzError {
    fn from(e: IdpError) -> Self {
        AuthzError::Page(e.into())
    }
}

impl From<crate::store::StoreError> for AuthzError {
    fn from(e: crate::store::StoreError) -> Self {
        AuthzError::Page(e.into())
    }
}

fn page_err(title: &str, msg: impl Into<String>) -> AuthzError {
    AuthzError::Page(PageError::bad_request(title, msg))
}

/// A refusal once the redirect URI is trusted: the error code and its description.
type Refusal = (&'static str, String);

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    (error, description.into())
}

/// A parameter's value; an empty one counts as absent (RFC 6749 §3.1).
fn param(p: &BTreeMap<String, String>, k: &str) -> Option<String> {
    p.get(k).filter(|v| !v.is_empty()).cloned()
}

/// A space-separated list parameter (`scope`, `prompt`).
fn list_param(p: &BTreeMap<String, String>, k: &str) -> Vec<String> {
    param(p, k)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Validates an authorization request.
pub async fn validate(state: &AppState, raw_query: &str) -> Result<ValidRequest, AuthzError> {
    let p = parse_unique(raw_query).map_err(|e| page_err("Invalid request", e))?;
    let client = known_client(state, &p).await?;
    let redirect_uri = registered_redirect_uri(&client, &p)?;
    let st = param(&p, "state");
    // From here on, errors go to the client.
    let checked = redirected_checks(&client, &p).map_err(|(error, description)| {
        AuthzError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description,
            state: st.clone(),
        })
    })?;
    Ok(ValidRequest {
        client,
        redirect_uri,
        scopes: checked.scopes,
        state: st,
        nonce: param(&p, "nonce"),
        code_challenge: checked.code_challenge,
        prompt: checked.prompt,
        max_age: checked.max_age,
        raw_query: raw_query.to_string(),
    })
}

/// 1. The client must be known (RFC 6749 §4.1.2.1: shown to the user, not redirected).
async fn known_client(
    state: &AppState,
    p: &BTreeMap<String, String>,
) -> Result<Client, AuthzError> {
    let client_id = param(p, "client_id")
        .ok_or_else(|| page_err("Invalid request", "client_id is missing."))?;
    state.client(&client_id).await?.ok_or_else(|| {
        page_err(
            "Unknown application",
            format!("No client {client_id:?} is registered at this identity provider."),
        )
    })
}

/// 2. redirect_uri is required (OpenID Connect Core §3.1.2.1) and must match a registered one
///    exactly, except the port of a loopback URI (RFC 8252 §7.3).
fn registered_redirect_uri(
    client: &Client,
    p: &BTreeMap<String, String>,
) -> Result<String, AuthzError> {
    let redirect_uri = param(p, "redirect_uri")
        .ok_or_else(|| page_err("Invalid request", "redirect_uri is missing."))?;
    if !client
        .redirect_uris
        .iter()
        .any(|r| shared::loopback::redirect_uri_matches(r, &redirect_uri))
    {
        return Err(page_err(
            "Redirect URI not registered",
            format!("{redirect_uri:?} is not a registered redirect URI of client {:?}. An administrator can add it with `kubelogin-idp client add` or use a registered one.", client.client_id),
        ));
    }
    Ok(redirect_uri)
}

/// What steps 3–6 accepted.
struct Checked {
    scopes: Vec<String>,
    code_challenge: Option<String>,
    prompt: Vec<String>,
    max_age: Option<u64>,
}

/// Steps 3–6, whose errors go to the client's redirect URI.
fn redirected_checks(client: &Client, p: &BTreeMap<String, String>) -> Result<Checked, Refusal> {
    check_response_type(client, p)?;
    let scopes = allowed_scopes(client, p)?;
    let code_challenge = pkce_challenge(client, p)?;
    let (prompt, max_age) = prompt_and_max_age(p)?;
    if param(p, "request").is_some() || param(p, "request_uri").is_some() {
        return Err(refuse(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    Ok(Checked {
        scopes,
        code_challenge,
        prompt,
        max_age,
    })
}

/// 3. Only the authorization code flow (RFC 6749 §4.1.1; OAuth 2.0 Security BCP §2.1.2).
fn check_response_type(client: &Client, p: &BTreeMap<String, String>) -> Result<(), Refusal> {
    match param(p, "response_type").as_deref() {
        Some("code") => {}
        Some(other) => {
            return Err(refuse(
                error_code::UNSUPPORTED_RESPONSE_TYPE,
                format!("response_type {other:?} is not supported; use \"code\""),
            ))
        }
        None => {
            return Err(refuse(
                error_code::INVALID_REQUEST,
                "response_type is missing",
            ))
        }
    }
    if !client.allows_grant(shared::token::grant_type::AUTHORIZATION_CODE) {
        return Err(refuse(
            error_code::UNAUTHORIZED_CLIENT,
            "this client may not use the authorization code grant",
        ));
    }
    match param(p, "response_mode") {
        Some(mode) if mode != "query" => Err(refuse(
            error_code::INVALID_REQUEST,
            format!("response_mode {mode:?} is not supported"),
        )),
        _ => Ok(()),
    }
}

/// 4. Scopes must all be allowed for the client (RFC 6749 §3.3).
fn allowed_scopes(client: &Client, p: &BTreeMap<String, String>) -> Result<Vec<String>, Refusal> {
    let scopes = list_param(p, "scope");
    if let Some(bad) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(refuse(
            error_code::INVALID_SCOPE,
            format!("scope {bad:?} is not allowed for this client"),
        ));
    }
    Ok(scopes)
}

/// 5. PKCE (RFC 7636 §4.3, §4.4.1): only S256; required of public clients (RFC 9700 §2.1.1).
fn pkce_challenge(
    client: &Client,
    p: &BTreeMap<String, String>,
) -> Result<Option<String>, Refusal> {
    let code_challenge = param(p, "code_challenge");
    let invalid = |d: String| refuse(error_code::INVALID_REQUEST, d);
    match (
        param(p, "code_challenge_method").as_deref(),
        &code_challenge,
    ) {
        (Some("S256"), Some(_)) | (None, None) => {}
        (None, Some(_)) | (Some("plain"), _) => {
            return Err(invalid(
                "code_challenge_method must be S256 (plain is not accepted)".into(),
            ))
        }
        (Some(m), Some(_)) => {
            return Err(invalid(format!(
                "code_challenge_method {m:?} is not supported; use S256"
            )))
        }
        (Some(_), None) => return Err(invalid("code_challenge is missing".into())),
    }
    if let Some(c) = &code_challenge {
        if !shared::pkce::is_s256_challenge(c) {
            return Err(invalid(
                "code_challenge is not a base64url SHA-256 value".into(),
            ));
        }
    } else if client.is_public() {
        return Err(invalid("PKCE is required for public clients: send code_challenge with code_challenge_method=S256".into()));
    }
    Ok(code_challenge)
}

/// 6. prompt (OpenID Connect Core §3.1.2.1): `none` must stand alone; max_age in seconds.
fn prompt_and_max_age(p: &BTreeMap<String, String>) -> Result<(Vec<String>, Option<u64>), Refusal> {
    let prompt = list_param(p, "prompt");
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(refuse(
            error_code::INVALID_REQUEST,
            "prompt=none cannot be combined with other values",
        ));
    }
    if let Some(bad) = prompt
        .iter()
        .find(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
    {
        return Err(refuse(
            error_code::INVALID_REQUEST,
            format!("unknown prompt value {bad:?}"),
        ));
    }
    let max_age = match param(p, "max_age") {
        Some(m) => Some(m.parse::<u64>().map_err(|_| {
            refuse(
                error_code::INVALID_REQUEST,
                "max_age must be a number of seconds",
            )
        })?),
        None => None,
    };
    Ok((prompt, max_age))
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

/// What a valid request needs next.
pub enum Next {
    /// 7. Sign in (again), then come back to `back`: this request without `prompt=login`.
    SignIn { back: String },
    /// 8. Ask `user` whether the client may have the scopes.
    Consent { user: User },
    /// Signed in and allowed: issue a code.
    Issue { user: User, auth_time: u64 },
}

impl ValidRequest {
    fn prompts(&self, p: &str) -> bool {
        self.prompt.iter().any(|x| x == p)
    }

    /// An error for the client, to its (verified) redirect URI.
    fn refused(&self, error: &'static str, description: &str) -> AuthzError {
        AuthzError::Redirect(ErrorRedirect {
            redirect_uri: self.redirect_uri.clone(),
            error,
            description: description.into(),
            state: self.state.clone(),
        })
    }
}

/// Decides the next step for `req` given the browser's session, if any. A second factor would
/// join step 7: a session without the factors a request needs is not enough.
pub async fn next_step(
    state: &AppState,
    req: &ValidRequest,
    session: Option<(Session, User)>,
) -> Result<Next, AuthzError> {
    let now = state.now();
    // 7. Authentication (OpenID Connect Core §3.1.2.3): a session younger than max_age, unless
    //    prompt=login demands a fresh one.
    let fresh_enough = |auth_time: u64| {
        req.max_age
            .map(|m| now.saturating_sub(auth_time) <= m)
            .unwrap_or(true)
    };
    let (session, user) = match session {
        Some((s, u)) if !req.prompts("login") && fresh_enough(s.auth_time) => (s, u),
        _ => {
            if req.prompts("none") {
                return Err(req.refused(error_code::LOGIN_REQUIRED, "the user is not signed in"));
            }
            let back = format!(
                "{}/oauth/authorize?{}",
                state.config.base_path,
                without_prompt(&req.raw_query, "login")
            );
            return Ok(Next::SignIn { back });
        }
    };

    // 8. Consent (OpenID Connect Core §3.1.2.4), remembered per user and client.
    let granted = state
        .store
        .consented_scopes(&user.id, &req.client.client_id)
        .await?;
    let covered = req.scopes.iter().all(|s| granted.contains(s));
    if !covered || req.prompts("consent") {
        if req.prompts("none") {
            return Err(req.refused(
                error_code::CONSENT_REQUIRED,
                "the user has not yet allowed this client",
            ));
        }
        return Ok(Next::Consent { user });
    }
    Ok(Next::Issue {
        user,
        auth_time: session.auth_time,
    })
}

/// The user's answer on the consent page, audited. Allowed: the scopes join those the user
/// granted the client before. Denied: the client gets `access_denied` (RFC 6749 §4.1.2.1).
pub async fn record_consent(
    state: &AppState,
    req: &ValidRequest,
    user: &User,
    meta: &ClientMeta,
    allowed: bool,
) -> Result<(), AuthzError> {
    let event = |name: &str| {
        audit::Event::new(name, audit::INFO)
            .actor(&user.username)
            .client(&req.client.client_id)
            .meta(meta)
    };
    if !allowed {
        audit::record(state, event("consent_denied")).await;
        return Err(req.refused(error_code::ACCESS_DENIED, "the user denied the request"));
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
    let e = event("consent_granted").details(&req.scopes.join(" "));
    audit::record(state, e).await;
    Ok(())
}

/// Stores a new code for `req` (single use, short-lived: RFC 6749 §4.1.2), audited, and returns
/// it.
pub async fn issue_code(
    state: &AppState,
    req: &ValidRequest,
    user: &User,
    auth_time: u64,
    meta: &ClientMeta,
) -> Result<String, IdpError> {
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
    Ok(code)
}

/// The authorization response: a redirect to the client with the code, `state` unchanged
/// (RFC 6749 §4.1.2) and `iss` (RFC 9207 §2, the mix-up defence of RFC 9700 §4.4.2).
pub fn code_redirect(state: &AppState, req: &ValidRequest, code: String) -> Response {
    let mut pairs = vec![("code", code)];
    if let Some(s) = &req.state {
        pairs.push(("state", s.clone()));
    }
    pairs.push(("iss", state.config.issuer.clone()));
    redirect_with(&req.redirect_uri, &pairs)
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
}
