//! `doctor`: checks a whole setup before the user touches the cluster — the provider is
//! reachable and trusted, the issuer string is the one kube-apiserver expects (the most common
//! landmine: a trailing slash), kube-apiserver can trust the provider with its CA, the redirect
//! URIs this client uses are accepted, the signing algorithm is one kube-apiserver verifies, and
//! a real token passes kube-apiserver's OIDC rules (`shared::kube_oidc`, the same code the test
//! stand-in for kube-apiserver runs). It ends with the username and groups kube-apiserver will
//! derive, or the exact reason it will reject the token and the fix.
//!
//! Each check is a method of `Doctor`, numbered and run in order by [`run`]; the token it
//! checks comes from `get_token::obtain`, as get-token would hand it to kubectl.

use shared::authn_config::{self, AuthenticationConfiguration};
use shared::kube_oidc::Settings;

use crate::auth::GrantType;
use crate::cli::DoctorArgs;
use crate::deps::{Deps, Http, HttpRequest, HttpResponse, HttpSettings, Method};
use crate::error::{Error, ResponseProblem, Result};
use crate::exec_credential::parse_exec_info;
use crate::provider::Provider;

use super::get_token::{obtain, Obtained};
use super::Resolved;

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
    /// `--authentication-config`: the file's path.
    pub authentication_config: Option<String>,
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
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(i) = line.find("authentication-config=") {
            let value = &line[i + "authentication-config=".len()..];
            out.authentication_config = Some(value.trim().trim_matches(['"', '\'']).to_string());
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

/// Runs every check in order; the report goes to stderr, the exit code says whether all
/// passed.
pub fn run(deps: &Deps, args: &DoctorArgs) -> Result<String> {
    let api = apiserver_settings(args)?;
    // The token checked is the one get-token would hand kubectl, so KUBERNETES_EXEC_INFO is
    // read as get-token reads it; a bad one fails only the token check.
    let exec_info = parse_exec_info(deps.env.exec_info.as_deref());
    let interactive = match &exec_info {
        Ok(info) => super::interactive(deps, info.interactive),
        Err(_) => deps.prompt.is_terminal(),
    };
    let get_token = &args.get_token;
    let r = super::resolve(&get_token.provider, Some(&get_token.cache), interactive)?;
    let structured = load_authentication_config(&api)?;
    let mut doctor = Doctor::new(deps, &r, api);
    if let Some(config) = structured {
        doctor.check_authentication_config(config);
    }
    let Some(provider) = doctor.check_discovery() else {
        return doctor.finish();
    };
    doctor.check_issuer(&provider);
    doctor.check_client_id();
    doctor.check_apiserver_trust();
    // `auto` picks the browser login on a desktop: its redirect URIs are worth checking.
    if matches!(r.login.grant, GrantType::Authcode | GrantType::Auto) {
        doctor.check_redirects(&provider)?;
    }
    doctor.check_signing_algs(&provider);
    doctor.note_flow(&provider);
    let token = exec_info.and_then(|_| {
        let cache = super::flags::cache_policy(deps, &get_token.cache, get_token.force_refresh);
        obtain(deps, &r, Some(&cache))
    });
    doctor.check_token(&provider, token)?;
    doctor.finish()
}

/// The checks, run in order by [`run`]; each says `[ok]`, `[FAIL]` with the fix, or `[note]`
/// on stderr.
struct Doctor<'d> {
    deps: &'d Deps,
    r: &'d Resolved,
    api: ApiServerOidc,
    /// kube-apiserver's `--oidc-issuer-url`, else the client's.
    api_issuer: String,
    /// kube-apiserver's `--oidc-client-id`, else the client's.
    api_client: String,
    /// kube-apiserver's `--oidc-signing-algs`, else its default RS256.
    api_algs: Vec<String>,
    /// kube-apiserver's `--authentication-config`, when it has one (instead of the flags).
    structured: Option<AuthenticationConfiguration>,
    /// Its issuer's inline CA, as base64 of PEM.
    structured_ca: Option<String>,
    problems: usize,
}

