//! The routes: one table of every path the IdP serves, and the router with its security
//! layers.
//!
//! May depend on: `state`, `oidc`, `token`, `web`, `ops` (the handlers).

use crate::state::AppState;
use crate::{oidc, ops, token, web};
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest request body accepted (forms and token requests are tiny).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The IdP's router with its security layers.
pub fn app(state: AppState) -> Router {
    let base = state.config.base_path.clone();
    let hsts = state.config.secure_cookies;
    let routes = routes().with_state(state);
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

/// Every path and its handler.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(oidc::discovery::discovery),
        )
        .route("/.well-known/jwks.json", get(oidc::jwks::jwks))
        .route("/oauth/authorize", get(web::authorize::authorize))
        .route(
            "/oauth/authorize/consent",
            post(web::consent::consent_submit),
        )
        .route("/oauth/token", post(token::token))
        .route(
            "/oauth/device/code",
            post(oidc::device::device_authorization),
        )
        .route(
            "/oauth/userinfo",
            get(oidc::userinfo::userinfo).post(oidc::userinfo::userinfo),
        )
        .route("/oauth/revoke", post(oidc::revoke::revoke))
        .route("/oauth/introspect", post(oidc::introspect::introspect))
        .route(
            "/oauth/logout",
            get(web::logout::end_session).post(web::logout::end_session_post),
        )
        .route(
            "/device",
            get(web::device::device_page).post(web::device::device_submit),
        )
        .route(
            "/login",
            get(web::login::login_page).post(web::login::login_submit),
        )
        .route("/logout", post(web::logout::logout))
        .route("/", get(web::home::home))
        .route("/static/style.css", get(web::stylesheet))
        // The self-service pages, built from their path table (`web::account::ROUTES`).
        .merge(web::account::router())
        .route("/health", get(health))
        // Probes (`ops`): liveness without the database, readiness with it.
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        // The admin console, built from its path table (`web::admin::ROUTES`).
        .merge(web::admin::router())
}

/// The account pages' paths and methods; the router serves exactly these under `/account`.
pub use crate::web::account::ROUTES as ACCOUNT_ROUTES;
/// The admin console's paths and methods; the router serves exactly these under `/admin`.
pub use crate::web::admin::ROUTES as ADMIN_ROUTES;

async fn health() -> &'static str {
    "ok"
}
