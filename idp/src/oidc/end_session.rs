//! RP-initiated logout's protocol, OpenID Connect RP-Initiated Logout 1.0 §2–§3: reading the
//! request (the ID token hint verified, `client_id` checked against it) and the post-logout
//! redirect. The confirmation page and signing out are the web layer's (`web::logout`).
//!
//! A link to this endpoint can sit on any web site, so a request alone must not sign anyone out.
//! §2: the OP "MUST ask the End-User [whether to log out] if an id_token_hint was not provided or
//! if the supplied ID Token does not belong to the current OP session with the RP and/or
//! currently logged in End-User". So: with a hint whose `sub` is the signed-in user, sign out at
//! once; otherwise show a confirmation page whose POST form carries the session's CSRF token.
//!
//! May depend on: `state`, `store`, `keys`, `error`, `http`.

use crate::error::PageError;
use crate::http::redirect_with;
use crate::state::AppState;
use axum::response::Response;
use std::collections::BTreeMap;

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

/// A logout request, GET or POST (§2: the OP must support both).
pub struct LogoutRequest {
    /// The confirmation page's CSRF token, when the request is that page's form.
    pub confirmation: Option<String>,
    /// The client: `client_id`, or the audience of a valid hint.
    pub client_id: Option<String>,
    /// The `sub` of a valid ID token hint.
    pub hint_sub: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
}

impl LogoutRequest {
    /// Reads the request's parameters, verifying the ID token hint if there is one.
    pub async fn read(
        state: &AppState,
        mut p: BTreeMap<String, String>,
    ) -> Result<Self, PageError> {
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
        Ok(LogoutRequest {
            confirmation,
            client_id,
            hint_sub,
            post_logout_redirect_uri: p.remove("post_logout_redirect_uri"),
            state: p.remove("state"),
        })
    }

    /// Whether the ID token hint names the signed-in user `user_id`: then no confirmation is
    /// needed (§2).
    pub fn hint_names(&self, user_id: &str) -> bool {
        self.hint_sub.as_deref() == Some(user_id)
    }

    /// The parameters the confirmation form carries to its POST.
    pub fn carried_params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if let Some(v) = &self.post_logout_redirect_uri {
            params.push(("post_logout_redirect_uri".to_string(), v.clone()));
        }
        if let Some(v) = &self.state {
            params.push(("state".to_string(), v.clone()));
        }
        if let Some(c) = &self.client_id {
            params.push(("client_id".to_string(), c.clone()));
        }
        params
    }
}

/// After signing out (§3): the redirect to the post-logout URI with `state`, only when it is
/// registered for the client; `None` when the request named none (or no client); an error page
/// when it is not registered.
pub async fn post_logout_redirect(
    state: &AppState,
    req: &LogoutRequest,
) -> Result<Option<Response>, PageError> {
    let (Some(uri), Some(cid)) = (&req.post_logout_redirect_uri, &req.client_id) else {
        return Ok(None);
    };
    let client = state.store.client(cid).await?;
    if client
        .map(|c| c.post_logout_redirect_uris.contains(uri))
        .unwrap_or(false)
    {
        let mut pairs = Vec::new();
        if let Some(s) = &req.state {
            pairs.push(("state", s.clone()));
        }
        return Ok(Some(redirect_with(uri, &pairs)));
    }
    Err(PageError::bad_request("Signed out", "You are signed out, but the application's return address is not registered, so you were not sent back."))
}