impl<'d> Doctor<'d> {
    fn new(deps: &'d Deps, r: &'d Resolved, api: ApiServerOidc) -> Doctor<'d> {
        Doctor {
            deps,
            r,
            api_issuer: api
                .issuer_url
                .clone()
                .unwrap_or_else(|| r.provider.issuer.clone()),
            api_client: api
                .client_id
                .clone()
                .unwrap_or_else(|| r.provider.client_id.clone()),
            api_algs: if api.signing_algs.is_empty() {
                vec!["RS256".to_string()]
            } else {
                api.signing_algs.clone()
            },
            api,
            structured: None,
            structured_ca: None,
            problems: 0,
        }
    }

    /// Check 0: an `AuthenticationConfiguration` is validated with kube-apiserver's start-up
    /// rules (Kubernetes docs, "Authenticating" > "Using Authentication Configuration"), and
    /// its authenticator for the client's issuer gives the issuer, audiences, algorithms and
    /// CA the checks below compare with.
    fn check_authentication_config(&mut self, config: AuthenticationConfiguration) {
        let errors = authn_config::validate(&config);
        if errors.is_empty() {
            self.ok("the authentication configuration passes kube-apiserver's validation");
        }
        for e in &errors {
            self.fail(
                &format!("kube-apiserver would refuse the authentication configuration: {e}"),
                "fix that field (kube-apiserver does not start, or keeps its previous configuration on reload)",
            );
        }
        let client_issuer = &self.r.provider.issuer;
        let jwt = config
            .jwt
            .iter()
            .find(|j| &j.issuer.url == client_issuer)
            .or(config.jwt.first());
        match jwt {
            Some(jwt) => {
                self.api_issuer = jwt.issuer.url.clone();
                let client = &self.r.provider.client_id;
                self.api_client = if jwt.issuer.audiences.contains(client) {
                    client.clone()
                } else {
                    jwt.issuer.audiences.join(",")
                };
                self.api.ca_file = None;
                self.structured_ca = jwt.issuer.certificate_authority.as_ref().map(|pem| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(pem)
                });
            }
            None => self.fail(
                "the authentication configuration has no jwt authenticator",
                "add one for the provider (kubectl oidc-login setup --write-authentication-config=PATH writes it)",
            ),
        }
        self.api_algs = shared::kube_oidc::SUPPORTED_ALGS
            .iter()
            .map(|a| a.to_string())
            .collect();
        self.structured = Some(config);
    }

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

    /// Check 1: Discovery, with the client's TLS settings. Without it nothing else can be checked.
    fn check_discovery(&mut self) -> Option<Provider<'d>> {
        let (deps, r) = (self.deps, self.r);
        let issuer = &r.provider.issuer;
        match Provider::discover(deps, &r.provider) {
            Ok(p) => {
                self.ok(&format!(
                    "the provider answers discovery at {} and its issuer is \"{issuer}\"",
                    shared::discovery::discovery_url(issuer)
                ));
                Some(p)
            }
            Err(e) => {
                let fix = match &e {
                    Error::IssuerMismatch { found, .. } => format!("use --oidc-issuer-url={found} (and the same string in kube-apiserver's --oidc-issuer-url)"),
                    _ if e.to_string().contains("certificate") => "pass the provider's CA with --certificate-authority=<ca.crt>".into(),
                    _ => "check that the provider runs and the URL is right".into(),
                };
                self.fail(&format!("discovery failed: {e}"), &fix);
                None
            }
        }
    }

    /// Check 2: The issuer string kube-apiserver compares the token's `iss` against; it must be
    /// https, or kube-apiserver does not start.
    fn check_issuer(&mut self, provider: &Provider) {
        let issuer = &provider.metadata.issuer;
        let http = super::advice::http_issuer(&self.api_issuer);
        if let Some(problem) = &http {
            self.fail(problem, super::advice::HTTPS_FIX);
        }
        match issuer_difference(issuer, &self.api_issuer) {
            None if http.is_some() => {}
            None => self.ok(&format!(
                "kube-apiserver's --oidc-issuer-url equals the provider's issuer \"{}\"",
                self.api_issuer
            )),
            Some(d) => self.fail(
                &format!("issuer mismatch: {d}"),
                &format!("set kube-apiserver's --oidc-issuer-url={issuer}"),
            ),
        }
    }

    /// Check 2b: The client id kube-apiserver expects in the token's `aud`.
    fn check_client_id(&mut self) {
        let client = &self.r.provider.client_id;
        if &self.api_client != client {
            let what = format!("kube-apiserver's --oidc-client-id is \"{}\" but the client logs in as \"{client}\": the token's aud will not match", self.api_client);
            self.fail(
                &what,
                &format!("use the same client id on both sides (--oidc-client-id={client})"),
            );
        }
    }

    /// Check 3: Whether kube-apiserver can trust the provider's certificate with what it is given.
    fn check_apiserver_trust(&mut self) {
        if !self.api_issuer.starts_with("https://") {
            return;
        }
        let settings = HttpSettings {
            ca_files: self.api.ca_file.iter().cloned().collect(),
            ca_data: self.structured_ca.iter().cloned().collect(),
            insecure_skip_tls_verify: false,
            timeout: self.r.provider.http.timeout,
            no_redirects: false,
        };
        let via = match (&self.api.ca_file, &self.structured_ca) {
            (Some(f), _) => format!("--oidc-ca-file={f}"),
            (None, Some(_)) => "the configuration's certificateAuthority".to_string(),
            (None, None) => "its system roots (no --oidc-ca-file)".to_string(),
        };
        let url = shared::discovery::discovery_url(&self.api_issuer);
        match get(self.deps, &settings, &url) {
            Ok(resp) if resp.status == 200 => self.ok(&format!(
                "kube-apiserver can reach and trust the provider with {via}"
            )),
            Ok(resp) => self.fail(
                &format!(
                    "kube-apiserver's discovery request gets HTTP {}",
                    resp.status
                ),
                "check --oidc-issuer-url",
            ),
            Err(e) => {
                let fix = match (&self.api.ca_file, self.r.provider.http.ca_files.first()) {
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
                self.fail(
                    &format!("kube-apiserver would not trust the provider with {via}: {e}"),
                    &fix,
                );
            }
        }
    }

    /// Check 4: The redirect URIs the client will use (browser logins only). The authorization
    /// endpoint is asked about each without following redirects: a provider that refuses a
    /// redirect URI shows an error page (RFC 6749 §4.1.2.1) instead of its login page.
    fn check_redirects(&mut self, provider: &Provider) -> Result<()> {
        let redirects = self.redirect_uris();
        if redirects.is_empty() {
            self.note("the loopback port is chosen at login time (--listen-address with port 0): the provider must accept any loopback port (RFC 8252 §7.3)");
            return Ok(());
        }
        let http = self.deps.http.build(&HttpSettings {
            no_redirects: true,
            ..self.r.provider.http.clone()
        })?;
        for redirect in redirects {
            let resp = self.ask_authorization(http.as_ref(), provider, &redirect)?;
            self.judge_redirect(&redirect, &resp);
        }
        Ok(())
    }

    /// `--oidc-redirect-url`, else `http://localhost:PORT` for each fixed loopback port.
    fn redirect_uris(&self) -> Vec<String> {
        let login = &self.r.login;
        if !login.redirect_url.is_empty() {
            return vec![login.redirect_url.clone()];
        }
        login
            .listen_addresses
            .iter()
            .filter_map(|a| a.rsplit_once(':').map(|(_, p)| p.to_string()))
            .filter(|p| p != "0")
            .map(|p| format!("http://localhost:{p}"))
            .collect()
    }

    /// An authorization request (with a PKCE challenge, so a provider requiring one answers
    /// about the redirect URI) for `redirect`; the answer is not followed.
    fn ask_authorization(
        &self,
        http: &dyn Http,
        provider: &Provider,
        redirect: &str,
    ) -> Result<HttpResponse> {
        let endpoint = &provider.metadata.authorization_endpoint;
        let mut url = url::Url::parse(endpoint).map_err(|source| {
            Error::bad_response(
                endpoint,
                ResponseProblem::NotAUrl {
                    name: "authorization_endpoint",
                    source,
                },
            )
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.r.provider.client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", &self.r.provider.scope())
            .append_pair("state", "kubelogin-doctor")
            .append_pair(
                "code_challenge",
                &shared::pkce::s256_challenge("kubelogin-doctor-probe-verifier-0123456789abcdef"),
            )
            .append_pair("code_challenge_method", "S256");
        http.send(&HttpRequest {
            method: Method::Get,
            url: url.to_string(),
            headers: self
                .r
                .provider
                .request_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            form: None,
            basic_auth: None,
        })
    }

    /// A redirect back to `redirect` with `error=` means the URI is accepted and something
    /// else is refused; an error status means the URI itself is refused.
    fn judge_redirect(&mut self, redirect: &str, resp: &HttpResponse) {
        let location = resp.header("location").unwrap_or("");
        if (300..400).contains(&resp.status)
            && location.starts_with(redirect)
            && location.contains("error=")
        {
            let err = query_value(location, "error");
            let desc = query_value(location, "error_description");
            self.fail(
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
            self.fail(
                &format!(
                    "the provider refuses the redirect URI {redirect} (HTTP {}): {excerpt}",
                    resp.status
                ),
                &format!(
                    "register {redirect} for client {} at the provider",
                    self.r.provider.client_id
                ),
            );
        } else {
            self.ok(&format!("the provider accepts the redirect URI {redirect}"));
        }
    }

    /// Check 5: The signing algorithm: one the provider uses must be one kube-apiserver accepts.
    fn check_signing_algs(&mut self, provider: &Provider) {
        let algs = &provider.metadata.id_token_signing_alg_values_supported;
        let (offered, accepted) = (algs.join(","), self.api_algs.join(","));
        if algs.is_empty() || algs.iter().any(|a| self.api_algs.contains(a)) {
            self.ok(&format!(
                "the provider signs with {offered} and kube-apiserver accepts {accepted}"
            ));
        } else {
            self.fail(
                &format!(
                    "the provider signs with {offered} but kube-apiserver accepts only {accepted}"
                ),
                &format!("set kube-apiserver's --oidc-signing-algs={offered}"),
            );
        }
    }

    /// Note: the flow `--grant-type=auto` picks on this machine, and why.
    fn note_flow(&self, provider: &Provider) {
        let login = &self.r.login;
        if login.grant != GrantType::Auto {
            return;
        }
        let asked = crate::auth::auto::Asked {
            browser_command: login.browser_command.is_some(),
            skip_open_browser: login.skip_open_browser,
        };
        let device = provider.metadata.device_authorization_endpoint.is_some()
            || provider.cfg.device_authorization_endpoint.is_some();
        let choice = crate::auth::auto::choose(self.deps.host.as_ref(), asked, device);
        self.note(&format!("--grant-type=auto: {}", choice.message()));
    }

    /// Check 6: A real token (get-token's, from the cache, a refresh or a login) through
    /// kube-apiserver's OIDC rules; ends with the user kube-apiserver will see.
    fn check_token(&mut self, provider: &Provider, token: Result<Obtained>) -> Result<()> {
        let got = match token {
            Ok(got) => got,
            Err(e) => {
                self.fail(
                    &format!("could not get a token to check: {e}"),
                    "fix the problems above, then run doctor again",
                );
                return Ok(());
            }
        };
        let jwks_uri = &provider.metadata.jwks_uri;
        let jwks_resp = get(self.deps, &self.r.provider.http, jwks_uri)?;
        let jwks: shared::jwk::JwkSet = serde_json::from_slice(&jwks_resp.body)
            .map_err(|e| Error::bad_response(jwks_uri, ResponseProblem::NotJwks(e)))?;
        let now = u64::try_from(self.deps.clock.now().timestamp()).unwrap_or(0);
        let token = got.credential.token.expose();
        let result = match &self.structured {
            // CEL claim mappings and validation rules included.
            Some(config) => authn_config::authenticate(config, &jwks, token, now),
            None => shared::kube_oidc::authenticate(&self.kube_settings(), &jwks, token, now),
        };
        match result {
            Ok(user) => {
                self.ok("a real token passes kube-apiserver's OIDC checks");
                let mut seen = format!(
                    "\nkube-apiserver will see:\n  username: {}\n  groups:   {}",
                    user.username,
                    user.groups_with_authenticated().join(", ")
                );
                if let Some(uid) = &user.uid {
                    seen.push_str(&format!("\n  uid:      {uid}"));
                }
                for (key, values) in &user.extra {
                    seen.push_str(&format!("\n  extra:    {key}={}", values.join(",")));
                }
                self.deps.say(&seen);
            }
            Err(reject) => self.fail(
                &format!("kube-apiserver would reject the token: {}", reject.reason),
                &reject.fix_hint,
            ),
        }
        Ok(())
    }

    /// kube-apiserver's OIDC settings, as `shared::kube_oidc` reads them.
    fn kube_settings(&self) -> Settings {
        let mut settings = Settings::new(&self.api_issuer, &self.api_client);
        if let Some(c) = &self.api.username_claim {
            settings.username_claim = c.clone();
        }
        settings.username_prefix = self.api.username_prefix.clone();
        settings.groups_claim = self.api.groups_claim.clone();
        settings.groups_prefix = self.api.groups_prefix.clone();
        settings.signing_algs = self.api_algs.clone();
        settings
    }

    /// The summary line; the exit code says whether every check passed.
    fn finish(self) -> Result<String> {
        if self.problems == 0 {
            self.deps.say("\nall checks passed");
            Ok(String::new())
        } else {
            Err(Error::Usage(format!(
                "doctor found {} problem(s); the fixes are listed above",
                self.problems
            )))
        }
    }
}

fn get(deps: &Deps, settings: &HttpSettings, url: &str) -> Result<HttpResponse> {
    let http = deps.http.build(settings)?;
    http.send(&HttpRequest {
        method: Method::Get,
        url: url.to_string(),
        headers: Vec::new(),
        form: None,
        basic_auth: None,
    })
}

/// kube-apiserver's settings: the `--k3s-config` file's, with the `--apiserver-oidc-*` flags
/// winning over it.
fn apiserver_settings(args: &DoctorArgs) -> Result<ApiServerOidc> {
    let mut api = match &args.k3s_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("--k3s-config {}", path.display()), e))?;
            parse_k3s_config(&text)
        }
        None => ApiServerOidc::default(),
    };
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
    if let Some(p) = &args.authentication_config {
        api.authentication_config = Some(p.display().to_string());
    }
    Ok(api)
}

