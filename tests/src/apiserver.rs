//! A kube-apiserver stand-in for tests: an HTTPS endpoint configured like kube-apiserver's
//! `--oidc-*` flags that authenticates `Authorization: Bearer` tokens with
//! `shared::kube_oidc` (the rules `doctor` uses too) and answers what `kubectl auth whoami` and
//! `kubectl get --raw /version` ask for. No Kubernetes API server exists on these machines.
//!
//! Like kube-apiserver it fetches the issuer's discovery document and JWKS at start (trusting
//! only `--oidc-ca-file` when given), keeps answering 401 while that has not worked, and
//! re-fetches the JWKS once (rate-limited) when a token's key is unknown or its signature fails,
//! which is how a rotated signing key gets picked up.
//!
//! It also starts from a structured authentication configuration file
//! ([`ApiServerSettings::from_authentication_config`], kube-apiserver's
//! `--authentication-config`), authenticating through `shared::authn_config` (CEL claim
//! mappings and validation rules included), the same code `doctor --authentication-config` runs.

use anyhow::{anyhow, bail, Context as _};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idp::clock::{Clock, SystemClock};
use serde_json::{json, Value};
use shared::authn_config::{self, AuthenticationConfiguration};
use shared::jwk::JwkSet;
use shared::kube_oidc::{self, RejectKind, Settings, UserInfo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kube-apiserver's OIDC flags, plus how often the JWKS may be re-fetched.
#[derive(Debug, Clone)]
pub struct ApiServerSettings {
    pub oidc: Settings,
    /// `--oidc-ca-file`: the only CA trusted for the issuer; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// `--authentication-config` instead of the `--oidc-*` flags: `oidc` then only names the
    /// issuer whose keys are fetched, and the CA is the file's inline `certificateAuthority`.
    pub authentication_config: Option<AuthenticationConfiguration>,
    /// kube-apiserver's defaults `--anonymous-auth=true` and the `system:public-info-viewer`
    /// ClusterRole: `/version` answers a request without a token (k3s and hardened clusters
    /// turn anonymous requests off, which is the stand-in's default).
    pub anonymous_public_info: bool,
    /// The least time between two JWKS fetches (go-oidc shares one in-flight fetch; this
    /// also stops a flood of bad tokens from hammering the issuer).
    pub jwks_refetch_interval: Duration,
}

impl ApiServerSettings {
    pub fn new(oidc: Settings, ca_file: Option<PathBuf>) -> Self {
        ApiServerSettings {
            oidc,
            ca_file,
            authentication_config: None,
            anonymous_public_info: false,
            jwks_refetch_interval: Duration::from_millis(500),
        }
    }

    /// kube-apiserver started with `--authentication-config` holding `text` (YAML): refused,
    /// as kube-apiserver refuses to start, when the file breaks a rule. The stand-in fetches
    /// the keys of one issuer, so the file must have exactly one `jwt` authenticator.
    pub fn from_authentication_config(text: &str) -> anyhow::Result<Self> {
        let config = authn_config::parse(text)?;
        let errors = authn_config::validate(&config);
        if !errors.is_empty() {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            bail!("invalid authentication configuration: {}", all.join("; "));
        }
        let [jwt] = config.jwt.as_slice() else {
            bail!("the stand-in serves exactly one jwt authenticator");
        };
        let audience = jwt.issuer.audiences.first().cloned().unwrap_or_default();
        let mut oidc = Settings::new(&jwt.issuer.url, &audience);
        oidc.signing_algs = kube_oidc::SUPPORTED_ALGS
            .iter()
            .map(|a| a.to_string())
            .collect();
        Ok(ApiServerSettings {
            authentication_config: Some(config),
            ..ApiServerSettings::new(oidc, None)
        })
    }

    /// The issuer's inline CA (`certificateAuthority`) when started from a configuration file.
    fn inline_ca(&self) -> Option<&str> {
        self.authentication_config
            .as_ref()?
            .jwt
            .first()?
            .issuer
            .certificate_authority
            .as_deref()
    }

    /// Where discovery is fetched: the file's `discoveryURL` when set, else under the issuer.
    fn discovery_url(&self) -> String {
        self.authentication_config
            .as_ref()
            .and_then(|c| c.jwt.first()?.issuer.discovery_url.clone())
            .unwrap_or_else(|| shared::discovery::discovery_url(&self.oidc.issuer_url))
    }
}

/// One authenticated request: who, and with which key and expiry.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub path: String,
    pub user: UserInfo,
    pub kid: Option<String>,
    pub exp: u64,
    /// The bearer token itself, so a test can replay it.
    pub token: String,
}

