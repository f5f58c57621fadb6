//! CSRF tokens bound to the server-side session, so a cookie the server never issued is worth
//! nothing (a double-submit cookie is not: a sibling subdomain or a network attacker on plain
//! http can plant one and put the same value in a forged form).
//!
//! A token is HMAC-SHA256(key, purpose || 0 || id), base64url:
//! - on the pages of a signed-in user, `id` is the session id from the session cookie
//!   (purpose `session`): a token only fits the session it was made for;
//! - on the login page, where there is no session yet, `id` is a random pre-session id kept in its
//!   own HttpOnly cookie (purpose `login`).
//!
//! Forging a token for a planted id needs the key. The key is generated once and kept in the
//! store (`Store::server_secret`), so every replica on one database checks every replica's
//! tokens. After signing in the session id changes, so pages after login carry the new
//! session's tokens.
//!
//! May depend on: `http` (cookies), `state`, `store`, `crypto`, `error`.

use super::{PRE_SESSION_COOKIE, SESSION_COOKIE};
use crate::crypto;
use crate::error::{IdpError, PageError};
use crate::http::{our_cookie, set_cookie};
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue};
use ring::hmac;

/// The store's name for the HMAC key.
const KEY_NAME: &str = "csrf-hmac-sha256";
const SESSION: &str = "session";
const LOGIN: &str = "login";

async fn key(state: &AppState) -> Result<&hmac::Key, IdpError> {
    state
        .csrf_key
        .get_or_try_init(|| async {
            let candidate = crypto::random_token(32);
            let secret = state
                .store
                .server_secret(KEY_NAME, &candidate, state.now())
                .await?;
            Ok(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
        })
        .await
}

fn derive(key: &hmac::Key, purpose: &str, id: &str) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(purpose.as_bytes());
    ctx.update(&[0]);
    ctx.update(id.as_bytes());
    shared::jwt::b64url(ctx.sign().as_ref())
}

/// Ids we hand out are 43 base64url characters; anything far from that is not ours.
fn plausible_id(id: &str) -> bool {
    (20..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn refused() -> PageError {
    PageError::forbidden(
        "The form expired or did not come from this site (CSRF check failed). Go back, reload the page and try again.",
    )
}

/// The token for the forms of a signed-in page (consent, device, sign-out). Empty when the
/// browser has no session cookie (such a form can only fail).
pub async fn session_token(state: &AppState, headers: &HeaderMap) -> Result<String, IdpError> {
    match our_cookie(state, headers, SESSION_COOKIE) {
        Some(sid) if plausible_id(&sid) => Ok(derive(key(state).await?, SESSION, &sid)),
        _ => Ok(String::new()),
    }
}

/// Accepts a form of a signed-in page only with the token of the browser's own session.
pub async fn check_session(
    state: &AppState,
    headers: &HeaderMap,
    form_token: &str,
) -> Result<(), PageError> {
    let Some(sid) = our_cookie(state, headers, SESSION_COOKIE).filter(|s| plausible_id(s)) else {
        return Err(refused());
    };
    let expected = derive(key(state).await?, SESSION, &sid);
    if crypto::ct_eq(&expected, form_token) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The login form's token, with the pre-session cookie to set when the browser has none yet.
pub async fn login_token(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Option<HeaderValue>), IdpError> {
    let key = key(state).await?;
    match our_cookie(state, headers, PRE_SESSION_COOKIE) {
        Some(id) if plausible_id(&id) => Ok((derive(key, LOGIN, &id), None)),
        _ => {
            let id = crypto::random_token(32);
            let cookie = set_cookie(state, PRE_SESSION_COOKIE, &id, None);
            Ok((derive(key, LOGIN, &id), Some(cookie)))
        }
    }
}

/// Accepts the login form only with the token of the browser's own pre-session.
pub async fn check_login(
    state: &AppState,
    headers: &HeaderMap,
    form_token: &str,
) -> Result<(), PageError> {
    let Some(id) = our_cookie(state, headers, PRE_SESSION_COOKIE).filter(|s| plausible_id(s))
    else {
        return Err(refused());
    };
    let expected = derive(key(state).await?, LOGIN, &id);
    if crypto::ct_eq(&expected, form_token) {
        Ok(())
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_key_purpose_and_id() {
        let k1 = hmac::Key::new(hmac::HMAC_SHA256, b"one");
        let k2 = hmac::Key::new(hmac::HMAC_SHA256, b"two");
        let t = derive(&k1, SESSION, "abc");
        assert_eq!(t, derive(&k1, SESSION, "abc"));
        assert_ne!(t, derive(&k2, SESSION, "abc"));
        assert_ne!(t, derive(&k1, LOGIN, "abc"));
        assert_ne!(t, derive(&k1, SESSION, "abd"));
        assert_eq!(t.len(), 43);
    }
}

/// A form posted from one of our signed-in pages: its fields, accepted only with the CSRF token
/// of this browser's session in `csrf_token` (checked by [`check_session`] before the fields
/// are read). The synchronizer-token pattern of the OWASP CSRF Prevention Cheat Sheet. Use it
/// as a handler's last argument; the form types then carry only their own fields.
pub struct Posted<F>(pub F);

#[derive(serde::Deserialize)]
struct FormToken {
    #[serde(default)]
    csrf_token: String,
}

impl<F: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for Posted<F> {
    type Rejection = axum::response::Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let headers = req.headers().clone();
        // The body, refused with 415 unless it is application/x-www-form-urlencoded.
        let axum::extract::RawForm(body) = axum::extract::RawForm::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: FormToken = serde_urlencoded::from_bytes(&body).map_err(|_| malformed())?;
        check_session(state, &headers, &token.csrf_token)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_urlencoded::from_bytes(&body)
            .map(Posted)
            .map_err(|_| malformed())
    }
}

fn malformed() -> axum::response::Response {
    use axum::response::IntoResponse;
    PageError::bad_request(
        "Malformed form",
        "The form could not be read. Go back, reload the page and try again.",
    )
    .into_response()
}

/// A confirmation form: nothing but the CSRF token.
#[derive(serde::Deserialize)]
pub struct Confirmation {}
