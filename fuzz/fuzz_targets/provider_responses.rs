//! What a provider answers: token responses (RFC 6749 §5.1/§5.2), discovery documents (OpenID
//! Connect Discovery §4) and device authorization responses (RFC 8628 §3.2). Any status and
//! body give a value or an error, never a panic; an accepted discovery document names exactly
//! the issuer asked for.
#![no_main]

use kubelogin::deps::HttpResponse;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://idp.example.com";

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else {
        return;
    };
    let response = HttpResponse {
        status: [200, 400, 401, 500][usize::from(status) % 4],
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
    };
    let url = "https://idp.example.com/token";
    let _ = kubelogin::provider::parse_token_response(url, &response);
    let _ = kubelogin::provider::parse_device_authorization(url, &response);
    let discovery = format!("{ISSUER}/.well-known/openid-configuration");
    if let Ok(m) = kubelogin::provider::parse_discovery(ISSUER, &discovery, &response) {
        assert_eq!(m.issuer, ISSUER);
    }
});
