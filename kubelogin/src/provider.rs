//! Talking to the OpenID provider: discovery, token endpoint calls, device authorization,
//! revocation, and ID token verification through `openidconnect` (CONVENTIONS.md §3).
//!
//! HTTP goes through [`crate::deps::Http`], so every request carries `--oidc-request-header`,
//! is logged by `-v`, and every answer is size-limited; `openidconnect` only verifies.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{AccessToken, AccessTokenHash, ClientId, IssuerUrl, Nonce};
use serde::de::DeserializeOwned;
use shared::device::DeviceAuthorizationResponse;
use shared::discovery::ProviderMetadata;
use shared::token::{ErrorResponse, TokenResponse};

use crate::deps::{Deps, Http, HttpRequest, HttpResponse, HttpSettings, Method};
use crate::error::{Cause, Error, IdTokenError, ResponseProblem, Result};
use crate::printable::printable;
use crate::secret::Secret;

/// The provider flags, resolved.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub extra_scopes: Vec<String>,
    /// `--oidc-request-header`, in a stable order (sorted by name).
    pub request_headers: BTreeMap<String, String>,
    pub http: HttpSettings,
    /// `--oidc-device-authorization-endpoint`, used when discovery has none.
    pub device_authorization_endpoint: Option<String>,
}

impl ProviderConfig {
    /// `openid` plus the extra scopes, space separated (RFC 6749 §3.3).
    pub fn scope(&self) -> String {
        let mut scopes = vec!["openid".to_string()];
        for s in &self.extra_scopes {
            if !s.is_empty() && !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        scopes.join(" ")
    }
}

/// A discovered provider.
pub struct Provider<'d> {
    deps: &'d Deps,
    pub cfg: &'d ProviderConfig,
    http: Arc<dyn Http>,
    pub metadata: ProviderMetadata,
    jwks: OnceCell<CoreJsonWebKeySet>,
}

/// Signature algorithms accepted for ID tokens: every asymmetric one `openidconnect` knows.
/// `none` and the HMAC family are absent on purpose: an unsigned token proves nothing, and an
/// HMAC "signature" keyed with a public value (a public client's empty secret, or a public key
/// confused for a secret) can be forged by anyone. The verifier is also built as a public
/// client, which makes `openidconnect` refuse HMAC on its own.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

impl<'d> Provider<'d> {
    /// Fetches the discovery document (OpenID Connect Discovery 1.0 §4) and checks its issuer.
    pub fn discover(deps: &'d Deps, cfg: &'d ProviderConfig) -> Result<Self> {
        url::Url::parse(&cfg.issuer).map_err(|e| {
            Error::invalid(
                format!("--oidc-issuer-url \"{}\" is not a URL", cfg.issuer),
                e,
            )
        })?;
        let http = deps.http.build(&cfg.http)?;
        let mut p = Provider {
            deps,
            cfg,
            http,
            metadata: ProviderMetadata::default(),
            jwks: OnceCell::new(),
        };
        let url = shared::discovery::discovery_url(&cfg.issuer);
        deps.log(1, || format!("discovering the provider at {url}"));
        let response = p.send(json_get(&url))?;
        p.metadata = parse_discovery(&cfg.issuer, &url, &response)?;
        Ok(p)
    }

    /// Whether the provider lists PKCE S256 (RFC 8414 §2 `code_challenge_methods_supported`).
    pub fn supports_s256(&self) -> bool {
        self.metadata
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
    }

