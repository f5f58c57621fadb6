//! OAuth clients: the list; create (public or confidential, with redirect URIs, post-logout
//! redirect URIs, grant types and scopes, checked by `admin::clients`: loopback rules, no
//! fragments, https except loopback); a client's page with its live tokens; rotate the secret
//! (shown once); forced re-authentication; delete. The last three have confirmation pages.

use super::{
    refusal, refused, result, seg, when, AdminRead, AdminWrite, ConfirmPage, Console, ResultPage,
};
use crate::admin::clients::{ClientTokens, NewClientRequest};
use crate::error::PageError;
use crate::state::AppState;
use crate::store::Client;
use crate::web::csrf::{Confirmation, Posted};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// Live refresh families listed on a client's page.
const TOKENS_SHOWN: u32 = 100;

fn client_link(c: &Console, id: &str) -> String {
    format!("{}/admin/clients/{}", c.base, seg(id))
}

/// One entry a line (or separated by spaces), without empty entries.
fn lines(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ListPage<'a> {
    c: &'a Console,
    clients: Vec<(Client, String)>,
}

pub async fn list(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
) -> Result<Response, PageError> {
    let clients = c
        .admin(&state)
        .clients()
        .await?
        .into_iter()
        .map(|cl| {
            let l = client_link(&c, &cl.client_id);
            (cl, l)
        })
        .collect();
    Ok(super::page(
        &ListPage { c: &c, clients },
        StatusCode::OK,
        None,
    ))
}

/// The grant types offered on the form: (field name, grant name for `admin::clients`, label).
pub const GRANTS: &[(&str, &str, &str)] = &[
    (
        "grant_authorization_code",
        "authorization_code",
        "Authorization code (browser login)",
    ),
    ("grant_refresh_token", "refresh_token", "Refresh token"),
    ("grant_device_code", "device_code", "Device code"),
    (
        "grant_client_credentials",
        "client_credentials",
        "Client credentials (confidential only)",
    ),
    ("grant_password", "password", "Password (legacy)"),
];

#[derive(Deserialize, Default)]
pub struct NewClientForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    grant_authorization_code: String,
    #[serde(default)]
    grant_refresh_token: String,
    #[serde(default)]
    grant_device_code: String,
    #[serde(default)]
    grant_client_credentials: String,
    #[serde(default)]
    grant_password: String,
}

impl NewClientForm {
    /// The grant checkboxes: (field, label, checked).
    fn grants(&self) -> Vec<(&'static str, &'static str, bool)> {
        let on = [
            &self.grant_authorization_code,
            &self.grant_refresh_token,
            &self.grant_device_code,
            &self.grant_client_credentials,
            &self.grant_password,
        ];
        GRANTS
            .iter()
            .zip(on)
            .map(|((field, _, label), v)| (*field, *label, v == "on"))
            .collect()
    }
}

#[derive(Template)]
#[template(path = "admin/client_new.html")]
struct NewPage<'a> {
    c: &'a Console,
    f: &'a NewClientForm,
    grants: Vec<(&'static str, &'static str, bool)>,
    error: Option<String>,
}

pub async fn new_page(AdminRead(c): AdminRead) -> Response {
    let f = NewClientForm {
        kind: "public".into(),
        ..NewClientForm::default()
    };
    let grants = f.grants();
    super::page(
        &NewPage {
            c: &c,
            f: &f,
            grants,
            error: None,
        },
        StatusCode::OK,
        None,
    )
}

pub async fn create(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Posted(f): Posted<NewClientForm>,
) -> Result<Response, PageError> {
    let grant_types = f
        .grants()
        .iter()
        .zip(GRANTS)
        .filter(|(g, _)| g.2)
        .map(|(_, (_, name, _))| name.to_string())
        .collect();
    let req = NewClientRequest {
        client_id: f.client_id.trim().to_string(),
        name: f.name.trim().to_string(),
        public: f.kind != "confidential",
        redirect_uris: lines(&f.redirect_uris),
        post_logout_redirect_uris: lines(&f.post_logout_redirect_uris),
        grant_types,
        scopes: lines(&f.scopes),
    };
    match c.admin(&state).create_client(&c.actor, req).await {
        Ok(created) => {
            let kind = if created.client.is_public() {
                "public"
            } else {
                "confidential"
            };
            let message = format!(
                "The {kind} client {} was created.",
                created.client.client_id
            );
            let p = ResultPage {
                c: &c,
                title: "Client created",
                message: &message,
                secret: created
                    .secret
                    .as_ref()
                    .map(|s| ("Its client secret", s.expose())),
                back: client_link(&c, &created.client.client_id),
                back_label: "Go to the client",
                error: false,
            };
            Ok(super::page(&p, StatusCode::OK, None))
        }
        Err(e) => {
            let (status, m) = refusal(e)?;
            let grants = f.grants();
            Ok(super::page(
                &NewPage {
                    c: &c,
                    f: &f,
                    grants,
                    error: Some(m),
                },
                status,
                None,
            ))
        }
    }
}

