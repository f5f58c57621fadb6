//! kube-apiserver's OIDC token authenticator (`--oidc-*` flags) as pure code: given its settings,
//! the issuer's JWKS, a token and the time, the user kube-apiserver derives or the reason it
//! rejects the token, with a fix.
//!
//! Shared by the e2e kube-apiserver stand-in and the client's `doctor`, so both apply the same
//! rules. The rules follow kube-apiserver's `plugin/pkg/authenticator/token/oidc` and the
//! go-oidc verifier it uses:
//! - the issuer is compared character for character (no normalisation of a trailing `/`);
//! - `aud` must contain the client id (a string or an array);
//! - `exp` is checked without leeway (a token is good up to and including its `exp` second),
//!   `nbf` with one minute of leeway ([`NBF_LEEWAY_SECS`]), `iat` not at all;
//! - the header `alg` must be one of `--oidc-signing-algs` (default RS256); kube-apiserver
//!   refuses to start with `none` or an HMAC algorithm;
//! - the signature is checked with the JWK whose `kid` matches the header's (every key when the
//!   header has no `kid`); kube-apiserver re-fetches the JWKS once on failure, which is the
//!   caller's job ([`RejectKind::is_key_problem`]);
//! - with `--oidc-username-claim=email`, an `email_verified` claim, when present, must be `true`
//!   (current kube-apiserver accepts a token without it; early releases required it);
//! - the username prefix defaults to `<issuer>#` unless the username claim is `email`, and `-`
//!   disables it; the groups claim may be a string or an array of strings and may be absent.
//!
//! [`authenticate`] runs these checks as numbered steps, one function each, in kube-apiserver's
//! order; the cases that pin them are in `tests.rs`. Steps 1 to 7 (everything before the claim
//! mapping) are also [`verify`], which `crate::authn_config` runs for kube-apiserver's
//! structured authentication configuration before its own (CEL) mappings.

use crate::jwk::{Jwk, JwkSet};
use crate::jwt::{b64url_decode, JwtFormatError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Clock skew allowed on `nbf` (and only there). go-oidc v2.2, long vendored by kube-apiserver,
/// allows one minute; go-oidc v3 allows five. The stricter value is used so that a token this
/// module accepts is accepted by every kube-apiserver version.
pub const NBF_LEEWAY_SECS: u64 = 60;

/// The group kube-apiserver adds to every authenticated user.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

/// `user.Info.Extra` key kube-apiserver (1.29+) fills from the `jti` claim.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// The algorithms kube-apiserver accepts for `--oidc-signing-algs` and this module verifies.
/// (kube-apiserver also allows ES512, which `jsonwebtoken` cannot verify; it is refused here.)
pub const SUPPORTED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512",
];

/// kube-apiserver's `--oidc-*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--oidc-issuer-url`: must be https and equal to the token's `iss`.
    pub issuer_url: String,
    /// `--oidc-client-id`: must be in the token's `aud`.
    pub client_id: String,
    /// `--oidc-username-claim` (default `sub`).
    pub username_claim: String,
    /// `--oidc-username-prefix`; `None` is the flag left unset (see [`Settings::username_prefix`]).
    pub username_prefix: Option<String>,
    /// `--oidc-groups-claim`; no groups are read when unset.
    pub groups_claim: Option<String>,
    /// `--oidc-groups-prefix`.
    pub groups_prefix: Option<String>,
    /// `--oidc-signing-algs` (default `RS256`).
    pub signing_algs: Vec<String>,
    /// `--oidc-required-claim key=value` (repeatable): each must be present with that string value.
    pub required_claims: BTreeMap<String, String>,
    /// A claim for `user.Info.UID` (structured authentication configuration only; no flag).
    pub uid_claim: Option<String>,
}

impl Settings {
    /// The settings with kube-apiserver's defaults for everything but the two required flags.
    pub fn new(issuer_url: &str, client_id: &str) -> Self {
        Settings {
            issuer_url: issuer_url.to_string(),
            client_id: client_id.to_string(),
            username_claim: "sub".into(),
            username_prefix: None,
            groups_claim: None,
            groups_prefix: None,
            signing_algs: vec!["RS256".into()],
            required_claims: BTreeMap::new(),
            uid_claim: None,
        }
    }

