//! The provider metadata document, OpenID Connect Discovery 1.0 §3 / RFC 8414 §2: built from the
//! configuration alone and serialised once, when the state is built (`oidc::discovery` serves
//! it).
//!
//! May depend on: `config`, `error`. Below `state`, which keeps the serialised document.

use crate::config::Config;
use crate::error::IdpError;
use shared::discovery::ProviderMetadata;
use shared::token::grant_type;

/// The metadata for this configuration.
pub fn document(c: &Config) -> ProviderMetadata {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    ProviderMetadata {
        issuer: c.issuer.clone(),
        authorization_endpoint: c.url("/oauth/authorize"),
        token_endpoint: c.url("/oauth/token"),
        userinfo_endpoint: Some(c.url("/oauth/userinfo")),
        jwks_uri: c.url("/.well-known/jwks.json"),
        device_authorization_endpoint: Some(c.url("/oauth/device/code")),
        revocation_endpoint: Some(c.url("/oauth/revoke")),
        introspection_endpoint: Some(c.url("/oauth/introspect")),
        end_session_endpoint: Some(c.url("/oauth/logout")),
        scopes_supported: s(&["openid", "profile", "email", "groups", "offline_access"]),
        response_types_supported: s(&["code"]),
        response_modes_supported: s(&["query"]),
        grant_types_supported: s(&[
            grant_type::AUTHORIZATION_CODE,
            grant_type::REFRESH_TOKEN,
            grant_type::DEVICE_CODE,
            grant_type::CLIENT_CREDENTIALS,
            grant_type::PASSWORD,
        ]),
        subject_types_supported: s(&["public"]),
        // Both are always accepted for verification; new tokens use the active key's.
        id_token_signing_alg_values_supported: s(&[c.signing_alg.as_str()]),
        token_endpoint_auth_methods_supported: s(&[
            "none",
            "client_secret_basic",
            "client_secret_post",
        ]),
        revocation_endpoint_auth_methods_supported: s(&[
            "none",
            "client_secret_basic",
            "client_secret_post",
        ]),
        introspection_endpoint_auth_methods_supported: s(&[
            "client_secret_basic",
            "client_secret_post",
        ]),
        claims_supported: s(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "azp",
            "at_hash",
            "email",
            "email_verified",
            "name",
            "preferred_username",
            "groups",
        ]),
        code_challenge_methods_supported: s(&["S256"]),
        request_parameter_supported: false,
        claims_parameter_supported: false,
        authorization_response_iss_parameter_supported: true,
    }
}

/// [`document`], serialised.
pub fn document_json(c: &Config) -> Result<bytes::Bytes, IdpError> {
    Ok(bytes::Bytes::from(serde_json::to_vec(&document(c))?))
}
