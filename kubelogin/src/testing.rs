//! Fakes of the [`crate::deps`] traits: a settable clock, a sleeper that advances it, a
//! recording browser and console, scripted prompts, an in-memory keyring with a size limit,
//! and a scripted HTTP client. Used by unit tests here and by `tests/`.
//!
//! Compiled only for tests (`cfg(test)`, or the `test-support` feature the integration tests
//! get through the crate's dev-dependency on itself): the shipped binary carries none of it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::deps::*;
use crate::error::{Error, Result};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A clock tests set and advance.
pub struct FakeClock(Mutex<DateTime<Utc>>);
impl FakeClock {
    pub fn set(&self, t: DateTime<Utc>) {
        *lock(&self.0) = t;
    }
    pub fn advance(&self, d: Duration) {
        let mut t = lock(&self.0);
        *t += chrono::Duration::from_std(d).unwrap_or_default();
    }
}
impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// Records sleeps and advances the fake clock instead of waiting.
pub struct FakeSleeper {
    pub clock: Arc<FakeClock>,
    pub slept: Mutex<Vec<Duration>>,
}
impl Sleeper for FakeSleeper {
    fn sleep(&self, duration: Duration) {
        lock(&self.slept).push(duration);
        self.clock.advance(duration);
    }
}

type BrowserAction = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// Records opened URLs; optionally acts on them (e.g. an HTTP client following redirects), or
/// plays a launcher that starts and then exits unsuccessfully (`exit_failure`).
#[derive(Default)]
pub struct FakeBrowser {
    pub opened: Mutex<Vec<String>>,
    pub action: Mutex<Option<Arc<BrowserAction>>>,
    pub exit_failure: Mutex<Option<String>>,
}
impl FakeBrowser {
    pub fn on_open(&self, f: impl Fn(&str) -> Result<()> + Send + Sync + 'static) {
        *lock(&self.action) = Some(Arc::new(Box::new(f)));
    }
    pub fn opened(&self) -> Vec<String> {
        lock(&self.opened).clone()
    }
    /// The launcher starts, then reports `reason` as its failure.
    pub fn fail_after_start(&self, reason: &str) {
        *lock(&self.exit_failure) = Some(reason.to_string());
    }
}
impl Browser for FakeBrowser {
    fn open(&self, url: &str, _command: Option<&str>, failed: LaunchFailed) -> Result<()> {
        lock(&self.opened).push(url.to_string());
        if let Some(reason) = lock(&self.exit_failure).clone() {
            failed(reason);
            return Ok(());
        }
        let action = lock(&self.action).clone();
        match action {
            Some(f) => f(url),
            None => Ok(()),
        }
    }
}

/// A machine described by tests: environment variables, files (with contents), programs on
/// `PATH` and the OS name (`linux` unless set).
#[derive(Default)]
pub struct FakeHost {
    pub vars: Mutex<BTreeMap<String, String>>,
    pub files: Mutex<BTreeMap<String, String>>,
    pub programs: Mutex<Vec<String>>,
    pub os: Mutex<Option<&'static str>>,
}
impl FakeHost {
    pub fn var(&self, name: &str, value: &str) -> &Self {
        lock(&self.vars).insert(name.into(), value.into());
        self
    }
    pub fn unset(&self, name: &str) -> &Self {
        lock(&self.vars).remove(name);
        self
    }
    pub fn file(&self, path: &str, contents: &str) -> &Self {
        lock(&self.files).insert(path.into(), contents.into());
        self
    }
    pub fn program(&self, name: &str) -> &Self {
        lock(&self.programs).push(name.into());
        self
    }
    pub fn set_os(&self, os: &'static str) -> &Self {
        *lock(&self.os) = Some(os);
        self
    }
}
impl Host for FakeHost {
    fn var(&self, name: &str) -> Option<String> {
        lock(&self.vars)
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
    }
    fn exists(&self, path: &str) -> bool {
        lock(&self.files).contains_key(path)
    }
    fn read(&self, path: &str) -> Option<String> {
        lock(&self.files).get(path).cloned()
    }
    fn on_path(&self, program: &str) -> bool {
        lock(&self.programs).iter().any(|p| p == program)
    }
    fn os(&self) -> &'static str {
        lock(&self.os).unwrap_or("linux")
    }
}

