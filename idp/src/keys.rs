//! Token signing keys: RS256/ES256 key pairs (RFC 7518 §3.3, §3.4), their public JWKs
//! (RFC 7517) with RFC 7638 thumbprint key ids, and JWT signing and verification.
//!
//! `jsonwebtoken` does the JWS work on untrusted input (signature checks, decoding presented
//! tokens) and defines the header; tokens are signed with a ring key pair built once per key
//! (see `SigningKey::signer` for why) and checked to equal jsonwebtoken's own encoding;
//! `rustls-pemfile` reads PEM, as it does for the TLS key, so there is one PEM reader in the IdP. The `rsa` and `p256` crates generate keys and normalise PKCS#1, SEC1 and
//! PKCS#8 input into the DER shapes ring (under `jsonwebtoken`) accepts, with errors that say
//! what was wrong; `sec1` reads the curve of an `EC PRIVATE KEY`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding, ObjectIdentifier};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use rustls_pemfile::Item;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shared::jwk::Jwk;

/// RSA keys smaller than this are refused: RFC 7518 §3.3 requires at least 2048 bits.
const RSA_MIN_BITS: usize = 2048;
/// ring signs with RSA keys of at most 4096 bits; saying so up front beats ring's bare rejection.
const RSA_MAX_BITS: usize = 4096;
/// Tokens reach `verify_jwt` from untrusted callers (e.g. `id_token_hint`); anything this large is
/// not one of ours, so it is refused before any decoding work is done.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

/// Errors of key loading, generation, signing and token verification.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "unsupported signing algorithm {0:?}: use RS256 or ES256 (HS256 is refused because \
         kube-apiserver verifies tokens against the issuer's public JWKS and cannot verify an \
         HMAC shared-secret signature)"
    )]
    UnsupportedAlgorithm(String),
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error(
        "no PEM block found: expected a private key starting with -----BEGIN PRIVATE KEY-----, \
         -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----"
    )]
    NotPem,
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    #[error(
        "the private key is encrypted ({0}); give an unencrypted key, e.g. \
         `openssl pkey -in encrypted.pem -out key.pem`, and protect it with file permissions"
    )]
    EncryptedKey(&'static str),
    #[error(
        "found a {0} PEM block but no private key: the signing key file must hold the private \
         key, not a public key or certificate"
    )]
    NotAPrivateKey(String),
    #[error("unsupported PEM block {label:?}: {hint}")]
    UnsupportedPem { label: String, hint: &'static str },
    #[error("the PEM holds {0} private keys; give exactly one signing key per file")]
    MultipleKeys(usize),
    #[error("invalid {format} private key: {reason}")]
    InvalidKey {
        format: &'static str,
        reason: String,
    },
    #[error("unsupported elliptic curve {0}: only P-256 keys (ES256) can sign tokens")]
    UnsupportedCurve(String),
    #[error(
        "unsupported key type {0}: only RSA (RS256) and EC P-256 (ES256) keys can sign tokens"
    )]
    UnsupportedKeyType(String),
    #[error(
        "RSA key is {bits} bits: RS256 keys must have 2048 to 4096 bits (RFC 7518 §3.3 sets the \
         2048-bit minimum)"
    )]
    RsaKeySize { bits: usize },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("cannot serialize JWT claims: {0}")]
    SerializeClaims(#[source] serde_json::Error),
    #[error("malformed JWT: {0}")]
    MalformedToken(&'static str),
    #[error("JWT with alg \"none\" is refused: tokens must be signed")]
    UnsignedToken,
    #[error("JWT alg {0:?} is refused: HMAC-signed tokens are never accepted")]
    SymmetricToken(String),
    #[error("JWT alg {0:?} is not supported: only RS256 and ES256")]
    UnsupportedTokenAlg(String),
    #[error("JWT has critical header parameters {0:?} that are not understood (RFC 7515 §4.1.11)")]
    UnsupportedCrit(Vec<String>),
    #[error("JWT header has no kid")]
    MissingKid,
    #[error("JWT kid {0:?} matches no signing key")]
    UnknownKid(String),
    #[error("JWT alg {header} does not match key {kid:?}, which is {key}")]
    AlgMismatch {
        header: String,
        key: Algorithm,
        kid: String,
    },
    #[error("JWT signature is invalid")]
    BadSignature,
    #[error("JWT claims are not the expected JSON: {0}")]
    InvalidClaims(#[source] serde_json::Error),
}

/// A JWS algorithm the IdP signs with (RFC 7518 §3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 §3.3.
    Rs256,
    /// ECDSA with P-256 and SHA-256, RFC 7518 §3.4.
    Es256,
}

impl Algorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    /// Parses a JWS header `alg`, which is case-sensitive (RFC 7515 §4.1.1), unlike the
    /// operator-facing `FromStr`.
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Accepts `RS256`/`ES256` in any case, since this parses operator configuration.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("RS256") {
            Ok(Algorithm::Rs256)
        } else if s.eq_ignore_ascii_case("ES256") {
            Ok(Algorithm::Es256)
        } else {
            Err(KeyError::UnsupportedAlgorithm(s.to_string()))
        }
    }
}

/// A private signing key with what signing and verifying need built once: jsonwebtoken's
/// encoding and decoding keys, the JWS header and the validation rules.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    jwk: Jwk,
    /// `base64url({"typ":"JWT","alg","kid"}) + "."`: the same for every token this key signs.
    header_prefix: String,
    /// The ring key pair, parsed once. jsonwebtoken 9 re-parses the DER key on every signature
    /// (for P-256 that includes a scalar multiplication): measured here, ES256 signing fell from
    /// 13–15k to ~5k/s per core and RS256 by ~13%, on the token endpoint's hot path. So tokens
    /// are signed with a prebuilt ring key, and the result is checked to be byte for byte what
    /// `jsonwebtoken::encode` makes (test `rs256_tokens_are_what_jsonwebtoken_encodes`);
    /// everything that reads untrusted input (verification, PEM) stays with the libraries.
    signer: Signer,
    decoding: DecodingKey,
    /// Signature and algorithm only: claim checks (exp, aud, iss) are the caller's.
    validation: Validation,
    /// PKCS#8 PEM, kept only to store the key; wiped on drop.
    pkcs8_pem: Zeroizing<String>,
}

