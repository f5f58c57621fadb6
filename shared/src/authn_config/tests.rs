//! One test per start-up validation rule and per step of token authentication with an
//! `AuthenticationConfiguration`, each an input and kube-apiserver's outcome for it.

use super::*;
use crate::kube_oidc::tests::{good_claims, jwks, sign, ISS, NOW};
use crate::kube_oidc::RejectKind;
use serde_json::{json, Map, Value};

fn tmpl() -> Template {
    Template {
        api_version: V1.into(),
        issuer_url: ISS.into(),
        ca_pem: None,
        audiences: vec!["kubelogin".into()],
        username_claim: "email".into(),
        username_prefix: "oidc:".into(),
        groups_claim: Some("groups".into()),
        groups_prefix: "oidc:".into(),
    }
}

fn config_yaml(jwt_yaml: &str) -> String {
    format!("apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n{jwt_yaml}")
}

/// The fields of every error kube-apiserver would report for `yaml`.
fn errors_of(yaml: &str) -> Vec<String> {
    let config = parse(yaml).unwrap();
    validate(&config).iter().map(|e| e.to_string()).collect()
}

/// A minimal valid authenticator with `issuer` and extra YAML lines under `claimMappings`.
fn one(issuer: &str, mappings: &str) -> String {
    config_yaml(&format!(
        "- issuer:\n    url: {issuer}\n    audiences: [kubelogin]\n  claimMappings:\n{mappings}"
    ))
}

const SUB: &str = "    username:\n      claim: sub\n      prefix: \"oidc:\"\n";