/// One refused request.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub path: String,
    /// `None` when the request had no bearer token or the authenticator had no keys yet.
    pub kind: Option<RejectKind>,
    pub reason: String,
}

/// What the stand-in saw, for the tests' assertions.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    pub authenticated: Vec<Authenticated>,
    pub rejected: Vec<Rejected>,
    /// Successful discovery + JWKS fetches (the one at start included).
    pub jwks_fetches: u64,
    /// The last discovery or JWKS fetch error.
    pub last_fetch_error: Option<String>,
}

struct Keys {
    jwks: Option<JwkSet>,
    last_attempt: Option<Instant>,
}

struct Inner {
    settings: ApiServerSettings,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Keys>,
    stats: Mutex<Stats>,
}

/// A running stand-in on 127.0.0.1; stops when dropped.
pub struct ApiServer {
    /// `https://127.0.0.1:<port>`, the kubeconfig's `cluster.server`.
    pub url: String,
    /// The CA that signed the stand-in's certificate (`certificate-authority` in kubeconfig).
    pub ca_path: PathBuf,
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// A kubeconfig `users[].user.exec` entry (client.authentication.k8s.io).
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// `client.authentication.k8s.io/v1` or `.../v1beta1`.
    pub api_version: String,
    pub command: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Required by v1 (`Never`, `IfAvailable`, `Always`); omitted for v1beta1 when `None`.
    pub interactive_mode: Option<String>,
}

