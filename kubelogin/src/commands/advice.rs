//! What `doctor` and `setup` tell about kube-apiserver's side before the user edits it: an
//! `http://` issuer it refuses, and the claims to map the username and groups from, read off
//! the real token.

use serde_json::Value;

/// Why kube-apiserver refuses `issuer`, when it does: it accepts only an https issuer
/// (kube-apiserver reference, `--oidc-issuer-url`: "only HTTPS scheme will be accepted";
/// structured authentication: `jwt.issuer.url` "must use the https scheme").
pub fn http_issuer(issuer: &str) -> Option<String> {
    let scheme = url::Url::parse(issuer)
        .map(|u| u.scheme().to_string())
        .unwrap_or_default();
    (scheme != "https").then(|| {
        format!(
            "kube-apiserver refuses the issuer \"{issuer}\": --oidc-issuer-url (and an AuthenticationConfiguration's issuer.url) must be https, and kube-apiserver does not start with it"
        )
    })
}

/// The fix for [`http_issuer`]: the IdP's built-in TLS.
pub const HTTPS_FIX: &str = "serve the IdP over https with its built-in TLS: `kubelogin-idp certs --host <name> --out <dir>` writes a CA and a server certificate; start `kubelogin-idp serve` with BASE_URL=https://<name>:<port>, TLS_CERT_FILE=<dir>/server.crt and TLS_KEY_FILE=<dir>/server.key; then pass <dir>/ca.crt as --certificate-authority here and as kube-apiserver's --oidc-ca-file";

/// The claims kube-apiserver should read, from what the login asked for and the token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `--oidc-username-claim`: `email` when the email scope was asked for and the token says
    /// `email_verified: true`, else `sub`.
    pub username: &'static str,
    /// `--oidc-groups-claim=groups` when the token carries `groups`.
    pub groups: Option<&'static str>,
    /// One line per suggestion, saying why.
    pub why: Vec<String>,
}

/// Suggests the username and groups claims. kube-apiserver uses `email` as the username only
/// when `email_verified` is true (Kubernetes docs, Authenticating, OpenID Connect Tokens:
/// "If the claim is email, email_verified must be present and true"), and it needs no prefix
/// then, because an email address cannot collide with another issuer's.
pub fn suggest_claims(extra_scopes: &[String], claims: &Value) -> Claims {
    let asked_email = extra_scopes
        .iter()
        .flat_map(|s| s.split([',', ' ']))
        .any(|s| s.trim() == "email");
    let email = claims.get("email").and_then(Value::as_str);
    let verified = claims.get("email_verified").and_then(Value::as_bool) == Some(true);
    let mut why = Vec::new();
    let username = match (asked_email, email, verified) {
        (true, Some(e), true) => {
            why.push(format!(
                "--oidc-username-claim=email: the email scope was asked for and the token's email \"{e}\" is verified, so users are named by their address"
            ));
            "email"
        }
        (true, Some(_), false) => {
            why.push("--oidc-username-claim=sub: the token's email is not verified (email_verified is not true), which kube-apiserver refuses for the email claim".into());
            "sub"
        }
        _ => "sub",
    };
    let groups = match claims.get("groups") {
        Some(Value::Array(_)) | Some(Value::String(_)) => {
            why.push(
                "--oidc-groups-claim=groups: the token carries groups, so RBAC can bind them"
                    .into(),
            );
            Some("groups")
        }
        _ => None,
    };
    Claims {
        username,
        groups,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_https_issuers_pass() {
        assert!(http_issuer("https://idp.example").is_none());
        let p = http_issuer("http://127.0.0.1:8080").unwrap();
        assert!(p.contains("must be https"), "{p}");
        assert!(http_issuer("not a url").is_some());
        assert!(HTTPS_FIX.contains("kubelogin-idp certs"));
    }

    #[test]
    fn email_needs_the_scope_and_verification() {
        let verified = json!({"sub":"u","email":"a@example.com","email_verified":true});
        let scopes = vec!["email".to_string()];
        let c = suggest_claims(&scopes, &verified);
        assert_eq!(c.username, "email");
        assert!(c.why[0].contains("a@example.com"), "{c:?}");
        // Not asked for: kept on sub.
        assert_eq!(suggest_claims(&[], &verified).username, "sub");
        // Not verified: kube-apiserver would refuse it.
        let unverified = json!({"sub":"u","email":"a@example.com","email_verified":false});
        let c = suggest_claims(&scopes, &unverified);
        assert_eq!(c.username, "sub");
        assert!(c.why[0].contains("not verified"), "{c:?}");
        assert_eq!(c.groups, None);
    }

    #[test]
    fn groups_when_the_token_has_them() {
        let c = suggest_claims(&[], &json!({"sub":"u","groups":["dev"]}));
        assert_eq!(c.groups, Some("groups"));
        assert_eq!(c.username, "sub");
        assert_eq!(suggest_claims(&[], &json!({"sub":"u"})).groups, None);
    }
}
