//! Command line: int128/kubelogin's subcommands and flags with their exact names and defaults.
//!
//! Every flag may also come from the environment as `KUBELOGIN_` + the flag name in upper snake
//! case (kubelogin #1109); clap gives the command line precedence over the environment.
//! Boolean flags accept both `--flag` and `--flag=true|false`, as Go's pflag does, so kubeconfig
//! `exec` entries written for kubelogin keep parsing.

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default `--listen-address`: kubelogin's ports, tried in order.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8000,127.0.0.1:18000";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "kubectl-oidc_login",
    // The usage line says kubectl-oidc_login whatever argv[0] is: the shim execs the full
    // binary (kubelogin-rs) with its own path as argv[0], and clap would name that file.
    bin_name = "kubectl-oidc_login",
    about = "Login to the OpenID Connect provider (a kubectl credential plugin, drop-in compatible with int128/kubelogin)",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    // pflag lets a flag be given twice, the last one winning; kubeconfigs rely on it.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Log level: 1 flow, 2 HTTP headers, 3 HTTP bodies (shows secrets).
    #[arg(
        short = 'v',
        long = "v",
        global = true,
        env = "KUBELOGIN_V",
        default_value_t = 0
    )]
    pub verbosity: u8,

    /// Print the version to stderr.
    #[arg(long, env = "KUBELOGIN_VERSION", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub version: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run as a kubectl credential plugin: print an ExecCredential to stdout.
    #[command(args_override_self = true)]
    GetToken(GetTokenArgs),
    /// Log in once (bypassing the cache) and print the kubeconfig and cluster settings to use.
    #[command(args_override_self = true)]
    Setup(Box<SetupArgs>),
    /// Delete the token cache (disk and keyring); with --revoke, revoke the refresh token first.
    #[command(args_override_self = true)]
    Clean(CleanArgs),
    /// List the cached logins in both storages (disk and keyring): issuer, client, account
    /// name, subject, email, ID token expiry and whether a refresh token is held; never a token.
    Status(StatusArgs),
    /// Check the provider, the TLS trust, the issuer string, the redirect URIs, the signing
    /// algorithm and a real token against kube-apiserver's OIDC settings, and say what
    /// kube-apiserver will make of the token (or why it will reject it, with the fix).
    #[command(args_override_self = true)]
    Doctor(Box<DoctorArgs>),
    /// Print the version to stderr.
    Version,
    /// Print a shell completion script to stdout, e.g.
    /// `kubectl-oidc_login completion bash > /etc/bash_completion.d/kubectl-oidc_login`.
    Completion(CompletionArgs),
    /// Print the man page (roff) to stdout: `kubectl-oidc_login man | man -l -`; with a
    /// command name, that command's page (`man get-token`).
    Man(ManArgs),
}

/// `completion`.
#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// A command (get-token, setup, ...) whose page to print instead of the main page.
    pub command: Option<String>,
}

