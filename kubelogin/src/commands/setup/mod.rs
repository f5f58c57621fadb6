//! `setup`: log in once (bypassing the cache) and print, in one screen, the claims, the
//! `kubectl config set-credentials` command, the RBAC commands and the API server flags; with
//! the `--write-*` flags ([`write`]), also write them: kubeconfig ([`kubeconfig`]),
//! AuthenticationConfiguration (`shared::authn_config`), k3s config ([`k3s`]) and RBAC
//! ([`rbac`]).

mod k3s;
mod kubeconfig;
mod rbac;
mod write;

pub use write::WriteArgs;

use clap::ValueEnum;

use crate::auth::GrantType;
use crate::cli::{self, PkceMethod, ProviderArgs, SetupArgs, DEFAULT_LISTEN_ADDRESS};
use crate::deps::Deps;
use crate::error::{Error, Result};

use super::advice;
use super::get_token::obtain;

/// Returns the text for stdout.
pub fn run(deps: &Deps, args: &SetupArgs) -> Result<String> {
    let interactive = deps.prompt.is_terminal();
    let r = super::resolve(&args.provider, None, interactive)?;
    // The writers' flags (and the cluster's version) are checked before the login.
    let plan = write::prepare(deps, &args.write, &args.provider)?;
    // No cache: a login every time, and nothing kept.
    let got = obtain(deps, &r, None)?;
    // Verified just now by the login; decoded again only to print every claim.
    let claims = got
        .claims()
        .map_err(|e| Error::invalid("the token is not a JWT, no claims to show", e))?;
    // Also on stderr: the failure must be seen even when stdout goes to a file.
    if let Some(problem) = advice::http_issuer(&r.provider.issuer) {
        deps.say(&format!(
            "[FAIL] {problem}\n       fix: {}",
            advice::HTTPS_FIX
        ));
    }
    // The flow the login used (`auto` decided on this machine and provider), which get-token
    // will pick too: the kubeconfig's interactiveMode must give it stdin when it prompts.
    let grant = got.grant.unwrap_or(r.login.grant);
    let exec = exec_entry(&args.provider, &grant);
    write::run(deps, &args.write, &plan, &args.provider, exec, &claims)?;
    Ok(render(&args.provider, &grant, &claims))
}

/// kubectl's `--exec-interactive-mode` for the flow `grant` (with `auto` already decided): a
/// prompt needs stdin, which kubectl gives the plugin only with `IfAvailable` or `Always`
/// (Kubernetes, Authenticating, client-go credential plugins: with `Never` "this exec plugin
/// never needs to use standard input"). authcode-keyboard reads the code there, and the
/// password grant the missing password.
fn interactive_mode(a: &ProviderArgs, grant: &GrantType) -> &'static str {
    let needs_stdin = matches!(grant, GrantType::AuthcodeKeyboard)
        || (matches!(grant, GrantType::Password) && a.password.is_empty());
    if needs_stdin {
        "IfAvailable"
    } else {
        "Never"
    }
}

/// The kubeconfig `users[].user.exec` entry that `set-credentials` below would make.
fn exec_entry(a: &ProviderArgs, grant: &GrantType) -> serde_json::Value {
    let mut args = vec!["oidc-login".to_string(), "get-token".to_string()];
    args.extend(given_flags(a));
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "kubectl",
        "args": args,
        "env": null,
        "interactiveMode": interactive_mode(a, grant),
        "provideClusterInfo": false,
    })
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%#".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// kubelogin's defaults of the numeric flags, left out when unchanged.
const DEFAULT_AUTHENTICATION_TIMEOUT_SEC: u64 = 180;
const DEFAULT_HTTP_TIMEOUT_SEC: u64 = 30;

/// Every flag the user set (not the defaults), as `--flag=value`; the password is left out
/// (it would land in the kubeconfig in clear) and asked for on the terminal instead.
pub fn given_flags(a: &ProviderArgs) -> Vec<String> {
    let mut flags: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("oidc-issuer-url", &a.oidc_issuer_url),
        ("oidc-client-id", &a.oidc_client_id),
    ] {
        if let Some(v) = value {
            flags.push((name, v.clone()));
        }
    }
    for (name, value) in string_flags(a) {
        if !value.is_empty() {
            flags.push((name, value.clone()));
        }
    }
    for (name, values) in list_flags(a) {
        flags.extend(values.iter().map(|v| (name, v.clone())));
    }
    for (name, on) in switch_flags(a) {
        if on {
            flags.push((name, "true".to_string()));
        }
    }
    flags.extend(choice_flags(a));
    flags.extend(listen_and_timeout_flags(a));
    flags
        .into_iter()
        .map(|(name, value)| format!("--{name}={value}"))
        .collect()
}