    /// The prefix actually applied: an unset flag means `<issuer>#` for any claim but `email`
    /// (so `sub` values of two issuers cannot collide), and `-` means none.
    pub fn username_prefix(&self) -> String {
        match self.username_prefix.as_deref() {
            Some("-") => String::new(),
            Some(p) if !p.is_empty() => p.to_string(),
            _ if self.username_claim == "email" => String::new(),
            _ => format!("{}#", self.issuer_url),
        }
    }

    /// The checks kube-apiserver makes at start-up; it refuses to run when one fails.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let url = url::Url::parse(&self.issuer_url).map_err(|e| SettingsError {
            reason: format!("--oidc-issuer-url {:?} is not a URL: {e}", self.issuer_url),
        })?;
        if url.scheme() != "https" {
            return Err(SettingsError {
                reason: format!(
                    "--oidc-issuer-url {:?} has scheme {:?}: kube-apiserver requires https",
                    self.issuer_url,
                    url.scheme()
                ),
            });
        }
        if self.client_id.is_empty() {
            return Err(SettingsError {
                reason: "--oidc-client-id is required".into(),
            });
        }
        if self.username_claim.is_empty() {
            return Err(SettingsError {
                reason: "--oidc-username-claim must not be empty".into(),
            });
        }
        for alg in &self.signing_algs {
            if !SUPPORTED_ALGS.contains(&alg.as_str()) {
                return Err(SettingsError {
                    reason: format!(
                        "--oidc-signing-algs: unsupported signing alg {alg:?} (kube-apiserver \
                         accepts RS*, PS* and ES*; never none or HS*)"
                    ),
                });
            }
        }
        Ok(())
    }

    fn algs(&self) -> Vec<String> {
        if self.signing_algs.is_empty() {
            vec!["RS256".into()]
        } else {
            self.signing_algs.clone()
        }
    }
}

/// Settings kube-apiserver would refuse at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub reason: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for SettingsError {}

/// The user kube-apiserver derives from an accepted token (before it adds
/// `system:authenticated`, see [`UserInfo::groups_with_authenticated`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The groups as a SelfSubjectReview reports them: kube-apiserver's authenticator chain adds
    /// `system:authenticated` to every user it authenticates.
    pub fn groups_with_authenticated(&self) -> Vec<String> {
        let mut g = self.groups.clone();
        if !g.iter().any(|x| x == SYSTEM_AUTHENTICATED) {
            g.push(SYSTEM_AUTHENTICATED.into());
        }
        g
    }
}

/// Which rule refused the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    Malformed,
    IssuerMismatch,
    AudienceMismatch,
    Expired,
    NotYetValid,
    UnsupportedAlgorithm,
    /// No JWK has the header's `kid` (or none fits the algorithm).
    UnknownKey,
    BadSignature,
    MissingUsernameClaim,
    EmailNotVerified,
    BadGroupsClaim,
    BadUidClaim,
    RequiredClaim,
    /// An `AuthenticationConfiguration` claim validation rule is false (or fails).
    ClaimValidationRule,
    /// An `AuthenticationConfiguration` claim mapping (a CEL expression) fails or gives a
    /// value of the wrong type.
    ClaimMapping,
    /// An `AuthenticationConfiguration` user validation rule is false (or fails).
    UserValidationRule,
}

impl RejectKind {
    /// A failure that a fresh JWKS might cure (a rotated key): kube-apiserver re-fetches the
    /// JWKS once and retries before rejecting.
    pub fn is_key_problem(self) -> bool {
        matches!(self, RejectKind::UnknownKey | RejectKind::BadSignature)
    }
}

/// Why kube-apiserver rejects the token, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub kind: RejectKind,
    pub reason: String,
    pub fix_hint: String,
}

impl Reject {
    /// The same reason filed under another rule.
    pub fn with_kind(self, kind: RejectKind) -> Reject {
        Reject { kind, ..self }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (fix: {})", self.reason, self.fix_hint)
    }
}

impl std::error::Error for Reject {}

pub(crate) fn reject(
    kind: RejectKind,
    reason: impl Into<String>,
    fix_hint: impl Into<String>,
) -> Reject {
    Reject {
        kind,
        reason: reason.into(),
        fix_hint: fix_hint.into(),
    }
}

