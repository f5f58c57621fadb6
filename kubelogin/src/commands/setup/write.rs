//! `setup --write-*`: each file is written only when its flag is given (the flag is the
//! consent), after its change is shown as a unified diff on stderr, atomically
//! (`shared::fs::write_atomic`), and keeping whatever else an existing file holds.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;
use shared::authn_config::{self, Template};

use crate::deps::{Deps, HttpRequest, HttpSettings, Method};
use crate::error::{Error, Result};

use super::{k3s, kubeconfig, rbac};

/// The flags of the writers.
#[derive(Debug, Clone, Default, Args)]
pub struct WriteArgs {
    /// Add or update the user entry (and, with --context, a context) in this kubeconfig
    /// [default: the first file of $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH", num_args = 0..=1, require_equals = true,
          default_missing_value = "")]
    pub write_kubeconfig: Option<String>,
    /// $KUBECONFIG, as kubectl gives it to plugins: where --write-kubeconfig writes by default
    /// and where the cluster for --kubernetes-version is looked up.
    #[arg(long, hide = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// The kubeconfig user entry's name.
    #[arg(long, default_value = "oidc")]
    pub user: String,
    /// Also add or update this kubeconfig context, joining --cluster and --user.
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// The kubeconfig cluster of --context, and the API server asked for /version
    /// [default: the current context's cluster].
    #[arg(long)]
    pub cluster: Option<String>,
    /// Write kube-apiserver's AuthenticationConfiguration (Kubernetes 1.30 and later) here.
    #[arg(long, value_name = "PATH")]
    pub write_authentication_config: Option<PathBuf>,
    /// Write k3s's kube-apiserver-arg entries into this config.yaml (flags before Kubernetes
    /// 1.30, --authentication-config from 1.30 on).
    #[arg(long, value_name = "PATH")]
    pub write_k3s_config: Option<PathBuf>,
    /// Write RoleBindings/ClusterRoleBindings for the user and the token's groups into DIR.
    #[arg(long, value_name = "DIR")]
    pub write_rbac: Option<PathBuf>,
    /// The cluster's Kubernetes version (e.g. 1.32 or v1.33.1+k3s1) [default: the API
    /// server's /version].
    #[arg(long)]
    pub kubernetes_version: Option<String>,
    /// The claim kube-apiserver takes the username from [default: email when the token has
    /// a verified email, else sub].
    #[arg(long)]
    pub apiserver_oidc_username_claim: Option<String>,
    /// The prefix kube-apiserver puts before the username.
    #[arg(long, default_value = "oidc:")]
    pub apiserver_oidc_username_prefix: String,
    /// The claim kube-apiserver takes the groups from [default: groups when the token has it].
    #[arg(long)]
    pub apiserver_oidc_groups_claim: Option<String>,
    /// The prefix kube-apiserver puts before each group.
    #[arg(long, default_value = "oidc:")]
    pub apiserver_oidc_groups_prefix: String,
    /// The provider's CA for kube-apiserver (inline in the AuthenticationConfiguration,
    /// --oidc-ca-file in flags) [default: the first --certificate-authority].
    #[arg(long)]
    pub apiserver_oidc_ca_file: Option<String>,
    /// The ClusterRole bound to the user by --write-rbac.
    #[arg(long, default_value = "cluster-admin")]
    pub rbac_user_role: String,
    /// The ClusterRole bound to each group by --write-rbac.
    #[arg(long, default_value = "view")]
    pub rbac_group_role: String,
    /// Write RoleBindings in this namespace instead of ClusterRoleBindings.
    #[arg(long)]
    pub rbac_namespace: Option<String>,
}

impl WriteArgs {
    fn any(&self) -> bool {
        self.write_kubeconfig.is_some()
            || self.write_authentication_config.is_some()
            || self.write_k3s_config.is_some()
            || self.write_rbac.is_some()
    }

