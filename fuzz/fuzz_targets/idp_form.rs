//! The IdP's form-body parser (token, revocation, introspection, device endpoints): any bytes
//! give parameters or an OAuth error, never a panic; what it accepts has no empty value, no
//! repeated name and no over-long name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = idp::http::parse_form(data) {
        for (k, v) in &params {
            assert!(!v.is_empty());
            assert!(k.len() <= idp::http::MAX_PARAM_NAME);
        }
    }
});
