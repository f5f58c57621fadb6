//! A small configurable OpenID provider for failures a real one never produces: refresh
//! errors, discovery without PKCE or device endpoint, no `id_token` on refresh, `slow_down`,
//! wrong `iss`/`aud`, expired tokens, bad signatures, `alg: none`, HMAC, HTML, malformed or
//! oversized JSON, slow answers. It signs with keys generated in-test (ES256 or RS256) and
//! approves every authorization request at once as the user `alice`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kubelogin::deps::Clock;
use p256::ecdsa::signature::Signer;
use serde_json::{json, Value};
use shared::jwt::b64url;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alg {
    Es256,
    Rs256,
    /// Signed by a key that is not in the JWKS, with the JWKS key's `kid`.
    BadSignature,
    /// `alg: none`, empty signature.
    None,
    /// HS256, a real HMAC keyed with the provider's public RSA key as PEM bytes, under that
    /// key's `kid`: the classic algorithm-confusion forgery (a verifier that takes `alg` from
    /// the token would check it with the "key" it has, the public key, and accept it).
    Hs256,
}

/// What the stub does; tests change it between calls.
#[derive(Clone, Debug)]
pub struct Config {
    pub discovery_issuer: Option<String>,
    pub pkce_in_discovery: bool,
    pub device_endpoint_in_discovery: bool,
    pub revocation_in_discovery: bool,
    /// Replaces the token endpoint in discovery (e.g. a closed port).
    pub token_endpoint: Option<String>,
    /// Replaces the discovery answer: (status, content type, body).
    pub discovery_body: Option<(u16, String, String)>,
    pub slow_discovery: Option<Duration>,
    pub alg: Alg,
    pub iss: Option<String>,
    pub aud: Option<String>,
    pub id_token_lifetime: i64,
    pub wrong_nonce: bool,
    pub wrong_at_hash: bool,
    pub tamper_state: bool,
    /// `error` on the authorization redirect (e.g. access_denied).
    pub authorize_error: Option<String>,
    /// RFC 6749 §5.2 error code answered to refresh grants.
    pub refresh_error: Option<String>,
    pub refresh_without_id_token: bool,
    pub rotate_refresh_tokens: bool,
    /// Errors answered to device polls before success (authorization_pending, slow_down, ...).
    pub device_answers: VecDeque<String>,
    pub device_complete_uri: bool,
    pub device_interval: Option<u64>,
    pub client_secret: Option<String>,
    pub expires_in: u64,
    /// Delay of token responses (to widen races in parallel tests).
    pub token_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            discovery_issuer: None,
            pkce_in_discovery: true,
            device_endpoint_in_discovery: true,
            revocation_in_discovery: true,
            token_endpoint: None,
            discovery_body: None,
            slow_discovery: None,
            alg: Alg::Es256,
            iss: None,
            aud: None,
            id_token_lifetime: 3600,
            wrong_nonce: false,
            wrong_at_hash: false,
            tamper_state: false,
            authorize_error: None,
            refresh_error: None,
            refresh_without_id_token: false,
            rotate_refresh_tokens: true,
            device_answers: VecDeque::new(),
            device_complete_uri: true,
            device_interval: Some(1),
            client_secret: None,
            expires_in: 3600,
            token_delay: Duration::ZERO,
        }
    }
}

/// One request as the stub saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub form: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
}

struct Pending {
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, Pending>,
    refresh_tokens: HashMap<String, ()>,
    device_codes: HashMap<String, Option<String>>,
    grants: BTreeMap<String, u64>,
    seen: Vec<Seen>,
    revoked: Vec<String>,
    counter: u64,
}

pub struct Stub {
    pub issuer: String,
    pub client_id: String,
    config: Mutex<Config>,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    ec_key: p256::ecdsa::SigningKey,
    other_ec_key: p256::ecdsa::SigningKey,
    rsa_key: rsa::RsaPrivateKey,
    server: Arc<tiny_http::Server>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

pub fn rsa_key() -> rsa::RsaPrivateKey {
    // 2048 bits: what providers use; rsa is built with opt-level 3 in dev.
    static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
        .clone()
}

impl Stub {
    /// Starts on 127.0.0.1 on a free port.
    pub fn start(clock: Arc<dyn Clock>, config: Config) -> Arc<Stub> {
        Self::start_with(clock, config, None)
    }

