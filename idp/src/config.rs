//! Configuration from flags and environment variables (AuthGate-compatible names), with an
//! optional `.env` file read before parsing (variables already set win over the file).

use crate::error::IdpError;
use crate::keys::Algorithm;
use crate::tls::ServeLimits;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `kubelogin-idp serve` flags; each also reads the environment variable named beside it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The issuer URL, character for character what kube-apiserver's --oidc-issuer-url must be
    /// (no trailing slash, query or fragment). Default: http(s)://<listen address>.
    #[arg(long, env = "BASE_URL")]
    pub base_url: Option<String>,
    /// Address to listen on (`host:port`, or `:port` for all interfaces).
    #[arg(long = "addr", env = "SERVER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// PEM certificate chain for built-in HTTPS (see `kubelogin-idp certs`).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for built-in HTTPS.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Token signing algorithm: RS256 or ES256 (HS256 is refused: kube-apiserver cannot verify it).
    #[arg(long, env = "JWT_SIGNING_ALGORITHM", default_value = "RS256")]
    pub signing_algorithm: String,
    /// A signing key to use instead of a generated one (PEM: PKCS#1, PKCS#8 or SEC1).
    #[arg(long, env = "JWT_PRIVATE_KEY_PATH")]
    pub private_key_path: Option<PathBuf>,
    /// Encrypt signing keys in the database with this key (a file with the base64 of 32 random
    /// bytes, not accessible to other users).
    #[arg(long, env = "KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
    /// Lifetime of ID and access tokens (e.g. 1h, 15m, 3600).
    #[arg(long, env = "JWT_EXPIRATION", default_value = "1h", value_parser = parse_duration)]
    pub token_lifetime: u64,
    /// Lifetime of a refresh token since its last use.
    #[arg(long, env = "REFRESH_TOKEN_EXPIRATION", default_value = "720h", value_parser = parse_duration)]
    pub refresh_token_lifetime: u64,
    /// How long a rotated refresh token may still be presented by a racing client.
    #[arg(long, env = "REFRESH_TOKEN_REUSE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub refresh_reuse_grace: u64,
    /// Lifetime of an authorization code.
    #[arg(long, env = "AUTH_CODE_EXPIRATION", default_value = "2m", value_parser = parse_duration)]
    pub auth_code_lifetime: u64,
    /// Lifetime of a device code.
    #[arg(long, env = "DEVICE_CODE_EXPIRATION", default_value = "10m", value_parser = parse_duration)]
    pub device_code_lifetime: u64,
    /// Device polling interval given to clients.
    #[arg(long, env = "DEVICE_CODE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub device_code_interval: u64,
    /// Lifetime of a browser session at the IdP.
    #[arg(long, env = "SESSION_EXPIRATION", default_value = "12h", value_parser = parse_duration)]
    pub session_lifetime: u64,
    /// Proxies whose X-Forwarded-For is believed (comma separated IPs); others' is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// Where the first admin's generated password is written (default: <data dir>/kubelogin-idp-credentials.txt).
    #[arg(long, env = "CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Failed logins for one account from one address (IPv6: its /64) within 15 minutes before
    /// that address may no longer try that account; also wrong device codes per session. Each
    /// lock lasts twice as long as the one before, up to a day.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,
    /// Failed logins (and wrong device codes) per client address (IPv6: its /64) within
    /// 15 minutes before that address is throttled.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_IP", default_value_t = 20)]
    pub login_max_failures_per_ip: u32,
    /// Time a client has for the TLS handshake and for each request's headers; also how long a
    /// keep-alive connection may sit idle (e.g. 10s, 500ms).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    /// Longest silence while a request body is being read.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_body_timeout: Duration,
    /// Longest time from a request's headers to its response; slower requests get a 503.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub http_request_timeout: Duration,
    /// Connections served at once; further connections wait until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections from one client address (IPv6: one /64) at once; further ones are closed.
    /// TRUSTED_PROXIES are exempt.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,
    /// How often signing keys are re-read from the database, so `keys rotate` run by another
    /// process reaches this server's JWKS and tokens.
    #[arg(long, env = "KEY_RELOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub key_reload_interval: Duration,
    /// How long audit events are kept (e.g. 365d, 90d); 0 keeps them forever.
    #[arg(long, env = "AUDIT_RETENTION", default_value = "365d", value_parser = parse_duration)]
    pub audit_retention: u64,
    /// Members of this group are administrators of the web console, as well as users marked
    /// admin (`user add --admin`).
    #[arg(long, env = "ADMIN_GROUP")]
    pub admin_group: Option<String>,
    /// An admin console session unused for this long must sign in again.
    #[arg(long, env = "ADMIN_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub admin_idle_timeout: u64,
    /// An admin action (a POST in the console) asks for the password again when the session's
    /// last authentication is older than this.
    #[arg(long, env = "ADMIN_REAUTH_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub admin_reauth_after: u64,
    /// Serve Prometheus metrics at http://<this address>/metrics (`host:port` or `:port`); not
    /// served when unset. Keep it off the public network: it needs no authentication.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish before the server
    /// exits anyway.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// Longest accepted value of a serving timeout or interval: larger ones only disable the limit
