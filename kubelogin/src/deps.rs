//! Every side effect behind a small trait, gathered in [`Deps`] (CONVENTIONS.md §5).
//!
//! `main.rs` wires the real implementations from [`real`]; tests pass fakes. Time is passed in
//! (§6): only [`SystemClock`] reads the wall clock.

use std::io::{IsTerminal, Read, Write};

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// The current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// Waiting (device polling, lock waits).
pub trait Sleeper: Send + Sync {
    fn sleep(&self, duration: Duration);
}

/// Told, from another thread, why a browser launcher that started then failed.
pub type LaunchFailed = Box<dyn FnOnce(String) + Send>;

/// Opening a URL for the user.
pub trait Browser: Send + Sync {
    /// Opens `url` with `command` (run as `command URL`, no shell) or the desktop default.
    /// `Err` when no launcher could be started. A launcher that starts and then exits
    /// unsuccessfully (xdg-open without a browser exits 3) is reported through `failed` as soon
    /// as it exits, while the login is already waiting.
    fn open(&self, url: &str, command: Option<&str>, failed: LaunchFailed) -> Result<()>;
}

/// What the machine looks like, for `--grant-type=auto` (`auth::auto`): environment
/// variables, files, programs on `PATH`. Read only when a login is needed, never on a cache hit.
pub trait Host: Send + Sync {
    /// A non-empty environment variable.
    fn var(&self, name: &str) -> Option<String>;
    fn exists(&self, path: &str) -> bool;
    /// The start of a small text file (`/proc/version`, `/proc/1/cgroup`), at most 64 KiB.
    fn read(&self, path: &str) -> Option<String>;
    /// Whether `program` is an executable file in a directory of `PATH`.
    fn on_path(&self, program: &str) -> bool;
    /// `std::env::consts::OS` of the build.
    fn os(&self) -> &'static str;
}

/// Asking the person at the terminal.
pub trait Prompt: Send + Sync {
    /// Whether there is a terminal to ask on.
    fn is_terminal(&self) -> bool;
    /// Prints `prompt` on stderr and reads one line.
    fn read_line(&self, prompt: &str) -> Result<String>;
    /// Prints `prompt` on stderr and reads one line without echo.
    fn read_password(&self, prompt: &str) -> Result<String>;
}

/// The OS credential store (Secret Service, Keychain, Credential Manager), addressed by
/// service and account; the `keyring` token storage sits on top of it.
pub trait Keyring: Send + Sync {
    fn get(&self, service: &str, account: &str) -> Result<Option<String>>;
    fn set(&self, service: &str, account: &str, secret: &str) -> Result<()>;
    /// Deleting an entry that does not exist is not an error.
    fn delete(&self, service: &str, account: &str) -> Result<()>;
}

/// Human output (stderr). Stdout belongs to kubectl and is written by `main` only.
pub trait Console: Send + Sync {
    fn line(&self, text: &str);
    /// Whether stderr is a terminal (a person watches it: QR code, countdown).
    fn is_terminal(&self) -> bool {
        false
    }
    /// Replaces the current line (a countdown); only called when [`Console::is_terminal`].
    fn rewrite(&self, text: &str) {
        self.line(text);
    }
}

/// One HTTP request to the provider.
#[derive(Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// `application/x-www-form-urlencoded` body.
    pub form: Option<Vec<(String, String)>>,
    /// HTTP Basic credentials, already form-urlencoded as RFC 6749 §2.3.1 requires.
    pub basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for HttpRequest {
    // Forms carry codes, passwords and refresh tokens: only names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field(
                "form",
                &self
                    .form
                    .as_ref()
                    .map(|f| f.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One HTTP response, its body already read (and capped at [`MAX_BODY_BYTES`]).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Largest response body accepted from a provider. Discovery documents and JWKS are a few KB;
/// a megabyte is generous and stops a broken or hostile server from filling memory.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Sends requests to the provider.
pub trait Http: Send + Sync {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse>;
}

/// TLS and timeout settings of the provider connection (from the flags).
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    pub ca_files: Vec<String>,
    pub ca_data: Vec<String>,
    pub insecure_skip_tls_verify: bool,
    pub timeout: Duration,
    /// Return 3xx answers instead of following them (`doctor` inspects the authorization
    /// endpoint's redirects).
    pub no_redirects: bool,
}

/// Builds the HTTP client. Called only when the network is needed, so a cache hit never
/// builds a TLS client or reads the system roots.
pub trait HttpFactory: Send + Sync {
    fn build(&self, settings: &HttpSettings) -> Result<Arc<dyn Http>>;
}

/// What the process was given by its environment besides flags.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `KUBERNETES_EXEC_INFO`, set by kubectl.
    pub exec_info: Option<String>,
    /// `KUBECACHEDIR`.
    pub kube_cache_dir: Option<PathBuf>,
    /// The home directory.
    pub home: Option<PathBuf>,
}

