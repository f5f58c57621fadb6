//! Users: the list with search and keyset paging; create (a generated password shown once,
//! or one the admin sets); a user's page with their sessions and authorizations; edit name,
//! email and groups; disable and enable; reset the password; delete; revoke a session or an
//! authorization. Each destructive action has its confirmation page (the GET of its path).

use super::{
    refusal, refused, result, seg, when, AdminRead, AdminWrite, ConfirmPage, Console, ResultPage,
};
use crate::admin::users::{NewUserRequest, UserDetails, UserEdit};
use crate::admin::{PasswordChoice, Secret};
use crate::error::PageError;
use crate::state::AppState;
use crate::store::{User, UserQuery};
use crate::web::csrf::{Confirmation, Posted};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// Users per page of the list.
const PAGE: u32 = 50;

fn user_link(c: &Console, username: &str) -> String {
    format!("{}/admin/users/{}", c.base, seg(username))
}

/// A comma-separated list of group names, without empty entries.
fn group_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct ListPage<'a> {
    c: &'a Console,
    q: String,
    /// Each user with their name as a path segment.
    users: Vec<(User, String)>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

pub async fn list(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Query(lq): Query<ListQuery>,
) -> Result<Response, PageError> {
    let q = crate::audit::bounded(&lq.q, crate::admin::users::MAX_DISPLAY_NAME);
    let query = UserQuery {
        search: (!q.is_empty()).then(|| q.clone()),
        after: (!lq.after.is_empty())
            .then(|| crate::audit::bounded(&lq.after, crate::admin::MAX_NAME)),
        limit: PAGE,
    };
    let page = match c.admin(&state).list_users(query).await {
        Ok(p) => p,
        Err(e) => return Ok(refused(&c, e, "Users", format!("{}/admin/users", c.base))),
    };
    let next = page.next.map(|after| {
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &q)
            .append_pair("after", &after)
            .finish();
        format!("{}/admin/users?{qs}", c.base)
    });
    let users = page
        .users
        .into_iter()
        .map(|u| {
            let s = seg(&u.username);
            (u, s)
        })
        .collect();
    let p = ListPage {
        c: &c,
        q,
        users,
        next,
    };
    Ok(super::page(&p, StatusCode::OK, None))
}

#[derive(Deserialize, Default)]
pub struct NewUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    is_admin: String,
}

#[derive(Template)]
#[template(path = "admin/user_new.html")]
struct NewPage<'a> {
    c: &'a Console,
    f: &'a NewUserForm,
    error: Option<String>,
}

pub async fn new_page(AdminRead(c): AdminRead) -> Response {
    let f = NewUserForm::default();
    super::page(
        &NewPage {
            c: &c,
            f: &f,
            error: None,
        },
        StatusCode::OK,
        None,
    )
}

pub async fn create(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Posted(f): Posted<NewUserForm>,
) -> Result<Response, PageError> {
    let req = NewUserRequest {
        username: f.username.trim().to_string(),
        email: f.email.trim().to_string(),
        name: f.name.trim().to_string(),
        groups: group_list(&f.groups),
        password: if f.password.is_empty() {
            PasswordChoice::Generate
        } else {
            PasswordChoice::Given(Secret::new(f.password.clone()))
        },
        is_admin: f.is_admin == "on",
    };
    match c.admin(&state).create_user(&c.actor, req).await {
        Ok(created) => {
            let message = format!("User {} was created.", created.user.username);
            let p = ResultPage {
                c: &c,
                title: "User created",
                message: &message,
                secret: created
                    .password
                    .as_ref()
                    .map(|s| ("Their generated password", s.expose())),
                back: user_link(&c, &created.user.username),
                back_label: "Go to the user",
                error: false,
            };
            Ok(super::page(&p, StatusCode::OK, None))
        }
        Err(e) => {
            let (status, m) = refusal(e)?;
            // The form comes back as typed, except the password.
            let kept = NewUserForm {
                password: String::new(),
                ..f
            };
            Ok(super::page(
                &NewPage {
                    c: &c,
                    f: &kept,
                    error: Some(m),
                },
                status,
                None,
            ))
        }
    }
}

struct SessionRow {
    created: String,
    last_used: String,
    ip: String,
    user_agent: String,
    revoke: String,
}

struct AuthorizationRow {
    client_id: String,
    scopes: String,
    families: usize,
    revoke: String,
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct ShowPage<'a> {
    c: &'a Console,
    d: UserDetails,
    link: String,
    created: String,
    sessions: Vec<SessionRow>,
    authorizations: Vec<AuthorizationRow>,
}

