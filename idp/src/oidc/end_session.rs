//! RP-initiated logout, OpenID Connect RP-Initiated Logout 1.0 §2–§3.
//!
//! A link to this endpoint can sit on any web site, so a request alone must not sign anyone out.
//! §2: the OP "MUST ask the End-User [whether to log out] if an id_token_hint was not provided or
//! if the supplied ID Token does not belong to the current OP session with the RP and/or
//! currently logged in End-User". So: with a hint whose `sub` is the signed-in user, sign out at
//! once; otherwise show a confirmation page whose POST form carries the session's CSRF token.

use crate::error::PageError;
use crate::oidc::authorize::{parse_unique, redirect_with};
use crate::state::AppState;
use crate::web::{self, csrf, page, ClientMeta};
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use std::collections::BTreeMap;

#[derive(Template)]
#[template(path = "logout.html")]
pub struct ConfirmPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub client_name: Option<String>,
    /// The request's parameters, carried to the confirming POST.
    pub params: Vec<(String, String)>,
}

/// What an ID token hint tells (only its signature is checked: it may be expired, §2). Only an
/// ID token counts: one audience and `azp` (as we issue them), and none of the access-token
/// claims (RFC 9068 `client_id`, `scope`), so a resource server holding one of our access tokens
/// cannot use it to sign the user out without asking.
#[derive(serde::Deserialize)]
struct Hint {
    aud: shared::claims::Audience,
    sub: String,
    azp: Option<String>,
    client_id: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

impl Hint {
    fn is_id_token(&self) -> bool {
        matches!(&self.aud, shared::claims::Audience::One(a) if self.azp.as_deref() == Some(a))
            && self.client_id.is_none()
            && self.scope.is_none()
    }
}

/// GET /oauth/logout[?id_token_hint&post_logout_redirect_uri&state&client_id]
pub async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let p = parse_unique(raw.as_deref().unwrap_or(""))
        .map_err(|e| PageError::bad_request("Invalid request", e))?;
    logout(&state, &headers, &meta, p).await
}

/// POST /oauth/logout: the same request form-encoded (§2: the OP must support GET and POST), or
/// the confirmation page's form, told apart by its `csrf_token`.
pub async fn end_session_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    body: String,
) -> Result<Response, PageError> {
    let p = parse_unique(&body).map_err(|e| PageError::bad_request("Invalid request", e))?;
    logout(&state, &headers, &meta, p).await
}

async fn logout(
    state: &AppState,
    headers: &HeaderMap,
    meta: &ClientMeta,
    mut p: BTreeMap<String, String>,
) -> Result<Response, PageError> {
    let confirmation = p.remove("csrf_token");
    let mut client_id = p.get("client_id").filter(|c| !c.is_empty()).cloned();
    let mut hint_sub = None;
    if let Some(hint) = p.get("id_token_hint").filter(|h| !h.is_empty()) {
        let keys = state.keys().await?;
        if let Ok(h) = crate::keys::verify_jwt::<Hint>(&keys.published, hint)
            .map_err(|_| ())
            .and_then(|h| if h.is_id_token() { Ok(h) } else { Err(()) })
        {
            if let shared::claims::Audience::One(a) = h.aud {
                // §2: "the OP MUST verify that [client_id] matches the one used when issuing
                // the ID Token".
                if client_id.as_ref().is_some_and(|c| *c != a) {
                    return Err(PageError::bad_request(
                        "Invalid request",
                        "client_id does not match the ID token hint.",
                    ));
                }
                client_id = Some(a);
            }
            hint_sub = Some(h.sub);
        }
    }
    let current = web::current_user(state, headers).await?;
    if let Some((_, user)) = &current {
        let confirmed = match &confirmation {
            Some(token) => {
                csrf::check_session(state, headers, token).await?;
                true
            }
            None => false,
        };
        if !confirmed && hint_sub.as_deref() != Some(user.id.as_str()) {
            return confirm_page(state, headers, &user.username, client_id, &p).await;
        }
    }
    web::login::end_session(state, headers, meta).await?;
    let clear = web::set_cookie(state, web::SESSION_COOKIE, "", Some(0));
    // §3: redirect only to a post-logout URI registered for the client.
    if let (Some(uri), Some(cid)) = (p.get("post_logout_redirect_uri"), client_id) {
        let client = state.store.client(&cid).await?;
        if client
            .map(|c| c.post_logout_redirect_uris.contains(uri))
            .unwrap_or(false)
        {
            let mut pairs = Vec::new();
            if let Some(s) = p.get("state") {
                pairs.push(("state", s.clone()));
            }
            let mut r = redirect_with(uri, &pairs);
            r.headers_mut().append(header::SET_COOKIE, clear);
            return Ok(r);
        }
        return Err(PageError::bad_request("Signed out", "You are signed out, but the application's return address is not registered, so you were not sent back."));
    }
    let mut r = web::message_page(
        state,
        StatusCode::OK,
        "Signed out",
        "You are signed out of kubelogin-idp.",
    );
    r.headers_mut().append(header::SET_COOKIE, clear);
    Ok(r)
}

/// "Sign out of kubelogin-idp?" with the request carried in hidden fields.
async fn confirm_page(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    client_id: Option<String>,
    p: &BTreeMap<String, String>,
) -> Result<Response, PageError> {
    let csrf = csrf::session_token(state, headers).await?;
    let client_name = match &client_id {
        Some(c) => state.store.client(c).await?.map(|c| {
            if c.name.is_empty() {
                c.client_id
            } else {
                c.name
            }
        }),
        None => None,
    };
    let mut params = Vec::new();
    for k in ["post_logout_redirect_uri", "state"] {
        if let Some(v) = p.get(k) {
            params.push((k.to_string(), v.clone()));
        }
    }
    if let Some(c) = client_id {
        params.push(("client_id".to_string(), c));
    }
    let page_ = ConfirmPage {
        base: &state.config.base_path,
        csrf: &csrf,
        username,
        client_name,
        params,
    };
    Ok(page(&page_, StatusCode::OK, None))
}
