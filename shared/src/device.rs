//! RFC 8628 device authorization grant messages.

use serde::{Deserialize, Serialize};

/// Device authorization response, RFC 8628 §3.2.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceAuthorizationResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    /// RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

/// Default polling interval when the server gives none, RFC 8628 §3.2.
pub const DEFAULT_INTERVAL_SECS: u64 = 5;
/// How much a `slow_down` answer adds to the interval, RFC 8628 §3.5.
pub const SLOW_DOWN_INCREMENT_SECS: u64 = 5;

/// The alphabet of user codes: RFC 8628 §6.1 recommends base-20 consonants, which avoid
/// vowels (no words) and look-alike characters.
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Normalises what a person typed as a user code: upper case, separators and spaces removed
/// (RFC 8628 §6.1 lets the server ignore them).
pub fn normalize_user_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Formats an 8 character user code as `XXXX-XXXX`.
pub fn format_user_code(code: &str) -> String {
    if code.len() == 8 && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_code_normalisation_ignores_case_and_separators() {
        assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDFGHJK");
        assert_eq!(format_user_code("BCDFGHJK"), "BCDF-GHJK");
    }

    #[test]
    fn alphabet_has_no_vowels_or_lookalikes() {
        for c in b"AEIOUY01" {
            assert!(!USER_CODE_ALPHABET.contains(c));
        }
        assert_eq!(USER_CODE_ALPHABET.len(), 20);
    }
}
