//! Property tests of the client's parsers (the same entry points the `cargo fuzz` targets
//! call): whatever the bytes, they never panic and either parse or return an error; valid
//! generated inputs round-trip.

use kubelogin::auth::loopback::{parse_request_head, HeadParse, RequestHead};
use kubelogin::deps::HttpResponse;
use kubelogin::exec_credential::{parse_exec_info, V1, V1BETA1};
use kubelogin::provider::{parse_device_authorization, parse_discovery, parse_token_response};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{json, Value};
use shared::discovery::ProviderMetadata;
use shared::token::TokenResponse;

const URL: &str = "https://idp.test/token";
const ISSUER: &str = "https://idp.test";

fn resp(status: u16, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    }
}

/// JSON documents built from the names the parsers look for, so the generator reaches past
/// "not JSON" into the interesting shapes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from(V1)),
        Just(Value::from(V1BETA1)),
        Just(Value::from(ISSUER)),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        let key = prop_oneof![
            Just("apiVersion".to_string()),
            Just("kind".to_string()),
            Just("spec".to_string()),
            Just("interactive".to_string()),
            Just("issuer".to_string()),
            Just("access_token".to_string()),
            Just("token_type".to_string()),
            Just("expires_in".to_string()),
            Just("error".to_string()),
            Just("error_description".to_string()),
            "[a-z_]{1,12}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::from),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..1024),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn token_response() -> impl Strategy<Value = TokenResponse> {
    (
        "[A-Za-z0-9._~+/=-]{1,64}",
        prop_oneof![Just("Bearer".to_string()), any::<String>()],
        option::of(any::<u64>()),
        option::of(any::<String>()),
        option::of(any::<String>()),
        option::of(any::<String>()),
    )
        .prop_map(
            |(access_token, token_type, expires_in, refresh_token, id_token, scope)| {
                TokenResponse {
                    access_token,
                    token_type,
                    expires_in,
                    refresh_token,
                    id_token,
                    scope,
                }
            },
        )
}

fn metadata() -> impl Strategy<Value = ProviderMetadata> {
    (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        option::of(any::<String>()),
        option::of(any::<String>()),
        vec(any::<String>(), 0..4),
        vec(any::<String>(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(auth, token, jwks, device, revoke, pkce, algs, claims)| ProviderMetadata {
                issuer: ISSUER.to_string(),
                authorization_endpoint: auth,
                token_endpoint: token,
                jwks_uri: jwks,
                device_authorization_endpoint: device,
                revocation_endpoint: revoke,
                code_challenge_methods_supported: pkce,
                id_token_signing_alg_values_supported: algs,
                claims_parameter_supported: claims,
                ..ProviderMetadata::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn exec_info_parses_or_errs(raw in prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
    ]) {
        match parse_exec_info(Some(&raw)) {
            Ok(info) => prop_assert!(info.api_version == V1 || info.api_version == V1BETA1),
            Err(e) => prop_assert!(matches!(e, kubelogin::Error::ExecInfo(_)), "{e}"),
        }
    }

    #[test]
    fn exec_info_round_trips(
        v1 in any::<bool>(),
        interactive in option::of(any::<bool>()),
        cluster in any::<bool>(),
    ) {
        let api = if v1 { V1 } else { V1BETA1 };
        let mut spec = json!({});
        if let Some(i) = interactive {
            spec["interactive"] = json!(i);
        }
        if cluster {
            spec["cluster"] = json!({"server": "https://k8s.test", "config": null});
        }
        let doc = json!({"kind": "ExecCredential", "apiVersion": api, "spec": spec});
        let info = parse_exec_info(Some(&doc.to_string())).unwrap();
        prop_assert_eq!(info.api_version, api);
        prop_assert_eq!(info.interactive, interactive);
    }

    #[test]
    fn token_response_parses_or_errs(status in 100u16..600, body in bytes()) {
        if let Ok(t) = parse_token_response(URL, &resp(status, body)) {
            prop_assert_eq!(status, 200);
            prop_assert!(!t.access_token.is_empty());
        }
    }

    #[test]
    fn token_response_round_trips(t in token_response()) {
        let body = serde_json::to_vec(&t).unwrap();
        prop_assert_eq!(parse_token_response(URL, &resp(200, body)).unwrap(), t);
    }

    /// RFC 6749 §5.2 refusals keep their code, and no provider text brings a control
    /// character to the terminal.
    #[test]
    fn token_refusals_keep_the_code_and_lose_control_characters(
        code in "[a-z_]{1,20}",
        description in option::of(any::<String>()),
        uri in option::of(any::<String>()),
        status in 400u16..500,
    ) {
        let body = json!({"error": code, "error_description": description, "error_uri": uri});
        let e = parse_token_response(URL, &resp(status, body.to_string().into_bytes()))
            .unwrap_err();
        prop_assert!(e.is_oauth(&code), "{e}");
        prop_assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
    }

    #[test]
    fn device_answer_parses_or_errs(status in 100u16..600, body in bytes()) {
        let _ = parse_device_authorization(URL, &resp(status, body));
    }

    #[test]
    fn discovery_parses_or_errs(status in 100u16..600, body in bytes()) {
        if let Ok(m) = parse_discovery(ISSUER, URL, &resp(status, body)) {
            prop_assert_eq!(status, 200);
            prop_assert_eq!(m.issuer, ISSUER);
        }
    }

    #[test]
    fn discovery_round_trips(m in metadata()) {
        let body = serde_json::to_vec(&m).unwrap();
        prop_assert_eq!(parse_discovery(ISSUER, URL, &resp(200, body)).unwrap(), m);
    }

    /// Discovery §4.3: any other issuer string is refused, and shown without control
    /// characters.
    #[test]
    fn discovery_refuses_another_issuer(mut m in metadata(), other in any::<String>()) {
        prop_assume!(other != ISSUER);
        m.issuer = other;
        let body = serde_json::to_vec(&m).unwrap();
        let e = parse_discovery(ISSUER, URL, &resp(200, body)).unwrap_err();
        prop_assert!(matches!(e, kubelogin::Error::IssuerMismatch { .. }), "{e}");
        prop_assert!(!e.to_string().chars().any(char::is_control), "{e:?}");
    }

    #[test]
    fn request_head_parses_or_errs(buf in prop_oneof![
        vec(any::<u8>(), 0..4096),
        ("[A-Z]{1,8}", any::<String>(), vec(("[!-9;-~]{1,20}", any::<String>()), 0..8))
            .prop_map(|(m, t, hs)| {
                let mut s = format!("{m} {t} HTTP/1.1\r\n");
                for (k, v) in hs {
                    s.push_str(&format!("{k}: {v}\r\n"));
                }
                s.push_str("\r\n");
                s.into_bytes()
            }),
    ]) {
        if let HeadParse::Complete(h) = parse_request_head(&buf) {
            prop_assert!(h.target.starts_with('/'));
        }
    }

    #[test]
    fn request_head_round_trips(
        target in "/[A-Za-z0-9_.~%?=&/-]{0,300}",
        host in "[a-z0-9.:]{1,30}",
    ) {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n");
        prop_assert_eq!(
            parse_request_head(raw.as_bytes()),
            HeadParse::Complete(RequestHead { method: "GET".into(), target })
        );
    }
}
