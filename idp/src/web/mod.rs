//! Server-rendered pages: login, consent, device approval, logout. Sessions live in the store
//! (a random id in an HttpOnly cookie, only its hash stored); every form carries a CSRF token.

pub mod consent;
pub mod device;
pub mod login;

use crate::crypto;
use crate::state::AppState;
use crate::store::{Session, User};
use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

pub const SESSION_COOKIE: &str = "kl_session";
pub const CSRF_COOKIE: &str = "kl_csrf";

/// Who is asking: client IP (X-Forwarded-For only from a trusted proxy) and user agent, for
/// throttling and the audit log.
#[derive(Debug, Clone)]
pub struct ClientMeta {
    pub ip: String,
    pub user_agent: String,
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = client_ip(peer, &parts.headers, &state.config.trusted_proxies);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(256)
            .collect();
        Ok(ClientMeta { ip, user_agent })
    }
}

/// The client's IP. `X-Forwarded-For` is believed only when the peer is a configured trusted
/// proxy, and then the right-most address that is not itself a trusted proxy is taken (the
/// left part of the header is whatever the client chose to send).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| peer.to_string())
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the authorization redirect is a top-level GET
/// from another site, which Lax allows), Secure when the issuer is https.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let path = if state.config.base_path.is_empty() {
        "/"
    } else {
        &state.config.base_path
    };
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if state.config.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in user, if the session cookie names a live session of an enabled user.
pub async fn current_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, crate::error::IdpError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state
        .store
        .session(&crypto::hash_secret(&id), state.now())
        .await?
    else {
        return Ok(None);
    };
    match state.store.user_by_id(&session.user_id).await? {
        Some(u) if !u.disabled => Ok(Some((session, u))),
        _ => Ok(None),
    }
}

/// The CSRF token of this browser (double-submit: the same random value in an HttpOnly cookie
/// and in each form), with the cookie to set when the browser has none yet.
pub fn csrf_token(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(t) if t.len() >= 32 => (t, None),
        _ => {
            let t = crypto::random_token(32);
            let c = set_cookie(state, CSRF_COOKIE, &t, None);
            (t, Some(c))
        }
    }
}

/// Rejects a form whose CSRF field does not match the browser's CSRF cookie.
pub fn check_csrf(headers: &HeaderMap, form_token: &str) -> Result<(), crate::error::PageError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(c) if c.len() >= 32 && crypto::ct_eq(&c, form_token) => Ok(()),
        _ => Err(crate::error::PageError::forbidden(
            "The form expired or did not come from this site (CSRF check failed). Go back, reload the page and try again.",
        )),
    }
}

/// Renders a template into a response, adding a Set-Cookie when given.
pub fn page<T: Template>(t: &T, status: StatusCode, set_cookie: Option<HeaderValue>) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            if let Some(c) = set_cookie {
                r.headers_mut().append(header::SET_COOKIE, c);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub base: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

pub fn render_error_page(status: StatusCode, title: &str, message: &str) -> Response {
    // The base path is unknown here; the stylesheet link is relative to the site root.
    page(
        &MessagePage {
            base: "",
            title,
            message,
        },
        status,
        None,
    )
}

pub fn message_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    page(
        &MessagePage {
            base: &state.config.base_path,
            title,
            message,
        },
        status,
        None,
    )
}

/// The stylesheet (a file, not inline: the CSP forbids inline styles).
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../templates/style.css"),
    )
        .into_response()
}

/// Sends the browser to the login page, which comes back to `back` after signing in.
pub fn login_redirect(state: &AppState, back: &str) -> Response {
    let mut to = url::form_urlencoded::Serializer::new(String::new());
    to.append_pair("return_to", back);
    axum::response::Redirect::to(&format!("{}/login?{}", state.config.base_path, to.finish()))
        .into_response()
}

/// A same-site relative path safe to redirect to after login (no scheme, no `//host`).
pub fn safe_return_path(state: &AppState, p: &str) -> Option<String> {
    let base = &state.config.base_path;
    let ok = p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.contains(['\r', '\n']);
    (ok && p.starts_with(base.as_str())).then(|| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(Some(other), &h, &[proxy]), "198.51.100.7");
        assert_eq!(client_ip(Some(proxy), &h, &[proxy]), "203.0.113.9");
        assert_eq!(
            client_ip(Some(proxy), &HeaderMap::new(), &[proxy]),
            "10.0.0.1"
        );
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; kl_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, "kl_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
