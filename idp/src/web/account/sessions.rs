//! `/account/sessions`: the person's browser sessions (created, last used, address, user
//! agent; the one in use marked), with "sign out" for one of them or for all the others, each
//! after a confirmation page. The session in use is ended with the ordinary sign-out button.
//!
//! May depend on: the account pages beside it, `admin`, `http`, `state`, `store`, `error`.

use super::{actor, admin, done, me_or_login, me_posting, notice, refusal, when, ConfirmPage};
use super::{page, DoneQuery};
use crate::error::PageError;
use crate::http::ClientMeta;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

pub struct Row {
    pub id: String,
    pub created: String,
    pub last_used: String,
    pub ip: String,
    pub user_agent: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account/sessions.html")]
pub struct SessionsPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub notice: Option<&'a str>,
    pub rows: Vec<Row>,
    pub others: usize,
}

/// A session as the forms name it: the SHA-256 (hex) of its id, as the store keys it. The
/// cookie's id cannot be derived from it.
fn valid_session_ref(s: &str) -> Result<(), PageError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(PageError::bad_request(
            "Unknown session",
            "That is not a session of this site.",
        ))
    }
}

/// GET /account/sessions
pub async fn sessions_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let me = match me_or_login(&state, &headers, "/account/sessions").await? {
        Ok(me) => me,
        Err(login) => return Ok(login),
    };
    let sessions = admin(&state)
        .sessions(&me.user.username)
        .await
        .map_err(refusal)?;
    let rows: Vec<Row> = sessions
        .into_iter()
        .map(|s| Row {
            current: s.id_hash == me.session.id_hash,
            created: when(s.created_at),
            last_used: when(s.last_used_at.max(s.created_at)),
            ip: s.ip,
            user_agent: s.user_agent,
            id: s.id_hash,
        })
        .collect();
    let p = SessionsPage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        username: &me.user.username,
        notice: notice(&q.done),
        others: rows.iter().filter(|r| !r.current).count(),
        rows,
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct OneQuery {
    #[serde(default)]
    pub session: String,
}

/// GET /account/sessions/revoke?session=…: asks before signing one session out.
pub async fn revoke_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<OneQuery>,
) -> Result<Response, PageError> {
    let me = match me_or_login(&state, &headers, "/account/sessions").await? {
        Ok(me) => me,
        Err(login) => return Ok(login),
    };
    valid_session_ref(&q.session)?;
    let p = ConfirmPage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        title: "Sign out this session?",
        text: "The browser that holds it will have to sign in again. Applications it authorized \
               keep their tokens: revoke those under Authorizations.",
        action: "/account/sessions/revoke",
        fields: vec![("session", &q.session)],
        button: "Sign out the session",
        cancel: "/account/sessions",
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub session: String,
}

/// POST /account/sessions/revoke: ends one of the person's sessions (the admin layer's
/// `revoke_session`, which finds only their own: anyone else's is 404).
pub async fn revoke_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    let me = me_posting(&state, &headers, &form.csrf_token).await?;
    valid_session_ref(&form.session)?;
    if form.session == me.session.id_hash {
        return Err(PageError::bad_request(
            "This is your current session",
            "To end the session you are using, use Sign out.",
        ));
    }
    admin(&state)
        .revoke_session(&actor(&me, &meta), &me.user.username, &form.session)
        .await
        .map_err(refusal)?;
    Ok(done(&state, "/account/sessions", "session"))
}

/// GET /account/sessions/revoke-others: asks before signing out every other session.
pub async fn others_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let me = match me_or_login(&state, &headers, "/account/sessions").await? {
        Ok(me) => me,
        Err(login) => return Ok(login),
    };
    let p = ConfirmPage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        title: "Sign out every other session?",
        text: "Every browser signed in as you, except this one, will have to sign in again.",
        action: "/account/sessions/revoke-others",
        fields: Vec::new(),
        button: "Sign out the other sessions",
        cancel: "/account/sessions",
    };
    Ok(page(&p, StatusCode::OK, None))
}

#[derive(Deserialize)]
pub struct OthersForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// POST /account/sessions/revoke-others: every session but this one, each through the admin
/// layer (one `session_revoked` event each, as the console's revoke records).
pub async fn others_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<OthersForm>,
) -> Result<Response, PageError> {
    let me = me_posting(&state, &headers, &form.csrf_token).await?;
    let admin = admin(&state);
    let who = actor(&me, &meta);
    let sessions = admin.sessions(&me.user.username).await.map_err(refusal)?;
    for s in sessions.iter().filter(|s| s.id_hash != me.session.id_hash) {
        match admin
            .revoke_session(&who, &me.user.username, &s.id_hash)
            .await
        {
            // Ended meanwhile (expired, or another tab): nothing left to do.
            Ok(()) => {}
            Err(e) if e.not_found().is_some() => {}
            Err(e) => return Err(refusal(e)),
        }
    }
    Ok(done(&state, "/account/sessions", "others"))
}
