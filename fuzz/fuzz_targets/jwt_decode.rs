//! Compact JWT decoding without verification (the client's cache reads `exp` this way; the IdP
//! reads headers before choosing a key): any string gives a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = shared::jwt::decode_header_unverified::<serde_json::Value>(token);
    let _ = shared::jwt::decode_claims_unverified::<serde_json::Value>(token);
    let _ = shared::jwt::expiry_unverified(token);
});
