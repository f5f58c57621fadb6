//! A token through a structured authentication configuration, in the order kube-apiserver's JWT
//! authenticator applies it (Kubernetes docs, "Authenticating" > "Using Authentication
//! Configuration"):
//! 1. the authenticator whose `issuer.url` equals the token's `iss` is chosen;
//! 2. the token is verified (signature, `exp`/`nbf`, `aud` in `issuer.audiences`) as for the
//!    `--oidc-*` flags ([`crate::kube_oidc::verify`]), with every asymmetric algorithm allowed;
//! 3. every `claimValidationRules` entry must hold;
//! 4. `claimMappings` give the username, groups, uid and extra;
//! 5. every `userValidationRules` entry must hold for that user.

use serde_json::{json, Map, Value};

use super::{AuthenticationConfiguration, ClaimOrExpression, JwtAuthenticator};
use crate::jwk::JwkSet;
use crate::kube_oidc::{
    self, check_email_verified, reject, Reject, RejectKind, UserInfo, Verifier, SUPPORTED_ALGS,
};

/// Authenticates `token` as kube-apiserver started with `config` would; `jwks` is the key set of
/// the token's issuer and `now` the Unix time.
pub fn authenticate(
    config: &AuthenticationConfiguration,
    jwks: &JwkSet,
    token: &str,
    now: u64,
) -> Result<UserInfo, Reject> {
    // 1. The authenticator for the token's issuer.
    let iss = kube_oidc::unverified_issuer(token).unwrap_or_default();
    let Some(jwt) = config.jwt.iter().find(|j| j.issuer.url == iss) else {
        let known: Vec<&str> = config.jwt.iter().map(|j| j.issuer.url.as_str()).collect();
        return Err(reject(
            RejectKind::IssuerMismatch,
            format!(
                "no jwt authenticator has the token's issuer {iss:?} (the configuration has \
                 {known:?}); issuers are compared character for character"
            ),
            "make jwt[].issuer.url exactly the issuer the provider puts in tokens (the `issuer` \
             of its discovery document), trailing slash and port included",
        ));
    };
    // 2. Signature, time window and audience.
    let algs: Vec<String> = SUPPORTED_ALGS.iter().map(|a| a.to_string()).collect();
    let verifier = Verifier {
        issuer_url: &jwt.issuer.url,
        audiences: &jwt.issuer.audiences,
        signing_algs: &algs,
    };
    let claims = kube_oidc::verify(&verifier, jwks, token, now)?;
    // 3 to 5.
    evaluate_claims(jwt, &claims)
}

