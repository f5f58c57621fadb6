//! The `AuthenticationConfiguration` `setup --write-authentication-config` writes: one issuer
//! with its CA and audience, the username from a claim with a prefix, prefixed groups, a
//! claim validation rule requiring `email_verified` when the username is the email, and user
//! validation rules refusing `system:` names (Kubernetes docs, "Authenticating" > "Using
//! Authentication Configuration": kube-apiserver keeps the `system:` prefix for its own users
//! and groups).

use super::{
    AuthenticationConfiguration, ClaimMappings, ClaimValidationRule, Issuer, JwtAuthenticator,
    PrefixedClaimOrExpression, UserValidationRule,
};

/// What the template needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// [`super::V1`] or [`super::V1BETA1`].
    pub api_version: String,
    pub issuer_url: String,
    /// The PEM of the CA that signs the issuer's certificate, inline.
    pub ca_pem: Option<String>,
    /// The client id(s) the tokens are issued to.
    pub audiences: Vec<String>,
    pub username_claim: String,
    pub username_prefix: String,
    /// No group mapping when `None`.
    pub groups_claim: Option<String>,
    pub groups_prefix: String,
}

/// The configuration for `t`.
pub fn template(t: &Template) -> AuthenticationConfiguration {
    let mut claim_validation_rules = Vec::new();
    if t.username_claim == "email" {
        // kube-apiserver itself only refuses an `email_verified` that is present and false;
        // this rule also refuses a token that does not say.
        claim_validation_rules.push(ClaimValidationRule {
            expression: Some("claims.email_verified == true".into()),
            message: Some("the email address must be verified".into()),
            ..Default::default()
        });
    }
    let user_validation_rules = vec![
        UserValidationRule {
            expression: "!user.username.startsWith('system:')".into(),
            message: Some("the system: prefix is reserved for Kubernetes".into()),
        },
        UserValidationRule {
            expression: "user.groups.all(group, !group.startsWith('system:'))".into(),
            message: Some("the system: prefix is reserved for Kubernetes".into()),
        },
    ];
    AuthenticationConfiguration {
        api_version: t.api_version.clone(),
        kind: "AuthenticationConfiguration".into(),
        jwt: vec![JwtAuthenticator {
            issuer: Issuer {
                url: t.issuer_url.clone(),
                certificate_authority: t.ca_pem.clone(),
                audiences: t.audiences.clone(),
                audience_match_policy: (t.audiences.len() > 1).then(|| "MatchAny".to_string()),
                ..Default::default()
            },
            claim_validation_rules,
            claim_mappings: ClaimMappings {
                username: PrefixedClaimOrExpression {
                    claim: Some(t.username_claim.clone()),
                    prefix: Some(t.username_prefix.clone()),
                    expression: None,
                },
                groups: t.groups_claim.as_ref().map(|c| PrefixedClaimOrExpression {
                    claim: Some(c.clone()),
                    prefix: Some(t.groups_prefix.clone()),
                    expression: None,
                }),
                ..Default::default()
            },
            user_validation_rules,
        }],
        anonymous: None,
    }
}