/// Shows a string so that a trailing slash or stray whitespace is visible.
fn shown(s: &str) -> String {
    let mut out = format!("{s:?}");
    if s.ends_with('/') {
        out.push_str(" (with a trailing slash)");
    } else {
        out.push_str(" (no trailing slash)");
    }
    out
}

/// Authenticates `token` as kube-apiserver configured with `settings` would, with `jwks` being
/// the issuer's key set it holds and `now` the Unix time.
///
/// The steps run in the order kube-apiserver's authenticator runs them, so that a token with
/// several faults is refused for the same one: go-oidc's verifier (issuer, expiry, not-before,
/// algorithm, signature), then kube-apiserver's own audience check and claim mapping.
pub fn authenticate(
    settings: &Settings,
    jwks: &JwkSet,
    token: &str,
    now: u64,
) -> Result<UserInfo, Reject> {
    let audiences = [settings.client_id.clone()];
    let algs = settings.algs();
    let verifier = Verifier {
        issuer_url: &settings.issuer_url,
        audiences: &audiences,
        signing_algs: &algs,
    };
    // Steps 1 to 7.
    let claims = verify(&verifier, jwks, token, now)?;
    // 8. The username claim is a string (and, for `email`, the email is not unverified).
    let username = username(settings, &claims)?;
    check_email_verified(&settings.username_claim, &claims)?;
    // 9. The groups claim, when configured, is absent, a string or an array of strings.
    let groups = groups(settings, &claims)?;
    // 10. The uid claim, when configured, is a string.
    let uid = uid(settings, &claims)?;
    // 11. `jti` becomes the credential id in `extra`.
    let extra = extra(&claims);
    // 12. Every --oidc-required-claim is present with its value.
    check_required_claims(settings, &claims)?;
    // 13. The username gets its prefix (see `Settings::username_prefix`).
    Ok(UserInfo {
        username: format!("{}{username}", settings.username_prefix()),
        groups,
        uid,
        extra,
    })
}

/// What go-oidc's verifier is configured with: the issuer, the accepted audiences (the flags
/// give one, `--oidc-client-id`; an `AuthenticationConfiguration` may list several, any one
/// matching) and the accepted signing algorithms.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    pub issuer_url: &'a str,
    pub audiences: &'a [String],
    pub signing_algs: &'a [String],
}

/// Steps 1 to 7 of [`authenticate`], shared with the structured authentication configuration
/// (`crate::authn_config`): the token's claims once its issuer, time window, algorithm,
/// signature and audience are checked, before any claim mapping.
pub fn verify(
    v: &Verifier,
    jwks: &JwkSet,
    token: &str,
    now: u64,
) -> Result<Map<String, Value>, Reject> {
    // 1. A compact JWS (RFC 7515 §7.1) whose header and payload are JSON objects.
    let jwt = parse(token)?;
    // 2. `iss` is --oidc-issuer-url, character for character.
    check_issuer(v.issuer_url, &jwt.claims)?;
    // 3. `exp` is present and not past (no leeway).
    check_expiry(&jwt.claims, now)?;
    // 4. `nbf`, when present, is not ahead by more than the leeway.
    check_not_before(&jwt.claims, now)?;
    // 5. The header's `alg` is one of --oidc-signing-algs.
    let alg = check_algorithm(v.signing_algs, &jwt.header)?;
    // 6. The signature verifies with the issuer's key chosen by `kid`.
    verify_signature(jwks, &jwt.header, alg, jwt.h64, jwt.c64, jwt.s64)?;
    // 7. `aud` contains --oidc-client-id.
    check_audience(v.audiences, &jwt.claims)?;
    Ok(jwt.claims)
}