/// Private key material never reaches logs: only the algorithm and key id are shown.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg.as_str())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A ring key pair, parsed once per key (RFC 7518 §3.3 RS256, §3.4 ES256 with the fixed-size
/// R || S signature JWS requires).
enum Signer {
    Rsa(ring::signature::RsaKeyPair),
    Es256(ring::signature::EcdsaKeyPair),
}

impl Signer {
    fn rsa(pkcs1_der: &[u8]) -> Result<Self, KeyError> {
        ring::signature::RsaKeyPair::from_der(pkcs1_der)
            .map(Signer::Rsa)
            .map_err(|e| KeyError::InvalidKey {
                format: "RSA",
                reason: e.to_string(),
            })
    }

    fn p256(pkcs8_der: &[u8]) -> Result<Self, KeyError> {
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8_der,
            &ring::rand::SystemRandom::new(),
        )
        .map(Signer::Es256)
        .map_err(|e| KeyError::InvalidKey {
            format: "EC P-256",
            reason: e.to_string(),
        })
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let failed = |e: ring::error::Unspecified| KeyError::Sign(e.to_string());
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            Signer::Es256(k) => Ok(k.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
        }
    }
}

/// The header members `verify_jwt` decides on before any signature work.
#[derive(Deserialize)]
struct HeaderPolicy {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

impl SigningKey {
    /// Generates a new key: RSA 2048 (`rsa`) or P-256 (`p256`), from the OS generator.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        match alg {
            Algorithm::Rs256 => {
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_MIN_BITS)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                Self::from_rsa(&key)
            }
            Algorithm::Es256 => Self::from_p256(&p256::SecretKey::random(&mut rand::rngs::OsRng)),
        }
    }

    /// Loads a PEM private key: `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY` (PKCS#8, RSA or EC
    /// P-256) or `EC PRIVATE KEY` (SEC1, P-256). The algorithm follows from the key type.
    /// Other PEM blocks (certificates, `EC PARAMETERS`) next to the key are ignored.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        // rustls-pemfile skips blocks it does not know and reads an OpenSSL legacy header as
        // base64; the labels are looked at only to explain what the file holds instead.
        if pem.contains("Proc-Type:") && pem.contains("ENCRYPTED") {
            return Err(KeyError::EncryptedKey("legacy Proc-Type: 4,ENCRYPTED"));
        }
        let mut keys = Vec::new();
        let mut others = Vec::new();
        let mut rest = pem.as_bytes();
        while let Some((item, next)) =
            rustls_pemfile::read_one_from_slice(rest).map_err(malformed_pem)?
        {
            rest = next;
            match item {
                Item::Pkcs1Key(k) => keys.push(KeyDer::Pkcs1(secret(k.secret_pkcs1_der()))),
                Item::Pkcs8Key(k) => keys.push(KeyDer::Pkcs8(secret(k.secret_pkcs8_der()))),
                Item::Sec1Key(k) => keys.push(KeyDer::Sec1(secret(k.secret_sec1_der()))),
                Item::X509Certificate(_) => others.push("CERTIFICATE"),
                Item::SubjectPublicKeyInfo(_) => others.push("PUBLIC KEY"),
                Item::Csr(_) => others.push("CERTIFICATE REQUEST"),
                Item::Crl(_) => others.push("X509 CRL"),
                _ => {}
            }
        }
        if keys.len() > 1 {
            return Err(KeyError::MultipleKeys(keys.len()));
        }
        let Some(key) = keys.pop() else {
            return Err(no_private_key(pem, &others));
        };
        match key {
            KeyDer::Pkcs1(der) => {
                let key =
                    rsa::RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| KeyError::InvalidKey {
                        format: "PKCS#1 RSA",
                        reason: e.to_string(),
                    })?;
                Self::from_rsa(&key)
            }
            KeyDer::Sec1(der) => Self::from_sec1(&der),
            KeyDer::Pkcs8(der) => Self::from_pkcs8(&der),
        }
    }

    /// The key as PKCS#8 PEM, for storing in the database. `from_pem` reads it back to a key
    /// with the same kid.
    pub fn to_pkcs8_pem(&self) -> String {
        self.pkcs8_pem.as_str().to_string()
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public key, so the same key always
    /// gets the same kid wherever it is loaded.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK for the JWKS endpoint (RFC 7517 §4, RFC 7518 §6.2/§6.3).
    pub fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// Signs `claims` as a JWT in RFC 7515 §7.1 compact serialization with header
    /// `{"typ":"JWT","alg","kid"}`.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header_prefix.len() + payload.len() * 2 + 350);
        token.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let sig = self.signer.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut token);
        Ok(token)
    }

    fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<Self, KeyError> {
        let bits = key.n().bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(KeyError::RsaKeySize { bits });
        }
        let invalid = |reason: String| KeyError::InvalidKey {
            format: "RSA",
            reason,
        };
        // ring (under jsonwebtoken) signs with the PKCS#1 RSAPrivateKey DER.
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|e| invalid(e.to_string()))?
            .to_bytes();
        let pkcs8_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| invalid(e.to_string()))?;
        let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
        let jwk = Jwk {
            kty: "RSA".to_string(),
            use_: Some("sig".to_string()),
            alg: Some(Algorithm::Rs256.as_str().to_string()),
            kid: None,
            n: Some(URL_SAFE_NO_PAD.encode(&n)),
            e: Some(URL_SAFE_NO_PAD.encode(&e)),
            crv: None,
            x: None,
            y: None,
        };
        Self::assemble(
            Algorithm::Rs256,
            jwk,
            Signer::rsa(&pkcs1)?,
            DecodingKey::from_rsa_raw_components(&n, &e),
            pkcs8_pem,
        )
    }

    /// Re-encodes through `p256` so ring gets the one PKCS#8 shape it accepts (public key
    /// present, no curve in the inner structure), whatever tool wrote the input.
    fn from_p256(key: &p256::SecretKey) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKey {
            format: "EC P-256",
            reason,
        };
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| invalid(e.to_string()))?
            .to_bytes();
        let pkcs8_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| invalid(e.to_string()))?;
        // Uncompressed SEC1 point: 0x04 || X || Y, 32 bytes each (RFC 7518 §6.2.1).
        let point = key.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(invalid("the public key is the identity point".to_string()));
        };
        let jwk = Jwk {
            kty: "EC".to_string(),
            use_: Some("sig".to_string()),
            alg: Some(Algorithm::Es256.as_str().to_string()),
            kid: None,
            n: None,
            e: None,
            crv: Some("P-256".to_string()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
        };
        Self::assemble(
            Algorithm::Es256,
            jwk,
            Signer::p256(&pkcs8)?,
            DecodingKey::from_ec_der(point.as_bytes()),
            pkcs8_pem,
        )
    }

    fn assemble(
        alg: Algorithm,
        mut jwk: Jwk,
        signer: Signer,
        decoding: DecodingKey,
        pkcs8_pem: Zeroizing<String>,
    ) -> Result<Self, KeyError> {
        let kid = jwk_thumbprint(&jwk)?;
        jwk.kid = Some(kid.clone());
        let mut header = Header::new(alg.jose());
        header.kid = Some(kid.clone());
        let header_json = serde_json::to_vec(&header).map_err(|e| KeyError::Sign(e.to_string()))?;
        let header_prefix = format!("{}.", URL_SAFE_NO_PAD.encode(header_json));
        let mut validation = Validation::new(alg.jose());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let key = SigningKey {
            alg,
            kid,
            jwk,
            header_prefix,
            signer,
            decoding,
            validation,
            pkcs8_pem,
        };
        key.self_test()?;
        Ok(key)
    }

    /// Signs and verifies once, so a key ring refuses (an RSA exponent below 65537, say) is
    /// refused when it is loaded rather than at the first token request.
    fn self_test(&self) -> Result<(), KeyError> {
        let message = b"kubelogin-idp key check";
        let alg = self.alg.jose();
        let invalid = |reason: String| KeyError::InvalidKey {
            format: self.alg.as_str(),
            reason,
        };
        let sig = URL_SAFE_NO_PAD.encode(self.signer.sign(message)?);
        match jsonwebtoken::crypto::verify(&sig, message, &self.decoding, alg) {
            Ok(true) => Ok(()),
            Ok(false) => Err(invalid("its signature does not verify".to_string())),
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    /// PKCS#8 (RFC 5208/5958): the algorithm identifier says which key type is inside.
    fn from_pkcs8(der_bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKey {
            format: "PKCS#8",
            reason,
        };
        let info =
            p256::pkcs8::PrivateKeyInfo::try_from(der_bytes).map_err(|e| invalid(e.to_string()))?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA_ENCRYPTION {
            let key = rsa::RsaPrivateKey::try_from(info).map_err(|e| invalid(e.to_string()))?;
            Self::from_rsa(&key)
        } else if oid == OID_EC_PUBLIC_KEY {
            // RFC 5480 §2.1.1: the parameters name the curve; explicit curve parameters are not
            // a named curve and are refused.
            let curve = info.algorithm.parameters_oid().map_err(|_| {
                KeyError::UnsupportedCurve(
                    "not given as a named curve (RFC 5480 §2.1.1)".to_string(),
                )
            })?;
            check_p256(Some(curve))?;
            let key = <p256::SecretKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(der_bytes)
                .map_err(|e| KeyError::InvalidKey {
                    format: "PKCS#8 EC P-256",
                    reason: e.to_string(),
                })?;
            Self::from_p256(&key)
        } else {
            Err(KeyError::UnsupportedKeyType(oid_name(oid)))
        }
    }

    /// SEC1 `ECPrivateKey` (RFC 5915 §3): the curve is in the optional `parameters` field.
    fn from_sec1(der_bytes: &[u8]) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidKey {
            format: "SEC1 EC",
            reason,
        };
        // The p256 parser does not look at `parameters`, so a key on another curve would be
        // misread as a P-256 scalar; check the named curve first.
        let parsed = sec1::EcPrivateKey::try_from(der_bytes).map_err(|e| invalid(e.to_string()))?;
        check_p256(parsed.parameters.as_ref().and_then(|p| p.named_curve()))?;
        let key = p256::SecretKey::try_from(parsed).map_err(|e| {
            invalid(format!(
                "{e} (without a named curve the key must be a 32-byte P-256 scalar)"
            ))
        })?;
        Self::from_p256(&key)
    }
}