fn claims_of(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn the_template_is_valid_and_round_trips_through_yaml() {
    for version in [V1, V1BETA1] {
        let mut t = tmpl();
        t.api_version = version.into();
        t.ca_pem = Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
        let c = template(&t);
        assert_eq!(validate(&c), vec![]);
        let yaml = to_yaml(&c).unwrap();
        assert_eq!(parse(&yaml).unwrap(), c, "{yaml}");
        assert!(yaml.contains("certificateAuthority: |"), "{yaml}");
    }
}

#[test]
fn api_version_follows_the_kubernetes_minor() {
    assert_eq!(api_version_for(29), None);
    assert_eq!(api_version_for(30), Some(V1BETA1));
    assert_eq!(api_version_for(33), Some(V1BETA1));
    assert_eq!(api_version_for(34), Some(V1));
}

#[test]
fn a_valid_file_has_no_errors() {
    assert_eq!(errors_of(&one(ISS, SUB)), Vec::<String>::new());
}

#[test]
fn issuer_must_be_https() {
    let e = errors_of(&one("http://127.0.0.1:8080", SUB));
    assert!(
        e.len() == 1 && e[0].starts_with("jwt[0].issuer.url:") && e[0].contains("https"),
        "{e:?}"
    );
}

#[test]
fn issuer_must_have_no_query() {
    let e = errors_of(&one("https://idp.example/?tenant=a", SUB));
    assert!(
        e.len() == 1 && e[0].contains("must not contain a query"),
        "{e:?}"
    );
}

#[test]
fn issuer_must_have_no_fragment() {
    let e = errors_of(&one("https://idp.example/#x", SUB));
    assert!(
        e.len() == 1 && e[0].contains("must not contain a fragment"),
        "{e:?}"
    );
}

#[test]
fn issuer_must_have_no_user_info() {
    let e = errors_of(&one("https://me:pw@idp.example", SUB));
    assert!(
        e.len() == 1 && e[0].contains("username or password"),
        "{e:?}"
    );
}

#[test]
fn issuers_must_be_unique() {
    let a = format!("- issuer:\n    url: {ISS}\n    audiences: [a]\n  claimMappings:\n{SUB}");
    let e = errors_of(&config_yaml(&format!("{a}{a}")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("jwt[1].issuer.url: duplicate issuer URL"),
        "{e:?}"
    );
}

#[test]
fn at_least_one_audience_and_match_any_for_several() {
    let none = config_yaml(&format!(
        "- issuer:\n    url: {ISS}\n    audiences: []\n  claimMappings:\n{SUB}"
    ));
    let e = errors_of(&none);
    assert!(
        e.len() == 1 && e[0].contains("at least one audience"),
        "{e:?}"
    );
    let two = config_yaml(&format!(
        "- issuer:\n    url: {ISS}\n    audiences: [a, b]\n  claimMappings:\n{SUB}"
    ));
    let e = errors_of(&two);
    assert!(
        e.len() == 1 && e[0].contains("audienceMatchPolicy"),
        "{e:?}"
    );
    let ok = two.replace(
        "audiences: [a, b]",
        "audiences: [a, b]\n    audienceMatchPolicy: MatchAny",
    );
    assert_eq!(errors_of(&ok), Vec::<String>::new());
}

#[test]
fn username_claim_needs_a_prefix_and_an_expression_none() {
    let e = errors_of(&one(ISS, "    username:\n      claim: sub\n"));
    assert!(
        e.len() == 1 && e[0].starts_with("jwt[0].claimMappings.username.prefix"),
        "{e:?}"
    );
    let e = errors_of(&one(
        ISS,
        "    username:\n      expression: claims.sub\n      prefix: \"x:\"\n",
    ));
    assert!(
        e.len() == 1 && e[0].contains("may not be set when expression"),
        "{e:?}"
    );
    let e = errors_of(&one(
        ISS,
        "    username:\n      expression: claims.sub\n      claim: sub\n",
    ));
    assert!(e.len() == 1 && e[0].contains("mutually exclusive"), "{e:?}");
}

#[test]
fn email_in_a_username_expression_needs_email_verified() {
    let e = errors_of(&one(
        ISS,
        "    username:\n      expression: \"'oidc:' + claims.email\"\n",
    ));
    assert!(
        e.len() == 1 && e[0].contains("claims.email_verified is not used"),
        "{e:?}"
    );
    let checked = one(
        ISS,
        "    username:\n      expression: \"claims.email_verified ? 'oidc:' + claims.email : ''\"\n",
    );
    assert_eq!(errors_of(&checked), Vec::<String>::new());
}

#[test]
fn extra_keys_are_domain_prefixed_lowercase_and_not_reserved() {
    for (key, want) in [
        ("team", "domain-prefixed path"),
        ("Example.com/team", "lowercase"),
        ("example.com/", "empty path"),
        ("kubernetes.io/team", "reserved"),
        ("foo.k8s.io/team", "reserved"),
    ] {
        let e = errors_of(&one(
            ISS,
            &format!("{SUB}    extra:\n    - key: {key}\n      valueExpression: claims.sub\n"),
        ));
        assert!(e.len() == 1 && e[0].contains(want), "{key}: {e:?}");
    }
    let ok = one(
        ISS,
        &format!(
            "{SUB}    extra:\n    - key: example.com/team\n      valueExpression: claims.sub\n"
        ),
    );
    assert_eq!(errors_of(&ok), Vec::<String>::new());
}

#[test]
fn cel_that_does_not_compile_is_reported_with_its_field() {
    let e = errors_of(&one(
        ISS,
        "    username:\n      expression: \"claims.sub +\"\n",
    ));
    assert!(
        e.len() == 1
            && e[0].starts_with("jwt[0].claimMappings.username.expression: compilation failed"),
        "{e:?}"
    );
}

#[test]
fn unknown_fields_and_wrong_kinds_are_refused() {
    assert!(parse(&one(ISS, SUB).replace("audiences:", "audience:")).is_err());
    let e = errors_of(&one(ISS, SUB).replace("kind: AuthenticationConfiguration", "kind: Config"));
    assert!(e.len() == 1 && e[0].starts_with("kind:"), "{e:?}");
}

#[test]
fn a_real_token_through_the_template() {
    let config = template(&tmpl());
    let user = authenticate(&config, &jwks(), &sign(&good_claims()), NOW).unwrap();
    assert_eq!(user.username, "oidc:alice@example.com");
    assert_eq!(user.groups, vec!["oidc:developers", "oidc:ops"]);
    assert_eq!(
        user.extra.get(crate::kube_oidc::CREDENTIAL_ID_KEY),
        Some(&vec!["JTI=j-1".to_string()])
    );
}

#[test]
fn the_template_refuses_an_unverified_or_unstated_email() {
    let config = template(&tmpl());
    for verified in [json!(false), Value::Null] {
        let mut c = good_claims();
        if verified.is_null() {
            c.as_object_mut().unwrap().remove("email_verified");
        } else {
            c["email_verified"] = verified;
        }
        let r = authenticate(&config, &jwks(), &sign(&c), NOW).unwrap_err();
        assert_eq!(r.kind, RejectKind::ClaimValidationRule, "{r}");
        // false breaks the rule; a missing claim makes the expression fail (no such key).
        assert!(r.reason.contains("email_verified"), "{r}");
    }
}

#[test]
fn the_template_refuses_system_names() {
    let mut t = tmpl();
    t.username_prefix = String::new();
    let mut c = good_claims();
    c["email"] = json!("system:admin");
    let r = authenticate(&template(&t), &jwks(), &sign(&c), NOW).unwrap_err();
    assert_eq!(r.kind, RejectKind::UserValidationRule, "{r}");
    assert!(r.reason.contains("\"system:admin\""), "{r}");
    t.groups_prefix = String::new();
    let mut c = good_claims();
    c["groups"] = json!(["system:masters"]);
    let r = authenticate(&template(&t), &jwks(), &sign(&c), NOW).unwrap_err();
    assert_eq!(r.kind, RejectKind::UserValidationRule, "{r}");
}

#[test]
fn the_authenticator_is_chosen_by_issuer_and_audiences_match_any() {
    let mut config = template(&tmpl());
    let mut other = config.jwt[0].clone();
    other.issuer.url = "https://other.example".into();
    config.jwt.insert(0, other);
    config.jwt[1].issuer.audiences = vec!["else".into(), "kubelogin".into()];
    assert!(authenticate(&config, &jwks(), &sign(&good_claims()), NOW).is_ok());
    config.jwt[1].issuer.audiences = vec!["else".into()];
    let r = authenticate(&config, &jwks(), &sign(&good_claims()), NOW).unwrap_err();
    assert_eq!(r.kind, RejectKind::AudienceMismatch, "{r}");
    config.jwt.remove(1);
    let r = authenticate(&config, &jwks(), &sign(&good_claims()), NOW).unwrap_err();
    assert_eq!(r.kind, RejectKind::IssuerMismatch, "{r}");
}

#[test]
fn cel_mappings_give_username_groups_uid_and_extra() {
    let yaml = one(
        ISS,
        "    username:\n      expression: \"claims.email_verified ? 'corp:' + claims.email : ''\"\n    groups:\n      expression: \"claims.groups.map(g, 'team:' + g)\"\n    uid:\n      expression: claims.sub\n    extra:\n    - key: example.com/tenant\n      valueExpression: \"'acme'\"\n    - key: example.com/none\n      valueExpression: \"''\"\n",
    );
    let config = parse(&yaml).unwrap();
    assert_eq!(validate(&config), vec![]);
    let user = evaluate_claims(&config.jwt[0], &claims_of(good_claims())).unwrap();
    assert_eq!(user.username, "corp:alice@example.com");
    assert_eq!(user.groups, vec!["team:developers", "team:ops"]);
    assert_eq!(user.uid.as_deref(), Some("u-123"));
    assert_eq!(
        user.extra.get("example.com/tenant"),
        Some(&vec!["acme".to_string()])
    );
    assert!(!user.extra.contains_key("example.com/none"));
}

#[test]
fn a_cel_mapping_rejects_a_token() {
    let yaml = one(
        ISS,
        "    username:\n      expression: \"'corp:' + claims.preferred_username\"\n",
    );
    let config = parse(&yaml).unwrap();
    assert_eq!(validate(&config), vec![]);
    let r = evaluate_claims(&config.jwt[0], &claims_of(good_claims())).unwrap_err();
    assert_eq!(r.kind, RejectKind::ClaimMapping, "{r}");
    assert!(
        r.reason.starts_with("claimMappings.username.expression"),
        "{r}"
    );
    // An empty username is refused too.
    let yaml = one(
        ISS,
        "    username:\n      expression: \"claims.email_verified ? '' : claims.email\"\n",
    );
    let config = parse(&yaml).unwrap();
    let r = evaluate_claims(&config.jwt[0], &claims_of(good_claims())).unwrap_err();
    assert_eq!(r.kind, RejectKind::ClaimMapping, "{r}");
}

#[test]
fn a_cel_claim_validation_rule_rejects_with_its_message() {
    let yaml = config_yaml(&format!(
        "- issuer:\n    url: {ISS}\n    audiences: [kubelogin]\n  claimValidationRules:\n  - expression: \"'admins' in claims.groups\"\n    message: only admins\n  claimMappings:\n{SUB}"
    ));
    let config = parse(&yaml).unwrap();
    assert_eq!(validate(&config), vec![]);
    let r = evaluate_claims(&config.jwt[0], &claims_of(good_claims())).unwrap_err();
    assert_eq!(r.kind, RejectKind::ClaimValidationRule, "{r}");
    assert!(r.reason.contains("only admins"), "{r}");
    let required = config_yaml(&format!(
        "- issuer:\n    url: {ISS}\n    audiences: [kubelogin]\n  claimValidationRules:\n  - claim: hd\n    requiredValue: example.com\n  claimMappings:\n{SUB}"
    ));
    let config = parse(&required).unwrap();
    let r = evaluate_claims(&config.jwt[0], &claims_of(good_claims())).unwrap_err();
    assert!(r.reason.contains("\"hd\" is missing"), "{r}");
}

#[test]
fn username_claim_email_refuses_email_verified_false() {
    let yaml = one(
        ISS,
        "    username:\n      claim: email\n      prefix: \"\"\n",
    );
    let config = parse(&yaml).unwrap();
    let mut c = good_claims();
    c["email_verified"] = json!(false);
    let r = evaluate_claims(&config.jwt[0], &claims_of(c)).unwrap_err();
    assert_eq!(r.kind, RejectKind::EmailNotVerified, "{r}");
}
