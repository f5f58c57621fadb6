//! Server-rendered pages and the browser side of the flows: login and sign-out, the
//! authorization endpoint's login redirect, consent and code pages, RP-initiated logout's
//! confirmation, device approval. Sessions live in the store (a random id in an HttpOnly cookie,
//! only its hash stored); every form carries a CSRF token bound to the session (`csrf.rs`).
//! Errors shown to a person are rendered here (`PageError`'s `IntoResponse`).
//!
//! The top of the request-handling layers: may depend on everything below (`oidc`, `token`,
//! `accounts`, `audit`, `http`, `state`, `store`, `crypto`, `error`); nothing but `routes`
//! depends on it. The protocol decisions stay in `oidc`: pages call them and render the result.

pub mod account;
pub mod admin;
pub mod authorize;
pub mod code;
pub mod consent;
pub mod csrf;
pub mod device;
pub mod home;
pub mod login;
pub mod logout;

use crate::accounts;
use crate::error::{IdpError, PageError};
use crate::http::our_cookie;
use crate::state::AppState;
use crate::store::{Client, Session, User};
use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

/// The signed-in session's id (its SHA-256 is the store's key).
pub const SESSION_COOKIE: &str = "kl_session";
/// The pre-login session's id, to which the login form's CSRF token is bound.
pub const PRE_SESSION_COOKIE: &str = "kl_presession";

