//! A standard relying party — the `openidconnect` crate, as third-party clients use it — against
//! the real IdP over a real socket: discovery, authorization code + PKCE with ID token, nonce
//! and at_hash verification, refresh with a verified ID token, and the device grant.

use idp::testing::{TestIdp, TestIdpOptions, ALICE, ALICE_PASSWORD};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreDeviceAuthorizationResponse, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use std::io::{Read, Write};
use std::net::TcpListener;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A one-shot loopback "application" that receives the redirect, like a CLI's callback server.
fn loopback_callback() -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
        req.lines()
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string()
    });
    (format!("http://127.0.0.1:{port}"), h)
}

fn discover(idp: &TestIdp) -> CoreProviderMetadata {
    CoreProviderMetadata::discover(&IssuerUrl::new(idp.issuer()).unwrap(), &http()).unwrap()
}

/// Logs alice in with the authorization code flow; returns the client, the tokens and nonce.
fn login(
    idp: &TestIdp,
    scopes: &[&str],
) -> (
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    openidconnect::core::CoreTokenResponse,
    Nonce,
) {
    let (redirect, callback) = loopback_callback();
    let client =
        CoreClient::from_provider_metadata(discover(idp), ClientId::new("kubelogin".into()), None)
            .set_redirect_uri(RedirectUrl::new(redirect).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in scopes {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    let (url, csrf, nonce) = req.set_pkce_challenge(challenge).url();
    idp.browser_login(url.as_str(), ALICE, ALICE_PASSWORD)
        .unwrap();
    let path = callback.join().unwrap();
    let q = super::common::query_of(&format!("http://x{path}"));
    assert_eq!(
        q.get("state"),
        Some(csrf.secret()),
        "state must come back unchanged"
    );
    let code = q.get("code").expect("code").clone();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request(&http())
        .unwrap();
    (client, tokens, nonce)
}

#[test]
fn discovery_is_accepted_by_a_standard_client() {
    let idp = TestIdp::start();
    let md = discover(&idp);
    assert_eq!(md.issuer().as_str(), idp.issuer());
    assert!(md.token_endpoint().is_some());
}

#[test]
fn authcode_with_pkce_gives_a_verified_id_token_with_nonce_and_at_hash() {
    let idp = TestIdp::start();
    let (client, tokens, nonce) = login(&idp, &["email", "profile", "groups"]);
    let id_token = tokens.id_token().expect("id_token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies");
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.com")
    );
    assert_eq!(claims.email_verified(), Some(true));
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(ALICE));
    let expected = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected);
    let raw: serde_json::Value =
        shared::jwt::decode_claims_unverified(&id_token.to_string()).unwrap();
    assert_eq!(raw["groups"], serde_json::json!(["developers"]));
    assert!(tokens.refresh_token().is_some());
}

#[test]
fn refresh_returns_a_verified_id_token_for_the_same_subject() {
    let idp = TestIdp::start();
    let (client, tokens, nonce) = login(&idp, &["email"]);
    let verifier = client.id_token_verifier();
    let first = tokens
        .id_token()
        .unwrap()
        .claims(&verifier, &nonce)
        .unwrap()
        .clone();
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request(&http())
        .unwrap();
    let id2 = refreshed.id_token().expect("an ID token on refresh");
    let claims = id2
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("refreshed ID token verifies");
    assert_eq!(claims.subject(), first.subject());
    assert_eq!(
        claims.auth_time(),
        first.auth_time(),
        "auth_time is the original login's"
    );
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        tokens.refresh_token().unwrap().secret(),
        "rotated"
    );
    assert_eq!(idp.token_grants("refresh_token"), 1);
}

#[test]
fn device_code_flow_completes_with_an_id_token() {
    let idp = TestIdp::start();
    let md = discover(&idp);
    let client = CoreClient::from_provider_metadata(md, ClientId::new("kubelogin".into()), None)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{}/oauth/device/code", idp.issuer())).unwrap(),
        );
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("email".into()))
        .request(&http())
        .unwrap();
    let code = details.user_code().secret().clone();
    assert_eq!(code.len(), 9, "XXXX-XXXX");
    let approver = {
        let issuer = idp.issuer();
        let http = idp.http_client();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            idp::testing::Browser::new(http).device(&issuer, &code, ALICE, ALICE_PASSWORD, true)
        })
    };
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request(
            &http(),
            std::thread::sleep,
            Some(std::time::Duration::from_secs(30)),
        )
        .unwrap();
    approver.join().unwrap().unwrap();
    let id = tokens.id_token().expect("ID token on the device grant");
    let claims = id
        .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("alice@example.com")
    );
}

#[test]
fn es256_tokens_verify_with_a_standard_client() {
    let idp = TestIdp::start_with(TestIdpOptions {
        algorithm: "ES256".into(),
        ..Default::default()
    });
    let (client, tokens, nonce) = login(&idp, &[]);
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    tokens
        .id_token()
        .unwrap()
        .claims(&verifier, &nonce)
        .expect("ES256 ID token verifies");
}