struct TokenRow {
    username: String,
    created: String,
    scope: String,
}

#[derive(Template)]
#[template(path = "admin/client.html")]
struct ShowPage<'a> {
    c: &'a Console,
    cl: Client,
    link: String,
    created: String,
    live: u64,
    tokens: Vec<TokenRow>,
}

pub async fn show(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Path(client_id): Path<String>,
) -> Result<Response, PageError> {
    let admin = c.admin(&state);
    let back = format!("{}/admin/clients", c.base);
    let cl = match admin.client(&client_id).await {
        Ok(cl) => cl,
        Err(e) => return Ok(refused(&c, e, "Client", back)),
    };
    let ClientTokens { live, newest } = admin.client_tokens(&client_id, TOKENS_SHOWN).await?;
    let tokens = newest
        .into_iter()
        .map(|f| TokenRow {
            username: f.username,
            created: when(f.family.created_at),
            scope: f.family.scope,
        })
        .collect();
    let p = ShowPage {
        c: &c,
        link: client_link(&c, &client_id),
        created: when(cl.created_at),
        cl,
        live,
        tokens,
    };
    Ok(super::page(&p, StatusCode::OK, None))
}

fn confirm(
    c: &Console,
    id: &str,
    what: &str,
    title: &str,
    message: &str,
    button: &str,
) -> Response {
    let link = client_link(c, id);
    let p = ConfirmPage {
        c,
        title,
        message,
        action: format!("{link}/{what}"),
        button,
        hidden: vec![],
        back: link,
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

pub async fn rotate_page(AdminRead(c): AdminRead, Path(id): Path<String>) -> Response {
    let m = format!("A new secret is generated for {id} and shown once; the current secret stops working at once, so every program using it must be given the new one.");
    confirm(
        &c,
        &id,
        "rotate-secret",
        &format!("Rotate the secret of {id}?"),
        &m,
        "Rotate secret",
    )
}

pub async fn rotate(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(id): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    let link = client_link(&c, &id);
    let admin = c.admin(&state);
    // A public client has no secret to rotate (RFC 6749 §2.1).
    match admin.client(&id).await {
        Ok(cl) if cl.is_public() => {
            return Ok(result(
                &c,
                StatusCode::BAD_REQUEST,
                "Not rotated",
                &format!("{id} is a public client: it has no secret."),
                link,
            ));
        }
        Ok(_) => {}
        Err(e) => return Ok(refused(&c, e, "Not rotated", link)),
    }
    match admin.rotate_client_secret(&c.actor, &id).await {
        Ok(secret) => {
            let message = format!("The secret of {id} was replaced; the old one no longer works.");
            let p = ResultPage {
                c: &c,
                title: "Secret rotated",
                message: &message,
                secret: Some(("The new client secret", secret.expose())),
                back: link,
                back_label: "Back to the client",
                error: false,
            };
            Ok(super::page(&p, StatusCode::OK, None))
        }
        Err(e) => Ok(refused(&c, e, "Not rotated", link)),
    }
}

pub async fn force_page(AdminRead(c): AdminRead, Path(id): Path<String>) -> Response {
    let m = format!("Everyone using {id} must log in again: every refresh token of the client is revoked, ID and access tokens it was issued before now are no longer accepted by this IdP, its consents are forgotten and the browser sessions of its users end. Use this when a device holding its tokens is lost or stolen. Tokens kube-apiserver verifies on its own stay valid until they expire (at most the token lifetime).");
    confirm(
        &c,
        &id,
        "force-reauthentication",
        &format!("Force re-authentication for {id}?"),
        &m,
        "Force re-authentication",
    )
}

pub async fn force(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(id): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    let link = client_link(&c, &id);
    let admin = c.admin(&state);
    if let Err(e) = admin.client(&id).await {
        return Ok(refused(&c, e, "Not done", link));
    }
    match admin.force_reauthentication(&c.actor, &id).await {
        Ok(n) => Ok(result(
            &c,
            StatusCode::OK,
            "Re-authentication forced",
            &format!(
                "{n} refresh token families of {id} were revoked; its users must log in again."
            ),
            link,
        )),
        Err(e) => Ok(refused(&c, e, "Not done", link)),
    }
}

pub async fn delete_page(AdminRead(c): AdminRead, Path(id): Path<String>) -> Response {
    let m = format!("The client {id} is deleted with its refresh tokens and consents; programs using it can no longer log in. This cannot be undone.");
    confirm(
        &c,
        &id,
        "delete",
        &format!("Delete the client {id}?"),
        &m,
        "Delete client",
    )
}

pub async fn delete(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(id): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    let back = format!("{}/admin/clients", c.base);
    match c.admin(&state).delete_client(&c.actor, &id).await {
        Ok(()) => Ok(result(
            &c,
            StatusCode::OK,
            "Client deleted",
            &format!("The client {id} was deleted."),
            back,
        )),
        Err(e) => Ok(refused(&c, e, "Not deleted", client_link(&c, &id))),
    }
}