pub async fn show(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Path(username): Path<String>,
) -> Result<Response, PageError> {
    let admin = c.admin(&state);
    let back = format!("{}/admin/users", c.base);
    let d = match admin.user(&username).await {
        Ok(d) => d,
        Err(e) => return Ok(refused(&c, e, "User", back)),
    };
    let link = user_link(&c, &username);
    let sessions = admin
        .sessions(&username)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            created: when(s.created_at),
            last_used: when(s.last_used_at),
            revoke: format!(
                "{link}/sessions/revoke?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("session", &s.id_hash)
                    .finish()
            ),
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    let authorizations = admin
        .authorizations(&username)
        .await?
        .into_iter()
        .map(|a| AuthorizationRow {
            revoke: format!(
                "{link}/authorizations/revoke?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("client", &a.client_id)
                    .finish()
            ),
            scopes: a.consent.map(|c| c.scopes.join(" ")).unwrap_or_default(),
            families: a.live_families.len(),
            client_id: a.client_id,
        })
        .collect();
    let p = ShowPage {
        c: &c,
        created: when(d.user.created_at),
        d,
        link,
        sessions,
        authorizations,
    };
    Ok(super::page(&p, StatusCode::OK, None))
}

#[derive(Deserialize, Default)]
pub struct EditForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    groups: String,
}

#[derive(Template)]
#[template(path = "admin/user_edit.html")]
struct EditPage<'a> {
    c: &'a Console,
    username: &'a str,
    action: String,
    f: &'a EditForm,
    error: Option<String>,
}

pub async fn edit_page(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Path(username): Path<String>,
) -> Result<Response, PageError> {
    let d = match c.admin(&state).user(&username).await {
        Ok(d) => d,
        Err(e) => {
            return Ok(refused(
                &c,
                e,
                "Edit user",
                format!("{}/admin/users", c.base),
            ))
        }
    };
    let f = EditForm {
        name: d.user.name.clone(),
        email: d.user.email.clone(),
        groups: d.groups.join(", "),
    };
    let p = EditPage {
        c: &c,
        username: &username,
        action: format!("{}/edit", user_link(&c, &username)),
        f: &f,
        error: None,
    };
    Ok(super::page(&p, StatusCode::OK, None))
}

pub async fn edit(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(f): Posted<EditForm>,
) -> Result<Response, PageError> {
    let edit = UserEdit {
        email: Some(f.email.trim().to_string()),
        name: Some(f.name.trim().to_string()),
        groups: Some(group_list(&f.groups)),
    };
    match c.admin(&state).edit_user(&c.actor, &username, edit).await {
        Ok(_) => Ok(super::see(&c, &format!("/admin/users/{}", seg(&username)))),
        Err(e) => {
            let (status, m) = refusal(e)?;
            let p = EditPage {
                c: &c,
                username: &username,
                action: format!("{}/edit", user_link(&c, &username)),
                f: &f,
                error: Some(m),
            };
            Ok(super::page(&p, status, None))
        }
    }
}

#[derive(Template)]
#[template(path = "admin/user_password.html")]
struct PasswordPage<'a> {
    c: &'a Console,
    username: &'a str,
    action: String,
    error: Option<String>,
}

