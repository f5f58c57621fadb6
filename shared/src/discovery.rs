//! OpenID Connect Discovery 1.0 §3 provider metadata (also RFC 8414 §2).

use serde::{Deserialize, Serialize};

/// OpenID Provider Metadata, OpenID Connect Discovery 1.0 §3 and RFC 8414 §2.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    /// RFC 8628 §4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
    /// RFC 7009 via RFC 8414 §2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// RFC 7662 via RFC 8414 §2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// OpenID Connect RP-Initiated Logout 1.0 §2.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    #[serde(default)]
    pub response_modes_supported: Vec<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    #[serde(default)]
    pub subject_types_supported: Vec<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub claims_supported: Vec<String>,
    /// RFC 8414 §2 / RFC 7636 §4.3: the PKCE methods the server accepts.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub request_parameter_supported: bool,
    #[serde(default)]
    pub claims_parameter_supported: bool,
    /// RFC 9207 §3: authorization responses carry `iss` (the mix-up defence of RFC 9700 §4.4).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// The well-known path, OpenID Connect Discovery 1.0 §4.
pub const WELL_KNOWN_PATH: &str = "/.well-known/openid-configuration";

/// The discovery URL for an issuer, §4.1: the issuer with any trailing `/` removed, then the path.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}{}", issuer.trim_end_matches('/'), WELL_KNOWN_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_appends_well_known_once() {
        assert_eq!(
            discovery_url("https://idp.example/realms/a/"),
            "https://idp.example/realms/a/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://idp.example"),
            "https://idp.example/.well-known/openid-configuration"
        );
    }
}