    /// Starts over HTTPS with the given PEM certificate chain and PKCS#8 key.
    pub fn start_with(
        clock: Arc<dyn Clock>,
        config: Config,
        tls: Option<(String, String)>,
    ) -> Arc<Stub> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain = listener.local_addr().unwrap();
        let issuer = match tls {
            None => format!("http://{plain}"),
            Some((chain, key)) => format!("https://{}", tls_front(plain, &chain, &key)),
        };
        let server = Arc::new(tiny_http::Server::from_listener(listener, None).unwrap());
        let stub = Arc::new(Stub {
            issuer,
            client_id: "kubernetes".into(),
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
            clock,
            ec_key: p256::ecdsa::SigningKey::random(&mut rand::thread_rng()),
            other_ec_key: p256::ecdsa::SigningKey::random(&mut rand::thread_rng()),
            rsa_key: rsa_key(),
            server: server.clone(),
        });
        let weak = Arc::downgrade(&stub);
        std::thread::spawn(move || {
            while let Ok(req) = server.recv() {
                let Some(stub) = weak.upgrade() else { break };
                std::thread::spawn(move || stub.handle(req));
            }
        });
        stub
    }

    pub fn config(&self, f: impl FnOnce(&mut Config)) {
        f(&mut self.config.lock().unwrap());
    }

    /// How many token requests of this grant type were answered with success.
    pub fn grants(&self, grant_type: &str) -> u64 {
        *self
            .state
            .lock()
            .unwrap()
            .grants
            .get(grant_type)
            .unwrap_or(&0)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.state.lock().unwrap().revoked.clone()
    }

