//! Test support: the real router over a throwaway SQLite database, driven without a socket,
//! with a clock the tests move by hand.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use idp::clock::{Clock, ManualClock};
use idp::config::Config;
use idp::state::AppState;
use idp::store::{SqliteStore, Store};
use idp::testing::{form_value, ALICE, ALICE_PASSWORD};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

pub const ISSUER: &str = "http://idp.test:8080";
pub const LOOPBACK: &str = "http://localhost:8000";

pub struct Harness {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub secret: String,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    /// `name=value` pairs from Set-Cookie, for the next request's Cookie header.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect()
    }
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub async fn harness_with(f: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_issuer(ISSUER).unwrap();
    f(&mut config);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let secret = idp::testing::seed(store.as_ref(), clock.now()).await;
    let state = AppState::new(config, store, clock.clone()).await.unwrap();
    Harness {
        state,
        clock,
        secret,
        _dir: dir,
    }
}

/// The router over an existing database (one the built binary made), without the seed.
pub async fn harness_on(db_url: &str) -> Harness {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db_url).await.unwrap());
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let config = Config::for_issuer(ISSUER).unwrap();
    let state = AppState::new(config, store, clock.clone()).await.unwrap();
    Harness {
        state,
        clock,
        secret: String::new(),
        _dir: tempfile::tempdir().unwrap(),
    }
}

impl Harness {
    pub async fn call(&self, req: Request<Body>) -> Resp {
        let r = idp::app(self.state.clone()).oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str, cookies: &[String]) -> Resp {
        let req = Request::get(path)
            .header(header::COOKIE, cookies.join("; "))
            .body(Body::empty())
            .unwrap();
        self.call(req).await
    }

    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookies: &[String],
        extra: &[(&str, &str)],
    ) -> Resp {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut b = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookies.join("; "));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.call(b.body(Body::from(body)).unwrap()).await
    }

    /// A token request with client_secret_post / public client_id, as the params say.
    pub async fn token(&self, form: &[(&str, &str)]) -> Resp {
        self.post("/oauth/token", form, &[], &[]).await
    }

    /// Signs in through the login page; returns the browser's cookies (CSRF + session).
    pub async fn login(&self, user: &str, password: &str) -> Vec<String> {
        self.login_at("", user, password).await
    }

    /// Signs in through the login page of an IdP served under `base` (e.g. "/idp").
    pub async fn login_at(&self, base: &str, user: &str, password: &str) -> Vec<String> {
        let (r, cookies) = self.login_attempt(base, &[], user, password).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "login failed: {}", r.body);
        cookies
    }

    /// One sign-in through the login page by a browser holding `cookies`: the answer, and the
    /// browser's cookies afterwards (what it held, the page's and the answer's).
    pub async fn login_attempt(
        &self,
        base: &str,
        cookies: &[String],
        user: &str,
        password: &str,
    ) -> (Resp, Vec<String>) {
        let page = self.get(&format!("{base}/login"), cookies).await;
        let mut cookies = cookies.to_vec();
        cookies.extend(page.cookies());
        let csrf = form_value(&page.body, "csrf_token").unwrap();
        let r = self
            .post(
                &format!("{base}/login"),
                &[
                    ("csrf_token", &csrf),
                    ("return_to", ""),
                    ("username", user),
                    ("password", password),
                ],
                &cookies,
                &[],
            )
            .await;
        cookies.extend(r.cookies());
        (r, cookies)
    }

    /// Runs the authorization request to the end (consenting when asked) and returns the
    /// redirect to the client.
    pub async fn authorize(&self, cookies: &[String], params: &[(&str, &str)]) -> Resp {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let r = self.get(&format!("/oauth/authorize?{q}"), cookies).await;
        if r.status == StatusCode::OK {
            if let (Some(csrf), Some(request)) = (
                form_value(&r.body, "csrf_token"),
                form_value(&r.body, "request"),
            ) {
                return self
                    .post(
                        "/oauth/authorize/consent",
                        &[
                            ("csrf_token", &csrf),
                            ("request", &request),
                            ("decision", "allow"),
                        ],
                        cookies,
                        &[],
                    )
                    .await;
            }
        }
        r
    }

    /// A fresh authorization code for alice on the public `kubelogin` client, with PKCE.
    pub async fn code_for_alice(&self, scope: &str) -> (String, String) {
        let cookies = self.login(ALICE, ALICE_PASSWORD).await;
        let (verifier, challenge) = pkce_pair();
        let r = self
            .authorize(
                &cookies,
                &[
                    ("client_id", "kubelogin"),
                    ("redirect_uri", LOOPBACK),
                    ("response_type", "code"),
                    ("scope", scope),
                    ("state", "st"),
                    ("nonce", "n0"),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            )
            .await;
        let q = query_of(&r.location());
        (
            q.get("code")
                .cloned()
                .unwrap_or_else(|| panic!("no code in {}", r.location())),
            verifier,
        )
    }

    /// Tokens for alice through authcode + PKCE.
    pub async fn tokens_for_alice(&self, scope: &str) -> serde_json::Value {
        let (code, verifier) = self.code_for_alice(scope).await;
        let r = self.redeem(&code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.json()
    }

    /// Redeems a code of the public `kubelogin` client (loopback redirect URI, PKCE).
    pub async fn redeem(&self, code: &str, verifier: &str) -> Resp {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", LOOPBACK),
            ("client_id", "kubelogin"),
            ("code_verifier", verifier),
        ])
        .await
    }
}

pub fn query_of(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn pkce_pair() -> (String, String) {
    let verifier = idp::crypto::random_token(32);
    let challenge = shared::pkce::s256_challenge(&verifier);
    (verifier, challenge)
}

/// The claims of a JWT (signature checked by the callers that need it).
pub fn claims(token: &str) -> serde_json::Value {
    shared::jwt::decode_claims_unverified(token).unwrap()
}

impl Harness {
    pub fn clock_now(&self) -> u64 {
        use idp::clock::Clock;
        self.clock.now()
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Resp {
        let req = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.call(req).await
    }
}
