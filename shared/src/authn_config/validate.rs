//! kube-apiserver's start-up validation of an `AuthenticationConfiguration`: it refuses to start
//! (or, on a reload, keeps the previous file) when any of these fail. Each rule cites the
//! Kubernetes documentation, "Authenticating" > "Using Authentication Configuration", whose
//! annotated example lists them; field paths are written as kube-apiserver reports them.

use std::collections::BTreeSet;

use super::{
    AuthenticationConfiguration, ClaimMappings, Issuer, JwtAuthenticator,
    PrefixedClaimOrExpression, V1, V1BETA1,
};

/// The most characters of one CEL expression (kube-apiserver bounds them by cost; this bounds
/// the input).
pub const MAX_EXPRESSION_CHARS: usize = 10_000;

/// One rule broken, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `jwt[0].issuer.url`.
    pub field: String,
    pub detail: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            detail: detail.into(),
        });
    }

    /// A CEL expression must be short enough and compile.
    fn cel(&mut self, field: &str, expression: &str) {
        if expression.chars().count() > MAX_EXPRESSION_CHARS {
            self.add(
                field,
                format!("longer than {MAX_EXPRESSION_CHARS} characters"),
            );
        } else if let Err(e) = cel::Program::compile(expression) {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            self.add(field, format!("compilation failed: {first}"));
        }
    }
}

/// Every rule the configuration breaks; empty when kube-apiserver would load it.
pub fn validate(config: &AuthenticationConfiguration) -> Vec<FieldError> {
    let mut errors = Errors(Vec::new());
    if config.api_version != V1BETA1
        && config.api_version != V1
        && config.api_version != "apiserver.config.k8s.io/v1alpha1"
    {
        errors.add(
            "apiVersion",
            format!(
                "{:?} is not apiserver.config.k8s.io/v1 (1.34+) or v1beta1 (1.30+)",
                config.api_version
            ),
        );
    }
    if config.kind != "AuthenticationConfiguration" {
        errors.add(
            "kind",
            format!("{:?} is not AuthenticationConfiguration", config.kind),
        );
    }
    // "issuer.url ... must be unique across all authenticators".
    let mut seen = BTreeSet::new();
    for (i, jwt) in config.jwt.iter().enumerate() {
        let at = format!("jwt[{i}]");
        if !seen.insert(jwt.issuer.url.as_str()) {
            errors.add(
                format!("{at}.issuer.url"),
                format!(
                    "duplicate issuer URL {:?}: each issuer may appear once",
                    jwt.issuer.url
                ),
            );
        }
        authenticator(&mut errors, &at, jwt);
    }
    errors.0
}

fn authenticator(errors: &mut Errors, at: &str, jwt: &JwtAuthenticator) {
    issuer(errors, &format!("{at}.issuer"), &jwt.issuer);
    let mut claims_seen = BTreeSet::new();
    for (i, rule) in jwt.claim_validation_rules.iter().enumerate() {
        let f = format!("{at}.claimValidationRules[{i}]");
        match (&rule.claim, &rule.expression) {
            (Some(_), Some(_)) => errors.add(&f, "claim and expression are mutually exclusive"),
            (None, None) => errors.add(&f, "claim or expression is required"),
            (Some(claim), None) => {
                if claim.is_empty() {
                    errors.add(format!("{f}.claim"), "must not be empty");
                }
                if !claims_seen.insert(claim.as_str()) {
                    errors.add(format!("{f}.claim"), format!("duplicate claim {claim:?}"));
                }
                if rule.message.is_some() {
                    errors.add(format!("{f}.message"), "may only be set with expression");
                }
            }
            (None, Some(expr)) => {
                if rule.required_value.is_some() {
                    errors.add(format!("{f}.requiredValue"), "may only be set with claim");
                }
                errors.cel(&format!("{f}.expression"), expr);
            }
        }
    }
    mappings(errors, &format!("{at}.claimMappings"), &jwt.claim_mappings);
    email_verified_used(errors, at, jwt);
    for (i, rule) in jwt.user_validation_rules.iter().enumerate() {
        let f = format!("{at}.userValidationRules[{i}].expression");
        if rule.expression.is_empty() {
            errors.add(f, "is required");
        } else {
            errors.cel(&f, &rule.expression);
        }
    }
}

