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

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (fix: {})", self.reason, self.fix_hint)
    }
}

impl std::error::Error for Reject {}

fn reject(kind: RejectKind, reason: impl Into<String>, fix_hint: impl Into<String>) -> Reject {
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
pub fn authenticate(
    settings: &Settings,
    jwks: &JwkSet,
    token: &str,
    now: u64,
) -> Result<UserInfo, Reject> {
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
    let header: Map<String, Value> = json_part(h64).map_err(format)?;
    let claims: Map<String, Value> = json_part(c64).map_err(format)?;

    // go-oidc's order: issuer, expiry, not-before, algorithm, signature; kube-apiserver then
    // checks the audience and maps the claims.
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss != settings.issuer_url {
        return Err(reject(
            RejectKind::IssuerMismatch,
            format!(
                "the token's iss {} is not --oidc-issuer-url {}: kube-apiserver compares them \
                 character for character",
                shown(iss),
                shown(&settings.issuer_url)
            ),
            "make --oidc-issuer-url exactly the issuer the provider puts in tokens (the \
             `issuer` of its discovery document), trailing slash and port included",
        ));
    }
    let exp = number(&claims, "exp").ok_or_else(|| {
        reject(
            RejectKind::Malformed,
            "the token has no numeric exp claim",
            "the OIDC provider must issue ID tokens with an expiry",
        )
    })?;
    if exp < now as f64 {
        return Err(reject(
            RejectKind::Expired,
            format!(
                "the token expired at {} ({}s ago)",
                exp as u64,
                now.saturating_sub(exp as u64)
            ),
            "get a fresh token (the credential plugin refreshes before expiry); if it just \
             expired, check the clocks of this machine and of the API server",
        ));
    }
    if let Some(nbf) = number(&claims, "nbf") {
        if (now + NBF_LEEWAY_SECS) < nbf as u64 {
            return Err(reject(
                RejectKind::NotYetValid,
                format!(
                    "the token is not valid before {} (now is {now}, {NBF_LEEWAY_SECS}s of skew \
                     allowed)",
                    nbf as u64
                ),
                "synchronise the clocks of the OIDC provider and the API server (NTP)",
            ));
        }
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let algs = settings.algs();
    if !algs.iter().any(|a| a == alg) || !SUPPORTED_ALGS.contains(&alg) {
        return Err(reject(
            RejectKind::UnsupportedAlgorithm,
            format!("the token is signed with {alg:?}; --oidc-signing-algs allows {algs:?}"),
            if SUPPORTED_ALGS.contains(&alg) {
                format!("add {alg} to --oidc-signing-algs, or make the provider sign with one of {algs:?}")
            } else {
                "the provider must sign ID tokens with an asymmetric algorithm (RS256 or ES256)"
                    .to_string()
            },
        ));
    }
    verify_signature(jwks, &header, alg, h64, c64, s64)?;

    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == settings.client_id,
        Some(Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(&settings.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(reject(
            RejectKind::AudienceMismatch,
            format!(
                "the token's aud {} does not contain --oidc-client-id {:?}",
                claims.get("aud").cloned().unwrap_or(Value::Null),
                settings.client_id
            ),
            "use the same client id in the credential plugin (--oidc-client-id) and in \
             kube-apiserver's --oidc-client-id",
        ));
    }

    let username = match claims.get(&settings.username_claim) {
        Some(Value::String(s)) => s.clone(),
        other => {
            return Err(reject(
                RejectKind::MissingUsernameClaim,
                match other {
                    None => format!(
                        "the token has no {:?} claim (--oidc-username-claim)",
                        settings.username_claim
                    ),
                    Some(v) => format!(
                        "the {:?} claim (--oidc-username-claim) is not a string: {v}",
                        settings.username_claim
                    ),
                },
                if settings.username_claim == "email" {
                    "request the `email` scope (--oidc-extra-scope=email in the plugin's args)"
                        .to_string()
                } else {
                    format!(
                        "make the provider issue the {:?} claim, or point --oidc-username-claim \
                         at a claim it issues",
                        settings.username_claim
                    )
                },
            ))
        }
    };
    if settings.username_claim == "email" {
        match claims.get("email_verified") {
            None | Some(Value::Bool(true)) => {}
            Some(v) => {
                return Err(reject(
                    RejectKind::EmailNotVerified,
                    format!(
                        "email_verified is {v}: with --oidc-username-claim=email kube-apiserver \
                         rejects an email that is not verified"
                    ),
                    "mark the user's email as verified at the provider, or use another \
                     --oidc-username-claim (e.g. sub)",
                ))
            }
        }
    }

    let mut groups = Vec::new();
    if let Some(claim) = &settings.groups_claim {
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
    }

    let uid = match &settings.uid_claim {
        None => None,
        Some(claim) => match claims.get(claim) {
            Some(Value::String(s)) => Some(s.clone()),
            other => {
                return Err(reject(
                    RejectKind::BadUidClaim,
                    format!(
                        "the uid claim {claim:?} is {}",
                        other.map_or("missing".to_string(), |v| format!("not a string: {v}"))
                    ),
                    "make the provider issue the uid claim as a string",
                ))
            }
        },
    };

    let mut extra = BTreeMap::new();
    if let Some(Value::String(jti)) = claims.get("jti") {
        extra.insert(CREDENTIAL_ID_KEY.to_string(), vec![format!("JTI={jti}")]);
    }

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

    Ok(UserInfo {
        username: format!("{}{username}", settings.username_prefix()),
        groups,
        uid,
        extra,
    })
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

/// RFC 7515 §5.2 with the key chosen as go-oidc does: the JWKs whose `kid` equals the header's,
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
mod tests {
    use super::*;
    use crate::jwt::b64url;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::OnceLock;

    const ISS: &str = "https://idp.example.com:8443";
    const NOW: u64 = 1_800_000_000;

    struct Keys {
        rsa: EncodingKey,
        rsa_jwk: Jwk,
        ec: EncodingKey,
        ec_jwk: Jwk,
        other_rsa: EncodingKey,
    }

    fn rsa_key(kid: &str) -> (EncodingKey, Jwk) {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap();
        let jwk = Jwk {
            kty: "RSA".into(),
            use_: Some("sig".into()),
            alg: Some("RS256".into()),
            kid: Some(kid.into()),
            n: Some(b64url(&key.n().to_bytes_be())),
            e: Some(b64url(&key.e().to_bytes_be())),
            crv: None,
            x: None,
            y: None,
        };
        (EncodingKey::from_rsa_der(der.as_bytes()), jwk)
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            use ring::signature::KeyPair;
            let (rsa, rsa_jwk) = rsa_key("rsa-1");
            let (other_rsa, _) = rsa_key("rsa-1");
            let rng = ring::rand::SystemRandom::new();
            let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            let pair =
                ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
            let point = pair.public_key().as_ref();
            let ec_jwk = Jwk {
                kty: "EC".into(),
                use_: Some("sig".into()),
                alg: Some("ES256".into()),
                kid: Some("ec-1".into()),
                n: None,
                e: None,
                crv: Some("P-256".into()),
                x: Some(b64url(&point[1..33])),
                y: Some(b64url(&point[33..65])),
            };
            Keys {
                rsa,
                rsa_jwk,
                ec: EncodingKey::from_ec_der(pkcs8.as_ref()),
                ec_jwk,
                other_rsa,
            }
        })
    }

    fn jwks() -> JwkSet {
        JwkSet {
            keys: vec![keys().rsa_jwk.clone(), keys().ec_jwk.clone()],
        }
    }

    fn good_claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "u-123",
            "aud": "kubelogin",
            "exp": NOW + 300,
            "iat": NOW,
            "email": "alice@example.com",
            "email_verified": true,
            "groups": ["developers", "ops"],
            "jti": "j-1",
        })
    }

    fn sign(claims: &Value) -> String {
        sign_with(
            claims,
            jsonwebtoken::Algorithm::RS256,
            Some("rsa-1"),
            &keys().rsa,
        )
    }

    fn sign_with(
        claims: &Value,
        alg: jsonwebtoken::Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
    ) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, key).unwrap()
    }

    fn settings() -> Settings {
        let mut s = Settings::new(ISS, "kubelogin");
        s.username_claim = "email".into();
        s.username_prefix = Some("oidc:".into());
        s.groups_claim = Some("groups".into());
        s.groups_prefix = Some("oidc:".into());
        s
    }

    fn with(change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = good_claims();
        change(c.as_object_mut().unwrap());
        sign(&c)
    }

    fn rejected(s: &Settings, token: &str) -> Reject {
        authenticate(s, &jwks(), token, NOW).unwrap_err()
    }

    #[test]
    fn accepts_and_maps_claims_like_kube_apiserver() {
        let u = authenticate(&settings(), &jwks(), &sign(&good_claims()), NOW).unwrap();
        assert_eq!(u.username, "oidc:alice@example.com");
        assert_eq!(u.groups, ["oidc:developers", "oidc:ops"]);
        assert_eq!(u.uid, None);
        assert_eq!(u.extra[CREDENTIAL_ID_KEY], ["JTI=j-1"]);
        assert_eq!(
            u.groups_with_authenticated(),
            ["oidc:developers", "oidc:ops", "system:authenticated"]
        );
    }

    #[test]
    fn es256_and_audience_arrays_and_string_groups() {
        let mut s = settings();
        s.signing_algs = vec!["RS256".into(), "ES256".into()];
        let mut c = good_claims();
        c["aud"] = json!(["other", "kubelogin"]);
        c["groups"] = json!("admins");
        let t = sign_with(&c, jsonwebtoken::Algorithm::ES256, Some("ec-1"), &keys().ec);
        let u = authenticate(&s, &jwks(), &t, NOW).unwrap();
        assert_eq!(u.groups, ["oidc:admins"]);
    }

    #[test]
    fn without_kid_every_key_is_tried() {
        let t = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::RS256,
            None,
            &keys().rsa,
        );
        authenticate(&settings(), &jwks(), &t, NOW).unwrap();
    }

    #[test]
    fn default_username_prefix_rules() {
        let mut s = Settings::new(ISS, "kubelogin");
        assert_eq!(s.username_prefix(), format!("{ISS}#"));
        let u = authenticate(&s, &jwks(), &sign(&good_claims()), NOW).unwrap();
        assert_eq!(u.username, format!("{ISS}#u-123"));
        assert!(u.groups.is_empty(), "no groups without --oidc-groups-claim");
        s.username_prefix = Some("-".into());
        assert_eq!(s.username_prefix(), "");
        s.username_claim = "email".into();
        s.username_prefix = None;
        assert_eq!(s.username_prefix(), "", "email is not prefixed by default");
        let u = authenticate(&s, &jwks(), &sign(&good_claims()), NOW).unwrap();
        assert_eq!(u.username, "alice@example.com");
    }

    #[test]
    fn rejects_issuer_mismatch_showing_the_trailing_slash() {
        let mut s = settings();
        s.issuer_url = format!("{ISS}/");
        let r = rejected(&s, &sign(&good_claims()));
        assert_eq!(r.kind, RejectKind::IssuerMismatch);
        assert!(r
            .reason
            .contains("\"https://idp.example.com:8443\" (no trailing slash)"));
        assert!(r
            .reason
            .contains("\"https://idp.example.com:8443/\" (with a trailing slash)"));
        assert!(r.fix_hint.contains("trailing slash"));
        let r = rejected(&settings(), &with(|c| drop(c.remove("iss"))));
        assert_eq!(r.kind, RejectKind::IssuerMismatch);
    }

    #[test]
    fn rejects_wrong_audience() {
        let r = rejected(
            &settings(),
            &with(|c| drop(c.insert("aud".into(), json!("other")))),
        );
        assert_eq!(r.kind, RejectKind::AudienceMismatch);
        assert!(r.reason.contains("\"kubelogin\""), "{r}");
        let r = rejected(&settings(), &with(|c| drop(c.remove("aud"))));
        assert_eq!(r.kind, RejectKind::AudienceMismatch);
    }

    #[test]
    fn expiry_has_no_leeway_but_nbf_has_a_minute() {
        let at_exp = with(|c| drop(c.insert("exp".into(), json!(NOW))));
        authenticate(&settings(), &jwks(), &at_exp, NOW).unwrap();
        let r = rejected(
            &settings(),
            &with(|c| drop(c.insert("exp".into(), json!(NOW - 1)))),
        );
        assert_eq!(r.kind, RejectKind::Expired);
        let r = rejected(&settings(), &with(|c| drop(c.remove("exp"))));
        assert_eq!(r.kind, RejectKind::Malformed);

        let skewed = with(|c| drop(c.insert("nbf".into(), json!(NOW + 60))));
        authenticate(&settings(), &jwks(), &skewed, NOW).unwrap();
        let r = rejected(
            &settings(),
            &with(|c| drop(c.insert("nbf".into(), json!(NOW + 61)))),
        );
        assert_eq!(r.kind, RejectKind::NotYetValid);
        // kube-apiserver does not look at iat.
        let future_iat = with(|c| drop(c.insert("iat".into(), json!(NOW + 3600))));
        authenticate(&settings(), &jwks(), &future_iat, NOW).unwrap();
    }

    #[test]
    fn rejects_algorithms_not_configured_and_none_and_hmac() {
        let t = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::ES256,
            Some("ec-1"),
            &keys().ec,
        );
        let r = rejected(&settings(), &t);
        assert_eq!(r.kind, RejectKind::UnsupportedAlgorithm);
        assert!(r.fix_hint.contains("add ES256"), "{r}");

        let hs = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(b"secret"),
        );
        let mut s = settings();
        s.signing_algs = vec!["HS256".into()];
        assert!(s.validate().is_err(), "kube-apiserver refuses HS256");
        assert_eq!(rejected(&s, &hs).kind, RejectKind::UnsupportedAlgorithm);
        assert_eq!(
            rejected(&settings(), &hs).kind,
            RejectKind::UnsupportedAlgorithm
        );

        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none"}"#),
            b64url(good_claims().to_string().as_bytes())
        );
        assert_eq!(
            rejected(&settings(), &none).kind,
            RejectKind::UnsupportedAlgorithm
        );
    }

    #[test]
    fn rejects_unknown_kid_and_bad_signatures() {
        let t = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::RS256,
            Some("rsa-2"),
            &keys().rsa,
        );
        let r = rejected(&settings(), &t);
        assert_eq!(r.kind, RejectKind::UnknownKey);
        assert!(r.kind.is_key_problem());
        assert!(
            r.reason.contains("rsa-2") && r.reason.contains("rsa-1"),
            "{r}"
        );

        let forged = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::RS256,
            Some("rsa-1"),
            &keys().other_rsa,
        );
        let r = rejected(&settings(), &forged);
        assert_eq!(r.kind, RejectKind::BadSignature);
        assert!(r.kind.is_key_problem());

        // Claims swapped under a valid signature.
        let good = sign(&good_claims());
        let mut c = good_claims();
        c["email"] = json!("mallory@example.com");
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64url(c.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(
            rejected(&settings(), &tampered).kind,
            RejectKind::BadSignature
        );

        // An RSA kid used with ES256 finds no fitting key.
        let mut s = settings();
        s.signing_algs = vec!["ES256".into()];
        let t = sign_with(
            &good_claims(),
            jsonwebtoken::Algorithm::ES256,
            Some("rsa-1"),
            &keys().ec,
        );
        assert_eq!(rejected(&s, &t).kind, RejectKind::UnknownKey);
    }

    #[test]
    fn rejects_malformed_tokens() {
        for t in ["", "abc", "a.b", "a.b.c.d", "!!.??.x"] {
            assert_eq!(rejected(&settings(), t).kind, RejectKind::Malformed, "{t}");
        }
        let not_json = format!("{}.{}.x", b64url(b"{}"), b64url(b"[1"));
        assert_eq!(rejected(&settings(), &not_json).kind, RejectKind::Malformed);
    }

    #[test]
    fn rejects_missing_or_non_string_username() {
        let r = rejected(&settings(), &with(|c| drop(c.remove("email"))));
        assert_eq!(r.kind, RejectKind::MissingUsernameClaim);
        assert!(r.fix_hint.contains("--oidc-extra-scope=email"), "{r}");
        let r = rejected(
            &settings(),
            &with(|c| drop(c.insert("email".into(), json!(7)))),
        );
        assert_eq!(r.kind, RejectKind::MissingUsernameClaim);
    }

    #[test]
    fn email_verified_must_be_true_when_present() {
        for v in [json!(false), json!("true"), json!(null)] {
            let r = rejected(
                &settings(),
                &with(|c| drop(c.insert("email_verified".into(), v.clone()))),
            );
            assert_eq!(r.kind, RejectKind::EmailNotVerified, "{v}");
        }
        let absent = with(|c| drop(c.remove("email_verified")));
        authenticate(&settings(), &jwks(), &absent, NOW).unwrap();
        // Only checked for the email claim.
        let mut s = settings();
        s.username_claim = "sub".into();
        let unverified = with(|c| drop(c.insert("email_verified".into(), json!(false))));
        authenticate(&s, &jwks(), &unverified, NOW).unwrap();
    }

    #[test]
    fn rejects_groups_that_are_not_strings() {
        for v in [json!(3), json!(["a", 1]), json!({"a": "b"})] {
            let r = rejected(
                &settings(),
                &with(|c| drop(c.insert("groups".into(), v.clone()))),
            );
            assert_eq!(r.kind, RejectKind::BadGroupsClaim, "{v}");
        }
        let absent = with(|c| drop(c.remove("groups")));
        let u = authenticate(&settings(), &jwks(), &absent, NOW).unwrap();
        assert!(u.groups.is_empty());
    }

    #[test]
    fn required_claims_and_uid_claim() {
        let mut s = settings();
        s.required_claims.insert("hd".into(), "example.com".into());
        assert_eq!(
            rejected(&s, &sign(&good_claims())).kind,
            RejectKind::RequiredClaim
        );
        let r = rejected(
            &s,
            &with(|c| drop(c.insert("hd".into(), json!("evil.com")))),
        );
        assert_eq!(r.kind, RejectKind::RequiredClaim);
        authenticate(
            &s,
            &jwks(),
            &with(|c| drop(c.insert("hd".into(), json!("example.com")))),
            NOW,
        )
        .unwrap();

        let mut s = settings();
        s.uid_claim = Some("sub".into());
        let u = authenticate(&s, &jwks(), &sign(&good_claims()), NOW).unwrap();
        assert_eq!(u.uid.as_deref(), Some("u-123"));
        s.uid_claim = Some("nope".into());
        assert_eq!(
            rejected(&s, &sign(&good_claims())).kind,
            RejectKind::BadUidClaim
        );
    }

    #[test]
    fn settings_validation_matches_kube_apiserver_start_up() {
        settings().validate().unwrap();
        let mut s = settings();
        s.issuer_url = "http://idp.example.com".into();
        assert!(s.validate().unwrap_err().reason.contains("https"));
        let mut s = settings();
        s.signing_algs = vec!["none".into()];
        assert!(s.validate().is_err());
        let mut s = settings();
        s.client_id.clear();
        assert!(s.validate().is_err());
    }
}