/// `doctor`: the get-token flags plus kube-apiserver's `--oidc-*` settings (flags, or read from
/// a k3s `config.yaml`; flags win).
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub get_token: GetTokenArgs,
    /// A k3s config.yaml (or colima.yaml) whose kube-apiserver-arg oidc-* entries to read.
    #[arg(long, env = "KUBELOGIN_K3S_CONFIG")]
    pub k3s_config: Option<PathBuf>,
    /// kube-apiserver's --oidc-issuer-url [default: --oidc-issuer-url].
    #[arg(long)]
    pub apiserver_oidc_issuer_url: Option<String>,
    /// kube-apiserver's --oidc-client-id [default: --oidc-client-id].
    #[arg(long)]
    pub apiserver_oidc_client_id: Option<String>,
    /// kube-apiserver's --oidc-username-claim [default: sub].
    #[arg(long)]
    pub apiserver_oidc_username_claim: Option<String>,
    /// kube-apiserver's --oidc-username-prefix.
    #[arg(long)]
    pub apiserver_oidc_username_prefix: Option<String>,
    /// kube-apiserver's --oidc-groups-claim.
    #[arg(long)]
    pub apiserver_oidc_groups_claim: Option<String>,
    /// kube-apiserver's --oidc-groups-prefix.
    #[arg(long)]
    pub apiserver_oidc_groups_prefix: Option<String>,
    /// kube-apiserver's --oidc-ca-file.
    #[arg(long)]
    pub apiserver_oidc_ca_file: Option<String>,
    /// kube-apiserver's --oidc-signing-algs [default: RS256].
    #[arg(long, value_delimiter = ',')]
    pub apiserver_oidc_signing_algs: Vec<String>,
    /// kube-apiserver's --authentication-config file (an AuthenticationConfiguration, 1.30+):
    /// validated with kube-apiserver's rules and run (CEL included) on a real token
    /// [default: the one named in --k3s-config].
    #[arg(long, value_name = "FILE", env = "KUBELOGIN_AUTHENTICATION_CONFIG")]
    pub authentication_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GetTokenArgs {
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Ignore the cached token's expiry: refresh (or log in) now.
    #[arg(long, env = "KUBELOGIN_FORCE_REFRESH", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub force_refresh: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// `--write-*`: the files setup writes (kubeconfig, AuthenticationConfiguration, k3s, RBAC).
    #[command(flatten)]
    pub write: crate::commands::setup::WriteArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Delete only the cached logins of this issuer (as `status` shows it), in both storages,
    /// instead of the whole cache; narrowed by --client-id and a non-empty --token-cache-name.
    #[arg(long, value_name = "URL", conflicts_with = "oidc_issuer_url")]
    pub issuer: Option<String>,
    /// With --issuer: only the logins of this client.
    #[arg(long, value_name = "ID", requires = "issuer")]
    pub client_id: Option<String>,
    /// Revoke the cached refresh token at the provider (RFC 7009) before deleting it; needs
    /// --oidc-issuer-url and --oidc-client-id (or --issuer) to find the entry and the
    /// revocation endpoint.
    #[arg(long, env = "KUBELOGIN_REVOKE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub revoke: bool,
}

/// `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Token cache directory [default: $KUBECACHEDIR/oidc-login or ~/.kube/cache/oidc-login].
    #[arg(long, env = "KUBELOGIN_TOKEN_CACHE_DIR")]
    pub token_cache_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// `--grant-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrantType {
    /// password when --username is given; else the browser login when a browser can be
    /// opened, device-code when there is no display (SSH, container, WSL without wslview)
    /// and the provider supports it, else authcode-keyboard. Said on stderr.
    Auto,
    Authcode,
    AuthcodeKeyboard,
    Password,
    DeviceCode,
    ClientCredentials,
}

/// `--oidc-pkce-method`. `plain` is deliberately absent (RFC 7636 §7.2: S256 is mandatory to
/// implement and `plain` protects nothing against an observed request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PkceMethod {
    /// S256 when discovery lists it in `code_challenge_methods_supported`.
    Auto,
    /// Never send a code challenge.
    No,
    /// Always S256.
    #[value(name = "S256")]
    S256,
}

/// `--token-cache-storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Storage {
    Disk,
    Keyring,
    None,
}