    fn send(&self, mut request: HttpRequest) -> Result<HttpResponse> {
        for (k, v) in &self.cfg.request_headers {
            request.headers.push((k.clone(), v.clone()));
        }
        let method = match request.method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        self.deps.log(1, || format!("{method} {}", request.url));
        self.deps.log(2, || {
            let mut lines: Vec<String> = request
                .headers
                .iter()
                .map(|(k, v)| format!("> {k}: {v}"))
                .collect();
            if request.basic_auth.is_some() {
                lines.push(if self.deps.verbosity >= 3 {
                    format!("> Authorization: Basic (client {})", self.cfg.client_id)
                } else {
                    "> Authorization: Basic <redacted>".to_string()
                });
            }
            lines.join("\n")
        });
        if self.deps.verbosity >= 3 {
            if let Some(form) = &request.form {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter())
                    .finish();
                self.deps.say(&format!("> {body}"));
            }
        }
        let response = self.http.send(&request)?;
        self.deps.log(1, || format!("< HTTP {}", response.status));
        self.deps.log(2, || {
            response
                .headers
                .iter()
                .map(|(k, v)| format!("< {k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        });
        self.deps.log(3, || {
            format!("< {}", String::from_utf8_lossy(&response.body))
        });
        Ok(response)
    }

    fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T> {
        let response = self.send(json_get(url))?;
        expect_ok(url, &response)?;
        parse_json(url, &response)
    }

    /// The provider's keys (RFC 7517 §5), fetched once per process.
    fn jwks(&self) -> Result<&CoreJsonWebKeySet> {
        if let Some(j) = self.jwks.get() {
            return Ok(j);
        }
        let keys: CoreJsonWebKeySet = self.get_json(&self.metadata.jwks_uri)?;
        Ok(self.jwks.get_or_init(|| keys))
    }

    /// POSTs a form to an endpoint with client authentication (RFC 6749 §2.3.1): a public
    /// client sends `client_id` in the body; a confidential one uses HTTP Basic unless the
    /// provider only lists `client_secret_post`.
    fn post_form(&self, url: &str, mut form: Vec<(String, String)>) -> Result<HttpResponse> {
        let mut basic_auth = None;
        if self.cfg.client_secret.is_empty() {
            form.push(("client_id".into(), self.cfg.client_id.clone()));
        } else if self
            .metadata
            .token_endpoint_auth_methods_supported
            .iter()
            .all(|m| m == "client_secret_post")
            && !self
                .metadata
                .token_endpoint_auth_methods_supported
                .is_empty()
        {
            form.push(("client_id".into(), self.cfg.client_id.clone()));
            form.push((
                "client_secret".into(),
                self.cfg.client_secret.expose().to_string(),
            ));
        } else {
            // §2.3.1: id and secret are form-urlencoded before Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            basic_auth = Some((
                enc(&self.cfg.client_id),
                enc(self.cfg.client_secret.expose()),
            ));
        }
        self.send(HttpRequest {
            method: Method::Post,
            url: url.to_string(),
            headers: vec![("Accept".into(), "application/json".into())],
            form: Some(form),
            basic_auth,
        })
    }

    /// A token endpoint request (RFC 6749 §4.1.3, §4.3.2, §4.4.2, §6, RFC 8628 §3.4).
    pub fn token(&self, form: Vec<(String, String)>) -> Result<TokenResponse> {
        let url = self.metadata.token_endpoint.clone();
        let response = self.post_form(&url, form)?;
        parse_token_response(&url, &response)
    }

    /// Device authorization request, RFC 8628 §3.1.
    pub fn device_authorization(
        &self,
        form: Vec<(String, String)>,
    ) -> Result<DeviceAuthorizationResponse> {
        let url = self
            .metadata
            .device_authorization_endpoint
            .clone()
            .or_else(|| self.cfg.device_authorization_endpoint.clone())
            .ok_or_else(|| {
                Error::usage(format!(
                    "{} does not advertise a device_authorization_endpoint; name it with --oidc-device-authorization-endpoint",
                    self.cfg.issuer
                ))
            })?;
        let response = self.post_form(&url, form)?;
        parse_device_authorization(&url, &response)
    }

    /// Token revocation, RFC 7009 §2.1.
    pub fn revoke(&self, token: &Secret, hint: &str) -> Result<()> {
        let url = self.metadata.revocation_endpoint.clone().ok_or_else(|| {
            Error::usage(format!(
                "{} does not advertise a revocation_endpoint (RFC 7009), cannot --revoke",
                self.cfg.issuer
            ))
        })?;
        let response = self.post_form(
            &url,
            vec![
                ("token".into(), token.expose().to_string()),
                ("token_type_hint".into(), hint.into()),
            ],
        )?;
        // §2.2: 200 whether or not the token was valid.
        if response.status == 200 {
            Ok(())
        } else {
            Err(oauth_error(&url, &response))
        }
    }

    /// Verifies an ID token with `openidconnect`: signature with the provider's key chosen by
    /// `kid`, `iss` equal to the issuer, `aud` containing the client id, `exp` in the future
    /// (by the injected clock), the `nonce` when one was sent (OpenID Connect Core §3.1.3.7),
    /// and `at_hash` when present (§3.1.3.8).
    pub fn verify_id_token(
        &self,
        id_token: &Secret,
        access_token: Option<&Secret>,
        nonce: Option<&Secret>,
    ) -> Result<()> {
        let keys = self.jwks()?.clone();
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(rejected)?;
        let clock = self.deps.clock.clone();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.cfg.client_id.clone()),
            issuer,
            keys,
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .set_time_fn(move || clock.now());
        let token = CoreIdToken::from_str(id_token.expose())
            .map_err(|e| Error::IdToken(IdTokenError::NotAJwt(e)))?;
        let claims = match nonce {
            Some(n) => token.claims(&verifier, &Nonce::new(n.expose().to_string())),
            // A refreshed ID token carries no new nonce to compare (Core §12.2).
            None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(rejected)?;
        if let (Some(expected), Some(at)) = (claims.access_token_hash(), access_token) {
            let alg = token.signing_alg().map_err(rejected)?;
            let key = token.signing_key(&verifier).map_err(rejected)?;
            let actual =
                AccessTokenHash::from_token(&AccessToken::new(at.expose().to_string()), alg, key)
                    .map_err(rejected)?;
            if &actual != expected {
                return Err(Error::IdToken(IdTokenError::AtHashMismatch));
            }
        }
        self.deps.log(1, || "ID token verified".to_string());
        Ok(())
    }
}

/// Short description of a body for error messages: content type and the first characters.
pub fn describe_body(response: &HttpResponse) -> String {
    let ct = response.header("content-type").unwrap_or("no content type");
    let text: String = String::from_utf8_lossy(&response.body)
        .chars()
        .take(80)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().is_empty() {
        format!(" ({ct}, empty body)")
    } else {
        format!(" ({ct}: \"{}\")", text.trim())
    }
}

/// An ID token `openidconnect` refused; the error keeps its causes, where openidconnect puts
/// the reason ("algorithm `HS256` is not one of ...") of "Signature verification failed".
fn rejected(e: impl Into<Cause>) -> Error {
    Error::IdToken(IdTokenError::Rejected(e.into()))
}

fn json_get(url: &str) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        url: url.to_string(),
        headers: vec![("Accept".into(), "application/json".into())],
        form: None,
        basic_auth: None,
    }
}