/// The `iss` claim of a token, unverified: which of several configured issuers to verify
/// it against (kube-apiserver picks the JWT authenticator by issuer the same way).
pub fn unverified_issuer(token: &str) -> Option<String> {
    let jwt = parse(token).ok()?;
    jwt.claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A token split into its base64url parts, with the header and claims decoded.
struct Jwt<'a> {
    h64: &'a str,
    c64: &'a str,
    s64: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

/// Step 1: the bearer token is a compact JWS, three base64url parts separated by dots (RFC 7515
/// §7.1), whose header and payload decode to JSON objects (RFC 7519 §7.2).
fn parse(token: &str) -> Result<Jwt<'_>, Reject> {
    let format = |e: JwtFormatError| {
        reject(
            RejectKind::Malformed,
            format!("the bearer token is {e}"),
            "send the ID token (a JWT) the OIDC provider issued, not an access or refresh token",
        )
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, c64, s64] = parts.as_slice() else {
        return Err(format(JwtFormatError::NotThreeParts));
    };
    let header = json_part(h64).map_err(format)?;
    let claims = json_part(c64).map_err(format)?;
    Ok(Jwt {
        h64,
        c64,
        s64,
        header,
        claims,
    })
}

/// Step 2: go-oidc compares `iss` with the configured issuer as strings (OpenID Connect Core
/// §3.1.3.7 item 2: "MUST exactly match"), so a trailing slash on one side only is a mismatch.
fn check_issuer(issuer_url: &str, claims: &Map<String, Value>) -> Result<(), Reject> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss == issuer_url {
        return Ok(());
    }
    Err(reject(
        RejectKind::IssuerMismatch,
        format!(
            "the token's iss {} is not --oidc-issuer-url {}: kube-apiserver compares them \
             character for character",
            shown(iss),
            shown(issuer_url)
        ),
        "make --oidc-issuer-url exactly the issuer the provider puts in tokens (the \
         `issuer` of its discovery document), trailing slash and port included",
    ))
}

/// Step 3: `exp` (RFC 7519 §4.1.4) is required and checked without leeway: the token is good up
/// to and including its `exp` second.
fn check_expiry(claims: &Map<String, Value>, now: u64) -> Result<(), Reject> {
    let exp = number(claims, "exp").ok_or_else(|| {
        reject(
            RejectKind::Malformed,
            "the token has no numeric exp claim",
            "the OIDC provider must issue ID tokens with an expiry",
        )
    })?;
    if exp >= now as f64 {
        return Ok(());
    }
    Err(reject(
        RejectKind::Expired,
        format!(
            "the token expired at {} ({}s ago)",
            exp as u64,
            now.saturating_sub(exp as u64)
        ),
        "get a fresh token (the credential plugin refreshes before expiry); if it just \
         expired, check the clocks of this machine and of the API server",
    ))
}

/// Step 4: `nbf` (RFC 7519 §4.1.5) is optional and allows [`NBF_LEEWAY_SECS`] of clock skew.
fn check_not_before(claims: &Map<String, Value>, now: u64) -> Result<(), Reject> {
    let Some(nbf) = number(claims, "nbf") else {
        return Ok(());
    };
    if (now + NBF_LEEWAY_SECS) >= nbf as u64 {
        return Ok(());
    }
    Err(reject(
        RejectKind::NotYetValid,
        format!(
            "the token is not valid before {} (now is {now}, {NBF_LEEWAY_SECS}s of skew \
             allowed)",
            nbf as u64
        ),
        "synchronise the clocks of the OIDC provider and the API server (NTP)",
    ))
}

/// Step 5: the header's `alg` (RFC 7515 §4.1.1) must be one of `--oidc-signing-algs`, and one
/// this module can verify; `none` and HMAC never are. Returns the algorithm.
fn check_algorithm<'h>(algs: &[String], header: &'h Map<String, Value>) -> Result<&'h str, Reject> {
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if algs.iter().any(|a| a == alg) && SUPPORTED_ALGS.contains(&alg) {
        return Ok(alg);
    }
    Err(reject(
        RejectKind::UnsupportedAlgorithm,
        format!("the token is signed with {alg:?}; --oidc-signing-algs allows {algs:?}"),
        if SUPPORTED_ALGS.contains(&alg) {
            format!(
                "add {alg} to --oidc-signing-algs, or make the provider sign with one of {algs:?}"
            )
        } else {
            "the provider must sign ID tokens with an asymmetric algorithm (RS256 or ES256)"
                .to_string()
        },
    ))
}

