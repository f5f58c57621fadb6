//! `doctor`: checks a whole setup before the user touches the cluster — the provider is
//! reachable and trusted, the issuer string is the one kube-apiserver expects (the most common
//! landmine: a trailing slash), kube-apiserver can trust the provider with its CA, the redirect
//! URIs this client uses are accepted, the signing algorithm is one kube-apiserver verifies, and
//! a real token passes kube-apiserver's OIDC rules (`shared::kube_oidc`, the same code the test
//! stand-in for kube-apiserver runs). It ends with the username and groups kube-apiserver will
//! derive, or the exact reason it will reject the token and the fix.

use crate::cli::{DoctorArgs, GrantType};
use crate::deps::{Deps, HttpRequest, HttpSettings, Method};
use crate::error::{Error, Result};
use crate::provider::Provider;
use shared::kube_oidc::Settings;

/// kube-apiserver's `--oidc-*` settings as doctor understands them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiServerOidc {
    pub issuer_url: Option<String>,
    pub client_id: Option<String>,
    pub username_claim: Option<String>,
    pub username_prefix: Option<String>,
    pub groups_claim: Option<String>,
    pub groups_prefix: Option<String>,
    pub ca_file: Option<String>,
    pub signing_algs: Vec<String>,
}

/// Reads the `oidc-*` kube-apiserver arguments from a k3s `config.yaml` (`kube-apiserver-arg`
/// entries) or a colima `k3sArgs` list: every `oidc-NAME=VALUE` found, quoted or not.
pub fn parse_k3s_config(text: &str) -> ApiServerOidc {
    let mut out = ApiServerOidc::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(i) = line.find("oidc-") else {
            continue;
        };
        let rest = line[i..].trim_end_matches(['"', '\'']);
        let Some((name, value)) = rest.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches(['"', '\'']).to_string();
        match name {
            "oidc-issuer-url" => out.issuer_url = Some(value),
            "oidc-client-id" => out.client_id = Some(value),
            "oidc-username-claim" => out.username_claim = Some(value),
            "oidc-username-prefix" => out.username_prefix = Some(value),
            "oidc-groups-claim" => out.groups_claim = Some(value),
            "oidc-groups-prefix" => out.groups_prefix = Some(value),
            "oidc-ca-file" => out.ca_file = Some(value),
            "oidc-signing-algs" => {
                out.signing_algs = value.split(',').map(|s| s.trim().to_string()).collect()
            }
            _ => {}
        }
    }
    out
}

/// Explains how two issuer strings differ, making invisible differences visible.
pub fn issuer_difference(client: &str, apiserver: &str) -> Option<String> {
    if client == apiserver {
        return None;
    }
    let (a, b) = (
        url::Url::parse(client).ok(),
        url::Url::parse(apiserver).ok(),
    );
    let mut parts = Vec::new();
    if client.trim_end_matches('/') == apiserver.trim_end_matches('/') {
        parts.push(format!(
            "only the trailing slash differs: {} vs {}",
            if client.ends_with('/') {
                "with a slash"
            } else {
                "no slash"
            },
            if apiserver.ends_with('/') {
                "with a slash"
            } else {
                "no slash"
            }
        ));
    } else if let (Some(a), Some(b)) = (a, b) {
        if a.scheme() != b.scheme() {
            parts.push(format!("scheme {} vs {}", a.scheme(), b.scheme()));
        }
        if a.host_str() != b.host_str() {
            parts.push(format!(
                "host {} vs {}",
                a.host_str().unwrap_or(""),
                b.host_str().unwrap_or("")
            ));
        }
        if a.port_or_known_default() != b.port_or_known_default() || a.port() != b.port() {
            parts.push(format!(
                "port {} vs {}",
                a.port()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "(default)".into()),
                b.port()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "(default)".into())
            ));
        }
        if a.path() != b.path() {
            parts.push(format!("path {:?} vs {:?}", a.path(), b.path()));
        }
    }
    Some(format!(
        "the client uses \"{client}\" but kube-apiserver expects \"{apiserver}\"{}; kube-apiserver compares the token's iss character for character",
        if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
    ))
}

struct Report<'d> {
    deps: &'d Deps,
    problems: usize,
}

