//! RFC 6749 token endpoint messages: §5.1 success and §5.2 error.

use serde::{Deserialize, Serialize};

/// Successful token response, RFC 6749 §5.1 (plus `id_token`, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Error response, RFC 6749 §5.2 (also used by RFC 8628 §3.5 and RFC 7009 §2.2.1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

/// Error codes, RFC 6749 §4.1.2.1, §5.2, RFC 8628 §3.5 and OpenID Connect Core §3.1.2.6.
pub mod error_code {
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const INVALID_CLIENT: &str = "invalid_client";
    pub const INVALID_GRANT: &str = "invalid_grant";
    pub const UNAUTHORIZED_CLIENT: &str = "unauthorized_client";
    pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
    pub const UNSUPPORTED_RESPONSE_TYPE: &str = "unsupported_response_type";
    pub const INVALID_SCOPE: &str = "invalid_scope";
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const SERVER_ERROR: &str = "server_error";
    pub const TEMPORARILY_UNAVAILABLE: &str = "temporarily_unavailable";
    pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
    pub const SLOW_DOWN: &str = "slow_down";
    pub const EXPIRED_TOKEN: &str = "expired_token";
    pub const LOGIN_REQUIRED: &str = "login_required";
    pub const CONSENT_REQUIRED: &str = "consent_required";
    pub const INTERACTION_REQUIRED: &str = "interaction_required";
    pub const UNSUPPORTED_TOKEN_TYPE: &str = "unsupported_token_type";
}

/// Grant type identifiers, RFC 6749 §4 and RFC 8628 §3.4.
pub mod grant_type {
    pub const AUTHORIZATION_CODE: &str = "authorization_code";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    pub const PASSWORD: &str = "password";
}