impl ApiServer {
    /// Starts the stand-in on its own runtime thread and fetches the issuer's keys once; a
    /// failed fetch is not fatal (kube-apiserver starts anyway and answers 401), see
    /// [`Stats::last_fetch_error`].
    pub fn start(settings: ApiServerSettings) -> anyhow::Result<ApiServer> {
        settings
            .oidc
            .validate()
            .map_err(|e| anyhow!("kube-apiserver would not start: {e}"))?;
        let dir = tempfile::tempdir().context("temp dir")?;
        let certs = idp::tls::generate_certs(
            &["localhost".into(), "127.0.0.1".into()],
            &dir.path().join("certs"),
            SystemClock.now(),
        )?;
        let tls = idp::tls::server_config(&certs.server_cert, &certs.server_key)?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &settings.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("--oidc-ca-file {}", ca.display()))?;
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        if let Some(pem) = settings.inline_ca() {
            http = http.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .context("certificateAuthority")?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let inner = Arc::new(Inner {
            settings,
            http: http.build()?,
            keys: tokio::sync::Mutex::new(Keys {
                jwks: None,
                last_attempt: None,
            }),
            stats: Mutex::new(Stats::default()),
        });

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let inner2 = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                {
                    let mut keys = inner2.keys.lock().await;
                    refresh_keys(&inner2, &mut keys).await;
                }
                let app = router(inner2);
                let _ = ready_tx.send(Ok(()));
                let _ = idp::tls::serve_tls(listener, tls, app, async move {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the API server stand-in thread ended early"))??;
        Ok(ApiServer {
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_path: certs.ca_cert,
            addr,
            inner,
            shutdown: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// A copy of what the stand-in saw so far.
    pub fn stats(&self) -> Stats {
        self.inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Sends `GET path` with a bearer token (as kubectl would) and returns the status code.
    pub fn get_with_token(&self, path: &str, token: &str) -> anyhow::Result<u16> {
        let pem = std::fs::read(&self.ca_path)?;
        let http = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()?;
        Ok(resp.status().as_u16())
    }

    /// Writes a kubeconfig (JSON, which kubectl reads as YAML) with one cluster pointing at the
    /// stand-in, one user running `exec`, and a current context joining them.
    pub fn write_kubeconfig(&self, path: &Path, exec: &ExecConfig) -> anyhow::Result<()> {
        let mut e = json!({
            "apiVersion": exec.api_version,
            "command": exec.command,
            "args": exec.args,
            "env": exec.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "provideClusterInfo": false,
        });
        if let Some(mode) = &exec.interactive_mode {
            e["interactiveMode"] = json!(mode);
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {
                "server": self.url,
                "certificate-authority": self.ca_path,
            }}],
            "users": [{"name": "oidc", "user": {"exec": e}}],
            "contexts": [{"name": "oidc@standin", "context": {"cluster": "standin", "user": "oidc"}}],
            "current-context": "oidc@standin",
        });
        std::fs::write(path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fetches discovery then the JWKS (as go-oidc's `NewProvider` and remote key set do), unless
/// the last attempt was too recent. Returns whether the keys changed.
async fn refresh_keys(inner: &Inner, keys: &mut Keys) -> bool {
    if let Some(t) = keys.last_attempt {
        if t.elapsed() < inner.settings.jwks_refetch_interval {
            return false;
        }
    }
    keys.last_attempt = Some(Instant::now());
    let result = fetch_keys(inner).await;
    let Ok(mut stats) = inner.stats.lock() else {
        return false;
    };
    match result {
        Ok(jwks) => {
            stats.jwks_fetches += 1;
            let changed = keys.jwks.as_ref() != Some(&jwks);
            keys.jwks = Some(jwks);
            changed
        }
        Err(e) => {
            stats.last_fetch_error = Some(format!("{e:#}"));
            false
        }
    }
}

async fn fetch_keys(inner: &Inner) -> anyhow::Result<JwkSet> {
    let issuer = &inner.settings.oidc.issuer_url;
    let url = inner.settings.discovery_url();
    let meta: shared::discovery::ProviderMetadata = get_json(&inner.http, &url).await?;
    // go-oidc refuses a provider whose discovery document names another issuer.
    if meta.issuer != *issuer {
        bail!(
            "oidc: issuer did not match the issuer returned by provider, expected {issuer:?} got {:?}",
            meta.issuer
        );
    }
    get_json(&inner.http, &meta.jwks_uri).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    resp.json()
        .await
        .with_context(|| format!("GET {url}: not the expected JSON"))
}

fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(core_versions))
        .route("/apis", get(group_list))
        .route("/apis/authentication.k8s.io", get(auth_group))
        .route("/apis/authentication.k8s.io/{version}", get(auth_resources))
        .route(
            "/apis/authentication.k8s.io/{version}/selfsubjectreviews",
            post(self_subject_review),
        )
        .fallback(not_found)
        .with_state(inner)
}

/// The 401 kube-apiserver answers for a missing or refused token (it never says why; the
/// reason goes to its log, here to [`Stats::rejected`]).
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
        })),
    )
        .into_response()
}