/// kube-apiserver's `--authentication-config` file (the flag's, else the k3s config's), read
/// and parsed; a file kube-apiserver could not even decode is an error.
fn load_authentication_config(api: &ApiServerOidc) -> Result<Option<AuthenticationConfiguration>> {
    let Some(path) = &api.authentication_config else {
        return Ok(None);
    };
    let what = format!("--authentication-config {path}");
    let file = std::fs::File::open(path).map_err(|e| Error::io(what.clone(), e))?;
    let mut text = String::new();
    use std::io::Read as _;
    file.take(authn_config::MAX_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(what.clone(), e))?;
    authn_config::parse(&text)
        .map(Some)
        .map_err(|e| Error::invalid(format!("{what}: kube-apiserver would not start"), e))
}

/// The first value of `name` in the query of `url`, or nothing.
fn query_value(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default()
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
    fn finds_the_authentication_config_in_a_k3s_config() {
        let k3s = "kube-apiserver-arg:\n  # - authentication-config=/old.yaml\n  - \"authentication-config=/etc/rancher/k3s/authn.yaml\"\n";
        let a = parse_k3s_config(k3s);
        assert_eq!(
            a.authentication_config.as_deref(),
            Some("/etc/rancher/k3s/authn.yaml")
        );
        assert_eq!(a.issuer_url, None);
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