/// The string flags, empty when not given.
fn string_flags(a: &ProviderArgs) -> [(&'static str, &String); 8] {
    [
        ("oidc-client-secret", &a.oidc_client_secret),
        ("oidc-redirect-url", &a.oidc_redirect_url),
        (
            "oidc-device-authorization-endpoint",
            &a.oidc_device_authorization_endpoint,
        ),
        ("browser-command", &a.browser_command),
        (
            "open-url-after-authentication",
            &a.open_url_after_authentication,
        ),
        ("local-server-cert", &a.local_server_cert),
        ("local-server-key", &a.local_server_key),
        ("username", &a.username),
    ]
}

/// The repeatable flags.
fn list_flags(a: &ProviderArgs) -> [(&'static str, &Vec<String>); 5] {
    [
        ("oidc-extra-scope", &a.oidc_extra_scope),
        ("oidc-request-header", &a.oidc_request_header),
        (
            "oidc-auth-request-extra-params",
            &a.oidc_auth_request_extra_params,
        ),
        ("certificate-authority", &a.certificate_authority),
        ("certificate-authority-data", &a.certificate_authority_data),
    ]
}

/// The boolean flags.
fn switch_flags(a: &ProviderArgs) -> [(&'static str, bool); 3] {
    [
        ("oidc-use-access-token", a.oidc_use_access_token),
        ("skip-open-browser", a.skip_open_browser),
        ("insecure-skip-tls-verify", a.insecure_skip_tls_verify),
    ]
}

/// PKCE and the grant type, by their command-line names; the deprecated `--oidc-use-pkce`
/// as what it means.
fn choice_flags(a: &ProviderArgs) -> Vec<(&'static str, String)> {
    let mut flags = Vec::new();
    if a.oidc_use_pkce {
        flags.push(("oidc-pkce-method", "S256".to_string()));
    }
    if a.oidc_pkce_method != PkceMethod::Auto {
        flags.push(("oidc-pkce-method", value_name(a.oidc_pkce_method)));
    }
    if a.grant_type != cli::GrantType::Auto {
        flags.push(("grant-type", value_name(a.grant_type)));
    }
    flags
}

/// The loopback addresses (the deprecated `--listen-port` as addresses) and the timeouts,
/// when not the defaults.
fn listen_and_timeout_flags(a: &ProviderArgs) -> Vec<(&'static str, String)> {
    let mut flags = Vec::new();
    if a.listen_address.join(",") != DEFAULT_LISTEN_ADDRESS {
        flags.push(("listen-address", a.listen_address.join(",")));
    }
    for p in &a.listen_port {
        flags.push(("listen-address", format!("127.0.0.1:{p}")));
    }
    if a.authentication_timeout_sec != DEFAULT_AUTHENTICATION_TIMEOUT_SEC {
        flags.push((
            "authentication-timeout-sec",
            a.authentication_timeout_sec.to_string(),
        ));
    }
    if a.http_timeout_sec != DEFAULT_HTTP_TIMEOUT_SEC {
        flags.push(("http-timeout-sec", a.http_timeout_sec.to_string()));
    }
    flags
}

/// A value's name on the command line, as clap parses it.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn render(a: &ProviderArgs, grant: &GrantType, claims: &serde_json::Value) -> String {
    let issuer = a.oidc_issuer_url.clone().unwrap_or_default();
    let client_id = a.oidc_client_id.clone().unwrap_or_default();
    let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("");
    let groups: Vec<String> = claims
        .get("groups")
        .and_then(|g| g.as_array())
        .map(|g| {
            g.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let pretty = serde_json::to_string_pretty(claims).unwrap_or_default();
    let mut s = String::new();
    s.push_str("## 1. Authenticated with the OpenID Connect provider\n\n");
    s.push_str("The ID token has these claims:\n\n");
    s.push_str(&pretty);
    s.push_str("\n\n## 2. Set up the kubeconfig\n\n");
    let mode = interactive_mode(a, grant);
    let mut lines = vec![
        "kubectl config set-credentials oidc".to_string(),
        "--exec-api-version=client.authentication.k8s.io/v1".to_string(),
        format!("--exec-interactive-mode={mode}"),
        "--exec-command=kubectl".to_string(),
        "--exec-arg=oidc-login".to_string(),
        "--exec-arg=get-token".to_string(),
    ];
    for flag in given_flags(a) {
        lines.push(format!("--exec-arg={}", quote(&flag)));
    }
    s.push_str(&lines.join(" \\\n  "));
    s.push('\n');
    if !a.password.is_empty() {
        s.push_str("# --password is left out: the plugin asks for it on the terminal.\n");
    }
    s.push_str("\n## 3. Grant access to the cluster\n\n");
    let suggested = advice::suggest_claims(&a.oidc_extra_scope, claims);
    // kube-apiserver prefixes a non-email username claim with the issuer and `#`.
    let user = match (
        suggested.username,
        claims.get("email").and_then(|v| v.as_str()),
    ) {
        ("email", Some(email)) => email.to_string(),
        _ => format!("{issuer}#{sub}"),
    };
    s.push_str(&format!(
        "kubectl create clusterrolebinding oidc-{} --clusterrole=cluster-admin --user={}\n",
        rbac_name(sub),
        quote(&user)
    ));
    for g in &groups {
        s.push_str(&format!(
            "kubectl create clusterrolebinding oidc-group-{} --clusterrole=view --group={}\n",
            rbac_name(g),
            quote(&format!("oidc:{g}"))
        ));
    }
    s.push_str("\n## 4. Set up the Kubernetes API server\n\n");
    s.push_str(&apiserver_notes(&issuer, &suggested));
    let mut api_flags = vec![
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={client_id}"),
        format!("--oidc-username-claim={}", suggested.username),
    ];
    if let Some(claim) = suggested.groups {
        api_flags.push(format!("--oidc-groups-claim={claim}"));
        api_flags.push("--oidc-groups-prefix=oidc:".to_string());
    }
    if let Some(ca) = a.certificate_authority.first() {
        api_flags.push(format!("--oidc-ca-file={ca}"));
    }
    s.push_str("kube-apiserver flags:\n");
    for f in &api_flags {
        s.push_str(&format!("  {}\n", quote(f)));
    }
    s.push_str("\nk3s (/etc/rancher/k3s/config.yaml):\nkube-apiserver-arg:\n");
    for f in &api_flags {
        s.push_str(&format!("  - \"{}\"\n", f.trim_start_matches("--")));
    }
    s
}

/// Above kube-apiserver's flags: the failure of an http issuer (kube-apiserver would not start
/// with it) and why each claim is suggested.
fn apiserver_notes(issuer: &str, suggested: &advice::Claims) -> String {
    let mut s = String::new();
    if let Some(problem) = advice::http_issuer(issuer) {
        s.push_str(&format!(
            "[FAIL] {problem}\n       fix: {}\n\n",
            advice::HTTPS_FIX
        ));
    }
    for why in &suggested.why {
        s.push_str(&format!("# {why}\n"));
    }
    if !suggested.why.is_empty() {
        s.push('\n');
    }
    s
}

/// A Kubernetes object name from a subject or group (RFC 1123 label characters).
fn rbac_name(s: &str) -> String {
    rbac::name_chars(s, 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn screen_has_all_four_parts() {
        let cli = Cli::try_parse_from([
            "kubectl-oidc_login",
            "setup",
            "--oidc-issuer-url=https://idp.example",
            "--oidc-client-id=kubernetes",
            "--oidc-extra-scope=email",
            "--listen-address=127.0.0.1:9000",
        ])
        .unwrap();
        let Some(Command::Setup(a)) = cli.command else {
            panic!()
        };
        let claims =
            serde_json::json!({"sub":"u1","groups":["developers"],"iss":"https://idp.example"});
        let text = render(&a.provider, &GrantType::Authcode, &claims);
        assert!(
            text.contains("--exec-arg=--oidc-issuer-url=https://idp.example"),
            "{text}"
        );
        assert!(text.contains("--exec-arg=--oidc-extra-scope=email"));
        assert!(text.contains("--exec-arg=--listen-address=127.0.0.1:9000"));
        assert!(text.contains("--exec-interactive-mode=Never"));
        assert!(text.contains("--user=https://idp.example#u1"), "{text}");
        assert!(text.contains("--group=oidc:developers"));
        assert!(text.contains("--oidc-groups-claim=groups"));
        assert!(text.contains("kube-apiserver-arg:"));
        assert!(!text.contains("[FAIL]"), "an https issuer passes: {text}");
    }

    #[test]
    fn http_issuer_fails_and_email_is_suggested() {
        let cli = Cli::try_parse_from([
            "kubectl-oidc_login",
            "setup",
            "--oidc-issuer-url=http://127.0.0.1:8080",
            "--oidc-client-id=kubelogin",
            "--oidc-extra-scope=email",
        ])
        .unwrap();
        let Some(Command::Setup(a)) = cli.command else {
            panic!()
        };
        let claims = serde_json::json!({"sub":"u1","email":"a@example.com","email_verified":true});
        let text = render(&a.provider, &GrantType::Authcode, &claims);
        let fail = text
            .find("[FAIL] kube-apiserver refuses the issuer")
            .unwrap();
        let flags = text.find("kube-apiserver flags:").unwrap();
        assert!(fail < flags, "the failure comes before the flags: {text}");
        assert!(text.contains("kubelogin-idp certs"), "{text}");
        assert!(text.contains("--oidc-username-claim=email"), "{text}");
        assert!(text.contains("--user=a@example.com"), "{text}");
        assert!(!text.contains("--oidc-groups-claim"), "{text}");
    }
}
