//! `/account/authorizations`: each client the person authorized, with its live refresh
//! families (created, last used, address, user agent, scopes), and "revoke" after a
//! confirmation page. Revoking is the admin layer's `revoke_authorization`: the client's refresh
//! tokens stop working at once (its next refresh gets `invalid_grant`, RFC 6749 §5.2) and the
//! consent is forgotten, so the next login asks again (OpenID Connect Core §3.1.2.4).
//!
//! May depend on: the account pages beside it, `admin`, `http`, `state`, `store`, `error`.

use super::{actor, admin, done, me_or_login, me_posting, notice, refusal, when, ConfirmPage};
use super::{page, DoneQuery};
use crate::admin::valid_name;
use crate::error::PageError;
use crate::http::ClientMeta;
use crate::state::AppState;
use crate::web::client_name;
use crate::web::csrf::Posted;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct FamilyRow {
    pub created: String,
    pub last_used: String,
    pub ip: String,
    pub user_agent: String,
    pub scopes: String,
}

pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    /// When the consent was given, if there is one (grants without a consent page have none).
    pub consented: Option<String>,
    pub consented_scopes: String,
    pub families: Vec<FamilyRow>,
}

#[derive(Template)]
#[template(path = "account/authorizations.html")]
pub struct AuthorizationsPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub notice: Option<&'a str>,
    pub clients: Vec<ClientRow>,
}

/// GET /account/authorizations
pub async fn authorizations_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Response> {
    let me = me_or_login(&state, &headers, "/account/authorizations").await?;
    let admin = admin(&state);
    let authorized = admin
        .authorizations(&me.user.username)
        .await
        .map_err(refusal)?;
    let activity: BTreeMap<String, _> = state
        .store
        .family_activity(&me.user.id, state.now())
        .await?
        .into_iter()
        .map(|a| (a.family_id.clone(), a))
        .collect();
    let mut clients = Vec::new();
    for a in authorized {
        let name = match state.store.client(&a.client_id).await? {
            Some(c) => client_name(&c).to_string(),
            None => a.client_id.clone(),
        };
        let families = a
            .live_families
            .iter()
            .map(|f| {
                let used = activity.get(&f.id);
                FamilyRow {
                    created: when(f.created_at),
                    last_used: when(used.map_or(f.created_at, |u| u.last_used_at)),
                    ip: used.map(|u| u.ip.clone()).unwrap_or_default(),
                    user_agent: used.map(|u| u.user_agent.clone()).unwrap_or_default(),
                    scopes: f.scope.clone(),
                }
            })
            .collect();
        clients.push(ClientRow {
            name,
            consented: a.consent.as_ref().map(|c| when(c.granted_at)),
            consented_scopes: a.consent.map(|c| c.scopes.join(" ")).unwrap_or_default(),
            client_id: a.client_id,
            families,
        });
    }
    let p = AuthorizationsPage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        username: &me.user.username,
        notice: notice(&q.done),
        clients,
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct ClientQuery {
    #[serde(default)]
    pub client_id: String,
}

fn checked_client_id(id: &str) -> Result<(), PageError> {
    valid_name(id).map_err(|_| {
        PageError::bad_request(
            "Unknown application",
            "That is not a client id of this site.",
        )
    })
}

/// GET /account/authorizations/revoke?client_id=…: says what revoking does, then asks.
pub async fn revoke_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ClientQuery>,
) -> Result<Response, Response> {
    let me = me_or_login(&state, &headers, "/account/authorizations").await?;
    checked_client_id(&q.client_id)?;
    let p = ConfirmPage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        title: "Revoke this authorization?",
        text: "Every refresh token this application holds for you stops working now (kubectl \
               will have to sign in again), and it will ask for your consent next time.",
        action: "/account/authorizations/revoke",
        fields: vec![("client_id", &q.client_id)],
        button: "Revoke",
        cancel: "/account/authorizations",
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    pub client_id: String,
}

/// POST /account/authorizations/revoke
pub async fn revoke_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Posted(form): Posted<RevokeForm>,
) -> Result<Response, PageError> {
    let me = me_posting(&state, &headers).await?;
    checked_client_id(&form.client_id)?;
    admin(&state)
        .revoke_authorization(&actor(&me, &meta), &me.user.username, &form.client_id)
        .await
        .map_err(refusal)?;
    Ok(done(&state, "/account/authorizations", "authorization"))
}