/// `issuer`: "url must use the https scheme", "must not contain a query", "must not contain a
/// fragment", "must not contain a username or password"; the same for `discoveryURL`, which
/// must also differ from `url`; at least one audience, no duplicates, and
/// `audienceMatchPolicy: MatchAny` when there are several.
fn issuer(errors: &mut Errors, at: &str, issuer: &Issuer) {
    https_url(errors, &format!("{at}.url"), &issuer.url);
    if let Some(d) = &issuer.discovery_url {
        https_url(errors, &format!("{at}.discoveryURL"), d);
        if d.trim_end_matches('/') == issuer.url.trim_end_matches('/') {
            errors.add(
                format!("{at}.discoveryURL"),
                "must be different from url (leave it out to use url's discovery)",
            );
        }
    }
    if let Some(ca) = &issuer.certificate_authority {
        if !ca.contains("-----BEGIN CERTIFICATE-----") {
            errors.add(
                format!("{at}.certificateAuthority"),
                "must be PEM-encoded certificates inline (the file's content, not its name)",
            );
        }
    }
    let audiences = &issuer.audiences;
    if audiences.is_empty() {
        errors.add(
            format!("{at}.audiences"),
            "at least one audience is required",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, a) in audiences.iter().enumerate() {
        if a.is_empty() {
            errors.add(format!("{at}.audiences[{i}]"), "must not be empty");
        } else if !seen.insert(a.as_str()) {
            errors.add(format!("{at}.audiences[{i}]"), format!("duplicate {a:?}"));
        }
    }
    match issuer.audience_match_policy.as_deref() {
        None | Some("") if audiences.len() > 1 => errors.add(
            format!("{at}.audienceMatchPolicy"),
            "must be MatchAny when there are several audiences",
        ),
        None | Some("") | Some("MatchAny") => {}
        Some(other) => errors.add(
            format!("{at}.audienceMatchPolicy"),
            format!("{other:?} is not MatchAny"),
        ),
    }
}

fn https_url(errors: &mut Errors, field: &str, value: &str) {
    if value.is_empty() {
        errors.add(field, "is required");
        return;
    }
    let url = match url::Url::parse(value) {
        Ok(u) => u,
        Err(e) => {
            errors.add(field, format!("{value:?} is not a URL: {e}"));
            return;
        }
    };
    if url.scheme() != "https" {
        errors.add(
            field,
            format!(
                "{value:?}: kube-apiserver requires the https scheme (serve the provider over TLS, e.g. `kubelogin-idp certs`)"
            ),
        );
    }
    if url.query().is_some() {
        errors.add(field, format!("{value:?} must not contain a query"));
    }
    if url.fragment().is_some() {
        errors.add(field, format!("{value:?} must not contain a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.add(
            field,
            format!("{value:?} must not contain a username or password"),
        );
    }
}

/// `claimMappings`: the username from a claim (with a `prefix`, which may be empty) or an
/// expression (without one); the same for groups; uid from a claim or an expression; each
/// `extra` key a unique, lowercase, domain-prefixed path outside kubernetes.io and k8s.io.
fn mappings(errors: &mut Errors, at: &str, m: &ClaimMappings) {
    prefixed(errors, &format!("{at}.username"), &m.username, true);
    if let Some(groups) = &m.groups {
        prefixed(errors, &format!("{at}.groups"), groups, false);
    }
    if let Some(uid) = &m.uid {
        let f = format!("{at}.uid");
        match (&uid.claim, &uid.expression) {
            (Some(_), Some(_)) => errors.add(f, "claim and expression are mutually exclusive"),
            (None, Some(e)) => errors.cel(&format!("{f}.expression"), e),
            _ => {}
        }
    }
    let mut keys = BTreeSet::new();
    for (i, extra) in m.extra.iter().enumerate() {
        let f = format!("{at}.extra[{i}]");
        if let Some(problem) = extra_key_problem(&extra.key) {
            errors.add(format!("{f}.key"), problem);
        }
        if !keys.insert(extra.key.as_str()) {
            errors.add(format!("{f}.key"), format!("duplicate key {:?}", extra.key));
        }
        if extra.value_expression.is_empty() {
            errors.add(format!("{f}.valueExpression"), "is required");
        } else {
            errors.cel(&format!("{f}.valueExpression"), &extra.value_expression);
        }
    }
}

fn prefixed(errors: &mut Errors, f: &str, m: &PrefixedClaimOrExpression, required: bool) {
    match (&m.claim, &m.expression) {
        (Some(_), Some(_)) => errors.add(f, "claim and expression are mutually exclusive"),
        (None, None) if required => errors.add(f, "claim or expression is required"),
        (None, None) => {}
        (Some(claim), None) => {
            if claim.is_empty() {
                errors.add(format!("{f}.claim"), "must not be empty");
            }
            if m.prefix.is_none() {
                errors.add(
                    format!("{f}.prefix"),
                    "is required when claim is set (\"\" for no prefix)",
                );
            }
        }
        (None, Some(e)) => {
            if m.prefix.is_some() {
                errors.add(
                    format!("{f}.prefix"),
                    "may not be set when expression is set (write the prefix in the expression)",
                );
            }
            errors.cel(&format!("{f}.expression"), e);
        }
    }
}

/// An `extra` key: "must be a domain-prefixed path (such as acme.io/foo)", "must be lowercase",
/// and not in the kubernetes.io or k8s.io domains, which kube-apiserver keeps for itself.
pub(super) fn extra_key_problem(key: &str) -> Option<String> {
    let Some((domain, path)) = key.split_once('/') else {
        return Some(format!(
            "{key:?} must be a domain-prefixed path (such as example.com/team)"
        ));
    };
    if key.to_lowercase() != key {
        return Some(format!("{key:?} must be lowercase"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        return Some(format!(
            "{key:?} must be a domain-prefixed path: {domain:?} is not a DNS subdomain"
        ));
    }
    if path.is_empty() {
        return Some(format!("{key:?} has an empty path after the domain"));
    }
    for reserved in ["kubernetes.io", "k8s.io"] {
        if domain == reserved || domain.ends_with(&format!(".{reserved}")) {
            return Some(format!(
                "{key:?}: the {reserved} domain is reserved for Kubernetes"
            ));
        }
    }
    None
}

/// "claims.email_verified must be used in claimMappings.username.expression or
/// claimMappings.extra[*].valueExpression or claimValidationRules[*].expression when
/// claimMappings.username.expression uses claims.email": an unverified address must not become
/// a username. (With `username.claim: email` the check happens per token instead: a present
/// `email_verified` must be true.)
fn email_verified_used(errors: &mut Errors, at: &str, jwt: &JwtAuthenticator) {
    let Some(username) = &jwt.claim_mappings.username.expression else {
        return;
    };
    if !uses_claim(username, "email") {
        return;
    }
    let mut uses_verified = uses_claim(username, "email_verified");
    uses_verified |= jwt
        .claim_mappings
        .extra
        .iter()
        .any(|e| uses_claim(&e.value_expression, "email_verified"));
    uses_verified |= jwt
        .claim_validation_rules
        .iter()
        .filter_map(|r| r.expression.as_deref())
        .any(|e| uses_claim(e, "email_verified"));
    if !uses_verified {
        errors.add(
            format!("{at}.claimMappings.username.expression"),
            "uses claims.email but claims.email_verified is not used in \
             claimMappings.username.expression, claimMappings.extra[*].valueExpression or \
             claimValidationRules[*].expression (add the claimValidationRule \
             `claims.email_verified == true`)",
        );
    }
}

/// Whether `expression` reads `claims.NAME` (not `claims.NAMEsomething`).
pub(super) fn uses_claim(expression: &str, name: &str) -> bool {
    let needle = format!("claims.{name}");
    expression.match_indices(&needle).any(|(i, _)| {
        let after = expression[i + needle.len()..].chars().next();
        let before = expression[..i].chars().next_back();
        !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    })
}