/// they set, and would overflow deadline arithmetic.
const MAX_SERVE_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest connection cap accepted.
const MAX_CONNECTIONS: usize = 1_000_000;

/// Checks a `serve` duration flag: above zero and at most a day.
fn bounded_duration(name: &str, d: Duration) -> Result<Duration, IdpError> {
    if d.is_zero() || d > MAX_SERVE_DURATION {
        return Err(IdpError::Config(format!(
            "{name} must be more than 0 and at most 24h (got {})",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}

/// Checks a connection cap: at least 1, at most a million.
fn bounded_count(name: &str, n: usize) -> Result<usize, IdpError> {
    if n == 0 || n > MAX_CONNECTIONS {
        return Err(IdpError::Config(format!(
            "{name} must be between 1 and {MAX_CONNECTIONS} (got {n})"
        )));
    }
    Ok(n)
}

/// Parses a duration flag into whole seconds: a bare number of seconds (`3600`, the form the
/// flags have always documented), else anything `humantime` reads (`90s`, `15m`, `1h30m`,
/// `30d`, `1h 30m`), as the serving timeouts do. A fraction of a second is refused rather than
/// rounded (`1500ms` is not a whole number of seconds).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 3600, 90s, 15m, 1h, 30d)"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "invalid duration {s:?}: give whole seconds (e.g. 90s, 15m, 1h)"
        ));
    }
    Ok(d.as_secs())
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub issuer: String,
    /// The issuer's path ("" or "/prefix"): routes are served under it.
    pub base_path: String,
    pub addr: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub signing_alg: Algorithm,
    pub private_key_path: Option<PathBuf>,
    /// Encrypts signing keys at rest (`KEY_ENCRYPTION_KEY_FILE`), when given.
    pub key_encryption_key: Option<std::sync::Arc<crate::crypto::KeyEncryptionKey>>,
    pub token_lifetime: u64,
    pub refresh_token_lifetime: u64,
    pub refresh_reuse_grace: u64,
    pub auth_code_lifetime: u64,
    pub device_code_lifetime: u64,
    pub device_code_interval: u64,
    pub session_lifetime: u64,
    pub trusted_proxies: Vec<IpAddr>,
    pub secure_cookies: bool,
    pub login_max_failures: u32,
    pub login_max_failures_per_ip: u32,
    /// Listener time and connection limits.
    pub limits: ServeLimits,
    /// How often signing keys are re-read from the store.
    pub key_reload_interval: Duration,
    /// Seconds audit events are kept; 0 keeps them forever.
    pub audit_retention: u64,
    /// The group whose members are console administrators (besides `is_admin` users).
    pub admin_group: Option<String>,
    /// Seconds an admin console session may sit unused.
    pub admin_idle_timeout: u64,
    /// Seconds after an authentication before an admin action asks for the password again.
    pub admin_reauth_after: u64,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

/// Parses `host:port` or `:port` (all interfaces, AuthGate's form).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, IdpError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| {
        IdpError::Config(format!(
            "SERVER_ADDR {s:?} is not host:port (e.g. 127.0.0.1:8080 or :8080)"
        ))
    })
}

