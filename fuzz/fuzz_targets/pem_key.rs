//! Signing-key PEM loading (`JWT_PRIVATE_KEY_PATH`, keys read back from the database): any text
//! gives a key or an error naming what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = idp::keys::SigningKey::from_pem(text);
    }
});
