//! RFC 7636 Proof Key for Code Exchange.

use sha2::{Digest, Sha256};

/// `S256` code challenge, RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))).
pub fn s256_challenge(verifier: &str) -> String {
    crate::jwt::b64url(&Sha256::digest(verifier.as_bytes()))
}

/// A verifier is 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`,
/// RFC 7636 §4.1.
pub fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An `S256` challenge is the base64url (no padding) SHA-256 of the verifier: exactly 43
/// characters of the base64url alphabet (RFC 7636 §4.2).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn s256_challenge_shape() {
        assert!(is_s256_challenge(&s256_challenge("a-verifier")));
        assert!(!is_s256_challenge(&"a".repeat(42)));
        assert!(!is_s256_challenge(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn verifier_length_and_alphabet() {
        assert!(is_valid_verifier(&"a".repeat(43)));
        assert!(!is_valid_verifier(&"a".repeat(42)));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}