/// Every side effect the commands need.
#[derive(Clone)]
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    pub sleeper: Arc<dyn Sleeper>,
    pub browser: Arc<dyn Browser>,
    pub prompt: Arc<dyn Prompt>,
    pub keyring: Arc<dyn Keyring>,
    pub http: Arc<dyn HttpFactory>,
    pub console: Arc<dyn Console>,
    pub host: Arc<dyn Host>,
    pub env: Environment,
    /// `-v`: 1 flow, 2 HTTP headers, 3 HTTP bodies.
    pub verbosity: u8,
}

impl Deps {
    /// Always shown on stderr.
    pub fn say(&self, text: &str) {
        self.console.line(text);
    }

    /// Shown when `-v` is at least `level`.
    pub fn log(&self, level: u8, text: impl FnOnce() -> String) {
        if self.verbosity >= level {
            self.console.line(&text());
        }
    }
}

/// The real implementations, wired by `main.rs`.
pub mod real {
    use super::*;

    /// The wall clock; the only place allowed to read it.
    pub struct SystemClock;
    impl Clock for SystemClock {
        #[allow(clippy::disallowed_methods)]
        fn now(&self) -> DateTime<Utc> {
            Utc::now()
        }
    }

    pub struct ThreadSleeper;
    impl Sleeper for ThreadSleeper {
        fn sleep(&self, duration: Duration) {
            std::thread::sleep(duration);
        }
    }

    pub struct Stderr;
    impl Console for Stderr {
        fn line(&self, text: &str) {
            // A closed stderr must not turn into an error of the command itself.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        fn is_terminal(&self) -> bool {
            std::io::stderr().is_terminal()
        }
        fn rewrite(&self, text: &str) {
            // Carriage return and "erase line" (ECMA-48 EL, CSI 2 K), no newline.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        }
    }

    /// The real machine.
    pub struct RealHost;
    impl Host for RealHost {
        fn var(&self, name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        fn exists(&self, path: &str) -> bool {
            std::path::Path::new(path).exists()
        }
        fn read(&self, path: &str) -> Option<String> {
            let mut text = String::new();
            std::fs::File::open(path)
                .ok()?
                .take(64 * 1024)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        }
        fn on_path(&self, program: &str) -> bool {
            let Some(path) = std::env::var_os("PATH") else {
                return false;
            };
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
        }
        fn os(&self) -> &'static str {
            std::env::consts::OS
        }
    }