/// The DER of a private key block of a PEM file, wiped on drop.
enum KeyDer {
    Pkcs1(Zeroizing<Vec<u8>>),
    Pkcs8(Zeroizing<Vec<u8>>),
    Sec1(Zeroizing<Vec<u8>>),
}

fn secret(der: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(der.to_vec())
}

/// Verifies a compact JWS made by one of `keys` (matched by the header `kid`, and the header
/// `alg` must equal that key's algorithm; refuse alg "none" and any HS*), returning the decoded
/// claims. Signature only: claim checks (exp, iss) are the caller's.
pub fn verify_jwt<T: DeserializeOwned>(
    keys: &[Arc<SigningKey>],
    token: &str,
) -> Result<T, KeyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(KeyError::MalformedToken("too long"));
    }
    // RFC 7515 §7.1: exactly three base64url parts; five would be a JWE (RFC 7516 §7.1).
    let header: HeaderPolicy = shared::jwt::decode_header_unverified(token)
        .map_err(|_| KeyError::MalformedToken("not a compact JWS with a JOSE header"))?;

    // The algorithm is checked before the key lookup so "none" and HMAC tokens are refused
    // for what they are (RFC 8725 §3.1), whatever kid they claim.
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(KeyError::UnsignedToken);
    }
    if header.alg.to_ascii_uppercase().starts_with("HS") {
        return Err(KeyError::SymmetricToken(header.alg));
    }
    let alg = Algorithm::from_header(&header.alg)
        .ok_or_else(|| KeyError::UnsupportedTokenAlg(header.alg.clone()))?;
    // RFC 7515 §4.1.11: a recipient must reject critical extensions it does not understand, and
    // this verifier understands none (jsonwebtoken does not read `crit`, so it is refused here).
    // Keys embedded in the header (jwk, jku, x5c) are ignored: only our own keys are trusted.
    if let Some(crit) = header.crit {
        return Err(KeyError::UnsupportedCrit(crit));
    }
    let kid = header.kid.ok_or(KeyError::MissingKid)?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyError::UnknownKid(kid.clone()))?;
    if key.alg != alg {
        return Err(KeyError::AlgMismatch {
            header: header.alg,
            key: key.alg,
            kid,
        });
    }
    // jsonwebtoken checks the header alg against the key's once more, then the signature, and
    // only then decodes the claims.
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &key.validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => KeyError::BadSignature,
            ErrorKind::InvalidAlgorithm => KeyError::AlgMismatch {
                header: alg.as_str().to_string(),
                key: key.alg,
                kid: key.kid.clone(),
            },
            ErrorKind::Base64(_) => KeyError::MalformedToken("a part is not base64url"),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                KeyError::MalformedToken("the header or claims are not a JSON object")
            }
            _ => KeyError::MalformedToken("not a compact JWS"),
        })?;
    serde_json::from_value(data.claims).map_err(KeyError::InvalidClaims)
}