/// Answers prompts from a script; `terminal` says whether it pretends to be a terminal.
type Answerer = Arc<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Default)]
pub struct FakePrompt {
    pub terminal: Mutex<bool>,
    pub answers: Mutex<VecDeque<String>>,
    pub answerer: Mutex<Option<Answerer>>,
    pub asked: Mutex<Vec<String>>,
}
impl FakePrompt {
    /// Answers every prompt by calling `f` with the prompt text.
    pub fn answer_with(&self, f: impl Fn(&str) -> String + Send + Sync + 'static) {
        *lock(&self.terminal) = true;
        *lock(&self.answerer) = Some(Arc::new(f));
    }
    pub fn answer(&self, text: &str) {
        *lock(&self.terminal) = true;
        lock(&self.answers).push_back(text.to_string());
    }
    pub fn asked(&self) -> Vec<String> {
        lock(&self.asked).clone()
    }
}
impl Prompt for FakePrompt {
    fn is_terminal(&self) -> bool {
        *lock(&self.terminal)
    }
    fn read_line(&self, prompt: &str) -> Result<String> {
        lock(&self.asked).push(prompt.to_string());
        let answerer = lock(&self.answerer).clone();
        if let Some(f) = answerer {
            return Ok(f(prompt));
        }
        lock(&self.answers)
            .pop_front()
            .ok_or_else(|| Error::NoTerminal(format!("no scripted answer for {prompt:?}")))
    }
    fn read_password(&self, prompt: &str) -> Result<String> {
        self.read_line(prompt)
    }
}

/// An in-memory keyring; `limit` makes it refuse secrets longer than that many bytes.
#[derive(Default)]
pub struct FakeKeyring {
    items: Mutex<BTreeMap<(String, String), String>>,
    limit: Mutex<Option<usize>>,
}
impl FakeKeyring {
    pub fn set_limit(&self, limit: Option<usize>) {
        *lock(&self.limit) = limit;
    }
    pub fn items(&self) -> BTreeMap<(String, String), String> {
        lock(&self.items).clone()
    }
}
impl Keyring for FakeKeyring {
    fn get(&self, service: &str, account: &str) -> Result<Option<String>> {
        Ok(lock(&self.items)
            .get(&(service.to_string(), account.to_string()))
            .cloned())
    }
    fn set(&self, service: &str, account: &str, secret: &str) -> Result<()> {
        if let Some(limit) = *lock(&self.limit) {
            if secret.len() > limit {
                return Err(Error::keyring(format!(
                    "too long: {} > {limit}",
                    secret.len()
                )));
            }
        }
        lock(&self.items).insert(
            (service.to_string(), account.to_string()),
            secret.to_string(),
        );
        Ok(())
    }
    fn delete(&self, service: &str, account: &str) -> Result<()> {
        lock(&self.items).remove(&(service.to_string(), account.to_string()));
        Ok(())
    }
}

/// Captures stderr lines; `terminal` makes it pretend to be a terminal, whose rewritten
/// lines (the countdown) are kept apart in `rewrites`.
#[derive(Default)]
pub struct FakeConsole(
    pub Mutex<Vec<String>>,
    pub Mutex<bool>,
    pub Mutex<Vec<String>>,
);
impl FakeConsole {
    pub fn set_terminal(&self, terminal: bool) {
        *lock(&self.1) = terminal;
    }
    pub fn rewrites(&self) -> Vec<String> {
        lock(&self.2).clone()
    }
}
impl Console for FakeConsole {
    fn line(&self, text: &str) {
        lock(&self.0).push(text.to_string());
    }
    fn is_terminal(&self) -> bool {
        *lock(&self.1)
    }
    fn rewrite(&self, text: &str) {
        lock(&self.2).push(text.to_string());
    }
}

/// Scripted HTTP: answers by URL (first match of the URL without query), each URL with a
/// queue whose last answer repeats; records every request.
#[derive(Default)]
pub struct FakeHttp {
    pub routes: Mutex<Vec<(String, VecDeque<HttpResponse>)>>,
    pub requests: Mutex<Vec<HttpRequest>>,
    /// How many times a client was built (the cache-hit path must build none).
    pub builds: Mutex<u32>,
}
impl FakeHttp {
    pub fn route(&self, url: &str, status: u16, body: &str) {
        let resp = HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        };
        let mut routes = lock(&self.routes);
        match routes.iter_mut().find(|(u, _)| u == url) {
            Some((_, q)) => q.push_back(resp),
            None => routes.push((url.to_string(), VecDeque::from([resp]))),
        }
    }
    pub fn requests(&self) -> Vec<HttpRequest> {
        lock(&self.requests).clone()
    }
}
impl Http for FakeHttp {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse> {
        lock(&self.requests).push(request.clone());
        let base = request.url.split('?').next().unwrap_or_default();
        let mut routes = lock(&self.routes);
        let Some((_, q)) = routes.iter_mut().find(|(u, _)| u == base) else {
            return Err(Error::network(
                request.url.clone(),
                "connection refused (no fake route)",
            ));
        };
        let resp = if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().cloned()
        };
        resp.ok_or_else(|| Error::network(request.url.clone(), "no answer"))
    }
}