/// Steps 3 to 5 on claims already verified: the claim validation rules, the claim mappings and
/// the user validation rules of one authenticator.
pub fn evaluate_claims(
    jwt: &JwtAuthenticator,
    claims: &Map<String, Value>,
) -> Result<UserInfo, Reject> {
    let cel_claims = Cel::new("claims", &Value::Object(claims.clone()))?;
    // 3. Claim validation rules.
    for (i, rule) in jwt.claim_validation_rules.iter().enumerate() {
        let field = format!("claimValidationRules[{i}]");
        match (&rule.claim, &rule.required_value, &rule.expression) {
            (Some(claim), required, _) => {
                let want = required.as_deref().unwrap_or_default();
                let got = claims.get(claim);
                if got.and_then(Value::as_str) != Some(want) {
                    return Err(reject(
                        RejectKind::ClaimValidationRule,
                        format!(
                            "{field}: the claim {claim:?} is {}, the rule requires {want:?}",
                            got.map_or("missing".to_string(), Value::to_string)
                        ),
                        "make the provider issue the required value, or change the rule",
                    ));
                }
            }
            (None, _, Some(expr)) => {
                let ok = cel_claims
                    .eval(&field, expr)
                    .map_err(|r| r.with_kind(RejectKind::ClaimValidationRule))?;
                if !matches!(ok, cel::Value::Bool(true)) {
                    return Err(reject(
                        RejectKind::ClaimValidationRule,
                        format!(
                            "{field}: `{expr}` is {}{}",
                            shown(&ok),
                            rule.message
                                .as_deref()
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        ),
                        "the token does not satisfy this rule: fix the user's claims at the \
                         provider, or the rule",
                    ));
                }
            }
            (None, _, None) => {}
        }
    }
    // 4. Claim mappings.
    let user = map_user(jwt, claims, &cel_claims)?;
    // 5. User validation rules, over `user`.
    let cel_user = Cel::new(
        "user",
        &json!({
            "username": user.username,
            "uid": user.uid.clone().unwrap_or_default(),
            "groups": user.groups,
            "extra": user.extra,
        }),
    )?;
    for (i, rule) in jwt.user_validation_rules.iter().enumerate() {
        let field = format!("userValidationRules[{i}]");
        let ok = cel_user
            .eval(&field, &rule.expression)
            .map_err(|r| r.with_kind(RejectKind::UserValidationRule))?;
        if !matches!(ok, cel::Value::Bool(true)) {
            return Err(reject(
                RejectKind::UserValidationRule,
                format!(
                    "{field}: `{}` is {} for username {:?}{}",
                    rule.expression,
                    shown(&ok),
                    user.username,
                    rule.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
                "the mapped user is refused by this rule: change the claim mappings (a prefix) \
                 or the user's claims at the provider",
            ));
        }
    }
    Ok(user)
}

/// Step 4: username, groups, uid and extra (plus the credential id from `jti`).
fn map_user(
    jwt: &JwtAuthenticator,
    claims: &Map<String, Value>,
    cel: &Cel,
) -> Result<UserInfo, Reject> {
    let m = &jwt.claim_mappings;
    let username = match (&m.username.claim, &m.username.expression) {
        (Some(claim), _) => {
            let name = claim_string(claims, claim, "claimMappings.username.claim")?;
            // With the email claim, a present `email_verified` must be true.
            check_email_verified(claim, claims)?;
            format!("{}{name}", m.username.prefix.as_deref().unwrap_or_default())
        }
        (None, Some(expr)) => {
            let v = cel.eval("claimMappings.username.expression", expr)?;
            match v {
                cel::Value::String(s) if !s.is_empty() => s.to_string(),
                other => {
                    return Err(mapping(
                        "claimMappings.username.expression",
                        expr,
                        &format!("gives {}, not a non-empty string", shown(&other)),
                    ))
                }
            }
        }
        (None, None) => String::new(),
    };
    let mut groups = Vec::new();
    if let Some(g) = &m.groups {
        match (&g.claim, &g.expression) {
            (Some(claim), _) => {
                groups = claim_strings(claims, claim, "claimMappings.groups.claim")?;
                let prefix = g.prefix.as_deref().unwrap_or_default();
                for g in &mut groups {
                    g.insert_str(0, prefix);
                }
            }
            (None, Some(expr)) => {
                let v = cel.eval("claimMappings.groups.expression", expr)?;
                groups = strings(&v).ok_or_else(|| {
                    mapping(
                        "claimMappings.groups.expression",
                        expr,
                        &format!("gives {}, not a string or a list of strings", shown(&v)),
                    )
                })?;
            }
            (None, None) => {}
        }
    }
    let uid = uid(m.uid.as_ref(), claims, cel)?;
    let mut extra = kube_oidc::extra(claims);
    for (i, e) in m.extra.iter().enumerate() {
        let field = format!("claimMappings.extra[{i}].valueExpression");
        let v = cel.eval(&field, &e.value_expression)?;
        let values = strings(&v).ok_or_else(|| {
            mapping(
                &field,
                &e.value_expression,
                &format!("gives {}, not a string or a list of strings", shown(&v)),
            )
        })?;
        // "", [] and null leave the key out; empty strings in a list are dropped.
        let values: Vec<String> = values.into_iter().filter(|s| !s.is_empty()).collect();
        if !values.is_empty() {
            extra.insert(e.key.clone(), values);
        }
    }
    Ok(UserInfo {
        username,
        groups,
        uid,
        extra,
    })
}

fn uid(
    m: Option<&ClaimOrExpression>,
    claims: &Map<String, Value>,
    cel: &Cel,
) -> Result<Option<String>, Reject> {
    match m.map(|u| (&u.claim, &u.expression)) {
        Some((Some(claim), _)) => claim_string(claims, claim, "claimMappings.uid.claim").map(Some),
        Some((None, Some(expr))) => match cel.eval("claimMappings.uid.expression", expr)? {
            cel::Value::String(s) => Ok(Some(s.to_string()).filter(|s| !s.is_empty())),
            other => Err(mapping(
                "claimMappings.uid.expression",
                expr,
                &format!("gives {}, not a string", shown(&other)),
            )),
        },
        _ => Ok(None),
    }
}

/// A claim that must be a string.
fn claim_string(claims: &Map<String, Value>, claim: &str, field: &str) -> Result<String, Reject> {
    match claims.get(claim) {
        Some(Value::String(s)) => Ok(s.clone()),
        other => Err(reject(
            RejectKind::MissingUsernameClaim,
            format!(
                "{field}: the claim {claim:?} is {}",
                other.map_or("missing".to_string(), |v| format!("not a string: {v}"))
            ),
            format!(
                "make the provider issue {claim:?} (a scope may be missing), or map another claim"
            ),
        )),
    }
}

/// A claim that may be absent, null, a string or a list of strings.
fn claim_strings(
    claims: &Map<String, Value>,
    claim: &str,
    field: &str,
) -> Result<Vec<String>, Reject> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()),
        Some(v) => Err(reject(
            RejectKind::BadGroupsClaim,
            format!("{field}: the claim {claim:?} is neither a string nor a list of strings: {v}"),
            "make the provider issue it as a list of names, or map another claim",
        )),
    }
}

