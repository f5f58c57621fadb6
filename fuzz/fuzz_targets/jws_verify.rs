//! JWS verification of presented tokens (bearer tokens at userinfo and introspection,
//! `id_token_hint`): any string is refused or verified, never a panic; nothing verifies that
//! the key did not sign.
#![no_main]

use idp::keys::{verify_jwt, Algorithm, SigningKey};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

fn keys() -> &'static Vec<Arc<SigningKey>> {
    static KEYS: OnceLock<Vec<Arc<SigningKey>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [Algorithm::Es256, Algorithm::Rs256]
            .into_iter()
            .filter_map(|a| SigningKey::generate(a).ok().map(Arc::new))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    // The fuzzer cannot forge a signature of a key generated at run time: whatever verifies
    // was made here, so random input must never verify.
    assert!(verify_jwt::<serde_json::Value>(keys(), token).is_err());
});