    #[cfg(unix)]
    fn is_executable(path: &std::path::Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    fn is_executable(path: &std::path::Path) -> bool {
        path.is_file() || path.with_extension("exe").is_file()
    }

    /// Opens the browser with the child's stdout sent to our stderr: stdout belongs to kubectl
    /// and a launcher that prints ("Opening in existing browser session.") would corrupt the
    /// ExecCredential JSON.
    pub struct SystemBrowser;
    impl Browser for SystemBrowser {
        fn open(&self, url: &str, command: Option<&str>, failed: LaunchFailed) -> Result<()> {
            let mut commands = match command {
                Some(c) => {
                    let mut cmd = std::process::Command::new(c);
                    cmd.arg(url);
                    vec![cmd]
                }
                None => open::commands(url),
            };
            let mut last = None;
            for cmd in commands.iter_mut() {
                cmd.stdin(std::process::Stdio::null())
                    .stdout(std::io::stderr())
                    .stderr(std::io::stderr());
                let program = cmd.get_program().to_string_lossy().into_owned();
                match cmd.spawn() {
                    Ok(mut child) => {
                        // Reap the launcher in the background; xdg-open and friends return fast,
                        // a `--browser-command` may keep running for the whole login. A failed
                        // exit is told at once instead of leaving the user to wait for the
                        // authentication timeout.
                        std::thread::spawn(move || match child.wait() {
                            Ok(status) if status.success() => {}
                            Ok(status) => failed(format!("{program} exited with {status}")),
                            Err(e) => failed(format!("{program}: {e}")),
                        });
                        return Ok(());
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(Error::io(
                "could not start a browser",
                last.unwrap_or_else(|| std::io::Error::other("no browser launcher found")),
            ))
        }
    }

    /// Prompts on the terminal. Without one it fails at once instead of hanging on a pipe.
    pub struct TerminalPrompt;
    impl Prompt for TerminalPrompt {
        fn is_terminal(&self) -> bool {
            std::io::stdin().is_terminal()
        }
        fn read_line(&self, prompt: &str) -> Result<String> {
            if !self.is_terminal() {
                return Err(Error::NoTerminal(format!(
                    "cannot ask \"{}\": stdin is not a terminal",
                    prompt.trim()
                )));
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
                .map_err(|e| Error::io("reading the terminal", e))?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
        fn read_password(&self, prompt: &str) -> Result<String> {
            if !self.is_terminal() {
                return Err(Error::NoTerminal(format!(
                    "cannot ask \"{}\": stdin is not a terminal",
                    prompt.trim()
                )));
            }
            rpassword::prompt_password(prompt).map_err(|e| Error::io("reading the password", e))
        }
    }

    /// The platform keyring through the `keyring` crate.
    pub struct OsKeyring;
    impl Keyring for OsKeyring {
        fn get(&self, service: &str, account: &str) -> Result<Option<String>> {
            let entry = keyring::Entry::new(service, account).map_err(keyring_error)?;
            match entry.get_password() {
                Ok(s) => Ok(Some(s)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(keyring_error(e)),
            }
        }
        fn set(&self, service: &str, account: &str, secret: &str) -> Result<()> {
            keyring::Entry::new(service, account)
                .and_then(|e| e.set_password(secret))
                .map_err(keyring_error)
        }
        fn delete(&self, service: &str, account: &str) -> Result<()> {
            match keyring::Entry::new(service, account).and_then(|e| e.delete_credential()) {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(keyring_error(e)),
            }
        }
    }

    fn keyring_error(e: keyring::Error) -> Error {
        match e {
            keyring::Error::TooLong(what, max) => {
                Error::keyring(format!("too long: {what} > {max}"))
            }
            other => Error::keyring(other),
        }
    }

    /// reqwest (blocking, rustls), built on first use.
    pub struct ReqwestFactory;
    impl HttpFactory for ReqwestFactory {
        fn build(&self, settings: &HttpSettings) -> Result<Arc<dyn Http>> {
            Ok(Arc::new(ReqwestHttp {
                settings: settings.clone(),
                client: OnceLock::new(),
            }))
        }
    }

    pub struct ReqwestHttp {
        settings: HttpSettings,
        client: OnceLock<reqwest::blocking::Client>,
    }

    impl ReqwestHttp {
        fn client(&self) -> Result<&reqwest::blocking::Client> {
            if let Some(c) = self.client.get() {
                return Ok(c);
            }
            let built = build_client(&self.settings)?;
            Ok(self.client.get_or_init(|| built))
        }
    }

    fn build_client(s: &HttpSettings) -> Result<reqwest::blocking::Client> {
        use base64::Engine;
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("kubectl-oidc_login/", env!("CARGO_PKG_VERSION")));
        if s.no_redirects {
            builder = builder.redirect(reqwest::redirect::Policy::none());
        }
        // kubelogin replaces the system roots with the given CAs; so do we, so a kubeconfig
        // that pins a private CA is not silently widened to every public CA.
        if !s.ca_files.is_empty() || !s.ca_data.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
        }
        for file in &s.ca_files {
            let pem = std::fs::read(file)
                .map_err(|e| Error::io(format!("--certificate-authority {file}"), e))?;
            builder = add_pem(builder, &pem, &format!("--certificate-authority {file}"))?;
        }
        for data in &s.ca_data {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| Error::invalid("--certificate-authority-data: not base64", e))?;
            builder = add_pem(builder, &pem, "--certificate-authority-data")?;
        }
        if s.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder
            .build()
            .map_err(|e| Error::invalid("cannot set up the HTTP client", e))
    }

    fn add_pem(
        mut builder: reqwest::blocking::ClientBuilder,
        pem: &[u8],
        what: &str,
    ) -> Result<reqwest::blocking::ClientBuilder> {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::invalid(what, e))?;
        if certs.is_empty() {
            return Err(Error::usage(format!("{what}: no PEM certificate found")));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
        Ok(builder)
    }

    /// A failed request, shown by its causes (reqwest hides the TLS reason in the sources):
    /// reqwest's outer message ("error sending request for url (…)") repeats the URL that
    /// [`Error::Network`] already names, so it is left out, and the chain starts at its cause.
    #[derive(Debug)]
    struct RequestFailed(crate::error::Cause);

    impl RequestFailed {
        fn shown(&self) -> &(dyn std::error::Error + 'static) {
            match self.0.source() {
                Some(cause) if self.0.to_string().starts_with("error sending request") => cause,
                _ => self.0.as_ref(),
            }
        }
    }

    impl std::fmt::Display for RequestFailed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&shared::error_chain::display(self.shown()))
        }
    }

    impl std::error::Error for RequestFailed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.shown().source()
        }
    }

