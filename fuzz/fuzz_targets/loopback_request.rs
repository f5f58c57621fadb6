//! The loopback callback server's request-head parser: bytes from any local process give a
//! request, "need more" or an HTTP error status, never a panic.
#![no_main]

use kubelogin::auth::loopback::{parse_request_head, HeadParse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let HeadParse::Invalid(status) = parse_request_head(data) {
        assert!((400..600).contains(&status));
    }
});
