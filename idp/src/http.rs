//! HTTP plumbing, the only module that knows how requests are read and redirects and cookies
//! are written: who is asking (`ClientMeta`), form bodies with each parameter once, query
//! strings without repeats, redirects that add query parameters, and our cookies' names and
//! attributes.
//!
//! May depend on: `state`, `error`. Everything that handles a request sits above it.

use crate::error::{OAuthError, PageError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

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

/// The value of the first cookie called `name` in the request's `Cookie` headers (RFC 6265
/// §4.2.1: `name=value` pairs separated by `; `). The first one wins: a browser sends the cookie
/// with the longest path first (§5.4), which is ours under a base path.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
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
///
/// The line is written here rather than by the `cookie` crate's `Display`, which puts `Path`
/// after `Secure`: the attribute order below (Path first) is what browsers and our tests have
/// always seen, and the values are our own base64url ids, which need no encoding.
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

/// A form body with each parameter at most once (RFC 6749 §3.2: "Parameters sent without a
/// value MUST be treated as if they were omitted"; "MUST NOT be included more than once").
pub struct FormParams(pub BTreeMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for FormParams {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded (RFC 6749 §3.2)",
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|_| {
            OAuthError::invalid_request("the request body is too large or unreadable")
        })?;
        parse_form(&body).map(FormParams)
    }
}

/// Longest parameter name we keep; longer names are refused (no standard name comes close).
pub const MAX_PARAM_NAME: usize = 64;

/// Parses an `application/x-www-form-urlencoded` body into parameters: empty values dropped,
/// a repeated parameter refused (RFC 6749 §3.2). Pure, so it can be fuzzed on its own.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, OAuthError> {
    let mut m = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if k.len() > MAX_PARAM_NAME {
            return Err(OAuthError::invalid_request("a parameter name is too long"));
        }
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "the parameter {k:?} appears more than once"
            )));
        }
    }
    Ok(m)
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

    #[test]
    fn duplicates_are_refused() {
        assert!(parse_unique("a=1&a=2").is_err());
        assert_eq!(parse_unique("a=1&b=2").unwrap().len(), 2);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any body gives parameters or an OAuth error; accepted parameters are non-empty,
        /// unique and bounded.
        #[test]
        fn any_body_parses_or_errs(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = parse_form(&body) {
                prop_assert!(m.values().all(|v| !v.is_empty()));
                prop_assert!(m.keys().all(|k| k.len() <= MAX_PARAM_NAME));
            }
        }

        /// Encoded parameters come back exactly, and a repeated one is refused.
        #[test]
        fn encoded_parameters_round_trip(
            params in proptest::collection::btree_map("[a-z_]{1,20}", ".{1,40}", 0..8)
        ) {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            prop_assert_eq!(parse_form(body.as_bytes()).unwrap(), params.clone());
            if let Some((k, v)) = params.iter().next() {
                let doubled = format!("{body}&{}", url::form_urlencoded::Serializer::new(String::new()).append_pair(k, v).finish());
                prop_assert!(parse_form(doubled.as_bytes()).is_err());
            }
        }
    }
}