/// Authenticates the request like kube-apiserver's bearer-token authenticator chain (OIDC only).
async fn authenticate(inner: &Inner, headers: &HeaderMap, path: &str) -> Option<UserInfo> {
    let record_reject = |kind: Option<RejectKind>, reason: String| {
        if let Ok(mut s) = inner.stats.lock() {
            s.rejected.push(Rejected {
                path: path.to_string(),
                kind,
                reason,
            });
        }
    };
    if let Ok(mut s) = inner.stats.lock() {
        s.requests += 1;
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        record_reject(None, "no bearer token".into());
        return None;
    }
    let mut keys = inner.keys.lock().await;
    if keys.jwks.is_none() {
        refresh_keys(inner, &mut keys).await;
    }
    let Some(jwks) = keys.jwks.clone() else {
        let err = inner
            .stats
            .lock()
            .ok()
            .and_then(|s| s.last_fetch_error.clone())
            .unwrap_or_default();
        record_reject(None, format!("oidc: authenticator not initialized: {err}"));
        return None;
    };
    let settings = &inner.settings;
    let check = |jwks: &JwkSet| match &settings.authentication_config {
        Some(config) => authn_config::authenticate(config, jwks, token, SystemClock.now()),
        None => kube_oidc::authenticate(&settings.oidc, jwks, token, SystemClock.now()),
    };
    let mut result = check(&jwks);
    if let Err(r) = &result {
        if r.kind.is_key_problem() && refresh_keys(inner, &mut keys).await {
            if let Some(jwks) = &keys.jwks {
                result = check(jwks);
            }
        }
    }
    drop(keys);
    match result {
        Ok(user) => {
            let header: Value = shared::jwt::decode_header_unverified(token).unwrap_or_default();
            let exp = shared::jwt::expiry_unverified(token)
                .ok()
                .flatten()
                .unwrap_or_default();
            if let Ok(mut s) = inner.stats.lock() {
                s.authenticated.push(Authenticated {
                    path: path.to_string(),
                    user: user.clone(),
                    kid: header["kid"].as_str().map(str::to_string),
                    exp,
                    token: token.to_string(),
                });
            }
            Some(user)
        }
        Err(r) => {
            record_reject(Some(r.kind), r.to_string());
            None
        }
    }
}

async fn version(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let anonymous = inner.settings.anonymous_public_info && !headers.contains_key("authorization");
    if !anonymous && authenticate(&inner, &headers, "/version").await.is_none() {
        return unauthorized();
    }
    Json(json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-standin", "gitCommit": "standin",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
        "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

async fn core_versions(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if authenticate(&inner, &headers, "/api").await.is_none() {
        return unauthorized();
    }
    Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }))
    .into_response()
}

fn auth_group_json() -> Value {
    let v =
        |ver: &str| json!({"groupVersion": format!("authentication.k8s.io/{ver}"), "version": ver});
    json!({
        "name": "authentication.k8s.io",
        "versions": [v("v1"), v("v1beta1"), v("v1alpha1")],
        "preferredVersion": v("v1"),
    })
}

async fn group_list(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if authenticate(&inner, &headers, "/apis").await.is_none() {
        return unauthorized();
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [auth_group_json()]}))
        .into_response()
}

async fn auth_group(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if authenticate(&inner, &headers, "/apis/authentication.k8s.io")
        .await
        .is_none()
    {
        return unauthorized();
    }
    let mut g = auth_group_json();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Json(g).into_response()
}

const AUTH_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha1"];

async fn auth_resources(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(version): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/apis/authentication.k8s.io/{version}");
    if authenticate(&inner, &headers, &path).await.is_none() {
        return unauthorized();
    }
    if !AUTH_VERSIONS.contains(&version.as_str()) {
        return not_found_status();
    }
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("authentication.k8s.io/{version}"),
        "resources": [{
            "name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": false,
            "kind": "SelfSubjectReview", "verbs": ["create"],
        }],
    }))
    .into_response()
}

/// `POST .../selfsubjectreviews`: what `kubectl auth whoami` sends; the answer is the
/// authenticated user as kube-apiserver sees it, `system:authenticated` included.
async fn self_subject_review(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(version): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/apis/authentication.k8s.io/{version}/selfsubjectreviews");
    let Some(user) = authenticate(&inner, &headers, &path).await else {
        return unauthorized();
    };
    if !AUTH_VERSIONS.contains(&version.as_str()) {
        return not_found_status();
    }
    let mut info = json!({
        "username": user.username,
        "groups": user.groups_with_authenticated(),
    });
    if let Some(uid) = &user.uid {
        info["uid"] = json!(uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("authentication.k8s.io/{version}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": info},
        })),
    )
        .into_response()
}

fn not_found_status() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "the server could not find the requested resource",
            "reason": "NotFound", "details": {}, "code": 404,
        })),
    )
        .into_response()
}

async fn not_found(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if authenticate(&inner, &headers, uri.path()).await.is_none() {
        return unauthorized();
    }
    not_found_status()
}
