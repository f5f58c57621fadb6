//! Redirect URI matching (RFC 6749 §3.1.2.3, RFC 8252 §7.3): for any pair, a match is either
//! the identical string or an http loopback URI differing only in its port, so nothing that
//! reaches another host or scheme is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((registered, requested)) = text.split_once('\n') else {
        return;
    };
    if shared::loopback::redirect_uri_matches(registered, requested) && registered != requested {
        let reg = url::Url::parse(registered).ok();
        let req = url::Url::parse(requested).ok();
        let (Some(reg), Some(req)) = (reg, req) else {
            panic!("matched without both parsing: {registered:?} {requested:?}");
        };
        assert_eq!(req.scheme(), "http");
        assert_eq!(reg.host_str(), req.host_str());
        assert_eq!(reg.path(), req.path());
        assert!(req.fragment().is_none());
    }
});
