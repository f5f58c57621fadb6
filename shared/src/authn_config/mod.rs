//! kube-apiserver's structured authentication configuration (`--authentication-config`, an
//! `AuthenticationConfiguration` of `apiserver.config.k8s.io`: beta in 1.30, GA as `v1` in 1.34)
//! as plain serde types, its start-up validation ([`validate`]) and the token authentication it
//! configures, CEL claim mappings and validation rules included ([`authenticate`]).
//!
//! Source of the rules: the Kubernetes documentation, "Authenticating", section "Using
//! Authentication Configuration" (reference/access-authn-authz/authentication), and the
//! `apiserver.config.k8s.io` API reference. The e2e kube-apiserver stand-in and `doctor` both
//! run this module, as they both run [`crate::kube_oidc`] for the `--oidc-*` flags.
//!
//! CEL runs on the `cel` crate (the cel-rust interpreter), with the variables kube-apiserver
//! gives: `claims` (the token's payload) for claim validation rules and claim mappings, `user`
//! (`username`, `uid`, `groups`, `extra`) for user validation rules.

mod eval;
mod template;
mod validate;

#[cfg(test)]
mod tests;

pub use eval::{authenticate, evaluate_claims};
pub use template::{template, Template};
pub use validate::{validate, FieldError};

use serde::{Deserialize, Serialize};

/// The API group/version for Kubernetes 1.30 to 1.33 (beta).
pub const V1BETA1: &str = "apiserver.config.k8s.io/v1beta1";
/// The API group/version for Kubernetes 1.34 and later (GA).
pub const V1: &str = "apiserver.config.k8s.io/v1";
/// The first minor release of Kubernetes 1.x with structured authentication enabled by default.
pub const FIRST_MINOR: u32 = 30;
/// The first minor release with the `v1` API.
pub const V1_MINOR: u32 = 34;
/// The largest file read (kube-apiserver's own configuration files are small; this bounds
/// untrusted input).
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The most JWT authenticators read (bounds the work of one token).
pub const MAX_AUTHENTICATORS: usize = 64;

/// The `apiVersion` to write for Kubernetes `1.minor`, or `None` before 1.30 (use the
/// `--oidc-*` flags there).
pub fn api_version_for(minor: u32) -> Option<&'static str> {
    match minor {
        m if m >= V1_MINOR => Some(V1),
        m if m >= FIRST_MINOR => Some(V1BETA1),
        _ => None,
    }
}

/// `AuthenticationConfiguration`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticationConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtAuthenticator>,
    /// `anonymous` (1.32+): not interpreted here, kept so such a file parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<serde_json::Value>,
}

/// `jwt[]`: one OIDC issuer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuthenticator {
    pub issuer: Issuer,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_validation_rules: Vec<ClaimValidationRule>,
    pub claim_mappings: ClaimMappings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_validation_rules: Vec<UserValidationRule>,
}

/// `jwt[].issuer`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Issuer {
    /// Must be https and equal the token's `iss`.
    pub url: String,
    /// Where to fetch discovery when not under `url` (1.30+).
    #[serde(
        rename = "discoveryURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub discovery_url: Option<String>,
    /// PEM of the CA(s) that sign the issuer's certificate (inline, not a file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// The token's `aud` must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// `MatchAny`; required when there are several audiences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_match_policy: Option<String>,
    /// `egressSelectorType` (1.33+): not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_selector_type: Option<String>,
}

/// `jwt[].claimValidationRules[]`: a claim with a required value, or a CEL expression over
/// `claims` that must be true.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimValidationRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `jwt[].claimMappings`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimMappings {
    pub username: PrefixedClaimOrExpression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<PrefixedClaimOrExpression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<ClaimOrExpression>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraMapping>,
}

/// A claim with a prefix, or a CEL expression (no prefix).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixedClaimOrExpression {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Required with `claim` (the empty string disables prefixing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// A claim or a CEL expression.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimOrExpression {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `claimMappings.extra[]`: a domain-prefixed key and the CEL expression of its value(s).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraMapping {
    pub key: String,
    pub value_expression: String,
}

/// `jwt[].userValidationRules[]`: a CEL expression over `user` that must be true.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserValidationRule {
    pub expression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A file that is not an `AuthenticationConfiguration` at all (kube-apiserver would not start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Reads an `AuthenticationConfiguration` from YAML (JSON is YAML too). Unknown fields are
/// errors, as kube-apiserver decodes its configuration files strictly.
pub fn parse(text: &str) -> Result<AuthenticationConfiguration, ParseError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError(format!(
            "the file has {} bytes, more than the {MAX_FILE_BYTES} read",
            text.len()
        )));
    }
    let config: AuthenticationConfiguration =
        serde_norway::from_str(text).map_err(|e| ParseError(e.to_string()))?;
    if config.jwt.len() > MAX_AUTHENTICATORS {
        return Err(ParseError(format!(
            "{} jwt authenticators, more than the {MAX_AUTHENTICATORS} read",
            config.jwt.len()
        )));
    }
    Ok(config)
}

/// The configuration as YAML, the form kube-apiserver's documentation shows.
pub fn to_yaml(config: &AuthenticationConfiguration) -> Result<String, ParseError> {
    serde_norway::to_string(config).map_err(|e| ParseError(e.to_string()))
}