/// RFC 7638 §3: SHA-256 over the required members only, in lexicographic order, without
/// whitespace; base64url without padding.
pub(crate) fn jwk_thumbprint(jwk: &Jwk) -> Result<String, KeyError> {
    let member = |name: &'static str, value: &Option<String>| {
        value.clone().ok_or_else(|| KeyError::InvalidKey {
            format: "JWK",
            reason: format!("missing member {name:?}"),
        })
    };
    // Member values go through serde_json so the canonical form is valid JSON whatever they hold
    // (RFC 7638 §3.3); base64url and curve names never need escaping, so this is the plain text.
    let json_str = |s: &str| serde_json::to_string(s).map_err(KeyError::SerializeClaims);
    let canonical = match jwk.kty.as_str() {
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            json_str(&member("e", &jwk.e)?)?,
            json_str(&member("n", &jwk.n)?)?,
        ),
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            json_str(&member("crv", &jwk.crv)?)?,
            json_str(&member("x", &jwk.x)?)?,
            json_str(&member("y", &jwk.y)?)?,
        ),
        other => return Err(KeyError::UnsupportedKeyType(format!("JWK kty {other:?}"))),
    };
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

fn check_p256(curve: Option<ObjectIdentifier>) -> Result<(), KeyError> {
    match curve {
        None => Ok(()),
        Some(oid) if oid == OID_P256 => Ok(()),
        Some(oid) => Err(KeyError::UnsupportedCurve(oid_name(oid))),
    }
}

fn oid_name(oid: ObjectIdentifier) -> String {
    let name = match oid {
        o if o == OID_P384 => "P-384 (secp384r1)",
        o if o == OID_P521 => "P-521 (secp521r1)",
        o if o == OID_SECP256K1 => "secp256k1",
        o if o == OID_ED25519 => "Ed25519",
        o if o == OID_ED448 => "Ed448",
        o if o == OID_RSASSA_PSS => "RSASSA-PSS (use a plain rsaEncryption RSA key)",
        o if o == OID_DSA => "DSA",
        o => return format!("with OID {o}"),
    };
    name.to_string()
}

fn malformed_pem(e: rustls_pemfile::Error) -> KeyError {
    KeyError::MalformedPem(match e {
        rustls_pemfile::Error::MissingSectionEnd { end_marker } => format!(
            "the {} block has no END line",
            String::from_utf8_lossy(&end_marker)
        ),
        rustls_pemfile::Error::IllegalSectionStart { .. } => {
            "a BEGIN line does not end with five dashes".to_string()
        }
        rustls_pemfile::Error::Base64Decode(_) => "a block is not base64".to_string(),
    })
}

