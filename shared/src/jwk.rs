//! RFC 7517 JSON Web Keys (public keys only) and RFC 7518 §6 key parameters.

use serde::{Deserialize, Serialize};

/// A public JWK, RFC 7517 §4 with RFC 7518 §6.2 (EC) and §6.3 (RSA) members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Jwk {
    pub kty: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK Set, RFC 7517 §5.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}