    /// The kubeconfig written or read: the flag's path, else $KUBECONFIG's first file, else
    /// ~/.kube/config.
    fn kubeconfig_path(&self, deps: &Deps) -> Result<PathBuf> {
        if let Some(p) = self.write_kubeconfig.as_deref().filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(first) = self
            .kubeconfig
            .as_deref()
            .and_then(|k| std::env::split_paths(k).find(|p| !p.as_os_str().is_empty()))
        {
            return Ok(first);
        }
        match &deps.env.home {
            Some(home) => Ok(home.join(".kube").join("config")),
            None => Err(Error::usage(
                "no home directory: give --write-kubeconfig=PATH",
            )),
        }
    }
}

/// What is known before the login: the Kubernetes minor version when a writer needs it.
pub struct Plan {
    minor: Option<u32>,
}

/// Checks the flags and finds the Kubernetes version before the login, so a mistake costs no
/// login.
pub fn prepare(deps: &Deps, w: &WriteArgs, provider: &crate::cli::ProviderArgs) -> Result<Plan> {
    if w.write_authentication_config.is_some() || w.write_k3s_config.is_some() {
        // kube-apiserver refuses an issuer that is not https, with the flags and the file alike.
        let issuer = provider.oidc_issuer_url.as_deref().unwrap_or_default();
        let client = provider.oidc_client_id.as_deref().unwrap_or_default();
        if let Err(e) = shared::kube_oidc::Settings::new(issuer, client).validate() {
            return Err(Error::usage(format!(
                "kube-apiserver would refuse this provider: {e}; serve it over TLS (kubelogin-idp \
                 certs, then TLS_CERT_FILE/TLS_KEY_FILE) and use its https:// issuer"
            )));
        }
    }
    let needs_version = w.write_authentication_config.is_some() || w.write_k3s_config.is_some();
    let minor = if needs_version {
        Some(kubernetes_minor(deps, w)?)
    } else {
        None
    };
    if let (Some(minor), Some(_)) = (minor, &w.write_authentication_config) {
        if authn_config::api_version_for(minor).is_none() {
            return Err(Error::usage(format!(
                "Kubernetes 1.{minor} has no structured authentication configuration (1.30 and \
                 later): use --write-k3s-config (flags) or the kube-apiserver flags setup prints"
            )));
        }
    }
    // An existing file setup cannot edit is refused now, before the login, and left as it is.
    if w.write_kubeconfig.is_some() {
        let path = w.kubeconfig_path(deps)?;
        if let Some(old) = read_existing(&path)? {
            kubeconfig::update(Some(&old), &w.user, Value::Null, None)
                .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        }
    }
    if let Some(path) = &w.write_k3s_config {
        if let Some(old) = read_existing(path)? {
            k3s::update(Some(&old), &[])
                .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(Plan { minor })
}

/// The kube-apiserver mapping the writers use, and what it makes of the token's claims.
pub struct Mapping {
    pub issuer: String,
    pub client_id: String,
    pub username_claim: String,
    pub username_prefix: String,
    pub groups_claim: Option<String>,
    pub groups_prefix: String,
    pub ca_file: Option<String>,
    /// The username kube-apiserver will derive from this token.
    pub username: String,
    /// The groups (prefixed) it will derive.
    pub groups: Vec<String>,
}

impl Mapping {
    fn new(
        w: &WriteArgs,
        issuer: &str,
        client_id: &str,
        ca: Option<&String>,
        claims: &Value,
    ) -> Self {
        let verified_email = claims.get("email").is_some_and(Value::is_string)
            && claims.get("email_verified") == Some(&Value::Bool(true));
        let username_claim = w
            .apiserver_oidc_username_claim
            .clone()
            .unwrap_or_else(|| if verified_email { "email" } else { "sub" }.to_string());
        let groups_claim = w
            .apiserver_oidc_groups_claim
            .clone()
            .or_else(|| claims.get("groups").map(|_| "groups".to_string()));
        let username = format!(
            "{}{}",
            w.apiserver_oidc_username_prefix,
            claims
                .get(&username_claim)
                .and_then(Value::as_str)
                .unwrap_or_default()
        );
        let groups = groups_claim
            .as_ref()
            .map(|c| match claims.get(c) {
                Some(Value::String(g)) => vec![g.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default()
            .into_iter()
            .map(|g| format!("{}{g}", w.apiserver_oidc_groups_prefix))
            .collect();
        Mapping {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            username_claim,
            username_prefix: w.apiserver_oidc_username_prefix.clone(),
            groups_claim,
            groups_prefix: w.apiserver_oidc_groups_prefix.clone(),
            ca_file: w.apiserver_oidc_ca_file.clone().or_else(|| ca.cloned()),
            username,
            groups,
        }
    }
}

/// Runs each writer whose flag is given, after the login.
pub fn run(
    deps: &Deps,
    w: &WriteArgs,
    plan: &Plan,
    provider: &crate::cli::ProviderArgs,
    exec: Value,
    claims: &Value,
) -> Result<()> {
    if !w.any() {
        return Ok(());
    }
    let issuer = provider.oidc_issuer_url.clone().unwrap_or_default();
    let client_id = provider.oidc_client_id.clone().unwrap_or_default();
    let m = Mapping::new(
        w,
        &issuer,
        &client_id,
        provider.certificate_authority.first(),
        claims,
    );
    if w.write_kubeconfig.is_some() {
        let path = w.kubeconfig_path(deps)?;
        let old = read_existing(&path)?;
        let context = w.context.as_deref().zip(w.cluster.as_deref());
        let new = kubeconfig::update(old.as_deref(), &w.user, exec, context)
            .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        show_and_write(deps, &path, old.as_deref(), &new, 0o600)?;
        if let Some(ctx) = &w.context {
            deps.say(&format!("use it with: kubectl config use-context {ctx}"));
        }
    }
    let minor = plan.minor.unwrap_or(authn_config::FIRST_MINOR);
    if let Some(path) = &w.write_authentication_config {
        let yaml = authentication_config(&m, minor)?;
        let old = read_existing(path)?;
        show_and_write(deps, path, old.as_deref(), &yaml, 0o644)?;
    }
    if let Some(path) = &w.write_k3s_config {
        let args = if authn_config::api_version_for(minor).is_some() {
            let Some(authn) = &w.write_authentication_config else {
                return Err(Error::usage(
                    "--write-k3s-config for Kubernetes 1.30 and later points kube-apiserver at \
                     the authentication configuration: give --write-authentication-config=PATH \
                     too (the path k3s reads it from)",
                ));
            };
            k3s::config_file_args(&absolute(authn))
        } else {
            k3s::flag_args(&m)
        };
        let old = read_existing(path)?;
        let new = k3s::update(old.as_deref(), &args)
            .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        show_and_write(deps, path, old.as_deref(), &new, 0o600)?;
        deps.say("restart k3s to apply it: sudo systemctl restart k3s");
    }
    if let Some(dir) = &w.write_rbac {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("--write-rbac {}", dir.display()), e))?;
        let roles = rbac::Roles {
            user: &w.rbac_user_role,
            group: &w.rbac_group_role,
            namespace: w.rbac_namespace.as_deref(),
        };
        for (name, yaml) in rbac::bindings(&m.username, &m.groups, &roles) {
            let path = dir.join(format!("{name}.yaml"));
            let old = read_existing(&path)?;
            show_and_write(deps, &path, old.as_deref(), &yaml, 0o644)?;
        }
        deps.say(&format!(
            "apply them with: kubectl apply -f {}",
            dir.display()
        ));
    }
    Ok(())
}

/// The AuthenticationConfiguration for Kubernetes `1.minor`, checked by the same rules
/// `doctor` and the e2e stand-in apply.
fn authentication_config(m: &Mapping, minor: u32) -> Result<String> {
    let api_version = authn_config::api_version_for(minor).unwrap_or(authn_config::V1BETA1);
    let ca_pem = match &m.ca_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Error::io(format!("the provider's CA {f}"), e))?,
        ),
        None => None,
    };
    let config = authn_config::template(&Template {
        api_version: api_version.to_string(),
        issuer_url: m.issuer.clone(),
        ca_pem,
        audiences: vec![m.client_id.clone()],
        username_claim: m.username_claim.clone(),
        username_prefix: m.username_prefix.clone(),
        groups_claim: m.groups_claim.clone(),
        groups_prefix: m.groups_prefix.clone(),
    });
    let problems = authn_config::validate(&config);
    if let Some(first) = problems.first() {
        return Err(Error::usage(format!(
            "kube-apiserver would refuse this AuthenticationConfiguration: {first}"
        )));
    }
    authn_config::to_yaml(&config)
        .map_err(|e| Error::invalid("cannot write the AuthenticationConfiguration", e))
}