fn expect_ok(url: &str, response: &HttpResponse) -> Result<()> {
    if response.status == 200 {
        Ok(())
    } else {
        Err(unexpected_status(url, response))
    }
}

fn unexpected_status(url: &str, response: &HttpResponse) -> Error {
    Error::bad_response(
        url,
        ResponseProblem::Status {
            status: response.status,
            body: describe_body(response),
        },
    )
}

/// The discovery answer for `issuer` (OpenID Connect Discovery 1.0 §4.2), fetched from `url`,
/// with its issuer checked (§4.3). Pure: the entry point for property tests and fuzzing.
pub fn parse_discovery(
    issuer: &str,
    url: &str,
    response: &HttpResponse,
) -> Result<ProviderMetadata> {
    expect_ok(url, response)?;
    let metadata: ProviderMetadata = parse_json(url, response)?;
    // Discovery §4.3: "The issuer value returned MUST be identical to the Issuer URL that
    // was used as the prefix to /.well-known/openid-configuration". Quoting both makes a
    // trailing slash visible, the usual culprit.
    if metadata.issuer != issuer {
        let hint = if metadata.issuer.trim_end_matches('/') == issuer.trim_end_matches('/') {
            " (they differ only by the trailing slash: use the provider's exact string)"
        } else {
            ""
        };
        return Err(Error::IssuerMismatch {
            expected: issuer.to_string(),
            found: printable(&metadata.issuer),
            url: url.to_string(),
            hint,
        });
    }
    Ok(metadata)
}