/// A CEL result that is a string, a list of strings, or null (no value).
fn strings(v: &cel::Value) -> Option<Vec<String>> {
    match v {
        cel::Value::Null => Some(Vec::new()),
        cel::Value::String(s) => Some(vec![s.to_string()]),
        cel::Value::List(l) => l
            .iter()
            .map(|x| match x {
                cel::Value::String(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn shown(v: &cel::Value) -> String {
    match v {
        cel::Value::Bool(b) => b.to_string(),
        cel::Value::String(s) => format!("{:?}", s.as_str()),
        other => format!("{other:?}"),
    }
}

fn mapping(field: &str, expr: &str, what: &str) -> Reject {
    reject(
        RejectKind::ClaimMapping,
        format!("{field}: `{expr}` {what}"),
        "fix the expression, or the claims the provider issues",
    )
}

/// A CEL context with one variable.
struct Cel {
    context: cel::Context<'static, 'static>,
}

impl Cel {
    fn new(name: &str, value: &Value) -> Result<Cel, Reject> {
        let mut context = cel::Context::default();
        let v = cel::to_value(value).map_err(|e| {
            reject(
                RejectKind::Malformed,
                format!("the {name} cannot be given to CEL: {e}"),
                "",
            )
        })?;
        context.add_variable_from_value(name.to_string(), v);
        Ok(Cel { context })
    }

    /// Runs `expr`; a compile or run-time error (a missing claim, a wrong type) rejects the
    /// token, as kube-apiserver does.
    fn eval(&self, field: &str, expr: &str) -> Result<cel::Value, Reject> {
        let program = cel::Program::compile(expr).map_err(|e| {
            let e = e.to_string();
            mapping(
                field,
                expr,
                &format!("does not compile: {}", e.lines().next().unwrap_or_default()),
            )
        })?;
        program
            .execute(&self.context)
            .map_err(|e| mapping(field, expr, &format!("fails: {e}")))
    }
}