/// Flags that describe the provider and how to log in (get-token, setup and clean).
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Issuer URL of the provider; must equal the ID token's `iss` character for character.
    #[arg(long, env = "KUBELOGIN_OIDC_ISSUER_URL")]
    pub oidc_issuer_url: Option<String>,

    /// Client ID of the provider.
    #[arg(long, env = "KUBELOGIN_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// Client secret (confidential clients only).
    #[arg(
        long,
        env = "KUBELOGIN_OIDC_CLIENT_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub oidc_client_secret: String,

    /// Redirect URI sent to the provider; its path becomes the loopback callback path.
    #[arg(long, env = "KUBELOGIN_OIDC_REDIRECT_URL", default_value = "")]
    pub oidc_redirect_url: String,

    /// Extra scopes to request (repeatable or comma separated); `openid` is always sent.
    #[arg(long, env = "KUBELOGIN_OIDC_EXTRA_SCOPE", value_delimiter = ',')]
    pub oidc_extra_scope: Vec<String>,

    /// Give kubectl the access token instead of the ID token (a JWT or an opaque token).
    #[arg(long, env = "KUBELOGIN_OIDC_USE_ACCESS_TOKEN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub oidc_use_access_token: bool,

    /// HTTP header `key=value` added to every request to the provider (repeatable).
    #[arg(long, env = "KUBELOGIN_OIDC_REQUEST_HEADER", value_delimiter = ',')]
    pub oidc_request_header: Vec<String>,

    /// PKCE method.
    #[arg(
        long,
        env = "KUBELOGIN_OIDC_PKCE_METHOD",
        value_enum,
        default_value = "auto"
    )]
    pub oidc_pkce_method: PkceMethod,

    /// Deprecated kubelogin flag: same as --oidc-pkce-method=S256.
    #[arg(long, hide = true, env = "KUBELOGIN_OIDC_USE_PKCE", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub oidc_use_pkce: bool,

    /// Extra query parameter `key=value` on the authorization request (repeatable).
    #[arg(
        long,
        env = "KUBELOGIN_OIDC_AUTH_REQUEST_EXTRA_PARAMS",
        value_delimiter = ','
    )]
    pub oidc_auth_request_extra_params: Vec<String>,

    /// Device authorization endpoint, for providers whose discovery does not list one
    /// (RFC 8628 §4; kubelogin #1584).
    #[arg(
        long,
        env = "KUBELOGIN_OIDC_DEVICE_AUTHORIZATION_ENDPOINT",
        default_value = ""
    )]
    pub oidc_device_authorization_endpoint: String,

    /// Authorization grant type.
    #[arg(long, env = "KUBELOGIN_GRANT_TYPE", value_enum, default_value = "auto")]
    pub grant_type: GrantType,

    /// Addresses for the loopback server, tried in order; port 0 picks a free port.
    #[arg(long, env = "KUBELOGIN_LISTEN_ADDRESS", value_delimiter = ',',
          default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: Vec<String>,

    /// Deprecated kubelogin flag: ports on 127.0.0.1 (use --listen-address).
    #[arg(
        long,
        hide = true,
        env = "KUBELOGIN_LISTEN_PORT",
        value_delimiter = ','
    )]
    pub listen_port: Vec<u16>,

    /// How long to wait for the browser login (authcode) or the device approval (device-code).
    #[arg(
        long,
        env = "KUBELOGIN_AUTHENTICATION_TIMEOUT_SEC",
        default_value_t = 180
    )]
    pub authentication_timeout_sec: u64,

    /// Print the URL on stderr instead of opening a browser.
    #[arg(long, env = "KUBELOGIN_SKIP_OPEN_BROWSER", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub skip_open_browser: bool,

    /// Command to open the browser with, run as `COMMAND URL` (no shell).
    #[arg(long, env = "KUBELOGIN_BROWSER_COMMAND", default_value = "")]
    pub browser_command: String,

    /// URL the success page redirects the browser to.
    #[arg(
        long,
        env = "KUBELOGIN_OPEN_URL_AFTER_AUTHENTICATION",
        default_value = ""
    )]
    pub open_url_after_authentication: String,

    /// Certificate (PEM) for HTTPS on the loopback server.
    #[arg(long, env = "KUBELOGIN_LOCAL_SERVER_CERT", default_value = "")]
    pub local_server_cert: String,

    /// Private key (PEM) for HTTPS on the loopback server.
    #[arg(long, env = "KUBELOGIN_LOCAL_SERVER_KEY", default_value = "")]
    pub local_server_key: String,

    /// Username for the password grant (prompted on the terminal when missing).
    #[arg(long, env = "KUBELOGIN_USERNAME", default_value = "")]
    pub username: String,

    /// Password for the password grant (prompted on the terminal when missing).
    #[arg(
        long,
        env = "KUBELOGIN_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,

    /// CA certificate file (PEM) trusted for the provider, replacing the system roots (repeatable).
    #[arg(long, env = "KUBELOGIN_CERTIFICATE_AUTHORITY")]
    pub certificate_authority: Vec<String>,

    /// CA certificate (base64 of PEM) trusted for the provider (repeatable).
    #[arg(long, env = "KUBELOGIN_CERTIFICATE_AUTHORITY_DATA")]
    pub certificate_authority_data: Vec<String>,

    /// Do not verify the provider's TLS certificate (insecure).
    #[arg(long, env = "KUBELOGIN_INSECURE_SKIP_TLS_VERIFY", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", default_value = "false",
          value_parser = BoolishValueParser::new())]
    pub insecure_skip_tls_verify: bool,

    /// Timeout of each HTTP request to the provider, connect to last byte.
    #[arg(long, env = "KUBELOGIN_HTTP_TIMEOUT_SEC", default_value_t = 30)]
    pub http_timeout_sec: u64,
}

