//! The routes: one table of every path the IdP serves.

use crate::state::AppState;
use crate::{oidc, token, web};
use axum::routing::{get, post};
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(oidc::discovery::discovery),
        )
        .route("/.well-known/jwks.json", get(oidc::jwks::jwks))
        .route("/oauth/authorize", get(oidc::authorize::authorize))
        .route(
            "/oauth/authorize/consent",
            post(oidc::authorize::consent_submit),
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
            get(oidc::end_session::end_session).post(oidc::end_session::end_session_post),
        )
        .route(
            "/device",
            get(web::device::device_page).post(web::device::device_submit),
        )
        .route(
            "/login",
            get(web::login::login_page).post(web::login::login_submit),
        )
        .route("/logout", post(web::login::logout))
        .route("/", get(web::login::home))
        .route("/static/style.css", get(web::stylesheet))
        .route("/health", get(health))
}

async fn health() -> &'static str {
    "ok"
}
