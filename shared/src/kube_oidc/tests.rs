//! Cases for [`super::authenticate`] and [`super::Settings::validate`], each an input and the
//! outcome kube-apiserver's OIDC authenticator gives for it, one test per rule.

use super::*;
use crate::jwt::b64url;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::sync::OnceLock;

pub(crate) const ISS: &str = "https://idp.example.com:8443";
pub(crate) const NOW: u64 = 1_800_000_000;

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
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
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

pub(crate) fn jwks() -> JwkSet {
    JwkSet {
        keys: vec![keys().rsa_jwk.clone(), keys().ec_jwk.clone()],
    }
}

pub(crate) fn good_claims() -> Value {
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

pub(crate) fn sign(claims: &Value) -> String {
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
