//! The crate's one error type; `main` turns it into `error: <message>` and exit code 1.
//!
//! A failure caused by a library error keeps that error as its `#[source]` (an I/O error, a
//! reqwest or serde error, a URL or TLS refusal), and its message shows the whole chain once,
//! so `to_string()` in a test reads like the `error:` line `main` prints with
//! `shared::error_chain::display` (which skips a cause already on the line).

use std::path::PathBuf;

use shared::error_chain::display as chain;

/// A boxed library error: the cause of a failure, kept with its own causes.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

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

    /// A value that cannot be used (a flag's URL, address, CA or key; a token that is not a
    /// JWT), with the library's reason as the source.
    #[error("{what}: {}", chain(.source.as_ref()))]
    Invalid {
        what: String,
        #[source]
        source: Cause,
    },

    /// `KUBERNETES_EXEC_INFO` is not something kubectl would send.
    #[error("invalid KUBERNETES_EXEC_INFO: {0}")]
    ExecInfo(#[source] ExecInfoError),

    /// No answer from the server: DNS, connect, TLS, timeout, body too slow. `hint` says what
    /// to try when the cause is a TLS failure.
    #[error("{url}: {}{hint}", chain(.source.as_ref()))]
    Network {
        url: String,
        #[source]
        source: Cause,
        hint: &'static str,
    },

    /// An RFC 6749 §5.2 (or RFC 8628 §3.5, RFC 7009 §2.2.1) error answer.
    #[error("{endpoint} refused the request: {code}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    OAuth {
        endpoint: String,
        code: String,
        description: Option<String>,
    },

    /// An answer that is not what the protocol says: HTML instead of JSON, a body too large,
    /// an unexpected status.
    #[error("{url}: {problem}")]
    BadResponse {
        url: String,
        #[source]
        problem: ResponseProblem,
    },

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
    IdToken(#[source] IdTokenError),

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

    /// The OS keyring failed, or refused an entry.
    #[error("keyring: {}", chain(.0.as_ref()))]
    Keyring(#[source] Cause),

    /// Any other I/O failure (the loopback server, the browser command, a CA file).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What is wrong with `KUBERNETES_EXEC_INFO`.
#[derive(Debug, thiserror::Error)]
pub enum ExecInfoError {
    #[error("not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error("apiVersion is missing")]
    NoApiVersion,
    #[error("apiVersion \"{found}\" is not supported (use {})", supported.join(" or "))]
    UnsupportedApiVersion {
        found: String,
        supported: [&'static str; 2],
    },
}

/// What is wrong with a provider's answer.
#[derive(Debug, thiserror::Error)]
pub enum ResponseProblem {
    /// An unexpected HTTP status; `body` describes what came back (content type and first
    /// characters).
    #[error("HTTP {status}{body}")]
    Status { status: u16, body: String },
    #[error("expected a JSON document ({source}){body}")]
    NotJson {
        source: serde_json::Error,
        body: String,
    },
    #[error("response body larger than {0} bytes")]
    TooLarge(u64),
    #[error("token response without access_token (RFC 6749 §5.1)")]
    NoAccessToken,
    /// An endpoint from discovery that is not a URL.
    #[error("{name} is not a URL: {source}")]
    NotAUrl {
        name: &'static str,
        source: url::ParseError,
    },
    #[error("not a JWK set: {0}")]
    NotJwks(#[source] serde_json::Error),
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("not a valid JWT: {0}")]
    NotAJwt(#[source] serde_json::Error),
    /// OpenID Connect Core §3.1.3.8: `at_hash` must match the access token.
    #[error("at_hash does not match the access token")]
    AtHashMismatch,
    /// Refused by `openidconnect`'s verifier (signature, iss, aud, exp, nonce); its reason is
    /// often in the source ("algorithm `HS256` is not one of ..."), so the chain is shown.
    #[error("{}", chain(.0.as_ref()))]
    Rejected(#[source] Cause),
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

    /// `what` could not be used because of `source`.
    pub fn invalid(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Invalid {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The request to `url` got no answer. A TLS failure gets the hint to pass the provider's
    /// CA, the usual fix.
    pub fn network(url: impl Into<String>, source: impl Into<Cause>) -> Self {
        let source = source.into();
        let lower = chain(source.as_ref()).to_ascii_lowercase();
        let hint = if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("unknownissuer")
        {
            " (hint: pass the provider's CA with --certificate-authority)"
        } else {
            ""
        };
        Error::Network {
            url: url.into(),
            source,
            hint,
        }
    }

    pub fn bad_response(url: impl Into<String>, problem: ResponseProblem) -> Self {
        Error::BadResponse {
            url: url.into(),
            problem,
        }
    }

    pub fn keyring(source: impl Into<Cause>) -> Self {
        Error::Keyring(source.into())
    }

    /// True for an RFC 6749 §5.2 refusal with the given code.
    pub fn is_oauth(&self, wanted: &str) -> bool {
        matches!(self, Error::OAuth { code, .. } if code == wanted)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The message already shows every cause, so `main`'s chain formatter adds nothing: the
    /// `error:` line and `to_string()` read the same.
    #[test]
    fn messages_carry_their_causes_once() {
        let e = Error::network(
            "https://idp/token",
            std::io::Error::other("connection refused"),
        );
        assert_eq!(e.to_string(), "https://idp/token: connection refused");
        assert_eq!(chain(&e), e.to_string());
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::network("https://idp", "invalid peer certificate: UnknownIssuer");
        assert!(e.to_string().ends_with(
            "UnknownIssuer (hint: pass the provider's CA with --certificate-authority)"
        ));
        assert_eq!(chain(&e), e.to_string());

        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = Error::ExecInfo(ExecInfoError::NotJson(json));
        assert!(
            e.to_string()
                .starts_with("invalid KUBERNETES_EXEC_INFO: not JSON ("),
            "{e}"
        );
        assert_eq!(chain(&e), e.to_string());
    }
}
