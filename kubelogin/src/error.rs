//! The crate's one error type; `main` turns it into `error: <message>` and exit code 1.

use std::path::PathBuf;

/// Everything that can make a command fail.
///
/// "The server refused" ([`Error::OAuth`], an RFC 6749 §5.2 error response) is kept apart from
/// "the network failed" ([`Error::Network`]): a refused refresh leads to a new login, a failed
/// network is reported as it is (CONVENTIONS.md §7).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or a combination of flags that cannot work.
    #[error("{0}")]
    Usage(String),

    /// `KUBERNETES_EXEC_INFO` is not something kubectl would send.
    #[error("invalid KUBERNETES_EXEC_INFO: {0}")]
    ExecInfo(String),

    /// No answer from the server: DNS, connect, TLS, timeout, body too slow.
    #[error("{url}: {message}")]
    Network { url: String, message: String },

    /// An RFC 6749 §5.2 (or RFC 8628 §3.5, RFC 7009 §2.2.1) error answer.
    #[error("{endpoint} refused the request: {code}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        endpoint: String,
        code: String,
        description: Option<String>,
    },

    /// An answer that is not what the protocol says: HTML instead of JSON, a body too large,
    /// an unexpected status.
    #[error("{url}: {message}")]
    BadResponse { url: String, message: String },

    /// OpenID Connect Discovery 1.0 §4.3: the `issuer` in the document must equal the URL used.
    #[error(
        "issuer mismatch: --oidc-issuer-url is \"{expected}\" but {url} says \"{found}\"{hint}"
    )]
    IssuerMismatch {
        expected: String,
        found: String,
        url: String,
        hint: &'static str,
    },

    /// The ID token failed verification (signature, iss, aud, exp, nonce, at_hash).
    #[error("ID token verification failed: {0}")]
    IdToken(String),

    /// A login that did not complete: state mismatch, timeout, access denied, back-off.
    #[error("{0}")]
    Login(String),

    /// A prompt was needed but there is nobody to answer it.
    #[error("{0}")]
    NoTerminal(String),

    /// Reading or writing the token cache.
    #[error("token cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Another process holds the cache lock for longer than the bounded wait.
    #[error("timed out after {secs}s waiting for the token cache lock {} (another kubectl-oidc_login is logging in or refreshing; raise --token-cache-lock-timeout-sec or remove the stuck process)", path.display())]
    LockTimeout { path: PathBuf, secs: u64 },

    /// The OS keyring failed.
    #[error("keyring: {0}")]
    Keyring(String),

    /// Any other I/O failure (the loopback server, the browser command, a CA file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for an RFC 6749 §5.2 refusal with the given code.
    pub fn is_oauth(&self, wanted: &str) -> bool {
        matches!(self, Error::OAuth { code, .. } if code == wanted)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