/// Step 7: `aud` (RFC 7519 §4.1.3), a string or an array of strings, must contain
/// `--oidc-client-id` (OpenID Connect Core §3.1.3.7 item 3).
fn check_audience(audiences: &[String], claims: &Map<String, Value>) -> Result<(), Reject> {
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(v)) => v
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    };
    if aud_ok {
        return Ok(());
    }
    Err(reject(
        RejectKind::AudienceMismatch,
        format!(
            "the token's aud {} does not contain --oidc-client-id \"{}\"",
            claims.get("aud").cloned().unwrap_or(Value::Null),
            audiences.join("\", \"")
        ),
        "use the same client id in the credential plugin (--oidc-client-id) and in \
         kube-apiserver's --oidc-client-id",
    ))
}

/// Step 8: the `--oidc-username-claim` claim must be a string; returned without its prefix.
fn username(settings: &Settings, claims: &Map<String, Value>) -> Result<String, Reject> {
    let claim = &settings.username_claim;
    let other = match claims.get(claim) {
        Some(Value::String(s)) => return Ok(s.clone()),
        other => other,
    };
    Err(reject(
        RejectKind::MissingUsernameClaim,
        match other {
            None => format!("the token has no {claim:?} claim (--oidc-username-claim)"),
            Some(v) => format!("the {claim:?} claim (--oidc-username-claim) is not a string: {v}"),
        },
        if claim == "email" {
            "request the `email` scope (--oidc-extra-scope=email in the plugin's args)".to_string()
        } else {
            format!(
                "make the provider issue the {claim:?} claim, or point --oidc-username-claim \
                 at a claim it issues"
            )
        },
    ))
}

/// Step 8, continued: with `--oidc-username-claim=email`, an `email_verified` claim (OpenID
/// Connect Core §5.1), when present, must be `true`.
pub(crate) fn check_email_verified(
    username_claim: &str,
    claims: &Map<String, Value>,
) -> Result<(), Reject> {
    if username_claim != "email" {
        return Ok(());
    }
    match claims.get("email_verified") {
        None | Some(Value::Bool(true)) => Ok(()),
        Some(v) => Err(reject(
            RejectKind::EmailNotVerified,
            format!(
                "email_verified is {v}: with --oidc-username-claim=email kube-apiserver \
                 rejects an email that is not verified"
            ),
            "mark the user's email as verified at the provider, or use another \
             --oidc-username-claim (e.g. sub)",
        )),
    }
}

/// Step 9: the `--oidc-groups-claim` claim may be absent (or null), one string, or an array of
/// strings; each group gets `--oidc-groups-prefix`. No groups without the flag.
fn groups(settings: &Settings, claims: &Map<String, Value>) -> Result<Vec<String>, Reject> {
    let Some(claim) = &settings.groups_claim else {
        return Ok(Vec::new());
    };
    let mut groups = Vec::new();
    match claims.get(claim) {
        None | Some(Value::Null) => {}
        Some(Value::String(g)) => groups.push(g.clone()),
        Some(Value::Array(v)) => {
            for g in v {
                let Some(g) = g.as_str() else {
                    return Err(bad_groups(claim, &Value::Array(v.clone())));
                };
                groups.push(g.to_string());
            }
        }
        Some(v) => return Err(bad_groups(claim, v)),
    }
    if let Some(prefix) = settings.groups_prefix.as_deref() {
        for g in &mut groups {
            g.insert_str(0, prefix);
        }
    }
    Ok(groups)
}

/// Step 10: the uid claim (structured authentication configuration's `claimMappings.uid`), when
/// configured, must be a string.
fn uid(settings: &Settings, claims: &Map<String, Value>) -> Result<Option<String>, Reject> {
    let Some(claim) = &settings.uid_claim else {
        return Ok(None);
    };
    match claims.get(claim) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        other => Err(reject(
            RejectKind::BadUidClaim,
            format!(
                "the uid claim {claim:?} is {}",
                other.map_or("missing".to_string(), |v| format!("not a string: {v}"))
            ),
            "make the provider issue the uid claim as a string",
        )),
    }
}

/// Step 11: kube-apiserver (1.29+) puts a string `jti` (RFC 7519 §4.1.7) into `extra` as the
/// credential id.
pub(crate) fn extra(claims: &Map<String, Value>) -> BTreeMap<String, Vec<String>> {
    let mut extra = BTreeMap::new();
    if let Some(Value::String(jti)) = claims.get("jti") {
        extra.insert(CREDENTIAL_ID_KEY.to_string(), vec![format!("JTI={jti}")]);
    }
    extra
}

