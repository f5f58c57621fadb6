//! Reading a compact JWS (RFC 7515 §7.1) *without* verifying it.
//!
//! Used only where the token was verified before (the client's cache, which stores tokens it
//! verified when it received them) or for display. Signature checks live in `openidconnect` on the
//! client and in the IdP's own key code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;

/// Why a compact JWS could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtFormatError {
    NotThreeParts,
    Base64,
    Json(String),
}

impl std::fmt::Display for JwtFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtFormatError::NotThreeParts => {
                write!(f, "not a JWT (expected three dot-separated parts)")
            }
            JwtFormatError::Base64 => write!(f, "not a JWT (a part is not base64url)"),
            JwtFormatError::Json(e) => write!(f, "not a JWT (a part is not JSON: {e})"),
        }
    }
}

impl std::error::Error for JwtFormatError {}

fn part<T: DeserializeOwned>(token: &str, index: usize) -> Result<T, JwtFormatError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtFormatError::NotThreeParts);
    };
    let raw = if index == 0 { h } else { p };
    let bytes = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .map_err(|_| JwtFormatError::Base64)?;
    serde_json::from_slice(&bytes).map_err(|e| JwtFormatError::Json(e.to_string()))
}

/// Decodes the JOSE header (RFC 7515 §4) without verification.
pub fn decode_header_unverified<T: DeserializeOwned>(token: &str) -> Result<T, JwtFormatError> {
    part(token, 0)
}

/// Decodes the claims (RFC 7519 §7.2 step 10) without verification.
pub fn decode_claims_unverified<T: DeserializeOwned>(token: &str) -> Result<T, JwtFormatError> {
    part(token, 1)
}

/// The `exp` claim of a JWT, or `None` when it has none.
pub fn expiry_unverified(token: &str) -> Result<Option<u64>, JwtFormatError> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: Option<serde_json::Number>,
    }
    let e: Exp = decode_claims_unverified(token)?;
    Ok(e.exp
        .and_then(|n| n.as_u64().or_else(|| n.as_f64().map(|f| f as u64))))
}

/// base64url without padding, RFC 7515 §2.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, JwtFormatError> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| JwtFormatError::Base64)
}

/// `at_hash`, OpenID Connect Core §3.1.3.6: the left half of the SHA-256 hash of the access
/// token, base64url encoded (for RS256 and ES256, whose hash is SHA-256).
pub fn at_hash_sha256(access_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(access_token.as_bytes());
    b64url(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_from_claims() {
        let token = format!(
            "{}.{}.sig",
            b64url(b"{\"alg\":\"RS256\"}"),
            b64url(b"{\"exp\":1700000000}")
        );
        assert_eq!(expiry_unverified(&token), Ok(Some(1_700_000_000)));
    }

    #[test]
    fn rejects_two_part_tokens() {
        assert_eq!(expiry_unverified("a.b"), Err(JwtFormatError::NotThreeParts));
        assert_eq!(
            expiry_unverified("opaque-token"),
            Err(JwtFormatError::NotThreeParts)
        );
    }

    #[test]
    fn at_hash_matches_the_spec_example_shape() {
        // 128 bits base64url encoded without padding is 22 characters.
        assert_eq!(at_hash_sha256("token").len(), 22);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any string decodes to a value or an error; nothing panics.
        #[test]
        fn any_string_decodes_or_errs(s in ".{0,300}") {
            let _ = decode_header_unverified::<serde_json::Value>(&s);
            let _ = decode_claims_unverified::<serde_json::Value>(&s);
            let _ = expiry_unverified(&s);
        }

        /// A well-formed token round-trips its header, claims and `exp`.
        #[test]
        fn encoded_claims_round_trip(exp in any::<u64>(), sub in "[ -~]{0,40}", sig in "[A-Za-z0-9_-]{0,60}") {
            let header = serde_json::json!({"alg": "RS256", "kid": "k"});
            let claims = serde_json::json!({"sub": sub, "exp": exp});
            let token = format!(
                "{}.{}.{sig}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            prop_assert_eq!(decode_header_unverified::<serde_json::Value>(&token).unwrap(), header);
            prop_assert_eq!(decode_claims_unverified::<serde_json::Value>(&token).unwrap(), claims);
            prop_assert_eq!(expiry_unverified(&token).unwrap(), Some(exp));
        }
    }
}
