//! A real IdP for tests, in-process on 127.0.0.1 with a throwaway database: seeded users and
//! clients, and a scripted "browser" that signs in through the real login and consent pages.
//! Used by this crate's tests, by kubectl-oidc_login's and by the e2e crate, behind the
//! `test-support` feature: it is never compiled into the shipped `kubelogin-idp`.

pub mod pg;

use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::crypto;
use crate::state::AppState;
use crate::store::{Client, NewUser, SqliteStore, Store};
use shared::token::grant_type;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "alice-password-123";
pub const BOB: &str = "bob";
pub const BOB_PASSWORD: &str = "bob-password-456";
/// A confidential client allowed client_credentials, authorization_code and refresh_token.
pub const CONFIDENTIAL_CLIENT: &str = "automation";
/// A public client that may use the password grant.
pub const PASSWORD_CLIENT: &str = "legacy-cli";

/// Options for [`TestIdp::start_with`].
#[derive(Debug, Clone)]
pub struct TestIdpOptions {
    /// "RS256" or "ES256".
    pub algorithm: String,
    /// ID and access token lifetime in seconds.
    pub token_lifetime: u64,
    /// Serve HTTPS with a certificate from a fresh local CA.
    pub tls: bool,
    /// Use a clock the test moves by hand (see [`TestIdp::clock`]).
    pub manual_clock: bool,
    pub refresh_reuse_grace: u64,
    pub device_code_interval: u64,
}

impl Default for TestIdpOptions {
    fn default() -> Self {
        TestIdpOptions {
            algorithm: "RS256".into(),
            token_lifetime: 3600,
            tls: false,
            manual_clock: false,
            refresh_reuse_grace: 5,
            device_code_interval: 1,
        }
    }
}

/// A running IdP; stops when dropped.
pub struct TestIdp {
    pub state: AppState,
    pub addr: SocketAddr,
    /// The confidential client's secret.
    pub confidential_secret: String,
    /// PEM of the CA that signed the server certificate (with `tls`).
    pub ca_pem: Option<String>,
    pub ca_path: Option<PathBuf>,
    pub dir: PathBuf,
    clock: Arc<ManualClock>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Dropping this ends the runtime thread.
    done: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A clock that is the wall clock unless the test took over.
struct SwitchClock {
    manual: Arc<ManualClock>,
    use_manual: bool,
}

impl Clock for SwitchClock {
    fn now(&self) -> u64 {
        if self.use_manual {
            self.manual.now()
        } else {
            crate::clock::SystemClock.now()
        }
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kubelogin-idp-test-{}",
        crypto::random_token(9).replace(['-', '_'], "x")
    ));
    let _ = std::fs::create_dir_all(&d);
    d
}

impl TestIdp {
    pub fn start() -> TestIdp {
        Self::start_with(TestIdpOptions::default())
    }

