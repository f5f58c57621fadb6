//! Signing keys: the list with algorithm, kid and age; rotate now (with a confirmation page).
//! A retired key stays published in JWKS while tokens it signed may be live (`admin::keys`);
//! this server reloads its keys at once after a rotation.

use super::{age, refused, result, when, AdminRead, AdminWrite, ConfirmPage, Console};
use crate::admin::keys::KeyInfo;
use crate::error::PageError;
use crate::state::AppState;
use crate::web::csrf::{Confirmation, Posted};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

struct KeyRow {
    k: KeyInfo,
    created: String,
    age: String,
    retired: String,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage<'a> {
    c: &'a Console,
    keys: Vec<KeyRow>,
}

pub async fn list(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
) -> Result<Response, PageError> {
    let keys = c
        .admin(&state)
        .keys()
        .await?
        .into_iter()
        .map(|k| KeyRow {
            created: when(k.created_at),
            age: age(k.age_secs),
            retired: k.retired_at.map(when).unwrap_or_else(|| "active".into()),
            k,
        })
        .collect();
    Ok(super::page(&KeysPage { c: &c, keys }, StatusCode::OK, None))
}

pub async fn rotate_page(State(state): State<AppState>, AdminRead(c): AdminRead) -> Response {
    let alg = state.config.signing_alg;
    let message = format!("A new {alg:?} key becomes the active signing key now. The current key is retired but stays published in JWKS until every token it signed has expired, so nobody is signed out.");
    let p = ConfirmPage {
        c: &c,
        title: "Rotate the signing key?",
        message: &message,
        action: format!("{}/admin/keys/rotate", c.base),
        button: "Rotate now",
        hidden: vec![],
        back: format!("{}/admin/keys", c.base),
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

pub async fn rotate(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    let back = format!("{}/admin/keys", c.base);
    let kek = state.config.key_encryption_key.as_deref();
    match c
        .admin(&state)
        .rotate_key(&c.actor, state.config.signing_alg, kek)
        .await
    {
        Ok(k) => {
            state.reload_keys().await?;
            Ok(result(
                &c,
                StatusCode::OK,
                "Signing key rotated",
                &format!("The new active key is {} ({}).", k.kid, k.alg),
                back,
            ))
        }
        Err(e) => Ok(refused(&c, e, "Not rotated", back)),
    }
}