/// Step 12: each `--oidc-required-claim key=value` must be present as that exact string.
fn check_required_claims(settings: &Settings, claims: &Map<String, Value>) -> Result<(), Reject> {
    for (name, want) in &settings.required_claims {
        match claims.get(name) {
            Some(Value::String(got)) if got == want => {}
            got => {
                return Err(reject(
                    RejectKind::RequiredClaim,
                    match got {
                        None => format!("required claim {name:?} is not in the token"),
                        Some(v) => format!("required claim {name:?} is {v}, want {want:?}"),
                    },
                    format!(
                        "make the provider issue {name:?}={want:?}, or drop \
                         --oidc-required-claim={name}={want}"
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn bad_groups(claim: &str, v: &Value) -> Reject {
    reject(
        RejectKind::BadGroupsClaim,
        format!("the groups claim {claim:?} is neither a string nor an array of strings: {v}"),
        "make the provider issue groups as a list of names, or point --oidc-groups-claim at \
         another claim",
    )
}

fn json_part(part: &str) -> Result<Map<String, Value>, JwtFormatError> {
    let bytes = b64url_decode(part)?;
    serde_json::from_slice(&bytes).map_err(|e| JwtFormatError::Json(e.to_string()))
}

/// A NumericDate (RFC 7519 §2): JSON numbers, integral or not.
fn number(claims: &Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

/// The key family and curve an algorithm needs (RFC 7518 §3.1).
fn key_fits(jwk: &Jwk, alg: &str) -> bool {
    match alg {
        "ES256" => jwk.kty == "EC" && jwk.crv.as_deref() == Some("P-256"),
        "ES384" => jwk.kty == "EC" && jwk.crv.as_deref() == Some("P-384"),
        _ => jwk.kty == "RSA",
    }
}

fn decoding_key(jwk: &Jwk) -> Option<jsonwebtoken::DecodingKey> {
    match jwk.kty.as_str() {
        "RSA" => {
            jsonwebtoken::DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?)
                .ok()
        }
        "EC" => {
            jsonwebtoken::DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()
        }
        _ => None,
    }
}

/// Step 6: RFC 7515 §5.2 with the key chosen as go-oidc does: the JWKs whose `kid` equals the header's,
/// or every key when the header has none; any one verifying is enough.
fn verify_signature(
    jwks: &JwkSet,
    header: &Map<String, Value>,
    alg: &str,
    h64: &str,
    c64: &str,
    s64: &str,
) -> Result<(), Reject> {
    let algorithm: jsonwebtoken::Algorithm = alg.parse().map_err(|_| {
        reject(
            RejectKind::UnsupportedAlgorithm,
            format!("unknown algorithm {alg:?}"),
            "sign with RS256 or ES256",
        )
    })?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .filter(|k| key_fits(k, alg))
        .collect();
    if candidates.is_empty() {
        let known: Vec<&str> = jwks.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        return Err(reject(
            RejectKind::UnknownKey,
            match kid {
                Some(kid) => {
                    format!("no {alg} key with kid {kid:?} in the issuer's JWKS (it has {known:?})")
                }
                None => format!("the token has no kid and the JWKS has no {alg} key"),
            },
            "the JWKS must publish the key that signs tokens; after a key rotation the API \
             server re-fetches the JWKS, so check that the provider's jwks_uri serves the new key",
        ));
    }
    let message = format!("{h64}.{c64}");
    let verified = candidates.iter().any(|k| {
        decoding_key(k).is_some_and(|key| {
            jsonwebtoken::crypto::verify(s64, message.as_bytes(), &key, algorithm).unwrap_or(false)
        })
    });
    if verified {
        Ok(())
    } else {
        Err(reject(
            RejectKind::BadSignature,
            format!(
                "the {alg} signature does not verify with the issuer's key{}",
                kid.map(|k| format!(" {k:?}")).unwrap_or_default()
            ),
            "the token was altered, or signed by another provider or key than the one at \
             --oidc-issuer-url",
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests;
