//! kubelogin-idp: a compact OpenID Connect provider for kubectl users.
//!
//! `app(state)` is the whole HTTP surface as a `Router`, testable without a socket;
//! `server::run` adds the listener, TLS and background jobs.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod keys;
pub mod oidc;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
// A real IdP in-process for tests (this crate's, kubelogin's, e2e); never in the shipped binary.
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod token;
pub mod web;

use axum::http::{header, HeaderName, HeaderValue};
use axum::Router;
use state::AppState;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest request body accepted (forms and token requests are tiny).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The IdP's router with its security layers.
pub fn app(state: AppState) -> Router {
    let base = state.config.base_path.clone();
    let hsts = state.config.secure_cookies;
    let routes = crate::routes::routes().with_state(state);
    let router = if base.is_empty() {
        routes
    } else {
        Router::new().nest(&base, routes)
    };
    let mut router = router
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        // No inline script or style anywhere, so the CSP can forbid them; framing is refused
        // (clickjacking on the consent page).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ));
    if hsts {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    router
}