    /// Starts the IdP on its own runtime thread; panics (it is test support) if it cannot.
    #[allow(clippy::expect_used)]
    pub fn start_with(opts: TestIdpOptions) -> TestIdp {
        let dir = temp_dir();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let manual = Arc::new(ManualClock::starting_now());
        let manual2 = manual.clone();
        let dir2 = dir.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(opts, dir2, manual2, stop_rx, tx));
        });
        let started = rx.recv().expect("the test IdP failed to start");
        let ca_pem = started
            .ca_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        TestIdp {
            state: started.state,
            addr: started.addr,
            confidential_secret: started.confidential_secret,
            ca_pem,
            ca_path: started.ca_path,
            dir,
            clock: manual,
            shutdown: Some(stop_tx),
            done: Some(started.done),
            thread: Some(thread),
        }
    }

    pub fn issuer(&self) -> String {
        self.state.config.issuer.clone()
    }

    /// The hand-moved clock (only in effect with `manual_clock`).
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Successful token grants of one type (e.g. "refresh_token") since start.
    pub fn token_grants(&self, grant: &str) -> u64 {
        self.state.grants.get(grant)
    }

    /// Runs a future on a private runtime (for store calls from synchronous tests).
    #[allow(clippy::expect_used)]
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Disables a user at the IdP (as `kubelogin-idp user disable` does).
    #[allow(clippy::expect_used)]
    pub fn disable_user(&self, username: &str) {
        let st = self.state.clone();
        let name = username.to_string();
        self.block_on(async move {
            let u = st
                .store
                .user_by_username(&name)
                .await
                .expect("store")
                .expect("user");
            st.store
                .set_user_disabled(&u.id, true, st.now())
                .await
                .expect("disable");
        })
    }

    /// Revokes every session of a client (as `kubelogin-idp client revoke-all` does).
    #[allow(clippy::expect_used)]
    pub fn revoke_all(&self, client_id: &str) {
        let st = self.state.clone();
        let id = client_id.to_string();
        self.block_on(async move {
            st.store
                .revoke_all_for_client(&id, st.now())
                .await
                .expect("revoke-all");
        })
    }

    /// Rotates the signing key and makes the server use it at once.
    #[allow(clippy::expect_used)]
    pub fn rotate_key(&self, algorithm: &str) -> String {
        let st = self.state.clone();
        let alg: crate::keys::Algorithm = algorithm.parse().expect("alg");
        self.block_on(async move {
            let key = crate::keys::SigningKey::generate(alg).expect("key");
            let kid = key.kid().to_string();
            st.store
                .activate_key(
                    crate::store::StoredKey {
                        kid: kid.clone(),
                        alg: alg.as_str().into(),
                        private_pem: key.to_pkcs8_pem(),
                        created_at: st.now(),
                        retired_at: None,
                    },
                    st.now(),
                )
                .await
                .expect("activate");
            st.reload_keys().await.expect("reload");
            kid
        })
    }

    /// An HTTP client that trusts this IdP (its CA with `tls`), never following redirects.
    #[allow(clippy::expect_used)]
    pub fn http_client(&self) -> reqwest::blocking::Client {
        let mut b =
            reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &self.ca_pem {
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("ca"));
        }
        b.build().expect("client")
    }

    /// Plays a person in a browser: opens `url` (the IdP's authorization URL, or a client's
    /// loopback URL that redirects there), signs in, allows consent, and follows the final
    /// redirect to the client. Returns the last URL visited (the client's callback).
    pub fn browser_login(
        &self,
        url: &str,
        username: &str,
        password: &str,
    ) -> Result<String, String> {
        Browser::new(self.http_client()).login(url, username, password, true)
    }

    /// Like `browser_login` but presses "Deny" on the consent page.
    pub fn browser_deny(
        &self,
        url: &str,
        username: &str,
        password: &str,
    ) -> Result<String, String> {
        Browser::new(self.http_client()).login(url, username, password, false)
    }

    /// Signs in at `/device`, enters `user_code` and presses Allow.
    pub fn approve_device(
        &self,
        user_code: &str,
        username: &str,
        password: &str,
    ) -> Result<(), String> {
        Browser::new(self.http_client()).device(&self.issuer(), user_code, username, password, true)
    }

    /// Signs in at `/device`, enters `user_code` and presses Deny.
    pub fn deny_device(
        &self,
        user_code: &str,
        username: &str,
        password: &str,
    ) -> Result<(), String> {
        Browser::new(self.http_client()).device(
            &self.issuer(),
            user_code,
            username,
            password,
            false,
        )
    }
}

/// What the runtime thread hands back once the IdP serves.
struct Started {
    state: AppState,
    addr: SocketAddr,
    confidential_secret: String,
    ca_path: Option<PathBuf>,
    /// Dropping this ends the runtime thread.
    done: tokio::sync::oneshot::Sender<()>,
}

/// The runtime thread's body: binds 127.0.0.1:0, builds the IdP, serves it until `stop`, reports
/// on `started`, and returns when the `done` sender it handed over is dropped.
#[allow(clippy::expect_used)]
async fn run(
    opts: TestIdpOptions,
    dir: PathBuf,
    manual: Arc<ManualClock>,
    stop: tokio::sync::oneshot::Receiver<()>,
    started: std::sync::mpsc::Sender<Started>,
) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("addr");
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
    let scheme = if opts.tls { "https" } else { "http" };
    let host = if opts.tls { "localhost" } else { "127.0.0.1" };
    let issuer = format!("{scheme}://{host}:{}", addr.port());
    let (state, confidential_secret) = build_state(&opts, &dir, &issuer, manual).await;
    let app = crate::app(state.clone());
    let ca_path = spawn_server(opts.tls, &dir, listener, app, stop);
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    started
        .send(Started {
            state,
            addr,
            confidential_secret,
            ca_path,
            done,
        })
        .expect("send");
    let _ = done_rx.await;
}