/// Explains a PEM without a usable private key, naming what it holds instead: the blocks
/// rustls-pemfile read (`others`), else the labels of those it skips.
fn no_private_key(text: &str, others: &[&'static str]) -> KeyError {
    let skipped: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    for label in &skipped {
        match *label {
            "ENCRYPTED PRIVATE KEY" => {
                return KeyError::EncryptedKey("PKCS#8 ENCRYPTED PRIVATE KEY")
            }
            "OPENSSH PRIVATE KEY" => {
                return KeyError::UnsupportedPem {
                    label: label.to_string(),
                    hint: "convert it to PKCS#8 with `ssh-keygen -p -m PKCS8 -f FILE`",
                }
            }
            _ => {}
        }
    }
    if let Some(label) = others.first() {
        return KeyError::NotAPrivateKey(label.to_string());
    }
    match skipped.first() {
        Some(label) => KeyError::UnsupportedPem {
            label: label.to_string(),
            hint: "expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
        },
        None => KeyError::NotPem,
    }
}

#[cfg(test)]
// Tests may fail loudly: the no-panic rule is for code that runs in the IdP.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};
    use serde_json::{json, Value};
    use std::sync::OnceLock;

    /// RSA generation is the slow part of these tests; one key serves all of them.
    fn rsa_key() -> &'static rsa::RsaPrivateKey {
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("generate RSA key")
        })
    }

    fn rsa_signing_key() -> SigningKey {
        SigningKey::from_rsa(rsa_key()).expect("load RSA key")
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.example", "sub": "alice", "aud": "kubernetes", "exp": 1_900_000_000u64, "groups": ["dev", "ops"]})
    }

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }

    /// Replaces the header of `token` with `header`, keeping payload and signature.
    fn with_header(token: &str, header: Value) -> String {
        let (_, rest) = token.split_once('.').expect("token has parts");
        format!("{}.{rest}", b64json(&header))
    }

    #[test]
    fn keys_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SigningKey>();
    }

    #[test]
    fn sign_and_verify_both_algorithms() {
        for key in [
            rsa_signing_key(),
            SigningKey::generate(Algorithm::Es256).expect("es256"),
        ] {
            let token = key.sign_jwt(&claims()).expect("sign");
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64"))
                    .expect("json");
            assert_eq!(
                header,
                json!({"alg": key.alg().as_str(), "typ": "JWT", "kid": key.kid()})
            );
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
            match key.alg() {
                Algorithm::Rs256 => assert_eq!(sig.len(), 256),
                Algorithm::Es256 => assert_eq!(sig.len(), 64, "R||S, not DER"),
            }
            let keys = vec![Arc::new(key)];
            let got: Value = verify_jwt(&keys, &token).expect("verify");
            assert_eq!(got, claims());
        }
    }

    #[test]
    fn generated_rsa_key_is_2048_bits() {
        let key = SigningKey::generate(Algorithm::Rs256).expect("generate");
        assert_eq!(key.alg(), Algorithm::Rs256);
        let jwk = key.public_jwk();
        let n = URL_SAFE_NO_PAD.decode(jwk.n.expect("n")).expect("b64");
        assert_eq!(n.len(), 256);
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
    }

    #[test]
    fn public_jwk_members() {
        let rsa = rsa_signing_key().public_jwk();
        assert_eq!(rsa.kty, "RSA");
        assert_eq!(rsa.use_.as_deref(), Some("sig"));
        assert_eq!(rsa.alg.as_deref(), Some("RS256"));
        assert!(rsa.n.is_some() && rsa.e.is_some() && rsa.x.is_none() && rsa.crv.is_none());
        let key = SigningKey::generate(Algorithm::Es256).expect("es256");
        let ec = key.public_jwk();
        assert_eq!(ec.kty, "EC");
        assert_eq!(ec.crv.as_deref(), Some("P-256"));
        assert_eq!(ec.alg.as_deref(), Some("ES256"));
        assert_eq!(ec.kid.as_deref(), Some(key.kid()));
        for coord in [ec.x.as_deref(), ec.y.as_deref()] {
            let bytes = URL_SAFE_NO_PAD.decode(coord.expect("coord")).expect("b64");
            assert_eq!(bytes.len(), 32);
        }
        assert!(ec.n.is_none() && ec.e.is_none());
        // The kid is the thumbprint of the published JWK, so clients can recompute it.
        assert_eq!(jwk_thumbprint(&ec).expect("thumbprint"), key.kid());
    }

    #[test]
    fn pkcs8_pem_round_trip_keeps_kid() {
        for key in [
            rsa_signing_key(),
            SigningKey::generate(Algorithm::Es256).expect("es256"),
        ] {
            let pem = key.to_pkcs8_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(pem.lines().all(|l| l.len() <= 64));
            let again = SigningKey::from_pem(&pem).expect("reload");
            assert_eq!(again.kid(), key.kid());
            assert_eq!(again.alg(), key.alg());
            assert_eq!(again.to_pkcs8_pem(), pem, "stored form is stable");
            // A token from the reloaded key verifies with the original, and the other way round.
            let keys = vec![Arc::new(key)];
            let token = again.sign_jwt(&claims()).expect("sign");
            let _: Value = verify_jwt(&keys, &token).expect("verify");
        }
    }

    #[test]
    fn loads_pkcs1_pkcs8_and_sec1_pem() {
        let rsa = rsa_key();
        let expected = rsa_signing_key();
        let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).expect("pkcs1");
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let pkcs8 = rsa.to_pkcs8_pem(LineEnding::CRLF).expect("pkcs8");
        for pem in [pkcs1.as_str(), pkcs8.as_str()] {
            let key = SigningKey::from_pem(pem).expect("load RSA");
            assert_eq!(key.alg(), Algorithm::Rs256);
            assert_eq!(key.kid(), expected.kid());
        }

        let ec = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let sec1 = ec.to_sec1_pem(LineEnding::LF).expect("sec1");
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let ec_pkcs8 = ec.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
        let from_sec1 = SigningKey::from_pem(&sec1).expect("load SEC1");
        let from_pkcs8 = SigningKey::from_pem(&ec_pkcs8).expect("load EC PKCS#8");
        assert_eq!(from_sec1.alg(), Algorithm::Es256);
        assert_eq!(from_sec1.kid(), from_pkcs8.kid());

        // `openssl ecparam -genkey` writes an EC PARAMETERS block first; it is skipped.
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        let key = SigningKey::from_pem(&with_params).expect("load with params");
        assert_eq!(key.kid(), from_sec1.kid());
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = SigningKey::generate(Algorithm::Es256).expect("es256");
        let token = key.sign_jwt(&claims()).expect("sign");
        let keys = vec![Arc::new(key)];
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = claims();
        evil["sub"] = json!("admin");
        let forged = format!("{}.{}.{}", parts[0], b64json(&evil), parts[2]);
        let err = verify_jwt::<Value>(&keys, &forged).expect_err("tampered");
        assert!(matches!(err, KeyError::BadSignature), "{err}");

        let rsa = rsa_signing_key();
        let token = rsa.sign_jwt(&claims()).expect("sign");
        let keys = vec![Arc::new(rsa)];
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64json(&evil), parts[2]);
        let err = verify_jwt::<Value>(&keys, &forged).expect_err("tampered");
        assert!(matches!(err, KeyError::BadSignature), "{err}");
    }

    #[test]
    fn wrong_kid_and_alg_mismatch_are_refused() {
        let signer = SigningKey::generate(Algorithm::Es256).expect("es256");
        let other = Arc::new(SigningKey::generate(Algorithm::Es256).expect("es256"));
        let rsa = Arc::new(rsa_signing_key());
        let token = signer.sign_jwt(&claims()).expect("sign");

        let err = verify_jwt::<Value>(&[other.clone(), rsa.clone()], &token).expect_err("kid");
        assert!(matches!(err, KeyError::UnknownKid(_)), "{err}");

        // Claiming another key's kid does not help: its signature does not verify.
        let relabelled = with_header(
            &token,
            json!({"alg": "ES256", "typ": "JWT", "kid": other.kid()}),
        );
        let err =
            verify_jwt::<Value>(std::slice::from_ref(&other), &relabelled).expect_err("relabelled");
        assert!(matches!(err, KeyError::BadSignature), "{err}");

        // The header alg must be the named key's algorithm.
        let mismatched = with_header(
            &token,
            json!({"alg": "ES256", "typ": "JWT", "kid": rsa.kid()}),
        );
        let err =
            verify_jwt::<Value>(std::slice::from_ref(&rsa), &mismatched).expect_err("mismatch");
        assert!(matches!(err, KeyError::AlgMismatch { .. }), "{err}");

        let no_kid = with_header(&token, json!({"alg": "ES256", "typ": "JWT"}));
        let err = verify_jwt::<Value>(&[other], &no_kid).expect_err("no kid");
        assert!(matches!(err, KeyError::MissingKid), "{err}");
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let key = Arc::new(rsa_signing_key());
        let kid = key.kid().to_string();
        let payload = b64json(&claims());
        let keys = vec![key];

        for alg in ["none", "None", "NONE"] {
            let header = b64json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
            for token in [
                format!("{header}.{payload}."),
                format!("{header}.{payload}"),
            ] {
                let err = verify_jwt::<Value>(&keys, &token).expect_err("alg none");
                assert!(
                    matches!(err, KeyError::UnsignedToken | KeyError::MalformedToken(_)),
                    "{err}"
                );
            }
            let token = format!("{header}.{payload}.");
            assert!(matches!(
                verify_jwt::<Value>(&keys, &token),
                Err(KeyError::UnsignedToken)
            ));
        }

        // An HS256 token "signed" with the public key as the HMAC secret: the classic
        // key-confusion attack (RFC 8725 §2.1).
        let header = b64json(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
        let signing_input = format!("{header}.{payload}");
        let jwk_json = serde_json::to_vec(&keys[0].public_jwk()).expect("json");
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &jwk_json);
        let tag = ring::hmac::sign(&mac_key, signing_input.as_bytes());
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        let err = verify_jwt::<Value>(&keys, &token).expect_err("hs256");
        assert!(matches!(err, KeyError::SymmetricToken(_)), "{err}");
        assert!(err.to_string().contains("HS256"));

        let header = b64json(&json!({"alg": "RS384", "kid": kid}));
        let err =
            verify_jwt::<Value>(&keys, &format!("{header}.{payload}.AAAA")).expect_err("rs384");
        assert!(matches!(err, KeyError::UnsupportedTokenAlg(_)), "{err}");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let key = Arc::new(SigningKey::generate(Algorithm::Es256).expect("es256"));
        let token = key.sign_jwt(&claims()).expect("sign");
        let keys = vec![key];
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d.e",
            "!!!.e30.AAAA",
            &format!("{token}.extra"),
            &format!("{token}="),
        ] {
            assert!(verify_jwt::<Value>(&keys, bad).is_err(), "{bad:?} accepted");
        }
        let crit = with_header(
            &token,
            json!({"alg": "ES256", "kid": keys[0].kid(), "crit": ["exp"], "exp": 1}),
        );
        assert!(matches!(
            verify_jwt::<Value>(&keys, &crit),
            Err(KeyError::UnsupportedCrit(_))
        ));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            verify_jwt::<Value>(&keys, &long),
            Err(KeyError::MalformedToken(_))
        ));
        // Valid signature, but claims of the wrong shape for the caller's type.
        #[derive(Debug, Deserialize)]
        struct Strict {
            #[allow(dead_code)]
            exp: String,
        }
        assert!(matches!(
            verify_jwt::<Strict>(&keys, &token),
            Err(KeyError::InvalidClaims(_))
        ));
    }

    #[test]
    fn p384_key_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &rng,
        )
        .expect("p384");
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        let err = SigningKey::from_pem(&pem).expect_err("P-384");
        assert!(matches!(err, KeyError::UnsupportedCurve(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("P-384") && msg.contains("P-256"), "{msg}");

        // The same in SEC1, where the curve is the optional `parameters` field (RFC 5915 §3):
        // a 48-byte P-384 scalar must not be read as something else.
        use p256::pkcs8::der::Encode as _;
        let scalar = [7u8; 48];
        let sec1 = sec1::EcPrivateKey {
            private_key: &scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(OID_P384)),
            public_key: None,
        }
        .to_der()
        .expect("der");
        let err = SigningKey::from_pem(&pem_encode("EC PRIVATE KEY", &sec1)).expect_err("SEC1");
        assert!(matches!(err, KeyError::UnsupportedCurve(_)), "{err}");
    }

    #[test]
    fn small_rsa_key_is_refused() {
        let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("rsa 1024");
        for pem in [
            small
                .to_pkcs1_pem(LineEnding::LF)
                .expect("pkcs1")
                .to_string(),
            small
                .to_pkcs8_pem(LineEnding::LF)
                .expect("pkcs8")
                .to_string(),
        ] {
            let err = SigningKey::from_pem(&pem).expect_err("RSA-1024");
            assert!(matches!(err, KeyError::RsaKeySize { bits: 1024 }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("1024") && msg.contains("2048"), "{msg}");
        }
    }

    #[test]
    fn wrong_inputs_get_clear_errors() {
        let err = SigningKey::from_pem("hello").expect_err("garbage");
        assert!(matches!(err, KeyError::NotPem), "{err}");
        let err = SigningKey::from_pem("").expect_err("empty");
        assert!(matches!(err, KeyError::NotPem), "{err}");

        let err =
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n%%%%\n-----END PRIVATE KEY-----\n")
                .expect_err("bad base64");
        assert!(matches!(err, KeyError::MalformedPem(_)), "{err}");
        let err = SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n").expect_err("no end");
        assert!(matches!(err, KeyError::MalformedPem(_)), "{err}");
        let err =
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .expect_err("bad der");
        assert!(matches!(err, KeyError::InvalidKey { .. }), "{err}");

        let public = rsa_key()
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public pem");
        let err = SigningKey::from_pem(&public).expect_err("public key");
        assert!(
            matches!(err, KeyError::NotAPrivateKey(ref l) if l == "PUBLIC KEY"),
            "{err}"
        );

        let cert = pem_encode("CERTIFICATE", b"not really a certificate");
        let err = SigningKey::from_pem(&cert).expect_err("certificate");
        assert!(
            matches!(err, KeyError::NotAPrivateKey(ref l) if l == "CERTIFICATE"),
            "{err}"
        );

        let err =
            SigningKey::from_pem(&pem_encode("ENCRYPTED PRIVATE KEY", b"x")).expect_err("enc");
        assert!(matches!(err, KeyError::EncryptedKey(_)), "{err}");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(legacy).expect_err("legacy enc");
        assert!(matches!(err, KeyError::EncryptedKey(_)), "{err}");

        let err = SigningKey::from_pem(&pem_encode("OPENSSH PRIVATE KEY", b"x")).expect_err("ssh");
        assert!(err.to_string().contains("ssh-keygen"), "{err}");

        let es = SigningKey::generate(Algorithm::Es256)
            .expect("es256")
            .to_pkcs8_pem();
        let err = SigningKey::from_pem(&format!("{es}{es}")).expect_err("two keys");
        assert!(matches!(err, KeyError::MultipleKeys(2)), "{err}");

        // Ed25519 in PKCS#8 is a real key, just not one kube-apiserver takes via this IdP.
        let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("ed");
        let err =
            SigningKey::from_pem(&pem_encode("PRIVATE KEY", ed.as_ref())).expect_err("ed25519");
        assert!(err.to_string().contains("Ed25519"), "{err}");
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let key = SigningKey::generate(Algorithm::Es256).expect("es256");
        let debug = format!("{key:?}");
        assert!(
            debug.contains("ES256") && debug.contains(key.kid()),
            "{debug}"
        );
        let pem = key.to_pkcs8_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..16]), "{debug}");
        assert!(
            !debug.contains("pkcs8") && !debug.contains("signer"),
            "{debug}"
        );
    }

    #[test]
    fn algorithm_parsing() {
        assert_eq!("RS256".parse::<Algorithm>().expect("rs"), Algorithm::Rs256);
        assert_eq!("es256".parse::<Algorithm>().expect("es"), Algorithm::Es256);
        assert_eq!(Algorithm::Es256.as_str(), "ES256");
        assert_eq!(Algorithm::Rs256.to_string(), "RS256");
        let err = "HS256".parse::<Algorithm>().expect_err("hs256");
        let msg = err.to_string();
        assert!(
            msg.contains("RS256")
                && msg.contains("ES256")
                && msg.contains("HS256")
                && msg.contains("kube-apiserver"),
            "{msg}"
        );
    }

    /// RFC 7638 §3.1's worked example: this RSA key's thumbprint is given in the RFC.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = Jwk {
            kty: "RSA".to_string(),
            use_: None,
            alg: Some("RS256".to_string()),
            kid: Some("2011-04-29".to_string()),
            n: Some(
                concat!(
                    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86z",
                    "wu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5Js",
                    "GY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic",
                    "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-",
                    "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF",
                    "Cur-kEgU8awapJzKnqDKgw",
                )
                .to_string(),
            ),
            e: Some("AQAB".to_string()),
            crv: None,
            x: None,
            y: None,
        };
        assert_eq!(
            jwk_thumbprint(&jwk).expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// Test PEM files (RFC 7468 §2 encoding, from the `der` crate).
    fn pem_encode(label: &str, der_bytes: &[u8]) -> String {
        p256::pkcs8::der::pem::encode_string(label, LineEnding::LF, der_bytes).expect("pem")
    }

    /// Issue 7 item 13: tokens are exactly jsonwebtoken's output. RS256 (PKCS#1 v1.5) signatures
    /// are deterministic, so the whole token must equal what `jsonwebtoken::encode` makes with
    /// this key (header member order included), although signing uses a prebuilt ring key.
    #[test]
    fn rs256_tokens_are_what_jsonwebtoken_encodes() {
        let key = rsa_signing_key();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(key.kid().to_string());
        let pkcs1 = rsa_key().to_pkcs1_der().expect("pkcs1");
        let expected = jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        )
        .expect("encode");
        assert_eq!(key.sign_jwt(&claims()).expect("sign"), expected);
    }

    /// Tokens verify with nothing but the published JWK (what kube-apiserver and kubectl-oidc_login
    /// do), and tokens signed elsewhere with the same key verify here.
    #[test]
    fn tokens_interoperate_through_the_published_jwk() {
        for key in [
            rsa_signing_key(),
            SigningKey::generate(Algorithm::Es256).expect("es256"),
        ] {
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(serde_json::to_value(key.public_jwk()).expect("jwk"))
                    .expect("jsonwebtoken reads our JWK");
            let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
            let mut validation = jsonwebtoken::Validation::new(key.alg().jose());
            validation.set_audience(&["kubernetes"]);
            let token = key.sign_jwt(&claims()).expect("sign");
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
                .expect("verifies with the JWK");
            assert_eq!(data.claims, claims());
            assert_eq!(data.header.kid.as_deref(), Some(key.kid()));

            let mut header = jsonwebtoken::Header::new(key.alg().jose());
            header.kid = Some(key.kid().to_string());
            let pem = key.to_pkcs8_pem();
            let Some(Item::Pkcs8Key(der)) = rustls_pemfile::read_one_from_slice(pem.as_bytes())
                .expect("pem")
                .map(|(i, _)| i)
            else {
                panic!("a PKCS#8 key");
            };
            let encoding = match key.alg() {
                Algorithm::Rs256 => {
                    use rsa::pkcs8::DecodePrivateKey as _;
                    let rsa =
                        rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der()).expect("rsa");
                    jsonwebtoken::EncodingKey::from_rsa_der(
                        rsa.to_pkcs1_der().expect("pkcs1").as_bytes(),
                    )
                }
                Algorithm::Es256 => jsonwebtoken::EncodingKey::from_ec_der(der.secret_pkcs8_der()),
            };
            let elsewhere = jsonwebtoken::encode(&header, &claims(), &encoding).expect("encode");
            let keys = vec![Arc::new(key)];
            let got: Value = verify_jwt(&keys, &elsewhere).expect("verify");
            assert_eq!(got, claims());
        }
    }

    /// Issue 7 item 13: one PEM reader. Whatever the TLS key loader (`rustls_pemfile::private_key`)
    /// finds in a file, the signing key loader finds too; the hand-written parser this replaced
    /// refused some of these files (a stray END line) that TLS read.
    #[test]
    fn reads_the_key_files_tls_reads() {
        let ec = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let sec1 = ec.to_sec1_pem(LineEnding::LF).expect("sec1").to_string();
        let pkcs8 = ec
            .to_pkcs8_pem(LineEnding::CRLF)
            .expect("pkcs8")
            .to_string();
        let pkcs1 = rsa_key()
            .to_pkcs1_pem(LineEnding::LF)
            .expect("pkcs1")
            .to_string();
        let cert = pem_encode("CERTIFICATE", b"a certificate");
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let files = [
            sec1.clone(),
            pkcs8.clone(),
            pkcs1,
            format!("{params}{sec1}"),
            format!("{cert}{pkcs8}"),
            format!("Bag Attributes\n    friendlyName: idp\n{pkcs8}"),
            format!("-----END CERTIFICATE-----\n{sec1}"),
        ];
        for file in files {
            let tls = rustls_pemfile::private_key(&mut file.as_bytes())
                .expect("TLS reads it")
                .expect("TLS finds a key");
            let key = SigningKey::from_pem(&file)
                .unwrap_or_else(|e| panic!("signing key loader refused {file:?}: {e}"));
            // Both found the same key: re-reading the stored PKCS#8 gives the same kid.
            let tls_pem = match tls {
                rustls::pki_types::PrivateKeyDer::Pkcs1(k) => {
                    pem_encode("RSA PRIVATE KEY", k.secret_pkcs1_der())
                }
                rustls::pki_types::PrivateKeyDer::Sec1(k) => {
                    pem_encode("EC PRIVATE KEY", k.secret_sec1_der())
                }
                rustls::pki_types::PrivateKeyDer::Pkcs8(k) => {
                    pem_encode("PRIVATE KEY", k.secret_pkcs8_der())
                }
                other => panic!("unexpected key type {other:?}"),
            };
            assert_eq!(
                SigningKey::from_pem(&tls_pem).expect("reload").kid(),
                key.kid()
            );
        }
    }

    /// Throughput on this machine's dev profile (ring built with opt-level 3, as in the
    /// workspace). Run with `cargo test -- --ignored --nocapture signing_throughput`.
    /// jsonwebtoken 9 turns the key DER into a ring key pair on every signature; for ES256 that
    /// re-derivation (the public key is recomputed and checked) costs more than the signature.
    #[test]
    #[ignore]
    fn signing_throughput() {
        use std::time::Instant;
        let keys = [
            (Arc::new(rsa_signing_key()), 2_000usize),
            (
                Arc::new(SigningKey::generate(Algorithm::Es256).expect("es256")),
                8_000usize,
            ),
        ];
        for (key, n) in keys {
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(key.sign_jwt(&claims()).expect("sign"));
            }
            let one = n as f64 / start.elapsed().as_secs_f64();
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let key = key.clone();
                    s.spawn(move || {
                        for _ in 0..n / 2 {
                            std::hint::black_box(key.sign_jwt(&claims()).expect("sign"));
                        }
                    });
                }
            });
            let two = n as f64 / start.elapsed().as_secs_f64();
            let token = key.sign_jwt(&claims()).expect("sign");
            let keys = vec![key.clone()];
            let start = Instant::now();
            for _ in 0..n {
                let _: Value = verify_jwt(&keys, &token).expect("verify");
            }
            let verify = n as f64 / start.elapsed().as_secs_f64();
            println!(
                "{}: sign {one:.0}/s on 1 thread, {two:.0}/s on 2 threads; verify {verify:.0}/s on 1 thread",
                key.alg()
            );
        }
    }
}
