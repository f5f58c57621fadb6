//! Groups (the `groups` claim RBAC maps): the list with a create form, a group's members with
//! add and remove, delete. Removing a member and deleting a group have confirmation pages.

use super::{refused, result, seg, AdminRead, AdminWrite, ConfirmPage, Console};
use crate::error::PageError;
use crate::state::AppState;
use crate::store::Group;
use crate::web::csrf::{Confirmation, Posted};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

fn group_link(c: &Console, name: &str) -> String {
    format!("{}/admin/groups/{}", c.base, seg(name))
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct ListPage<'a> {
    c: &'a Console,
    groups: Vec<(Group, String)>,
    name: &'a str,
    error: Option<String>,
}

async fn render_list(
    state: &AppState,
    c: &Console,
    name: &str,
    error: Option<(StatusCode, String)>,
) -> Result<Response, PageError> {
    let groups = c
        .admin(state)
        .groups()
        .await?
        .into_iter()
        .map(|g| {
            let l = group_link(c, &g.name);
            (g, l)
        })
        .collect();
    let status = error.as_ref().map(|e| e.0).unwrap_or(StatusCode::OK);
    let p = ListPage {
        c,
        groups,
        name,
        error: error.map(|e| e.1),
    };
    Ok(super::page(&p, status, None))
}

pub async fn list(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
) -> Result<Response, PageError> {
    render_list(&state, &c, "", None).await
}

#[derive(Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    username: String,
}

pub async fn create(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Posted(f): Posted<GroupForm>,
) -> Result<Response, PageError> {
    let name = f.name.trim();
    match c.admin(&state).create_group(&c.actor, name).await {
        Ok(()) => Ok(super::see(&c, &format!("/admin/groups/{}", seg(name)))),
        Err(e) => {
            let shown = crate::audit::bounded(name, crate::admin::MAX_NAME);
            render_list(&state, &c, &shown, Some(super::refusal(e)?)).await
        }
    }
}

#[derive(Template)]
#[template(path = "admin/group.html")]
struct ShowPage<'a> {
    c: &'a Console,
    g: Group,
    link: String,
    /// Each member with the link to the confirmation of their removal.
    members: Vec<(String, String)>,
    username: &'a str,
    error: Option<String>,
}

async fn render_group(
    state: &AppState,
    c: &Console,
    name: &str,
    username: &str,
    error: Option<(StatusCode, String)>,
) -> Result<Response, PageError> {
    let groups = c.admin(state).groups().await?;
    let Some(g) = groups.into_iter().find(|g| g.name == name) else {
        return Ok(result(
            c,
            StatusCode::NOT_FOUND,
            "Group",
            &format!("There is no group {name:?}."),
            format!("{}/admin/groups", c.base),
        ));
    };
    let link = group_link(c, name);
    let members = g
        .members
        .iter()
        .map(|m| {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("username", m)
                .finish();
            (m.clone(), format!("{link}/members/remove?{q}"))
        })
        .collect();
    let status = error.as_ref().map(|e| e.0).unwrap_or(StatusCode::OK);
    let p = ShowPage {
        c,
        g,
        link,
        members,
        username,
        error: error.map(|e| e.1),
    };
    Ok(super::page(&p, status, None))
}

pub async fn show(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    render_group(&state, &c, &name, "", None).await
}

pub async fn add_member(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(name): Path<String>,
    Posted(f): Posted<GroupForm>,
) -> Result<Response, PageError> {
    let username = f.username.trim();
    match c.admin(&state).add_member(&c.actor, &name, username).await {
        Ok(()) => Ok(super::see(&c, &format!("/admin/groups/{}", seg(&name)))),
        Err(e) => {
            let shown = crate::audit::bounded(username, crate::admin::MAX_NAME);
            render_group(&state, &c, &name, &shown, Some(super::refusal(e)?)).await
        }
    }
}

#[derive(Deserialize)]
pub struct MemberQuery {
    #[serde(default)]
    username: String,
}

pub async fn remove_member_page(
    AdminRead(c): AdminRead,
    Path(name): Path<String>,
    Query(q): Query<MemberQuery>,
) -> Response {
    let link = group_link(&c, &name);
    if q.username.is_empty() {
        return super::see(&c, &format!("/admin/groups/{}", seg(&name)));
    }
    let username = crate::audit::bounded(&q.username, crate::admin::MAX_NAME);
    let message = format!("{username} leaves {name}; the next token they get no longer carries it (tokens already issued keep it until they expire).");
    let p = ConfirmPage {
        c: &c,
        title: &format!("Remove {username} from {name}?"),
        message: &message,
        action: format!("{link}/members/remove"),
        button: "Remove",
        hidden: vec![("username", username.clone())],
        back: link,
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

pub async fn remove_member(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(name): Path<String>,
    Posted(f): Posted<GroupForm>,
) -> Result<Response, PageError> {
    let link = group_link(&c, &name);
    match c
        .admin(&state)
        .remove_member(&c.actor, &name, &f.username)
        .await
    {
        Ok(()) => Ok(result(
            &c,
            StatusCode::OK,
            "Member removed",
            &format!("{} is no longer in {name}.", f.username),
            link,
        )),
        Err(e) => Ok(refused(&c, e, "Not removed", link)),
    }
}

pub async fn delete_page(AdminRead(c): AdminRead, Path(name): Path<String>) -> Response {
    let link = group_link(&c, &name);
    let message = format!("The group {name} is deleted; its members stay, without it. Kubernetes RBAC bindings to it stop matching new tokens.");
    let p = ConfirmPage {
        c: &c,
        title: &format!("Delete the group {name}?"),
        message: &message,
        action: format!("{link}/delete"),
        button: "Delete group",
        hidden: vec![],
        back: link,
        error: None,
    };
    super::page(&p, StatusCode::OK, None)
}

pub async fn delete(
    State(state): State<AppState>,
    AdminWrite(c): AdminWrite,
    Path(name): Path<String>,
    Posted(Confirmation {}): Posted<Confirmation>,
) -> Result<Response, PageError> {
    let back = format!("{}/admin/groups", c.base);
    match c.admin(&state).delete_group(&c.actor, &name).await {
        Ok(()) => Ok(result(
            &c,
            StatusCode::OK,
            "Group deleted",
            &format!("The group {name} was deleted."),
            back,
        )),
        Err(e) => Ok(refused(&c, e, "Not deleted", back)),
    }
}