impl Report<'_> {
    fn ok(&self, what: &str) {
        self.deps.say(&format!("[ok]   {what}"));
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.problems += 1;
        self.deps.say(&format!("[FAIL] {what}"));
        if !fix.is_empty() {
            self.deps.say(&format!("       fix: {fix}"));
        }
    }
    fn note(&self, what: &str) {
        self.deps.say(&format!("[note] {what}"));
    }
}

fn get(deps: &Deps, settings: &HttpSettings, url: &str) -> Result<crate::deps::HttpResponse> {
    let http = deps.http.build(settings)?;
    http.send(&HttpRequest {
        method: Method::Get,
        url: url.to_string(),
        headers: Vec::new(),
        form: None,
        basic_auth: None,
    })
}

/// Runs every check; the report goes to stderr, the exit code says whether all passed.
pub fn run(deps: &Deps, args: &DoctorArgs) -> Result<String> {
    let mut rep = Report { deps, problems: 0 };
    let mut api = match &args.k3s_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("--k3s-config {}", path.display()), e))?;
            parse_k3s_config(&text)
        }
        None => ApiServerOidc::default(),
    };
    // Flags win over the file.
    let flag = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    api.issuer_url = flag(&args.apiserver_oidc_issuer_url).or(api.issuer_url);
    api.client_id = flag(&args.apiserver_oidc_client_id).or(api.client_id);
    api.username_claim = flag(&args.apiserver_oidc_username_claim).or(api.username_claim);
    api.username_prefix = flag(&args.apiserver_oidc_username_prefix).or(api.username_prefix);
    api.groups_claim = flag(&args.apiserver_oidc_groups_claim).or(api.groups_claim);
    api.groups_prefix = flag(&args.apiserver_oidc_groups_prefix).or(api.groups_prefix);
    api.ca_file = flag(&args.apiserver_oidc_ca_file).or(api.ca_file);
    if !args.apiserver_oidc_signing_algs.is_empty() {
        api.signing_algs = args.apiserver_oidc_signing_algs.clone();
    }

    let interactive = deps.prompt.is_terminal();
    let r = super::resolve(
        &args.get_token.provider,
        Some(&args.get_token.cache),
        interactive,
    )?;
    let issuer = r.provider.issuer.clone();
    let api_issuer = api.issuer_url.clone().unwrap_or_else(|| issuer.clone());
    let api_client = api
        .client_id
        .clone()
        .unwrap_or_else(|| r.provider.client_id.clone());

    // 1. Discovery, with the client's TLS settings.
    let provider = match Provider::discover(deps, &r.provider) {
        Ok(p) => {
            rep.ok(&format!(
                "the provider answers discovery at {} and its issuer is \"{issuer}\"",
                shared::discovery::discovery_url(&issuer)
            ));
            p
        }
        Err(e) => {
            let fix = match &e {
                Error::IssuerMismatch { found, .. } => format!("use --oidc-issuer-url={found} (and the same string in kube-apiserver's --oidc-issuer-url)"),
                _ if e.to_string().contains("certificate") => "pass the provider's CA with --certificate-authority=<ca.crt>".into(),
                _ => "check that the provider runs and the URL is right".into(),
            };
            rep.fail(&format!("discovery failed: {e}"), &fix);
            return finish(rep);
        }
    };

    // 2. The issuer string kube-apiserver compares against.
    match issuer_difference(&provider.metadata.issuer, &api_issuer) {
        None => rep.ok(&format!(
            "kube-apiserver's --oidc-issuer-url equals the provider's issuer \"{api_issuer}\""
        )),
        Some(d) => rep.fail(
            &format!("issuer mismatch: {d}"),
            &format!(
                "set kube-apiserver's --oidc-issuer-url={}",
                provider.metadata.issuer
            ),
        ),
    }
    if api_client != r.provider.client_id {
        rep.fail(
            &format!("kube-apiserver's --oidc-client-id is \"{api_client}\" but the client logs in as \"{}\": the token's aud will not match", r.provider.client_id),
            &format!("use the same client id on both sides (--oidc-client-id={})", r.provider.client_id),
        );
    }

    // 3. Can kube-apiserver trust the provider's certificate with what it is given?
    if api_issuer.starts_with("https://") {
        let settings = HttpSettings {
            ca_files: api.ca_file.iter().cloned().collect(),
            ca_data: Vec::new(),
            insecure_skip_tls_verify: false,
            timeout: r.provider.http.timeout,
            no_redirects: false,
        };
        let via = match &api.ca_file {
            Some(f) => format!("--oidc-ca-file={f}"),
            None => "its system roots (no --oidc-ca-file)".to_string(),
        };
        match get(
            deps,
            &settings,
            &shared::discovery::discovery_url(&api_issuer),
        ) {
            Ok(resp) if resp.status == 200 => rep.ok(&format!(
                "kube-apiserver can reach and trust the provider with {via}"
            )),
            Ok(resp) => rep.fail(
                &format!(
                    "kube-apiserver's discovery request gets HTTP {}",
                    resp.status
                ),
                "check --oidc-issuer-url",
            ),
            Err(e) => {
                let fix = match (&api.ca_file, r.provider.http.ca_files.first()) {
                    (None, Some(ca)) => {
                        format!("give kube-apiserver the provider's CA: --oidc-ca-file={ca}")
                    }
                    (None, None) => {
                        "give kube-apiserver the provider's CA with --oidc-ca-file".into()
                    }
                    (Some(_), _) => {
                        "--oidc-ca-file must be the CA that signed the provider's certificate"
                            .into()
                    }
                };
                rep.fail(
                    &format!("kube-apiserver would not trust the provider with {via}: {e}"),
                    &fix,
                );
            }
        }
    }

    // 4. The redirect URIs the client will use (browser grants only).
    if matches!(r.login.grant, GrantType::Authcode) {
        check_redirects(deps, &mut rep, &provider, &r)?;
    }

    // 5. The signing algorithm.
    let algs = if api.signing_algs.is_empty() {
        vec!["RS256".to_string()]
    } else {
        api.signing_algs.clone()
    };
    let offered = &provider.metadata.id_token_signing_alg_values_supported;
    if offered.is_empty() || offered.iter().any(|a| algs.contains(a)) {
        rep.ok(&format!(
            "the provider signs with {} and kube-apiserver accepts {}",
            offered.join(","),
            algs.join(",")
        ));
    } else {
        rep.fail(
            &format!(
                "the provider signs with {} but kube-apiserver accepts only {}",
                offered.join(","),
                algs.join(",")
            ),
            &format!(
                "set kube-apiserver's --oidc-signing-algs={}",
                offered.join(",")
            ),
        );
    }

    // 6. A real token through kube-apiserver's rules.
    let cred = match super::get_token::run(deps, &args.get_token) {
        Ok(c) => c,
        Err(e) => {
            rep.fail(
                &format!("could not get a token to check: {e}"),
                "fix the problems above, then run doctor again",
            );
            return finish(rep);
        }
    };
    let token = serde_json::from_str::<serde_json::Value>(&cred)
        .ok()
        .and_then(|v| v["status"]["token"].as_str().map(str::to_string))
        .ok_or_else(|| Error::Login("get-token returned no token".into()))?;
    let jwks_resp = get(deps, &r.provider.http, &provider.metadata.jwks_uri)?;
    let jwks: shared::jwk::JwkSet =
        serde_json::from_slice(&jwks_resp.body).map_err(|e| Error::BadResponse {
            url: provider.metadata.jwks_uri.clone(),
            message: format!("not a JWK set: {e}"),
        })?;
    let mut settings = Settings::new(&api_issuer, &api_client);
    if let Some(c) = &api.username_claim {
        settings.username_claim = c.clone();
    }
    settings.username_prefix = api.username_prefix.clone();
    settings.groups_claim = api.groups_claim.clone();
    settings.groups_prefix = api.groups_prefix.clone();
    settings.signing_algs = algs;
    let now = u64::try_from(deps.clock.now().timestamp()).unwrap_or(0);
    match shared::kube_oidc::authenticate(&settings, &jwks, &token, now) {
        Ok(user) => {
            rep.ok("a real token passes kube-apiserver's OIDC checks");
            deps.say(&format!(
                "\nkube-apiserver will see:\n  username: {}\n  groups:   {}",
                user.username,
                user.groups_with_authenticated().join(", ")
            ));
        }
        Err(reject) => rep.fail(
            &format!("kube-apiserver would reject the token: {}", reject.reason),
            &reject.fix_hint,
        ),
    }
    finish(rep)
}