    impl Http for ReqwestHttp {
        fn send(&self, request: &HttpRequest) -> Result<HttpResponse> {
            let client = self.client()?;
            let mut rb = match request.method {
                Method::Get => client.get(&request.url),
                Method::Post => client.post(&request.url),
            };
            for (k, v) in &request.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if let Some((user, pass)) = &request.basic_auth {
                rb = rb.basic_auth(user, Some(pass));
            }
            if let Some(form) = &request.form {
                rb = rb.form(form);
            }
            // The causes say what happened (refused, DNS, TLS, timeout).
            let network =
                |e: crate::error::Cause| Error::network(request.url.clone(), RequestFailed(e));
            let response = rb.send().map_err(|e| network(e.into()))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            response
                .take(MAX_BODY_BYTES + 1)
                .read_to_end(&mut body)
                .map_err(|e| network(e.into()))?;
            if body.len() as u64 > MAX_BODY_BYTES {
                return Err(Error::bad_response(
                    request.url.clone(),
                    crate::error::ResponseProblem::TooLarge(MAX_BODY_BYTES),
                ));
            }
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        }
    }

    /// The home directory, as `directories` finds it on each platform: on Unix `$HOME` when
    /// set and not empty (so a throwaway `HOME` is honoured, as kubelogin and kubectl honour
    /// it), else the password database; on Windows the profile folder (FOLDERID_Profile, what
    /// `USERPROFILE` names); on macOS the user's home. Only environment reads on the hot path:
    /// `BaseDirs` reads no file.
    pub fn home_dir() -> Option<PathBuf> {
        directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf())
    }

    /// The real dependencies.
    pub fn deps(verbosity: u8) -> Deps {
        Deps {
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(ThreadSleeper),
            browser: Arc::new(SystemBrowser),
            prompt: Arc::new(TerminalPrompt),
            keyring: Arc::new(OsKeyring),
            http: Arc::new(ReqwestFactory),
            console: Arc::new(Stderr),
            host: Arc::new(RealHost),
            env: environment(),
            verbosity,
        }
    }

    /// What the process was given besides flags (also read by the `kubectl-oidc_login` shim,
    /// so both binaries find the same cache).
    pub fn environment() -> Environment {
        Environment {
            exec_info: std::env::var("KUBERNETES_EXEC_INFO").ok(),
            kube_cache_dir: std::env::var_os("KUBECACHEDIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            home: home_dir(),
        }
    }
}