/// The IdP's state for `issuer` on a fresh SQLite database in `dir`, seeded (see [`seed`]);
/// returns it with the confidential client's secret.
#[allow(clippy::expect_used)]
async fn build_state(
    opts: &TestIdpOptions,
    dir: &std::path::Path,
    issuer: &str,
    manual: Arc<ManualClock>,
) -> (AppState, String) {
    let mut config = Config::for_issuer(issuer).expect("config");
    config.signing_alg = opts.algorithm.parse().expect("algorithm");
    config.token_lifetime = opts.token_lifetime;
    config.refresh_reuse_grace = opts.refresh_reuse_grace;
    config.device_code_interval = opts.device_code_interval;
    let url = format!("sqlite://{}", dir.join("idp.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("store"));
    let clock: Arc<dyn Clock> = Arc::new(SwitchClock {
        manual,
        use_manual: opts.manual_clock,
    });
    let secret = seed(store.as_ref(), clock.now()).await;
    let state = AppState::new(config, store, clock).await.expect("state");
    (state, secret)
}

/// Serves `app` on `listener` until `stop`: over HTTPS with a certificate from a fresh local CA
/// in `dir` (whose path it returns) when `tls`, else plain HTTP.
#[allow(clippy::expect_used)]
fn spawn_server(
    tls: bool,
    dir: &std::path::Path,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<PathBuf> {
    if !tls {
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
        });
        return None;
    }
    let paths = crate::tls::generate_certs(
        &["localhost".into(), "127.0.0.1".into()],
        &dir.join("certs"),
        crate::clock::SystemClock.now(),
    )
    .expect("certs");
    let config =
        crate::tls::server_config(&paths.server_cert, &paths.server_key).expect("tls config");
    tokio::spawn(crate::tls::serve_tls(listener, config, app, async move {
        let _ = stop.await;
    }));
    Some(paths.ca_cert)
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Seeds the users and clients every test relies on; returns the confidential client's secret.
#[allow(clippy::expect_used)]
pub async fn seed(store: &dyn Store, now: u64) -> String {
    for (name, pw, email) in [
        (ALICE, ALICE_PASSWORD, "alice@example.com"),
        (BOB, BOB_PASSWORD, "bob@example.com"),
    ] {
        let hash = crypto::hash_password(pw).expect("hash");
        store
            .create_user(
                NewUser {
                    username: name.into(),
                    email: email.into(),
                    name: format!("{name} example"),
                    password_hash: Some(hash),
                    is_admin: false,
                },
                now,
            )
            .await
            .expect("user");
    }
    store.create_group("developers", now).await.expect("group");
    let alice = store
        .user_by_username(ALICE)
        .await
        .expect("store")
        .expect("alice");
    store
        .add_group_member("developers", &alice.id)
        .await
        .expect("member");
    store
        .create_client(crate::bootstrap::default_client(now))
        .await
        .expect("client");
    let secret = crypto::random_token(32);
    store
        .create_client(Client {
            client_id: CONFIDENTIAL_CLIENT.into(),
            name: "CI automation".into(),
            secret_hash: Some(crypto::hash_secret(&secret)),
            redirect_uris: vec![
                "http://localhost:8000".into(),
                "https://app.example.com/callback".into(),
            ],
            post_logout_redirect_uris: vec!["https://app.example.com/bye".into()],
            grant_types: vec![
                grant_type::AUTHORIZATION_CODE.into(),
                grant_type::REFRESH_TOKEN.into(),
                grant_type::CLIENT_CREDENTIALS.into(),
                grant_type::DEVICE_CODE.into(),
            ],
            scopes: crate::bootstrap::default_scopes(),
            tokens_valid_after: 0,
            created_at: now,
        })
        .await
        .expect("client");
    store
        .create_client(Client {
            client_id: PASSWORD_CLIENT.into(),
            name: "Legacy CLI".into(),
            secret_hash: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![
                grant_type::PASSWORD.into(),
                grant_type::REFRESH_TOKEN.into(),
            ],
            scopes: crate::bootstrap::default_scopes(),
            tokens_valid_after: 0,
            created_at: now,
        })
        .await
        .expect("client");
    secret
}

/// A minimal scripted browser: cookies, redirects, and the IdP's forms.
pub struct Browser {
    http: reqwest::blocking::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

/// Reads a hidden input's value from our server-rendered HTML (askama escapes attributes).
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Browser {
    pub fn new(http: reqwest::blocking::Client) -> Self {
        Browser {
            http,
            cookies: Default::default(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, r: &reqwest::blocking::Response) {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Some((kv, _)) = v.to_str().unwrap_or("").split_once(';') {
                if let Some((k, v)) = kv.split_once('=') {
                    if v.is_empty() {
                        self.cookies.remove(k.trim());
                    } else {
                        self.cookies.insert(k.trim().into(), v.into());
                    }
                }
            }
        }
    }

    /// GET `url`, following redirects; returns (final URL, status, body).
    pub fn get(&mut self, url: &str) -> Result<(String, u16, String), String> {
        self.follow(
            self.http.get(url).header("cookie", self.cookie_header()),
            url,
        )
    }

    pub fn post(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(String, u16, String), String> {
        self.follow(
            self.http
                .post(url)
                .header("cookie", self.cookie_header())
                .form(form),
            url,
        )
    }

    fn follow(
        &mut self,
        first: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<(String, u16, String), String> {
        let mut current = url.to_string();
        let mut req = first;
        for _ in 0..20 {
            let r = req.send().map_err(|e| format!("GET {current}: {e}"))?;
            self.absorb(&r);
            let status = r.status().as_u16();
            if (300..400).contains(&status) {
                let loc = r
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or("redirect without Location")?
                    .to_string();
                let next = url::Url::parse(&current)
                    .and_then(|b| b.join(&loc))
                    .map_err(|e| e.to_string())?;
                current = next.to_string();
                req = self
                    .http
                    .get(&current)
                    .header("cookie", self.cookie_header());
                continue;
            }
            let body = r.text().map_err(|e| e.to_string())?;
            return Ok((current, status, body));
        }
        Err("too many redirects".into())
    }

    fn base_of(url: &str) -> Result<String, String> {
        let u = url::Url::parse(url).map_err(|e| e.to_string())?;
        Ok(u.origin().ascii_serialization())
    }

    pub fn login(
        &mut self,
        url: &str,
        username: &str,
        password: &str,
        allow: bool,
    ) -> Result<String, String> {
        let (mut at, mut status, mut body) = self.get(url)?;
        for _ in 0..4 {
            if let (Some(csrf), Some(ret)) = (
                form_value(&body, "csrf_token"),
                form_value(&body, "return_to"),
            ) {
                let origin = Self::base_of(&at)?;
                let action = format!(
                    "{origin}{}",
                    action_of(&body).unwrap_or_else(|| "/login".into())
                );
                (at, status, body) = self.post(
                    &action,
                    &[
                        ("csrf_token", &csrf),
                        ("return_to", &ret),
                        ("username", username),
                        ("password", password),
                    ],
                )?;
                if status == 401 || status == 429 {
                    return Err(format!("login refused ({status})"));
                }
                continue;
            }
            if let (Some(csrf), Some(request)) = (
                form_value(&body, "csrf_token"),
                form_value(&body, "request"),
            ) {
                let origin = Self::base_of(&at)?;
                let action = format!(
                    "{origin}{}",
                    action_of(&body).unwrap_or_else(|| "/oauth/authorize/consent".into())
                );
                (at, status, body) = self.post(
                    &action,
                    &[
                        ("csrf_token", &csrf),
                        ("request", &request),
                        ("decision", if allow { "allow" } else { "deny" }),
                    ],
                )?;
                continue;
            }
            break;
        }
        if status >= 400 {
            return Err(format!(
                "ended at {at} with status {status}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
        Ok(at)
    }

    pub fn device(
        &mut self,
        issuer: &str,
        user_code: &str,
        username: &str,
        password: &str,
        allow: bool,
    ) -> Result<(), String> {
        let mut u = url::Url::parse(&format!("{issuer}/device")).map_err(|e| e.to_string())?;
        u.query_pairs_mut().append_pair("user_code", user_code);
        let (mut at, mut status, mut body) = self.get(u.as_str())?;
        if let (Some(csrf), Some(ret)) = (
            form_value(&body, "csrf_token"),
            form_value(&body, "return_to"),
        ) {
            let action = format!(
                "{}{}",
                Self::base_of(&at)?,
                action_of(&body).unwrap_or_else(|| "/login".into())
            );
            (at, status, body) = self.post(
                &action,
                &[
                    ("csrf_token", &csrf),
                    ("return_to", &ret),
                    ("username", username),
                    ("password", password),
                ],
            )?;
        }
        let (Some(csrf), Some(code)) = (
            form_value(&body, "csrf_token"),
            form_value(&body, "user_code"),
        ) else {
            return Err(format!(
                "no confirmation form at {at} (status {status}): {}",
                body.chars().take(300).collect::<String>()
            ));
        };
        let action = format!(
            "{}{}",
            Self::base_of(&at)?,
            action_of(&body).unwrap_or_else(|| "/device".into())
        );
        let (_, status, body) = self.post(
            &action,
            &[
                ("csrf_token", &csrf),
                ("user_code", &code),
                ("decision", if allow { "allow" } else { "deny" }),
            ],
        )?;
        if status != 200 {
            return Err(format!("device decision failed ({status}): {body}"));
        }
        Ok(())
    }
}

/// The `action` of the page's POST form.
fn action_of(html: &str) -> Option<String> {
    let i = html.find("method=\"post\" action=\"")? + "method=\"post\" action=\"".len();
    let end = html[i..].find('"')? + i;
    Some(unescape(&html[i..end]))
}
