//! The device authorization endpoint, RFC 8628 §3.1–§3.2.
//!
//! May depend on: `token` (client authentication, scopes), `audit`, `http`, `state`, `store`,
//! `crypto`, `error`.

use crate::audit;
use crate::crypto;
use crate::error::OAuthError;
use crate::http::{ClientMeta, FormParams};
use crate::state::AppState;
use crate::store::{Client, DeviceCode, DeviceStatus};
use crate::token::{authenticate_client, requested_scopes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use shared::device::{format_user_code, DeviceAuthorizationResponse, USER_CODE_ALPHABET};
use std::collections::BTreeMap;

/// POST /oauth/device/code
pub async fn device_authorization(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    form: FormParams,
) -> Result<Response, OAuthError> {
    let params = form.0;
    // §3.1: the client authenticates as at the token endpoint (public clients send client_id).
    let client = authenticate_client(&state, &headers, &params).await?;
    if !client.allows_grant(shared::token::grant_type::DEVICE_CODE) {
        return Err(OAuthError::unauthorized_client(
            "this client may not use the device authorization grant",
        ));
    }
    // Requested scopes are checked against the client (AuthGate does not).
    let scopes = requested_scopes(&client, &params)?;
    let code_challenge = code_challenge(&params)?;
    let (device_code, user_code) =
        store_codes(&state, &client, &scopes, code_challenge, &meta).await?;
    audit::record(
        &state,
        audit::Event::new("device_code_issued", audit::INFO)
            .client(&client.client_id)
            .meta(&meta),
    )
    .await;
    response(&state, device_code, &user_code)
}

/// PKCE on the device grant is not in RFC 8628, but a client may bind its polling to a verifier
/// the same way (RFC 7636 §4.3); only S256 is accepted.
fn code_challenge(params: &BTreeMap<String, String>) -> Result<Option<String>, OAuthError> {
    match (
        params.get("code_challenge"),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(c), Some("S256")) if shared::pkce::is_s256_challenge(c) => Ok(Some(c.clone())),
        (None, None) => Ok(None),
        _ => Err(OAuthError::invalid_request(
            "code_challenge must be an S256 challenge with code_challenge_method=S256",
        )),
    }
}

/// Stores a new pending request and returns its device code and user code. §6.1: 8 characters
/// from a 20-letter alphabet give 20^8 ≈ 2^34.6 codes; with the short lifetime and login
/// throttling that is the RFC's recommended strength. A user code already in use is drawn again.
async fn store_codes(
    state: &AppState,
    client: &Client,
    scopes: &[String],
    code_challenge: Option<String>,
    meta: &ClientMeta,
) -> Result<(String, String), OAuthError> {
    let now = state.now();
    let device_code = crypto::random_token(32);
    let mut user_code = String::new();
    for _ in 0..5 {
        user_code = crypto::random_from_alphabet(USER_CODE_ALPHABET, 8);
        let rec = DeviceCode {
            device_code_hash: crypto::hash_secret(&device_code),
            user_code: user_code.clone(),
            client_id: client.client_id.clone(),
            scope: scopes.join(" "),
            code_challenge: code_challenge.clone(),
            created_at: now,
            expires_at: now + state.config.device_code_lifetime,
            interval: state.config.device_code_interval,
            last_polled_at: None,
            status: DeviceStatus::Pending,
            user_id: None,
            auth_time: None,
            // Shown on the approval page: a request relayed by a phisher comes from elsewhere.
            request_ip: audit::bounded(&meta.ip, audit::MAX_IP),
            request_user_agent: audit::bounded(&meta.user_agent, audit::MAX_USER_AGENT),
        };
        match state.store.insert_device_code(rec).await {
            Ok(()) => break,
            Err(crate::store::StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((device_code, user_code))
}

/// The response of §3.2, with the verification URI that carries the code (§3.3.1).
fn response(
    state: &AppState,
    device_code: String,
    user_code: &str,
) -> Result<Response, OAuthError> {
    let verification_uri = state.config.url("/device");
    let mut complete =
        url::Url::parse(&verification_uri).map_err(|_| OAuthError::server_error())?;
    complete
        .query_pairs_mut()
        .append_pair("user_code", &format_user_code(user_code));
    let body = DeviceAuthorizationResponse {
        device_code,
        user_code: format_user_code(user_code),
        verification_uri,
        verification_uri_complete: Some(complete.to_string()),
        expires_in: state.config.device_code_lifetime,
        interval: Some(state.config.device_code_interval),
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