/// The signed-in user, if the session cookie names a live session of an enabled user.
pub async fn current_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, IdpError> {
    match our_cookie(state, headers, SESSION_COOKIE) {
        Some(id) => accounts::session_user(state, &id).await,
        None => Ok(None),
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

/// Errors shown to a person become the message page here, so the error type needs no page.
/// The base path is unknown here; the stylesheet link is relative to the site root.
/// So a handler that may also answer with a redirect (`Result<Response, Response>`) can use `?`
/// on a [`PageError`].
impl From<PageError> for Response {
    fn from(e: PageError) -> Response {
        e.into_response()
    }
}

/// An internal error in such a handler: the generic 500 page (and the log line
/// `PageError::from` writes).
impl From<IdpError> for Response {
    fn from(e: IdpError) -> Response {
        PageError::from(e).into_response()
    }
}

impl From<crate::error::StoreError> for Response {
    fn from(e: crate::error::StoreError) -> Response {
        PageError::from(IdpError::from(e)).into_response()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page(
            &MessagePage {
                base: "",
                title: &self.title,
                message: &self.message,
            },
            self.status,
            None,
        )
    }
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

/// The name a client is shown by: its display name, else its id.
pub fn client_name(c: &Client) -> &str {
    if c.name.is_empty() {
        &c.client_id
    } else {
        &c.name
    }
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

/// Where a sign-in may send the browser back to, below the base path: the authorization
/// endpoint, the device page, the account and admin pages, or exactly the home page.
const RETURN_PATHS: &[&str] = &["/oauth/authorize", "/device", "/account", "/admin"];

/// The absolute URL to send the browser to after signing in, if `return_to` is one of our own
/// pages; `None` for anything else (the caller then goes home).
///
/// Browsers strip TAB, CR and LF from URLs and read `\` as `/` (WHATWG URL §4.4), so a value
/// like `/\t/evil.example` becomes `//evil.example`, another origin. Hence: any control
/// character, whitespace or backslash, raw or percent-encoded in the path, is refused; the
/// value is resolved against the issuer as a browser would, and must keep the issuer's origin
/// and land on an allowed path (an open redirector is an attack tool: RFC 9700 §4.11). The
/// result is the resolved absolute URL, so the browser has nothing left to interpret.
pub fn return_target(issuer: &str, base_path: &str, return_to: &str) -> Option<String> {
    const MAX_LEN: usize = 8 * 1024;
    let bad = |c: char| c.is_control() || c.is_whitespace() || c == '\\';
    if return_to.is_empty() || return_to.len() > MAX_LEN || return_to.chars().any(bad) {
        return None;
    }
    let path = return_to.split(['?', '#']).next().unwrap_or_default();
    if percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .chars()
        .any(bad)
    {
        return None;
    }
    let issuer = url::Url::parse(issuer).ok()?;
    let target = issuer.join(return_to).ok()?;
    if target.origin() != issuer.origin()
        || !target.username().is_empty()
        || target.password().is_some()
    {
        return None;
    }
    let rest = target.path().strip_prefix(base_path)?;
    let allowed = rest == "/"
        || RETURN_PATHS.iter().any(|p| {
            rest.strip_prefix(p)
                .is_some_and(|tail| tail.is_empty() || tail.starts_with('/'))
        });
    allowed.then(|| target.to_string())
}

/// [`return_target`] for this server.
pub fn safe_return_path(state: &AppState, return_to: &str) -> Option<String> {
    return_target(&state.config.issuer, &state.config.base_path, return_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://idp.example:8443";

    #[test]
    fn return_target_keeps_our_pages_and_refuses_the_rest() {
        let ok = |p: &str| return_target(ISSUER, "", p);
        assert_eq!(
            ok("/oauth/authorize?client_id=k&scope=openid+email").as_deref(),
            Some("https://idp.example:8443/oauth/authorize?client_id=k&scope=openid+email")
        );
        assert_eq!(
            ok("/device").as_deref(),
            Some("https://idp.example:8443/device")
        );
        assert_eq!(ok("/").as_deref(), Some("https://idp.example:8443/"));
        assert!(ok("/account/sessions").is_some());
        assert!(ok("/admin").is_some());
        for bad in [
            "",
            "/\t/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "//evil.example",
            "/\\evil.example",
            "/%5cevil.example",
            "https://evil.example/oauth/authorize",
            "https://idp.example:8443@evil.example/device",
            "http://idp.example:8443/device",
            "/devices",
            "/login",
            "/device/../login",
            "/%2e%2e/login",
            "/device\u{a0}",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        // Under a base path only its pages count.
        let with_base = |p: &str| return_target("https://h.example/idp", "/idp", p);
        assert!(with_base("/idp/device").is_some());
        assert!(with_base("/idp/").is_some());
        assert_eq!(with_base("/device"), None);
        assert_eq!(with_base("/idpx/device"), None);
    }

    proptest::proptest! {
        /// Whatever a caller sends, an accepted value is an absolute URL on the issuer's origin
        /// that a browser reads the same way (no character it would strip or reinterpret), and
        /// resolving it from any of our pages stays on that origin.
        #[test]
        fn no_accepted_return_to_leaves_the_issuer(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "//", "\\", "\t", "\n", "\r", " ", "%09", "%0A", "%5C", "%2F", "%2e",
                    "..", ".", "@", ":", "?", "#", "&", "=", "evil.example", "idp.example",
                    "https:", "http:", "javascript:", "8443", "oauth", "authorize", "device",
                    "account", "admin", "idp", "x", "\u{0}", "\u{a0}", "\u{2028}", "\u{feff}",
                    "%00", "%E2%80%A8", "%", "[", "]",
                ]),
                0..12,
            ),
            base in proptest::sample::select(vec!["", "/idp"]),
        ) {
            let input: String = parts.concat();
            let issuer = format!("{ISSUER}{base}");
            if let Some(out) = return_target(&issuer, base, &input) {
                let origin = url::Url::parse(ISSUER).unwrap().origin();
                let u = url::Url::parse(&out).unwrap();
                proptest::prop_assert_eq!(u.origin(), origin.clone(), "{:?} -> {:?}", input, out);
                proptest::prop_assert!(!out.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\'));
                for from in ["/login", "/idp/login", "/oauth/authorize/consent"] {
                    let page = url::Url::parse(ISSUER).unwrap().join(from).unwrap();
                    proptest::prop_assert_eq!(page.join(&out).unwrap().origin(), origin.clone());
                }
            }
        }
    }
}