pub async fn password_page(AdminRead(c): AdminRead, Path(username): Path<String>) -> Response {
    let p = PasswordPage {
        c: &c,
        username: &username,
        action: format!("{}/password", user_link(&c, &username)),
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    password: String,
}

pub async fn reset_password(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(f): Posted<PasswordForm>,
) -> Result<Response, PageError> {
    let choice = if f.password.is_empty() {
        PasswordChoice::Generate
    } else {
        PasswordChoice::Given(Secret::new(f.password))
    };
    match c
        .admin(&state)
        .reset_password(&c.actor, &username, choice)
        .await
    {
        Ok(generated) => {
            let message =
                format!("The password of {username} was reset; they are signed out everywhere.");
            let p = ResultPage {
                c: &c,
                title: "Password reset",
                message: &message,
                secret: generated.as_ref().map(|s| ("The new password", s.expose())),
                back: user_link(&c, &username),
                back_label: "Back to the user",
                error: false,
            };
            Ok(super::page(&p, StatusCode::OK, None))
        }
        Err(e) => {
            let (status, m) = refusal(e)?;
            let p = PasswordPage {
                c: &c,
                username: &username,
                action: format!("{}/password", user_link(&c, &username)),
                error: Some(m),
            };
            Ok(super::page(&p, status, None))
        }
    }
}

/// A confirmation page for an action on a user.
fn confirm(
    c: &Console,
    username: &str,
    what: &str,
    title: &str,
    message: &str,
    button: &str,
    hidden: Vec<(&str, String)>,
) -> Response {
    let p = ConfirmPage {
        c,
        title,
        message,
        action: format!("{}/{what}", user_link(c, username)),
        button,
        hidden,
        back: user_link(c, username),
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    session: String,
    #[serde(default)]
    client: String,
}

pub async fn disable_page(AdminRead(c): AdminRead, Path(username): Path<String>) -> Response {
    let m = format!("Disabling {username} ends every browser session and revokes every refresh token of theirs at once; they cannot sign in until enabled again.");
    confirm(
        &c,
        &username,
        "disable",
        &format!("Disable {username}?"),
        &m,
        "Disable",
        vec![],
    )
}

pub async fn enable_page(AdminRead(c): AdminRead, Path(username): Path<String>) -> Response {
    let m = format!("{username} will be able to sign in again with their password.");
    confirm(
        &c,
        &username,
        "enable",
        &format!("Enable {username}?"),
        &m,
        "Enable",
        vec![],
    )
}

pub async fn delete_page(AdminRead(c): AdminRead, Path(username): Path<String>) -> Response {
    let m = format!("Deleting {username} removes the account with its sessions, refresh tokens, consents and group memberships. This cannot be undone.");
    confirm(
        &c,
        &username,
        "delete",
        &format!("Delete {username}?"),
        &m,
        "Delete",
        vec![],
    )
}

async fn set_disabled(
    state: AppState,
    c: Console,
    username: String,
    disabled: bool,
) -> Result<Response, PageError> {
    let back = user_link(&c, &username);
    match c
        .admin(&state)
        .set_user_disabled(&c.actor, &username, disabled)
        .await
    {
        Ok(()) => {
            let m = if disabled {
                format!("{username} is disabled: their sessions ended and their refresh tokens were revoked.")
            } else {
                format!("{username} is enabled.")
            };
            Ok(result(
                &c,
                StatusCode::OK,
                if disabled {
                    "User disabled"
                } else {
                    "User enabled"
                },
                &m,
                back,
            ))
        }
        Err(e) => Ok(refused(&c, e, "Not done", back)),
    }
}

pub async fn disable(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    set_disabled(state, c, username, true).await
}

pub async fn enable(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    set_disabled(state, c, username, false).await
}

pub async fn delete(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    match c.admin(&state).delete_user(&c.actor, &username).await {
        Ok(()) => Ok(result(
            &c,
            StatusCode::OK,
            "User deleted",
            &format!("{username} was deleted."),
            format!("{}/admin/users", c.base),
        )),
        Err(e) => Ok(refused(&c, e, "Not deleted", user_link(&c, &username))),
    }
}

#[derive(Deserialize)]
pub struct SessionQuery {
    #[serde(default)]
    session: String,
}

pub async fn revoke_session_page(
    AdminRead(c): AdminRead,
    Path(username): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Response {
    if q.session.is_empty() {
        return super::see(&c, &format!("/admin/users/{}", seg(&username)));
    }
    let m =
        format!("This browser session of {username} ends now; that browser must sign in again.");
    let session = crate::audit::bounded(&q.session, 128);
    confirm(
        &c,
        &username,
        "sessions/revoke",
        "Revoke this session?",
        &m,
        "Revoke session",
        vec![("session", session)],
    )
}

pub async fn revoke_session(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(f): Posted<ConfirmForm>,
) -> Result<Response, PageError> {
    let back = user_link(&c, &username);
    match c
        .admin(&state)
        .revoke_session(&c.actor, &username, &f.session)
        .await
    {
        Ok(()) => Ok(result(
            &c,
            StatusCode::OK,
            "Session revoked",
            &format!("The session of {username} was ended."),
            back,
        )),
        Err(e) => Ok(refused(&c, e, "Not revoked", back)),
    }
}

#[derive(Deserialize)]
pub struct ClientQuery {
    #[serde(default)]
    client: String,
}

pub async fn revoke_authorization_page(
    AdminRead(c): AdminRead,
    Path(username): Path<String>,
    Query(q): Query<ClientQuery>,
) -> Response {
    if q.client.is_empty() {
        return super::see(&c, &format!("/admin/users/{}", seg(&username)));
    }
    let client = crate::audit::bounded(&q.client, crate::admin::MAX_NAME);
    let m = format!("The refresh tokens {username} holds for {client} stop working at once and the consent is forgotten, so the next login asks again.");
    confirm(
        &c,
        &username,
        "authorizations/revoke",
        "Revoke this authorization?",
        &m,
        "Revoke authorization",
        vec![("client", client)],
    )
}

pub async fn revoke_authorization(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(username): Path<String>,
    Posted(f): Posted<ConfirmForm>,
) -> Result<Response, PageError> {
    let back = user_link(&c, &username);
    match c
        .admin(&state)
        .revoke_authorization(&c.actor, &username, &f.client)
        .await
    {
        Ok(n) => Ok(result(
            &c,
            StatusCode::OK,
            "Authorization revoked",
            &format!(
                "{n} refresh token families of {username} at {} were revoked.",
                f.client
            ),
            back,
        )),
        Err(e) => Ok(refused(&c, e, "Not revoked", back)),
    }
}