/// Checks that an issuer is usable as-is: OpenID Connect Discovery §3 requires an https URL
/// with no query or fragment (http is accepted for local try-outs), and kube-apiserver compares
/// it character for character with the token's `iss`, so a trailing slash is refused outright.
pub fn validate_issuer(issuer: &str) -> Result<url::Url, IdpError> {
    let url = url::Url::parse(issuer)
        .map_err(|e| IdpError::Config(format!("BASE_URL {issuer:?} is not a URL: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(IdpError::Config(format!(
            "BASE_URL {issuer:?} must start with https:// (or http:// for a local try-out)"
        )));
    }
    if issuer.ends_with('/') {
        return Err(IdpError::Config(format!(
            "BASE_URL {issuer:?} ends with a slash; the issuer is compared character for character by kube-apiserver and kubectl-oidc_login, so use {:?}",
            issuer.trim_end_matches('/')
        )));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || issuer.contains('?')
        || issuer.contains('#')
    {
        return Err(IdpError::Config(format!(
            "BASE_URL {issuer:?} must not have a query or fragment (OpenID Connect Discovery §3)"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(IdpError::Config(format!(
            "BASE_URL {issuer:?} must not contain credentials"
        )));
    }
    Ok(url)
}

impl Config {
    pub fn from_args(a: &ServeArgs) -> Result<Config, IdpError> {
        let addr = parse_listen_addr(&a.addr)?;
        let tls = match (&a.tls_cert_file, &a.tls_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(IdpError::Config(
                    "TLS_CERT_FILE and TLS_KEY_FILE go together".into(),
                ))
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let issuer = match &a.base_url {
            Some(b) => b.clone(),
            None => {
                let host = if addr.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else if addr.ip().is_ipv6() {
                    format!("[{}]", addr.ip())
                } else {
                    addr.ip().to_string()
                };
                format!("{scheme}://{host}:{}", addr.port())
            }
        };
        let url = validate_issuer(&issuer)?;
        let base_path = url.path().trim_end_matches('/').to_string();
        let signing_alg: Algorithm = a
            .signing_algorithm
            .parse()
            .map_err(|e: crate::keys::KeyError| IdpError::Config(e.to_string()))?;
        Ok(Config {
            secure_cookies: url.scheme() == "https",
            issuer,
            base_path,
            addr,
            tls,
            signing_alg,
            private_key_path: a.private_key_path.clone(),
            key_encryption_key: a
                .key_encryption_key_file
                .as_deref()
                .map(crate::crypto::KeyEncryptionKey::from_file)
                .transpose()?
                .map(std::sync::Arc::new),
            token_lifetime: a.token_lifetime.max(1),
            refresh_token_lifetime: a.refresh_token_lifetime.max(1),
            refresh_reuse_grace: a
                .refresh_reuse_grace
                .min(crate::store::MAX_REUSE_GRACE_SECS),
            auth_code_lifetime: a.auth_code_lifetime.max(1),
            device_code_lifetime: a.device_code_lifetime.max(1),
            device_code_interval: a.device_code_interval,
            session_lifetime: a.session_lifetime.max(1),
            trusted_proxies: a.trusted_proxies.clone(),
            login_max_failures: a.login_max_failures.max(1),
            login_max_failures_per_ip: a.login_max_failures_per_ip.max(1),
            limits: ServeLimits {
                header_read_timeout: bounded_duration(
                    "HTTP_HEADER_TIMEOUT",
                    a.http_header_timeout,
                )?,
                body_read_timeout: bounded_duration("HTTP_BODY_TIMEOUT", a.http_body_timeout)?,
                request_timeout: bounded_duration("HTTP_REQUEST_TIMEOUT", a.http_request_timeout)?,
                max_connections: bounded_count("MAX_CONNECTIONS", a.max_connections)?,
                max_connections_per_ip: bounded_count(
                    "MAX_CONNECTIONS_PER_IP",
                    a.max_connections_per_ip,
                )?,
                per_ip_exempt: a.trusted_proxies.clone(),
            },
            key_reload_interval: bounded_duration("KEY_RELOAD_INTERVAL", a.key_reload_interval)?,
            audit_retention: a.audit_retention,
            admin_group: a.admin_group.clone().filter(|g| !g.is_empty()),
            admin_idle_timeout: a.admin_idle_timeout.max(1),
            admin_reauth_after: a.admin_reauth_after.max(1),
            metrics_addr: a
                .metrics_addr
                .as_deref()
                .map(|m| {
                    parse_listen_addr(m).map_err(|_| {
                        IdpError::Config(format!(
                            "METRICS_ADDR {m:?} is not host:port (e.g. 127.0.0.1:9090 or :9090)"
                        ))
                    })
                })
                .transpose()?,
            shutdown_grace: bounded_duration("SHUTDOWN_GRACE", a.shutdown_grace)?,
        })
    }

    /// Defaults for tests and embedding: everything as `serve` would choose, for `issuer`.
    pub fn for_issuer(issuer: &str) -> Result<Config, IdpError> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let w = Wrapper::try_parse_from(["serve", "--base-url", issuer])
            .map_err(|e| IdpError::Config(e.to_string()))?;
        Config::from_args(&w.args)
    }

    /// An absolute URL under the issuer.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("720h").unwrap(), 2_592_000);
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_in_humantime_forms_and_whole_seconds_only() {
        assert_eq!(parse_duration(" 3600 ").unwrap(), 3600);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5400);
        assert_eq!(parse_duration("2days").unwrap(), 2 * 86_400);
        for bad in ["1h30", "1500ms", "-5s", "s", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let c = parse(&["--session-lifetime=8h", "--audit-retention=90d"]).unwrap();
        assert_eq!(c.session_lifetime, 8 * 3600);
        assert_eq!(c.audit_retention, 90 * 86_400);
    }

    #[test]
    fn issuer_rules() {
        assert!(validate_issuer("https://idp.example.com").is_ok());
        assert!(validate_issuer("https://idp.example.com/realm").is_ok());
        let e = validate_issuer("https://idp.example.com/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ends with a slash"), "{e}");
        assert!(validate_issuer("https://idp.example.com?x=1").is_err());
        assert!(validate_issuer("https://idp.example.com#f").is_err());
        assert!(validate_issuer("ftp://idp.example.com").is_err());
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let w = Wrapper::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::from_args(&w.args).map_err(|e| e.to_string())
    }

    #[test]
    fn serving_limits() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.limits, ServeLimits::default());
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.request_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.max_connections_per_ip, 64);
        assert_eq!(c.key_reload_interval, Duration::from_secs(30));

        let c = parse(&[
            "--http-header-timeout=300ms",
            "--http-request-timeout=1m",
            "--trusted-proxies=10.0.0.1",
        ])
        .unwrap();
        assert_eq!(c.limits.header_read_timeout, Duration::from_millis(300));
        assert_eq!(c.limits.request_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.per_ip_exempt, vec![IpAddr::from([10, 0, 0, 1])]);

        for bad in [
            "--http-header-timeout=0s",
            "--http-body-timeout=25h",
            "--key-reload-interval=soon",
            "--max-connections=0",
            "--max-connections-per-ip=2000000",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_addr_and_shutdown_grace() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        let c = parse(&["--metrics-addr=:9090", "--shutdown-grace=2s"]).unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.shutdown_grace, Duration::from_secs(2));
        let e = parse(&["--metrics-addr=metrics"]).unwrap_err();
        assert!(e.contains("METRICS_ADDR"), "{e}");
        for bad in [
            "--shutdown-grace=0s",
            "--shutdown-grace=25h",
            "--shutdown-grace=soon",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_sessions_default_to_30m_idle_and_15m_reauthentication() {
        let c = Config::for_issuer("https://idp.example").unwrap();
        assert_eq!(c.admin_group, None);
        assert_eq!((c.admin_idle_timeout, c.admin_reauth_after), (1800, 900));
    }

    #[test]
    fn audit_retention_defaults_to_a_year() {
        let c = Config::for_issuer("https://idp.example.com").unwrap();
        assert_eq!(c.audit_retention, 365 * 86_400);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert!(parse_listen_addr("localhost").is_err());
    }
}