/// The most bytes read from a file setup edits (a kubeconfig with many clusters is still far
/// below).
const MAX_EDITED_FILE_BYTES: u64 = 16 << 20;

/// The file's text, or `None` when it does not exist.
fn read_existing(path: &Path) -> Result<Option<String>> {
    use std::io::Read as _;
    let what = || path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(what(), e)),
    };
    let mut text = String::new();
    file.take(MAX_EDITED_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(what(), e))?;
    if text.len() as u64 > MAX_EDITED_FILE_BYTES {
        return Err(Error::usage(format!(
            "{}: larger than {MAX_EDITED_FILE_BYTES} bytes, not edited",
            what()
        )));
    }
    Ok(Some(text))
}

/// Shows the change as a unified diff on stderr, then writes it atomically (an existing
/// file's permission bits are kept); nothing when the file already says it.
fn show_and_write(deps: &Deps, path: &Path, old: Option<&str>, new: &str, mode: u32) -> Result<()> {
    let shown = path.display().to_string();
    if old == Some(new) {
        deps.say(&format!("{shown} is up to date"));
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(old.unwrap_or_default(), new)
        .unified_diff()
        .header(if old.is_some() { &shown } else { "/dev/null" }, &shown)
        .to_string();
    let diff: Vec<String> = diff.lines().map(redact).collect();
    deps.say(&diff.join("\n"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let mode = existing_mode(path).unwrap_or(mode);
    shared::fs::write_atomic(path, new.as_bytes(), mode)
        .map_err(|e| Error::io(shown.clone(), e))?;
    deps.say(&format!("wrote {shown}"));
    Ok(())
}

/// Keys whose values are credentials: a kubeconfig's other users (`token`, `client-key-data`,
/// `password`, auth-provider `id-token`/`refresh-token`/`client-secret`) and the plugin's own
/// `--oidc-client-secret`/`--password` in exec args.
const SECRET_KEYS: &[&str] = &[
    "token",
    "client-key-data",
    "password",
    "id-token",
    "refresh-token",
    "client-secret",
];
const SECRET_FLAGS: &[&str] = &["--oidc-client-secret=", "--password="];

/// A diff line with any credential's value replaced: the diff goes to stderr, and its context
/// lines can show entries setup does not own (CONVENTIONS.md §9: no secret in output).
fn redact(line: &str) -> String {
    for flag in SECRET_FLAGS {
        if let Some(i) = line.find(flag) {
            return format!("{}{flag}<redacted>", &line[..i]);
        }
    }
    let body = line
        .get(1..)
        .unwrap_or_default()
        .trim_start()
        .trim_start_matches("- ");
    for key in SECRET_KEYS {
        if let Some(value) = body.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            if !value.trim().is_empty() {
                if let Some(i) = line.find(&format!("{key}:")) {
                    return format!("{}{key}: <redacted>", &line[..i]);
                }
            }
        }
    }
    line.to_string()
}

#[cfg(unix)]
fn existing_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn existing_mode(_: &Path) -> Option<u32> {
    None
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The Kubernetes minor version: `--kubernetes-version`, else the API server's `/version`
/// (the cluster of --cluster, or of the current context, in the kubeconfig).
fn kubernetes_minor(deps: &Deps, w: &WriteArgs) -> Result<u32> {
    if let Some(v) = &w.kubernetes_version {
        return parse_minor(v).ok_or_else(|| {
            Error::usage(format!(
                "--kubernetes-version {v:?}: expected 1.MINOR (e.g. 1.32 or v1.33.1+k3s1)"
            ))
        });
    }
    let fix = "give --kubernetes-version (kubectl version shows it)";
    let path = w.kubeconfig_path(deps)?;
    let text = read_existing(&path)?.ok_or_else(|| {
        Error::usage(format!(
            "no kubeconfig at {} to find the API server: {fix}",
            path.display()
        ))
    })?;
    let cluster = kubeconfig::cluster(&text, w.cluster.as_deref())
        .map_err(|e| Error::usage(format!("{}: {e}: {fix}", path.display())))?;
    let settings = HttpSettings {
        ca_files: cluster.ca_file.into_iter().collect(),
        ca_data: cluster.ca_data.into_iter().collect(),
        insecure_skip_tls_verify: cluster.insecure,
        timeout: std::time::Duration::from_secs(10),
        no_redirects: false,
    };
    let url = format!("{}/version", cluster.server.trim_end_matches('/'));
    let resp = deps.http.build(&settings)?.send(&HttpRequest {
        method: Method::Get,
        url: url.clone(),
        headers: Vec::new(),
        form: None,
        basic_auth: None,
    });
    let resp = resp.map_err(|e| Error::usage(format!("{url}: {e}: {fix}")))?;
    if resp.status != 200 {
        return Err(Error::usage(format!(
            "{url} answered HTTP {}: {fix}",
            resp.status
        )));
    }
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| Error::usage(format!("{url}: not a version: {e}: {fix}")))?;
    v.get("gitVersion")
        .and_then(Value::as_str)
        .and_then(parse_minor)
        .ok_or_else(|| Error::usage(format!("{url}: no gitVersion: {fix}")))
}

/// The minor of `1.MINOR[.PATCH][+build]`, with or without a leading `v`.
pub fn parse_minor(v: &str) -> Option<u32> {
    let v = v.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '+', '-']);
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_shown_diff() {
        assert_eq!(redact("     token: abc.def"), "     token: <redacted>");
        assert_eq!(
            redact("+    client-key-data: LS0t"),
            "+    client-key-data: <redacted>"
        );
        assert_eq!(
            redact("-  - --oidc-client-secret=s3cret"),
            "-  - --oidc-client-secret=<redacted>"
        );
        assert_eq!(
            redact("+      - --password=pw"),
            "+      - --password=<redacted>"
        );
        assert_eq!(redact("   user:"), "   user:");
        assert_eq!(redact("+    tokenFile: /x"), "+    tokenFile: /x");
        assert_eq!(redact("+- token-cache-dir"), "+- token-cache-dir");
    }

    #[test]
    fn minor_versions() {
        assert_eq!(parse_minor("1.32"), Some(32));
        assert_eq!(parse_minor("v1.33.1+k3s1"), Some(33));
        assert_eq!(parse_minor("v1.29.0-rc.1"), Some(29));
        assert_eq!(parse_minor("2.0"), None);
        assert_eq!(parse_minor("one"), None);
    }

    #[test]
    fn mapping_prefers_a_verified_email_and_prefixes() {
        let w = WriteArgs {
            apiserver_oidc_username_prefix: "oidc:".into(),
            apiserver_oidc_groups_prefix: "oidc:".into(),
            ..Default::default()
        };
        let claims = serde_json::json!({"sub":"u1","email":"a@x.example","email_verified":true,"groups":["dev"]});
        let m = Mapping::new(&w, "https://idp", "k", None, &claims);
        assert_eq!(
            (m.username_claim.as_str(), m.username.as_str()),
            ("email", "oidc:a@x.example")
        );
        assert_eq!(m.groups, vec!["oidc:dev"]);
        let unverified =
            serde_json::json!({"sub":"u1","email":"a@x.example","email_verified":false});
        let m = Mapping::new(&w, "https://idp", "k", None, &unverified);
        assert_eq!((m.username.as_str(), m.groups_claim), ("oidc:u1", None));
    }
}