    fn next(&self, prefix: &str) -> String {
        let mut st = self.state.lock().unwrap();
        st.counter += 1;
        format!("{prefix}-{}-{:x}", st.counter, rand::random::<u64>())
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// A signed ID token for `alice` as configured.
    pub fn id_token(&self, nonce: Option<&str>, access_token: &str) -> String {
        let cfg = self.config.lock().unwrap().clone();
        let now = self.now();
        let mut claims = json!({
            "iss": cfg.iss.clone().unwrap_or_else(|| self.issuer.clone()),
            "sub": "alice-sub",
            "aud": cfg.aud.clone().unwrap_or_else(|| self.client_id.clone()),
            "exp": now + cfg.id_token_lifetime,
            "iat": now,
            "email": "alice@example.com",
            "groups": ["developers"],
            "jti": self.next("jti"),
            "at_hash": if cfg.wrong_at_hash { shared::jwt::at_hash_sha256("other") } else { shared::jwt::at_hash_sha256(access_token) },
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(if cfg.wrong_nonce { "not-the-nonce" } else { n });
        }
        self.sign(cfg.alg, &claims)
    }

    /// Signs `claims` with `alg` (the JWKS key for ES256/RS256).
    pub fn sign(&self, alg: Alg, claims: &Value) -> String {
        let (alg_name, kid) = match alg {
            Alg::Es256 | Alg::BadSignature => ("ES256", "ec-1"),
            Alg::Rs256 => ("RS256", "rsa-1"),
            Alg::None => ("none", "ec-1"),
            Alg::Hs256 => ("HS256", "rsa-1"),
        };
        let header = json!({"alg": alg_name, "kid": kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = match alg {
            Alg::Es256 => {
                let s: p256::ecdsa::Signature = self.ec_key.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            Alg::BadSignature => {
                let s: p256::ecdsa::Signature = self.other_ec_key.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            Alg::Rs256 => {
                let k = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.rsa_key.clone());
                use rsa::signature::SignatureEncoding;
                k.sign(input.as_bytes()).to_vec()
            }
            Alg::None => Vec::new(),
            Alg::Hs256 => {
                use hmac::Mac;
                use rsa::pkcs8::EncodePublicKey;
                let pem = self
                    .rsa_key
                    .to_public_key()
                    .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                    .unwrap();
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(pem.as_bytes()).unwrap();
                mac.update(input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
        };
        format!("{input}.{}", b64url(&sig))
    }

    fn jwks(&self) -> Value {
        let point = self.ec_key.verifying_key().to_encoded_point(false);
        use rsa::traits::PublicKeyParts;
        let rsa_pub = self.rsa_key.to_public_key();
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "ec-1",
             "x": b64url(point.x().unwrap()), "y": b64url(point.y().unwrap())},
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa-1",
             "n": b64url(&rsa_pub.n().to_bytes_be()), "e": b64url(&rsa_pub.e().to_bytes_be())},
        ]})
    }

    fn discovery(&self) -> Value {
        let cfg = self.config.lock().unwrap().clone();
        let i = &self.issuer;
        let mut d = json!({
            "issuer": cfg.discovery_issuer.clone().unwrap_or_else(|| i.clone()),
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": cfg.token_endpoint.clone().unwrap_or_else(|| format!("{i}/token")),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        });
        if cfg.pkce_in_discovery {
            d["code_challenge_methods_supported"] = json!(["S256"]);
        }
        if cfg.device_endpoint_in_discovery {
            d["device_authorization_endpoint"] = json!(format!("{i}/device"));
        }
        if cfg.revocation_in_discovery {
            d["revocation_endpoint"] = json!(format!("{i}/revoke"));
        }
        d
    }

    fn handle(&self, mut req: tiny_http::Request) {
        let url = url::Url::parse(&format!("http://stub{}", req.url())).unwrap();
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect();
        let seen = Seen {
            path: url.path().to_string(),
            query: query.clone(),
            form: form.clone(),
            headers: headers.clone(),
        };
        self.state.lock().unwrap().seen.push(seen);
        let (status, ctype, body, location) = match url.path() {
            "/.well-known/openid-configuration" => {
                let cfg = self.config.lock().unwrap().clone();
                if let Some(d) = cfg.slow_discovery {
                    std::thread::sleep(d);
                }
                match cfg.discovery_body {
                    Some((s, ct, b)) => (s, ct, b, None),
                    None => (
                        200,
                        "application/json".into(),
                        self.discovery().to_string(),
                        None,
                    ),
                }
            }
            "/jwks" => (
                200,
                "application/json".into(),
                self.jwks().to_string(),
                None,
            ),
            "/authorize" => self.authorize(&query),
            "/token" => {
                let delay = self.config.lock().unwrap().token_delay;
                std::thread::sleep(delay);
                self.token(&form, &headers)
            }
            "/device" => self.device(&form),
            "/revoke" => {
                self.state
                    .lock()
                    .unwrap()
                    .revoked
                    .push(form.get("token").cloned().unwrap_or_default());
                (200, "application/json".into(), "{}".into(), None)
            }
            _ => (404, "text/html".into(), "<h1>not found</h1>".into(), None),
        };
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        resp.add_header(tiny_http::Header::from_bytes("Content-Type", ctype.as_bytes()).unwrap());
        if let Some(l) = location {
            resp.add_header(tiny_http::Header::from_bytes("Location", l.as_bytes()).unwrap());
        }
        let _ = req.respond(resp);
    }

    fn authorize(&self, q: &BTreeMap<String, String>) -> (u16, String, String, Option<String>) {
        let cfg = self.config.lock().unwrap().clone();
        let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
        let mut target = url::Url::parse(&redirect_uri).unwrap();
        let state = q.get("state").cloned().unwrap_or_default();
        if let Some(err) = cfg.authorize_error {
            target
                .query_pairs_mut()
                .append_pair("error", &err)
                .append_pair("error_description", "the user said no")
                .append_pair("state", &state);
        } else {
            let code = self.next("code");
            self.state.lock().unwrap().codes.insert(
                code.clone(),
                Pending {
                    nonce: q.get("nonce").cloned(),
                    challenge: q.get("code_challenge").cloned(),
                    redirect_uri: redirect_uri.clone(),
                },
            );
            let state = if cfg.tamper_state {
                "tampered".to_string()
            } else {
                state
            };
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state);
        }
        (
            302,
            "text/html".into(),
            String::new(),
            Some(target.to_string()),
        )
    }

    fn error(code: &str) -> (u16, String, String, Option<String>) {
        (
            400,
            "application/json".into(),
            json!({"error": code, "error_description": format!("stub says {code}")}).to_string(),
            None,
        )
    }

    fn tokens(
        &self,
        nonce: Option<&str>,
        with_id_token: bool,
    ) -> (u16, String, String, Option<String>) {
        let cfg = self.config.lock().unwrap().clone();
        let access_token = self.next("opaque-access");
        let refresh_token = self.next("refresh");
        self.state
            .lock()
            .unwrap()
            .refresh_tokens
            .insert(refresh_token.clone(), ());
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": cfg.expires_in,
            "refresh_token": refresh_token,
        });
        if with_id_token {
            body["id_token"] = json!(self.id_token(nonce, &access_token));
        }
        (200, "application/json".into(), body.to_string(), None)
    }

    fn count(&self, grant: &str) {
        *self
            .state
            .lock()
            .unwrap()
            .grants
            .entry(grant.to_string())
            .or_default() += 1;
    }

    fn token(
        &self,
        form: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
    ) -> (u16, String, String, Option<String>) {
        let cfg = self.config.lock().unwrap().clone();
        let grant = form.get("grant_type").cloned().unwrap_or_default();
        let basic = headers.get("authorization").and_then(|h| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(h.strip_prefix("Basic ")?)
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (id, secret) = text.split_once(':')?;
            Some((id.to_string(), secret.to_string()))
        });
        let client_id = form
            .get("client_id")
            .cloned()
            .or_else(|| basic.as_ref().map(|b| b.0.clone()))
            .unwrap_or_default();
        if client_id != self.client_id {
            return Self::error("invalid_client");
        }
        if let Some(secret) = &cfg.client_secret {
            if basic.as_ref().map(|b| &b.1) != Some(secret) {
                return Self::error("invalid_client");
            }
        }
        match grant.as_str() {
            "authorization_code" => {
                let code = form.get("code").cloned().unwrap_or_default();
                let Some(p) = self.state.lock().unwrap().codes.remove(&code) else {
                    return Self::error("invalid_grant");
                };
                if form.get("redirect_uri") != Some(&p.redirect_uri) {
                    return Self::error("invalid_grant");
                }
                // RFC 7636 §4.6.
                if let Some(ch) = &p.challenge {
                    let v = form.get("code_verifier").cloned().unwrap_or_default();
                    if &shared::pkce::s256_challenge(&v) != ch {
                        return Self::error("invalid_grant");
                    }
                }
                self.count("authorization_code");
                self.tokens(p.nonce.as_deref(), true)
            }
            "refresh_token" => {
                if let Some(e) = cfg.refresh_error {
                    return Self::error(&e);
                }
                let rt = form.get("refresh_token").cloned().unwrap_or_default();
                let known = if cfg.rotate_refresh_tokens {
                    self.state
                        .lock()
                        .unwrap()
                        .refresh_tokens
                        .remove(&rt)
                        .is_some()
                } else {
                    self.state.lock().unwrap().refresh_tokens.contains_key(&rt)
                };
                if !known {
                    return Self::error("invalid_grant");
                }
                self.count("refresh_token");
                self.tokens(None, !cfg.refresh_without_id_token)
            }
            "password" => {
                if form.get("username").map(String::as_str) != Some("alice")
                    || form.get("password").map(String::as_str) != Some("alice-password-123")
                {
                    return Self::error("invalid_grant");
                }
                self.count("password");
                self.tokens(None, true)
            }
            "client_credentials" => {
                if basic.is_none() {
                    return Self::error("invalid_client");
                }
                self.count("client_credentials");
                let body = json!({"access_token": self.next("opaque-cc"), "token_type": "Bearer", "expires_in": cfg.expires_in});
                (200, "application/json".into(), body.to_string(), None)
            }
            "urn:ietf:params:oauth:grant-type:device_code" => {
                let dc = form.get("device_code").cloned().unwrap_or_default();
                let Some(challenge) = self.state.lock().unwrap().device_codes.get(&dc).cloned()
                else {
                    return Self::error("invalid_grant");
                };
                let next = self.config.lock().unwrap().device_answers.pop_front();
                if let Some(e) = next {
                    return Self::error(&e);
                }
                if let Some(ch) = challenge {
                    let v = form.get("code_verifier").cloned().unwrap_or_default();
                    if shared::pkce::s256_challenge(&v) != ch {
                        return Self::error("invalid_grant");
                    }
                }
                self.count("device_code");
                self.tokens(None, true)
            }
            _ => Self::error("unsupported_grant_type"),
        }
    }

    fn device(&self, form: &BTreeMap<String, String>) -> (u16, String, String, Option<String>) {
        let cfg = self.config.lock().unwrap().clone();
        let dc = self.next("device");
        self.state
            .lock()
            .unwrap()
            .device_codes
            .insert(dc.clone(), form.get("code_challenge").cloned());
        let mut body = json!({
            "device_code": dc,
            "user_code": "BCDFGHJK",
            "verification_uri": format!("{}/device-page", self.issuer),
            "expires_in": 600,
        });
        if cfg.device_complete_uri {
            body["verification_uri_complete"] =
                json!(format!("{}/device-page?user_code=BCDFGHJK", self.issuer));
        }
        if let Some(i) = cfg.device_interval {
            body["interval"] = json!(i);
        }
        (200, "application/json".into(), body.to_string(), None)
    }
}

/// Serves HTTPS on a new port of 127.0.0.1 in front of the plain server at `backend`, with
/// rustls 0.23 (the one TLS stack of the workspace). Returns the front's address.
fn tls_front(backend: std::net::SocketAddr, chain: &str, key: &str) -> std::net::SocketAddr {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let front = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut back) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
                });
            }
        });
    });
    front
}
