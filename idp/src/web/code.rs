//! The out-of-band code page. A client that cannot receive a redirect (kubelogin's
//! `--grant-type=authcode-keyboard`) sends `redirect_uri=urn:ietf:wg:oauth:2.0:oob`; a browser
//! cannot follow a redirect to that URN (it names no address: "out of band" in early OAuth 2.0
//! drafts; Chromium aborts the navigation and stays put), so the authorization response is
//! shown to the person instead, who pastes the code into the terminal
//! (`oidc::authorize::OOB_REDIRECT_URI`).
//!
//! May depend on: `state` (the page renderer is in `web`).

use super::page;
use crate::state::AppState;
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

#[derive(Template)]
#[template(path = "code.html")]
pub struct CodePage<'a> {
    pub base: &'a str,
    pub code: &'a str,
    pub client_name: &'a str,
    pub lifetime: String,
}

/// "2 minutes", "90 seconds", "1 minute".
pub fn describe_lifetime(secs: u64) -> String {
    let (n, unit) = if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// The page with the code: `Cache-Control: no-store` (from `page`) and the site's CSP, no script.
pub fn render(state: &AppState, code: &str, client_name: &str) -> Response {
    let p = CodePage {
        base: &state.config.base_path,
        code,
        client_name,
        lifetime: describe_lifetime(state.config.auth_code_lifetime),
    };
    page(&p, StatusCode::OK, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_naturally() {
        assert_eq!(describe_lifetime(120), "2 minutes");
        assert_eq!(describe_lifetime(60), "1 minute");
        assert_eq!(describe_lifetime(90), "90 seconds");
        assert_eq!(describe_lifetime(1), "1 second");
    }
}