fn finish(rep: Report<'_>) -> Result<String> {
    if rep.problems == 0 {
        rep.deps.say("\nall checks passed");
        Ok(String::new())
    } else {
        Err(Error::Usage(format!(
            "doctor found {} problem(s); the fixes are listed above",
            rep.problems
        )))
    }
}

/// Asks the authorization endpoint about each redirect URI the client will use, without
/// following redirects: a provider that refuses a redirect URI shows an error page (RFC 6749
/// §4.1.2.1) instead of its login page.
fn check_redirects(
    deps: &Deps,
    rep: &mut Report<'_>,
    provider: &Provider,
    r: &super::Resolved,
) -> Result<()> {
    let redirects: Vec<String> = if !r.login.redirect_url.is_empty() {
        vec![r.login.redirect_url.clone()]
    } else {
        r.login
            .listen_addresses
            .iter()
            .filter_map(|a| a.rsplit_once(':').map(|(_, p)| p.to_string()))
            .filter(|p| p != "0")
            .map(|p| format!("http://localhost:{p}"))
            .collect()
    };
    if redirects.is_empty() {
        rep.note("the loopback port is chosen at login time (--listen-address with port 0): the provider must accept any loopback port (RFC 8252 §7.3)");
        return Ok(());
    }
    let http = deps.http.build(&HttpSettings {
        no_redirects: true,
        ..r.provider.http.clone()
    })?;
    for redirect in redirects {
        let mut url = url::Url::parse(&provider.metadata.authorization_endpoint).map_err(|e| {
            Error::BadResponse {
                url: provider.metadata.authorization_endpoint.clone(),
                message: e.to_string(),
            }
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &r.provider.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", &r.provider.scope())
            .append_pair("state", "kubelogin-doctor")
            .append_pair(
                "code_challenge",
                &shared::pkce::s256_challenge("kubelogin-doctor-probe-verifier-0123456789abcdef"),
            )
            .append_pair("code_challenge_method", "S256");
        let resp = http.send(&HttpRequest {
            method: Method::Get,
            url: url.to_string(),
            headers: r.provider.request_headers.clone(),
            form: None,
            basic_auth: None,
        })?;
        let location = resp.header("location").unwrap_or("").to_string();
        if (300..400).contains(&resp.status)
            && location.starts_with(&redirect)
            && location.contains("error=")
        {
            let q: Vec<(String, String)> = url::Url::parse(&location)
                .map(|u| u.query_pairs().map(|(k, v)| (k.into(), v.into())).collect())
                .unwrap_or_default();
            let err = q
                .iter()
                .find(|(k, _)| k == "error")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let desc = q
                .iter()
                .find(|(k, _)| k == "error_description")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            rep.fail(
                &format!("the provider accepts {redirect} but refuses the request: {err} {desc}"),
                "check the client's grant types and scopes at the provider",
            );
        } else if resp.status >= 400 {
            let text = String::from_utf8_lossy(&resp.body);
            let excerpt: String = strip_tags(&text)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(200)
                .collect();
            rep.fail(
                &format!(
                    "the provider refuses the redirect URI {redirect} (HTTP {}): {excerpt}",
                    resp.status
                ),
                &format!(
                    "register {redirect} for client {} at the provider",
                    r.provider.client_id
                ),
            );
        } else {
            rep.ok(&format!("the provider accepts the redirect URI {redirect}"));
        }
    }
    Ok(())
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_k3s_and_colima_arguments() {
        let k3s = "kube-apiserver-arg:\n  - \"oidc-issuer-url=https://idp.example:8443\"\n  - oidc-client-id=kubelogin\n  # - oidc-groups-claim=ignored\n  - \"oidc-signing-algs=RS256,ES256\"\n";
        let a = parse_k3s_config(k3s);
        assert_eq!(a.issuer_url.as_deref(), Some("https://idp.example:8443"));
        assert_eq!(a.client_id.as_deref(), Some("kubelogin"));
        assert_eq!(a.groups_claim, None);
        assert_eq!(a.signing_algs, vec!["RS256", "ES256"]);
        let colima = "    - --kube-apiserver-arg=oidc-ca-file=/etc/ca.crt\n";
        assert_eq!(
            parse_k3s_config(colima).ca_file.as_deref(),
            Some("/etc/ca.crt")
        );
    }

    #[test]
    fn names_the_trailing_slash() {
        let d = issuer_difference("https://idp.example", "https://idp.example/").unwrap();
        assert!(d.contains("only the trailing slash differs"), "{d}");
        let d = issuer_difference("https://idp.example:8443", "https://idp.example").unwrap();
        assert!(d.contains("port 8443 vs (default)"), "{d}");
        assert_eq!(issuer_difference("https://a", "https://a"), None);
    }
}
