//! The IdP's error types, and how protocol errors become responses.
//!
//! Protocol errors carry their RFC error code and are shown to the client; internal errors are
//! logged and become a plain 500 without detail (CONVENTIONS.md §8). A [`PageError`] is shown to
//! a person as an HTML page: the page renderer depends on the error, not the other way round, so
//! its `IntoResponse` lives with the pages (`web`).
//!
//! May depend on: `keys`, `tls` (their error types). Everything else may depend on it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::token::{error_code, ErrorResponse};

/// Errors of the store (`crate::store::Store`), whatever the backend: what the caller can act
/// on (not found, conflict) apart from the database failing, and apart from TLS, key and
/// configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row an operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness rule refused the write (a name taken, a code colliding).
    #[error("{0}")]
    Conflict(String),
    /// The schema cannot be brought up to date (for example: newer than this binary).
    #[error("database migration: {0}")]
    Migration(String),
    /// The database failed; the source says how.
    #[error("database: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A backend failure from any error of the database layer.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::backend(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::backend(e)
    }
}

/// Errors of the IdP library.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key: {0}")]
    Key(#[from] crate::keys::KeyError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("password hashing failed")]
    PasswordHash,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A failure of our own (randomness, sealing) that no input causes.
    #[error("internal: {0}")]
    Internal(String),
}

impl IdpError {
    /// What was not found, whether a use case or the store said so.
    pub fn not_found(&self) -> Option<&str> {
        match self {
            IdpError::NotFound(m) | IdpError::Store(StoreError::NotFound(m)) => Some(m),
            _ => None,
        }
    }
    /// What conflicted, whether a use case or the store said so.
    pub fn conflict(&self) -> Option<&str> {
        match self {
            IdpError::Conflict(m) | IdpError::Store(StoreError::Conflict(m)) => Some(m),
            _ => None,
        }
    }
}

/// An OAuth 2.0 error response (RFC 6749 §5.2) with its HTTP status.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        // RFC 6749 §5.2: 400 unless the client failed to authenticate (401, with
        // WWW-Authenticate when it used the Authorization header).
        let status = if code == error_code::INVALID_CLIENT {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        OAuthError {
            status,
            code,
            description: description.into(),
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(error_code::INVALID_REQUEST, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(error_code::INVALID_GRANT, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(error_code::INVALID_CLIENT, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(error_code::INVALID_SCOPE, d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(error_code::UNAUTHORIZED_CLIENT, d)
    }
    pub fn server_error() -> Self {
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: error_code::SERVER_ERROR,
            description: "internal error".into(),
        }
    }
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<IdpError> for OAuthError {
    fn from(e: IdpError) -> Self {
        tracing::error!(error = %e, "internal error");
        OAuthError::server_error()
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        IdpError::from(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.code.to_string(),
            error_description: Some(self.description),
            error_uri: None,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        // RFC 6749 §5.1: responses carrying tokens or errors must not be cached.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kubelogin-idp\""),
            );
        }
        resp
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        IdpError::from(e).into()
    }
}

/// An error shown to a person as an HTML page (never redirected: RFC 6749 §4.1.2.1 forbids
/// redirecting to an unverified redirect URI).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl PageError {
    pub fn bad_request(title: impl Into<String>, message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::FORBIDDEN,
            title: "Forbidden".into(),
            message: message.into(),
        }
    }
}

impl From<IdpError> for PageError {
    fn from(e: IdpError) -> Self {
        tracing::error!(error = %e, "internal error");
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal error".into(),
            message:
                "Something went wrong on the server. The administrator can find details in its log."
                    .into(),
        }
    }
}
