//! Server-rendered pages: login, consent, device approval, logout. Sessions live in the store
//! (a random id in an HttpOnly cookie, only its hash stored); every form carries a CSRF token
//! bound to the session (`csrf.rs`).

pub mod code;
pub mod consent;
pub mod csrf;
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

/// The signed-in session's id (its SHA-256 is the store's key).
pub const SESSION_COOKIE: &str = "kl_session";
/// The pre-login session's id, to which the login form's CSRF token is bound.
pub const PRE_SESSION_COOKIE: &str = "kl_presession";

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

/// The name a cookie goes by on this server. On https the name carries the `__Host-` prefix the
/// browser enforces (Secure, Path=/, no Domain: only this exact origin can set it), so a cookie
/// planted by a sibling subdomain or by a network attacker on plain http is never taken for ours
/// (RFC 6265bis §4.1.3.2). A weaker `__Secure-` cookie could still be planted by a sibling
/// subdomain with `Domain=`, and a planted pre-login or session id the attacker obtained from us
/// comes with a valid CSRF token, so it would allow login CSRF. Under a base path the path is
/// folded into the name instead (`__Host-kl_session-idp`), since `__Host-` requires Path=/.
///
/// On http (a local try-out) the bare name is used: there is nothing to enforce.
pub fn cookie_name(state: &AppState, base: &str) -> String {
    if !state.config.secure_cookies {
        return base.to_string();
    }
    let path = &state.config.base_path;
    if path.is_empty() {
        return format!("__Host-{base}");
    }
    let folded: String = path
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__Host-{base}-{folded}")
}

/// The value of one of our cookies (`base` is its unprefixed name).
pub fn our_cookie(state: &AppState, headers: &HeaderMap, base: &str) -> Option<String> {
    cookie(headers, &cookie_name(state, base))
}

/// A `Set-Cookie` value for one of our cookies (`name` unprefixed): HttpOnly, SameSite=Lax (the
/// authorization redirect is a top-level GET from another site, which Lax allows), Secure when
/// the issuer is https, no Domain. The only place cookies are built.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    // `__Host-` cookies must have Path=/ (see `cookie_name`); on plain http the cookie stays
    // under the base path.
    let path = if state.config.base_path.is_empty() || state.config.secure_cookies {
        "/"
    } else {
        &state.config.base_path
    };
    let name = cookie_name(state, name);
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
    let Some(id) = our_cookie(state, headers, SESSION_COOKIE) else {
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