/// A device authorization answer, RFC 8628 §3.2 (success) or §3.5 / RFC 6749 §5.2 (error).
/// Pure: the entry point for property tests and fuzzing.
pub fn parse_device_authorization(
    url: &str,
    response: &HttpResponse,
) -> Result<DeviceAuthorizationResponse> {
    if !(200..300).contains(&response.status) {
        return Err(oauth_error(url, response));
    }
    parse_json(url, response)
}

fn parse_json<T: DeserializeOwned>(url: &str, response: &HttpResponse) -> Result<T> {
    serde_json::from_slice(&response.body).map_err(|source| {
        Error::bad_response(
            url,
            ResponseProblem::NotJson {
                source,
                body: describe_body(response),
            },
        )
    })
}

/// An RFC 6749 §5.2 error when the body is one, else a description of what came back.
fn oauth_error(url: &str, response: &HttpResponse) -> Error {
    match serde_json::from_slice::<ErrorResponse>(&response.body) {
        // Provider text reaches the terminal: without control characters (printable.rs).
        Ok(e) => Error::OAuth {
            endpoint: url.to_string(),
            code: printable(&e.error),
            description: match (e.error_description, e.error_uri) {
                (Some(d), Some(u)) => Some(format!("{} ({})", printable(&d), printable(&u))),
                (Some(d), None) => Some(printable(&d)),
                (None, Some(u)) => Some(printable(&u)),
                (None, None) => None,
            },
        },
        Err(_) => unexpected_status(url, response),
    }
}

/// RFC 6749 §5.1 (success, 200) or §5.2 (error, usually 400 or 401). Pure: the entry point
/// for property tests and fuzzing.
pub fn parse_token_response(url: &str, response: &HttpResponse) -> Result<TokenResponse> {
    if response.status != 200 {
        return Err(oauth_error(url, response));
    }
    let token: TokenResponse = parse_json(url, response)?;
    if token.access_token.is_empty() {
        return Err(Error::bad_response(url, ResponseProblem::NoAccessToken));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ct: &str, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), ct.into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn refusal_and_garbage_are_told_apart() {
        let e = parse_token_response(
            "https://idp/token",
            &resp(
                400,
                "application/json",
                r#"{"error":"invalid_grant","error_description":"expired"}"#,
            ),
        )
        .unwrap_err();
        assert!(e.is_oauth("invalid_grant"), "{e}");
        assert_eq!(
            e.to_string(),
            "https://idp/token refused the request: invalid_grant: expired"
        );
        let e = parse_token_response(
            "https://idp/token",
            &resp(200, "text/html", "<!DOCTYPE html><html>login</html>"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::BadResponse { .. }));
        assert!(e.to_string().contains("text/html"), "{e}");
        let e = parse_token_response(
            "https://idp/token",
            &resp(502, "text/html", "<h1>bad gateway</h1>"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTP 502"), "{e}");
    }

    #[test]
    fn scope_always_has_openid_once() {
        let cfg = ProviderConfig {
            issuer: "https://idp".into(),
            client_id: "c".into(),
            client_secret: Secret::default(),
            extra_scopes: vec!["email".into(), "openid".into(), "groups".into()],
            request_headers: BTreeMap::new(),
            http: HttpSettings::default(),
            device_authorization_endpoint: None,
        };
        assert_eq!(cfg.scope(), "openid email groups");
    }
}
