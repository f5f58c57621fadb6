//! The command line of the hot call, `get-token` with plain `--flag=value` flags, parsed
//! without clap.
//!
//! kubectl runs the plugin before every command (client-go's exec credential provider), and on
//! a cache hit building clap's command tree for every subcommand is most of the process's own
//! work: about 50 heap pages, 15 stack pages and 25 code pages touched before the cache is read
//! (README, Performance). [`get_token`] turns the common forms into the very [`Cli`] value clap
//! would produce, and everything after parsing (cache key, lock, expiry rule, output) is the one
//! code path of [`crate::run`]. It answers `None`, and main parses with clap, for anything it
//! does not recognise or whose meaning it would have to guess:
//! - another subcommand, a positional argument, `-v`, `--help`, `--version`, a hidden
//!   deprecated flag, an unknown flag;
//! - any `KUBELOGIN_*` environment variable (clap reads every flag from one, kubelogin #1109);
//! - a flag given twice (scalar) or with an empty value, a value that starts with `-` after a
//!   separate flag, a boolean other than `true`/`false`, a number with anything but digits, an
//!   enum value clap does not list, a list item that is empty, an argument that is not UTF-8.
//!
//! The unit tests below check against clap itself: for every command line this accepts, clap
//! parses the same value.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::{
    CacheArgs, Cli, Command, GetTokenArgs, GrantType, PkceMethod, ProviderArgs, Storage,
    DEFAULT_LISTEN_ADDRESS,
};

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One value: `--flag=v` or `--flag v`.
    Scalar,
    /// Repeatable, each value split on `,` (clap's `value_delimiter = ','`).
    List,
    /// Repeatable, values kept whole.
    Multi,
    /// `--flag` or `--flag=true|false` (pflag style, `require_equals`).
    Bool,
}

fn kind(name: &str) -> Option<Kind> {
    Some(match name {
        "oidc-issuer-url"
        | "oidc-client-id"
        | "oidc-client-secret"
        | "oidc-redirect-url"
        | "oidc-pkce-method"
        | "oidc-device-authorization-endpoint"
        | "grant-type"
        | "authentication-timeout-sec"
        | "browser-command"
        | "open-url-after-authentication"
        | "local-server-cert"
        | "local-server-key"
        | "username"
        | "password"
        | "http-timeout-sec"
        | "token-cache-dir"
        | "token-cache-storage"
        | "token-cache-name"
        | "token-refresh-margin-sec"
        | "token-cache-lock-timeout-sec" => Kind::Scalar,
        "oidc-extra-scope"
        | "oidc-request-header"
        | "oidc-auth-request-extra-params"
        | "listen-address" => Kind::List,
        "certificate-authority" | "certificate-authority-data" => Kind::Multi,
        "oidc-use-access-token"
        | "skip-open-browser"
        | "insecure-skip-tls-verify"
        | "force-refresh" => Kind::Bool,
        _ => return None,
    })
}

/// `get-token`'s flags with clap's defaults (the `default_value`s in cli.rs; the tests compare
/// with clap's own parse).
fn defaults() -> GetTokenArgs {
    GetTokenArgs {
        provider: ProviderArgs {
            oidc_issuer_url: None,
            oidc_client_id: None,
            oidc_client_secret: String::new(),
            oidc_redirect_url: String::new(),
            oidc_extra_scope: Vec::new(),
            oidc_use_access_token: false,
            oidc_request_header: Vec::new(),
            oidc_pkce_method: PkceMethod::Auto,
            oidc_use_pkce: false,
            oidc_auth_request_extra_params: Vec::new(),
            oidc_device_authorization_endpoint: String::new(),
            grant_type: GrantType::Auto,
            listen_address: Vec::new(),
            listen_port: Vec::new(),
            authentication_timeout_sec: 180,
            skip_open_browser: false,
            browser_command: String::new(),
            open_url_after_authentication: String::new(),
            local_server_cert: String::new(),
            local_server_key: String::new(),
            username: String::new(),
            password: String::new(),
            certificate_authority: Vec::new(),
            certificate_authority_data: Vec::new(),
            insecure_skip_tls_verify: false,
            http_timeout_sec: 30,
        },
        cache: CacheArgs {
            token_cache_dir: None,
            token_cache_storage: Storage::Disk,
            token_cache_name: String::new(),
            token_refresh_margin_sec: 60,
            token_cache_lock_timeout_sec: 300,
        },
        force_refresh: false,
    }
}

