//! Authorization code grant through the browser (RFC 6749 §4.1, OpenID Connect Core §3.1) with
//! a loopback redirect (RFC 8252), state, nonce and PKCE (RFC 7636).

use oauth2::CsrfToken;
use openidconnect::Nonce;

use super::loopback::Loopback;
use super::{finish, form, open_browser, pkce, LoginOptions};
use crate::deps::Deps;
use crate::error::{Error, ResponseProblem, Result};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::token_cache::CacheEntry;

/// Parameters of one authorization request.
pub struct AuthRequest {
    pub url: String,
    pub state: Secret,
    pub nonce: Secret,
    pub code_verifier: Option<Secret>,
}

/// Builds the authorization request URL, OpenID Connect Core §3.1.2.1.
pub fn auth_request(
    provider: &Provider,
    opts: &LoginOptions,
    redirect_uri: &str,
) -> Result<AuthRequest> {
    let endpoint = &provider.metadata.authorization_endpoint;
    let mut url = url::Url::parse(endpoint).map_err(|source| {
        Error::bad_response(
            endpoint,
            ResponseProblem::NotAUrl {
                name: "authorization_endpoint",
                source,
            },
        )
    })?;
    let state = Secret::new(CsrfToken::new_random().secret().clone());
    let nonce = Secret::new(Nonce::new_random().secret().clone());
    let pkce = pkce(provider, opts.pkce);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &provider.cfg.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &provider.cfg.scope())
            .append_pair("state", state.expose())
            .append_pair("nonce", nonce.expose());
        if let Some((challenge, _)) = &pkce {
            q.append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", challenge.method().as_str());
        }
        // kubelogin sends it: Google only issues a refresh token with access_type=offline,
        // and other providers ignore unknown parameters (RFC 6749 §3.1).
        if !opts.auth_request_extra_params.contains_key("access_type") {
            q.append_pair("access_type", "offline");
        }
        for (k, v) in &opts.auth_request_extra_params {
            q.append_pair(k, v);
        }
    }
    Ok(AuthRequest {
        url: url.to_string(),
        state,
        nonce,
        code_verifier: pkce.map(|(_, v)| Secret::new(v.secret().clone())),
    })
}

/// Exchanges the code, RFC 6749 §4.1.3 (with the PKCE verifier, RFC 7636 §4.5).
pub fn exchange(
    deps: &Deps,
    provider: &Provider,
    opts: &LoginOptions,
    req: &AuthRequest,
    code: &Secret,
    redirect_uri: &str,
) -> Result<CacheEntry> {
    let mut params = form([
        ("grant_type", shared::token::grant_type::AUTHORIZATION_CODE),
        ("code", code.expose()),
        ("redirect_uri", redirect_uri),
    ]);
    if let Some(v) = &req.code_verifier {
        params.push(("code_verifier".into(), v.expose().to_string()));
    }
    let response = provider.token(params)?;
    finish(
        deps,
        provider,
        response,
        Some(&req.nonce),
        opts.use_access_token,
    )
}

/// The browser login: bind the loopback server first, then open the browser (so the
/// redirect can never arrive before we listen), wait for the callback, exchange the code.
pub fn login(deps: &Deps, provider: &Provider, opts: &LoginOptions) -> Result<CacheEntry> {
    let loopback = Loopback::bind(
        &opts.listen_addresses,
        &opts.redirect_url,
        opts.local_server_tls.as_ref(),
    )?;
    deps.log(1, || {
        format!(
            "listening on port {} for the redirect to {}",
            loopback.port, loopback.redirect_uri
        )
    });
    let req = auth_request(provider, opts, &loopback.redirect_uri)?;
    open_browser(deps, opts, &loopback.start_url);
    let callback = loopback.wait(
        deps,
        &req.url,
        &req.state,
        opts.timeout,
        opts.open_url_after_authentication.as_deref(),
    )?;
    exchange(
        deps,
        provider,
        opts,
        &req,
        &callback.code,
        &loopback.redirect_uri,
    )
}
