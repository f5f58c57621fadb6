//! ID token verification and provider answers that must be refused, with the cache untouched.

use std::time::Duration;

use kubelogin::Error;

use crate::harness::Harness;
use crate::stub::{Alg, Config};

fn refused(config: Config, words: &str) {
    let h = Harness::new(config);
    let err = h.run(&[]).unwrap_err();
    assert!(matches!(err, Error::IdToken(_)), "{err}");
    assert!(
        err.to_string().to_lowercase().contains(words),
        "expected {words:?} in: {err}"
    );
    assert!(h.cache_entries().is_empty());
}

#[test]
fn rs256_and_es256_are_accepted() {
    for alg in [Alg::Es256, Alg::Rs256] {
        let h = Harness::new(Config {
            alg,
            ..Config::default()
        });
        h.run(&[]).unwrap();
    }
}

#[test]
fn wrong_issuer() {
    refused(
        Config {
            iss: Some("https://evil.example".into()),
            ..Config::default()
        },
        "issuer",
    );
}

#[test]
fn wrong_audience() {
    refused(
        Config {
            aud: Some("someone-else".into()),
            ..Config::default()
        },
        "audience",
    );
}

#[test]
fn expired() {
    refused(
        Config {
            id_token_lifetime: -10,
            ..Config::default()
        },
        "expired",
    );
}

#[test]
fn bad_signature() {
    refused(
        Config {
            alg: Alg::BadSignature,
            ..Config::default()
        },
        "signature",
    );
}

#[test]
fn alg_none() {
    refused(
        Config {
            alg: Alg::None,
            ..Config::default()
        },
        "",
    );
}

/// The alg-confusion forgery: HS256 keyed with the provider's public key (stub.rs). The
/// refusal names the algorithm, so it comes from the algorithm rule, not a bad signature.
#[test]
fn hmac_keyed_with_the_public_key_is_refused() {
    // The forgery is a real HMAC: it verifies with the public key PEM as the secret.
    let h = Harness::new(Config::default());
    let token = h
        .stub
        .sign(Alg::Hs256, &serde_json::json!({"sub": "mallory"}));
    let (input, sig) = token.rsplit_once('.').unwrap();
    let pem = {
        use rsa::pkcs8::EncodePublicKey;
        crate::stub::rsa_key()
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(pem.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    mac.verify_slice(&shared::jwt::b64url_decode(sig).unwrap())
        .unwrap();
    refused(
        Config {
            alg: Alg::Hs256,
            ..Config::default()
        },
        "hs256",
    );
}

#[test]
fn wrong_nonce() {
    refused(
        Config {
            wrong_nonce: true,
            ..Config::default()
        },
        "nonce",
    );
}

#[test]
fn wrong_at_hash() {
    refused(
        Config {
            wrong_at_hash: true,
            ..Config::default()
        },
        "at_hash",
    );
}

fn bad_discovery(config: Config, words: &[&str], extra: &[&str]) {
    let h = Harness::new(config);
    let err = h.run(extra).unwrap_err().to_string();
    for w in words {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
    assert!(h.fake.browser.opened().is_empty());
    assert!(h.cache_entries().is_empty());
}

#[test]
fn issuer_mismatch_shows_both_strings_and_the_trailing_slash() {
    let h = Harness::new(Config::default());
    let with_slash = format!("{}/", h.stub.issuer);
    h.stub
        .config(|c| c.discovery_issuer = Some(with_slash.clone()));
    let err = h.run(&[]).unwrap_err().to_string();
    assert!(err.contains(&format!("\"{}\"", h.stub.issuer)), "{err}");
    assert!(err.contains(&format!("\"{with_slash}\"")), "{err}");
    assert!(err.contains("trailing slash"), "{err}");
}

#[test]
fn html_instead_of_json() {
    bad_discovery(
        Config {
            discovery_body: Some((
                200,
                "text/html".into(),
                "<!DOCTYPE html><html><body>Sign in</body></html>".into(),
            )),
            ..Config::default()
        },
        &["expected a JSON document", "text/html", "<!DOCTYPE html>"],
        &[],
    );
}

#[test]
fn malformed_json() {
    bad_discovery(
        Config {
            discovery_body: Some((200, "application/json".into(), "{\"issuer\": ".into())),
            ..Config::default()
        },
        &["expected a JSON document"],
        &[],
    );
}

#[test]
fn not_found() {
    bad_discovery(
        Config {
            discovery_body: Some((404, "text/html".into(), "<h1>404</h1>".into())),
            ..Config::default()
        },
        &["HTTP 404"],
        &[],
    );
}

#[test]
fn oversized_body() {
    bad_discovery(
        Config {
            discovery_body: Some((200, "application/json".into(), " ".repeat(2 * 1024 * 1024))),
            ..Config::default()
        },
        &["larger than"],
        &[],
    );
}

#[test]
fn slow_provider_times_out() {
    bad_discovery(
        Config {
            slow_discovery: Some(Duration::from_secs(4)),
            ..Config::default()
        },
        &["timed out"],
        &["--http-timeout-sec=1"],
    );
}

#[test]
fn unreachable_issuer() {
    let h = Harness::new(Config::default());
    let cli = <kubelogin::Cli as clap::Parser>::try_parse_from([
        "kubectl-oidc_login",
        "get-token",
        "--oidc-issuer-url=http://127.0.0.1:1",
        "--oidc-client-id=x",
        &format!("--token-cache-dir={}", h.cache_dir().display()),
    ])
    .unwrap();
    let err = kubelogin::run(cli, h.fake.deps.clone()).unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}