/// `args` is the whole command line (program name first), `env` the environment's variable
/// names. `None`: let clap parse it.
pub fn get_token<E: IntoIterator<Item = OsString>>(args: &[OsString], env: E) -> Option<Cli> {
    if env
        .into_iter()
        .any(|k| k.as_encoded_bytes().starts_with(b"KUBELOGIN_"))
    {
        return None;
    }
    let mut it = args.iter().skip(1);
    if it.next()?.to_str()? != "get-token" {
        return None;
    }
    let mut g = defaults();
    let mut seen: Vec<&str> = Vec::new();
    let mut listen_address: Option<Vec<String>> = None;
    while let Some(arg) = it.next() {
        let body = arg.to_str()?.strip_prefix("--")?;
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let kind = kind(name)?;
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true",
            (_, Some(v)) => v,
            (_, None) => {
                let v = it.next()?.to_str()?;
                if v.starts_with('-') {
                    return None;
                }
                v
            }
        };
        if value.is_empty() {
            return None;
        }
        if matches!(kind, Kind::Scalar | Kind::Bool) {
            if seen.contains(&name) {
                return None;
            }
            seen.push(name);
        }
        let items = || -> Option<Vec<String>> {
            let items: Vec<String> = value.split(',').map(str::to_string).collect();
            (!items.iter().any(String::is_empty)).then_some(items)
        };
        let p = &mut g.provider;
        match name {
            "oidc-issuer-url" => p.oidc_issuer_url = Some(value.into()),
            "oidc-client-id" => p.oidc_client_id = Some(value.into()),
            "oidc-client-secret" => p.oidc_client_secret = value.into(),
            "oidc-redirect-url" => p.oidc_redirect_url = value.into(),
            "oidc-pkce-method" => {
                p.oidc_pkce_method = match value {
                    "auto" => PkceMethod::Auto,
                    "no" => PkceMethod::No,
                    "S256" => PkceMethod::S256,
                    _ => return None,
                }
            }
            "oidc-device-authorization-endpoint" => {
                p.oidc_device_authorization_endpoint = value.into()
            }
            "grant-type" => {
                p.grant_type = match value {
                    "auto" => GrantType::Auto,
                    "authcode" => GrantType::Authcode,
                    "authcode-keyboard" => GrantType::AuthcodeKeyboard,
                    "password" => GrantType::Password,
                    "device-code" => GrantType::DeviceCode,
                    "client-credentials" => GrantType::ClientCredentials,
                    _ => return None,
                }
            }
            "authentication-timeout-sec" => p.authentication_timeout_sec = number(value)?,
            "browser-command" => p.browser_command = value.into(),
            "open-url-after-authentication" => p.open_url_after_authentication = value.into(),
            "local-server-cert" => p.local_server_cert = value.into(),
            "local-server-key" => p.local_server_key = value.into(),
            "username" => p.username = value.into(),
            "password" => p.password = value.into(),
            "http-timeout-sec" => p.http_timeout_sec = number(value)?,
            "oidc-extra-scope" => p.oidc_extra_scope.extend(items()?),
            "oidc-request-header" => p.oidc_request_header.extend(items()?),
            "oidc-auth-request-extra-params" => p.oidc_auth_request_extra_params.extend(items()?),
            // A given --listen-address replaces the default list, as in clap.
            "listen-address" => listen_address.get_or_insert_with(Vec::new).extend(items()?),
            "certificate-authority" => p.certificate_authority.push(value.into()),
            "certificate-authority-data" => p.certificate_authority_data.push(value.into()),
            "oidc-use-access-token" => p.oidc_use_access_token = boolean(value)?,
            "skip-open-browser" => p.skip_open_browser = boolean(value)?,
            "insecure-skip-tls-verify" => p.insecure_skip_tls_verify = boolean(value)?,
            "force-refresh" => g.force_refresh = boolean(value)?,
            "token-cache-dir" => g.cache.token_cache_dir = Some(PathBuf::from(value)),
            "token-cache-storage" => {
                g.cache.token_cache_storage = match value {
                    "disk" => Storage::Disk,
                    "keyring" => Storage::Keyring,
                    "none" => Storage::None,
                    _ => return None,
                }
            }
            "token-cache-name" => g.cache.token_cache_name = value.into(),
            "token-refresh-margin-sec" => g.cache.token_refresh_margin_sec = number(value)?,
            "token-cache-lock-timeout-sec" => g.cache.token_cache_lock_timeout_sec = number(value)?,
            _ => return None,
        }
    }
    g.provider.listen_address = listen_address.unwrap_or_else(|| {
        DEFAULT_LISTEN_ADDRESS
            .split(',')
            .map(str::to_string)
            .collect()
    });
    Some(Cli {
        command: Some(Command::GetToken(g)),
        verbosity: 0,
        version: false,
    })
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn number(v: &str) -> Option<u64> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        std::iter::once("kubectl-oidc_login")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// clap's parse of the same command line, with no KUBELOGIN_* variable in the way.
    fn clap(args: &[OsString]) -> Option<String> {
        let cmd = <Cli as clap::CommandFactory>::command();
        // clap reads the flags' `env = "KUBELOGIN_*"` variables from the process environment;
        // none may be set here, or clap would parse something else than the lean parser was
        // given (other KUBELOGIN_* variables, such as the test runner's
        // KUBELOGIN_REQUIRE_KEYRING, name no flag and change nothing).
        let get_token = cmd.find_subcommand("get-token").unwrap();
        for arg in cmd.get_arguments().chain(get_token.get_arguments()) {
            if let Some(var) = arg.get_env() {
                assert!(std::env::var_os(var).is_none(), "{var:?} is set");
            }
        }
        let m = cmd.clone().try_get_matches_from(args).ok()?;
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).ok()?;
        Some(format!("{cli:?}"))
    }

    fn lean(args: &[OsString]) -> Option<String> {
        get_token(args, std::iter::empty()).map(|c| format!("{c:?}"))
    }

    #[test]
    fn every_flag_parses_as_clap_parses_it() {
        let cases: &[&[&str]] = &[
            &["get-token"],
            &[
                "get-token",
                "--oidc-issuer-url=https://idp.example",
                "--oidc-client-id=kubernetes",
            ],
            &[
                "get-token",
                "--oidc-issuer-url",
                "https://idp.example",
                "--oidc-client-id",
                "kubernetes",
                "--oidc-client-secret=s3",
                "--oidc-redirect-url=http://localhost:8000/cb",
                "--oidc-extra-scope=email,profile",
                "--oidc-extra-scope",
                "groups",
                "--oidc-use-access-token",
                "--oidc-request-header=a=b,c=d",
                "--oidc-pkce-method=S256",
                "--oidc-auth-request-extra-params=prompt=login",
                "--oidc-device-authorization-endpoint=https://idp.example/device",
                "--grant-type=device-code",
                "--listen-address=127.0.0.1:0",
                "--listen-address=127.0.0.1:1,127.0.0.1:2",
                "--authentication-timeout-sec=5",
                "--skip-open-browser=false",
                "--browser-command=firefox",
                "--open-url-after-authentication=https://example.com",
                "--local-server-cert=c.pem",
                "--local-server-key",
                "k.pem",
                "--username=u",
                "--password=p",
                "--certificate-authority=a.pem,b.pem",
                "--certificate-authority=c.pem",
                "--certificate-authority-data=QUJD",
                "--insecure-skip-tls-verify=true",
                "--http-timeout-sec=7",
                "--token-cache-dir=/tmp/x",
                "--token-cache-storage=keyring",
                "--token-cache-name=work",
                "--token-refresh-margin-sec=0",
                "--token-cache-lock-timeout-sec=9",
                "--force-refresh",
            ],
            &["get-token", "--grant-type=authcode-keyboard"],
            &["get-token", "--grant-type=client-credentials"],
            &[
                "get-token",
                "--grant-type=password",
                "--oidc-pkce-method=no",
            ],
            &["get-token", "--token-cache-storage=none"],
        ];
        for case in cases {
            let args = os(case);
            let ours = lean(&args);
            assert!(ours.is_some(), "lean path declined {case:?}");
            assert_eq!(ours, clap(&args), "{case:?}");
        }
    }

    #[test]
    fn unusual_command_lines_go_to_clap() {
        let cases: &[&[&str]] = &[
            &[],
            &["setup", "--oidc-issuer-url=x"],
            &["get-token", "-v1"],
            &["get-token", "--v=0"],
            &["get-token", "--help"],
            &["get-token", "--version"],
            &["get-token", "extra"],
            &["get-token", "--", "--oidc-client-id=x"],
            &["get-token", "--no-such-flag=x"],
            &["get-token", "--oidc-use-pkce"],
            &["get-token", "--listen-port=8000"],
            &["get-token", "--oidc-client-id=a", "--oidc-client-id=b"],
            &["get-token", "--oidc-client-id="],
            &["get-token", "--oidc-client-id", "--oidc-issuer-url=x"],
            &["get-token", "--oidc-client-id"],
            &["get-token", "--force-refresh=yes"],
            &["get-token", "--force-refresh", "--force-refresh"],
            &["get-token", "--http-timeout-sec=+5"],
            &["get-token", "--http-timeout-sec=99999999999999999999999"],
            &["get-token", "--grant-type=Auto"],
            &["get-token", "--oidc-pkce-method=plain"],
            &["get-token", "--token-cache-storage=Disk"],
            &["get-token", "--oidc-extra-scope=a,,b"],
            &["get-token", "--oidc-issuer-url"],
            &["-v1", "get-token"],
            &["--oidc-client-id=x", "get-token"],
        ];
        for case in cases {
            assert_eq!(lean(&os(case)), None, "{case:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let mut args = os(&["get-token"]);
            args.push(OsString::from_vec(b"--oidc-client-id=\xff".to_vec()));
            assert_eq!(lean(&args), None, "not UTF-8");
        }
    }

    #[test]
    fn any_kubelogin_variable_goes_to_clap() {
        let args = os(&["get-token", "--oidc-issuer-url=https://idp.example"]);
        assert!(get_token(&args, [OsString::from("HOME")]).is_some());
        for var in ["KUBELOGIN_V", "KUBELOGIN_OIDC_CLIENT_ID", "KUBELOGIN_"] {
            assert!(
                get_token(&args, [OsString::from("HOME"), OsString::from(var)]).is_none(),
                "{var}"
            );
        }
    }

    /// Command lines built from flags, values and separators, valid and not: whatever the
    /// lean parser accepts, clap accepts with the same value.
    fn token() -> impl Strategy<Value = String> {
        let names = prop::sample::select(vec![
            "oidc-issuer-url",
            "oidc-client-id",
            "oidc-extra-scope",
            "grant-type",
            "listen-address",
            "certificate-authority",
            "force-refresh",
            "skip-open-browser",
            "http-timeout-sec",
            "token-cache-storage",
            "token-cache-dir",
            "v",
            "nope",
        ]);
        let values = prop::sample::select(vec![
            "",
            "x",
            "a,b",
            "a,,b",
            "true",
            "false",
            "yes",
            "5",
            "-5",
            "+5",
            "disk",
            "keyring",
            "device-code",
            "Auto",
            "--x",
            "=",
            "a=b",
        ]);
        (names, values, 0..4u8).prop_map(|(n, v, form)| match form {
            0 => format!("--{n}={v}"),
            1 => format!("--{n}"),
            2 => v.to_string(),
            _ => format!("-{v}"),
        })
    }

    proptest! {
        #[test]
        fn whatever_the_lean_parser_accepts_clap_parses_the_same(
            tokens in prop::collection::vec(token(), 0..8)
        ) {
            let mut args = vec!["get-token".to_string()];
            args.extend(tokens);
            let args = os(&args.iter().map(String::as_str).collect::<Vec<_>>());
            if let Some(ours) = lean(&args) {
                prop_assert_eq!(Some(ours), clap(&args));
            }
        }
    }

    /// Parsing with clap directly must stay possible for everything the lean parser declines.
    #[test]
    fn clap_still_parses_what_lean_declines() {
        let args = os(&["get-token", "-v1", "--oidc-issuer-url=https://idp.example"]);
        assert!(lean(&args).is_none());
        assert!(Cli::try_parse_from(&args).is_ok());
    }
}