/// Flags of the token cache (get-token and clean).
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Token cache directory [default: $KUBECACHEDIR/oidc-login or ~/.kube/cache/oidc-login].
    #[arg(long, env = "KUBELOGIN_TOKEN_CACHE_DIR")]
    pub token_cache_dir: Option<PathBuf>,

    /// Where tokens are kept.
    #[arg(
        long,
        env = "KUBELOGIN_TOKEN_CACHE_STORAGE",
        value_enum,
        default_value = "disk"
    )]
    pub token_cache_storage: Storage,

    /// A name of your choice that keeps this login apart from others of the same issuer and
    /// client (two accounts side by side); part of the cache key.
    #[arg(long, env = "KUBELOGIN_TOKEN_CACHE_NAME", default_value = "")]
    pub token_cache_name: String,

    /// Refresh the token this many seconds before its `exp`, so kubectl never gets one that
    /// expires in flight.
    #[arg(long, env = "KUBELOGIN_TOKEN_REFRESH_MARGIN_SEC", default_value_t = 60)]
    pub token_refresh_margin_sec: u64,

    /// How long to wait for another kubectl-oidc_login holding the cache lock (logging in or
    /// refreshing the same key).
    #[arg(
        long,
        env = "KUBELOGIN_TOKEN_CACHE_LOCK_TIMEOUT_SEC",
        default_value_t = 300
    )]
    pub token_cache_lock_timeout_sec: u64,
}

/// Splits `key=value`; the error names the flag.
pub fn parse_key_value(flag: &str, item: &str) -> Result<(String, String), crate::Error> {
    match item.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(crate::Error::usage(format!(
            "{flag}: expected key=value, got \"{item}\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubelogin_defaults() {
        let cli = Cli::try_parse_from([
            "kubectl-oidc_login",
            "get-token",
            "--oidc-issuer-url=https://idp.example",
            "--oidc-client-id=kubernetes",
        ])
        .unwrap();
        let Some(Command::GetToken(a)) = cli.command else {
            panic!("not get-token")
        };
        assert_eq!(
            a.provider.listen_address,
            vec!["127.0.0.1:8000", "127.0.0.1:18000"]
        );
        assert_eq!(a.provider.authentication_timeout_sec, 180);
        assert_eq!(a.provider.oidc_pkce_method, PkceMethod::Auto);
        assert_eq!(a.provider.grant_type, GrantType::Auto);
        assert_eq!(a.cache.token_cache_storage, Storage::Disk);
        assert!(!a.force_refresh && !a.provider.skip_open_browser);
    }

    #[test]
    fn pflag_style_booleans_and_repeatable_flags() {
        let cli = Cli::try_parse_from([
            "kubectl-oidc_login",
            "get-token",
            "--oidc-issuer-url=https://idp.example",
            "--oidc-client-id=k",
            "--skip-open-browser",
            "--insecure-skip-tls-verify=true",
            "--force-refresh=false",
            "--oidc-extra-scope=email,profile",
            "--oidc-extra-scope",
            "groups",
            "--oidc-pkce-method=S256",
            "--grant-type=device-code",
            "-v1",
        ])
        .unwrap();
        let Some(Command::GetToken(a)) = cli.command else {
            panic!("not get-token")
        };
        assert!(a.provider.skip_open_browser && a.provider.insecure_skip_tls_verify);
        assert!(!a.force_refresh);
        assert_eq!(
            a.provider.oidc_extra_scope,
            vec!["email", "profile", "groups"]
        );
        assert_eq!(a.provider.oidc_pkce_method, PkceMethod::S256);
        assert_eq!(a.provider.grant_type, GrantType::DeviceCode);
        assert_eq!(cli.verbosity, 1);
    }

    #[test]
    fn plain_pkce_is_refused() {
        assert!(Cli::try_parse_from([
            "kubectl-oidc_login",
            "get-token",
            "--oidc-pkce-method=plain"
        ])
        .is_err());
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("--x", "a=b=c").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(parse_key_value("--x", "novalue").is_err());
    }
}