pub struct FakeHttpFactory(pub Arc<FakeHttp>);
impl HttpFactory for FakeHttpFactory {
    fn build(&self, _: &HttpSettings) -> Result<Arc<dyn Http>> {
        *lock(&self.0.builds) += 1;
        Ok(self.0.clone())
    }
}

/// Fakes plus a [`Deps`] made of them.
pub struct FakeDeps {
    pub clock: Arc<FakeClock>,
    pub sleeper: Arc<FakeSleeper>,
    pub browser: Arc<FakeBrowser>,
    pub prompt: Arc<FakePrompt>,
    pub keyring: Arc<FakeKeyring>,
    pub http: Arc<FakeHttp>,
    pub console: Arc<FakeConsole>,
    pub host: Arc<FakeHost>,
    pub deps: Deps,
}

impl FakeDeps {
    /// Fakes at 2030-01-01T00:00:00Z, no terminal.
    pub fn new() -> Self {
        let start = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let clock = Arc::new(FakeClock(Mutex::new(start)));
        let sleeper = Arc::new(FakeSleeper {
            clock: clock.clone(),
            slept: Mutex::new(Vec::new()),
        });
        let browser = Arc::new(FakeBrowser::default());
        let prompt = Arc::new(FakePrompt::default());
        let keyring = Arc::new(FakeKeyring::default());
        let http = Arc::new(FakeHttp::default());
        let console = Arc::new(FakeConsole::default());
        // A desktop: Linux with a display.
        let host = Arc::new(FakeHost::default());
        host.var("DISPLAY", ":0");
        let deps = Deps {
            clock: clock.clone(),
            sleeper: sleeper.clone(),
            browser: browser.clone(),
            prompt: prompt.clone(),
            keyring: keyring.clone(),
            http: Arc::new(FakeHttpFactory(http.clone())),
            console: console.clone(),
            host: host.clone(),
            env: Environment::default(),
            verbosity: 0,
        };
        FakeDeps {
            clock,
            sleeper,
            browser,
            prompt,
            keyring,
            http,
            console,
            host,
            deps,
        }
    }

    pub fn console_text(&self) -> String {
        lock(&self.console.0).join("\n")
    }
}

impl Default for FakeDeps {
    fn default() -> Self {
        Self::new()
    }
}

/// Issuer of [`FakeDeps::discovery`].
pub const ISSUER: &str = "https://idp.test";

/// Provider flags for [`ISSUER`] with client `kubernetes`.
pub fn provider_config() -> crate::provider::ProviderConfig {
    crate::provider::ProviderConfig {
        issuer: ISSUER.into(),
        client_id: "kubernetes".into(),
        client_secret: crate::secret::Secret::default(),
        extra_scopes: Vec::new(),
        request_headers: BTreeMap::new(),
        http: HttpSettings::default(),
        device_authorization_endpoint: None,
    }
}

/// Login options for unit tests: the given grant, no prompts, access token handed out.
pub fn login_options(grant: crate::auth::GrantType) -> crate::auth::LoginOptions {
    crate::auth::LoginOptions {
        grant,
        pkce: crate::auth::PkceMethod::Auto,
        redirect_url: String::new(),
        listen_addresses: vec!["127.0.0.1:0".into()],
        timeout: Duration::from_secs(60),
        skip_open_browser: false,
        browser_command: None,
        open_url_after_authentication: None,
        local_server_tls: None,
        username: String::new(),
        password: crate::secret::Secret::default(),
        auth_request_extra_params: BTreeMap::new(),
        interactive: false,
        use_access_token: true,
    }
}

impl FakeDeps {
    /// Routes the discovery document of [`ISSUER`] (PKCE S256, device endpoint).
    pub fn discovery(&self) {
        let doc = format!(
            r#"{{"issuer":"{ISSUER}","authorization_endpoint":"{ISSUER}/authorize","token_endpoint":"{ISSUER}/token","jwks_uri":"{ISSUER}/jwks","device_authorization_endpoint":"{ISSUER}/device","code_challenge_methods_supported":["S256"]}}"#
        );
        self.http.route(
            &format!("{ISSUER}/.well-known/openid-configuration"),
            200,
            &doc,
        );
    }

    /// The form of the `n`th request to `url`.
    pub fn form_of(&self, url: &str, n: usize) -> BTreeMap<String, String> {
        self.http
            .requests()
            .into_iter()
            .filter(|r| r.url == url)
            .nth(n)
            .and_then(|r| r.form)
            .map(|f| f.into_iter().collect())
            .unwrap_or_default()
    }
}
