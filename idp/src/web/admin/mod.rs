//! The admin console (`/admin`): one file per section (overview, users, groups, clients,
//! signing keys, audit) and the stricter rules of an admin session, kept here in one place:
//!
//! - only administrators: `is_admin` users, or members of the `ADMIN_GROUP` group. A signed-in
//!   non-admin gets 403 on every path; an anonymous browser goes to the login page, which
//!   comes back (`return_to`);
//! - an idle timeout (`ADMIN_IDLE_TIMEOUT`): a session unused on admin pages for longer signs
//!   in again; each admin request marks the session used;
//! - re-authentication (`ADMIN_REAUTH_AFTER`): an action (any POST) when the session's last
//!   authentication is older goes to `/admin/reauth` first, which asks for the password and
//!   comes back to the action's page (NIST SP 800-63B §7.2 asks for re-authentication of
//!   long-lived sessions before privileged actions).
//!
//! Every action goes through `crate::admin` with the admin's [`Actor`] (username, request IP,
//! user agent), so the console writes the same audit event as the command line. Every form
//! carries the session-bound CSRF token (`web::csrf`), every destructive action has a GET
//! confirmation page before its POST, and errors render on the page.
//!
//! [`ROUTES`] is the console's path table; the router is built from it, and the access-control
//! test walks it, so a route cannot be added without being tested.

pub mod audit;
pub mod clients;
pub mod groups;
pub mod keys;
pub mod overview;
pub mod reauth;
pub mod users;

use super::{csrf, current_user, login_redirect, page};
use crate::admin::{Actor, Admin};
use crate::error::{IdpError, PageError, StoreError};
use crate::http::ClientMeta;
use crate::state::AppState;
use crate::store::{Session, User};
use askama::Template;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::MethodRouter;
use axum::Router;

/// One console path: its methods (what the access-control test expects to be served; any
/// other method is 405) and the handlers.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub handlers: fn() -> MethodRouter<AppState>,
}

const GET: &[&str] = &["GET"];
const GET_POST: &[&str] = &["GET", "POST"];

/// Every console path. Each action is a GET (its form or confirmation page) and a POST (doing
/// it) on the same path, so a re-authentication can always come back to the action's page.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/admin",
        methods: GET,
        handlers: || axum::routing::get(overview::page),
    },
    Route {
        path: "/admin/reauth",
        methods: GET_POST,
        handlers: || axum::routing::get(reauth::page).post(reauth::submit),
    },
    Route {
        path: "/admin/users",
        methods: GET,
        handlers: || axum::routing::get(users::list),
    },
    Route {
        path: "/admin/users/new",
        methods: GET_POST,
        handlers: || axum::routing::get(users::new_page).post(users::create),
    },
    Route {
        path: "/admin/users/{username}",
        methods: GET,
        handlers: || axum::routing::get(users::show),
    },
    Route {
        path: "/admin/users/{username}/edit",
        methods: GET_POST,
        handlers: || axum::routing::get(users::edit_page).post(users::edit),
    },
    Route {
        path: "/admin/users/{username}/password",
        methods: GET_POST,
        handlers: || axum::routing::get(users::password_page).post(users::reset_password),
    },
    Route {
        path: "/admin/users/{username}/disable",
        methods: GET_POST,
        handlers: || axum::routing::get(users::disable_page).post(users::disable),
    },
    Route {
        path: "/admin/users/{username}/enable",
        methods: GET_POST,
        handlers: || axum::routing::get(users::enable_page).post(users::enable),
    },
    Route {
        path: "/admin/users/{username}/delete",
        methods: GET_POST,
        handlers: || axum::routing::get(users::delete_page).post(users::delete),
    },
    Route {
        path: "/admin/users/{username}/sessions/revoke",
        methods: GET_POST,
        handlers: || axum::routing::get(users::revoke_session_page).post(users::revoke_session),
    },
    Route {
        path: "/admin/users/{username}/authorizations/revoke",
        methods: GET_POST,
        handlers: || {
            axum::routing::get(users::revoke_authorization_page).post(users::revoke_authorization)
        },
    },
    Route {
        path: "/admin/groups",
        methods: GET_POST,
        handlers: || axum::routing::get(groups::list).post(groups::create),
    },
    Route {
        path: "/admin/groups/{name}",
        methods: GET,
        handlers: || axum::routing::get(groups::show),
    },
    Route {
        path: "/admin/groups/{name}/members",
        methods: GET_POST,
        handlers: || axum::routing::get(groups::show).post(groups::add_member),
    },
    Route {
        path: "/admin/groups/{name}/members/remove",
        methods: GET_POST,
        handlers: || axum::routing::get(groups::remove_member_page).post(groups::remove_member),
    },
    Route {
        path: "/admin/groups/{name}/delete",
        methods: GET_POST,
        handlers: || axum::routing::get(groups::delete_page).post(groups::delete),
    },
    Route {
        path: "/admin/clients",
        methods: GET,
        handlers: || axum::routing::get(clients::list),
    },
    Route {
        path: "/admin/clients/new",
        methods: GET_POST,
        handlers: || axum::routing::get(clients::new_page).post(clients::create),
    },
    Route {
        path: "/admin/clients/{client_id}",
        methods: GET,
        handlers: || axum::routing::get(clients::show),
    },
    Route {
        path: "/admin/clients/{client_id}/rotate-secret",
        methods: GET_POST,
        handlers: || axum::routing::get(clients::rotate_page).post(clients::rotate),
    },
    Route {
        path: "/admin/clients/{client_id}/force-reauthentication",
        methods: GET_POST,
        handlers: || axum::routing::get(clients::force_page).post(clients::force),
    },
    Route {
        path: "/admin/clients/{client_id}/delete",
        methods: GET_POST,
        handlers: || axum::routing::get(clients::delete_page).post(clients::delete),
    },
    Route {
        path: "/admin/keys",
        methods: GET,
        handlers: || axum::routing::get(keys::list),
    },
    Route {
        path: "/admin/keys/rotate",
        methods: GET_POST,
        handlers: || axum::routing::get(keys::rotate_page).post(keys::rotate),
    },
    Route {
        path: "/admin/audit",
        methods: GET,
        handlers: || axum::routing::get(audit::page),
    },
    Route {
        path: "/admin/audit.csv",
        methods: GET,
        handlers: || axum::routing::get(audit::csv),
    },
];

/// The console's routes, built from [`ROUTES`].
pub fn router() -> Router<AppState> {
    ROUTES.iter().fold(Router::new(), |r, route| {
        r.route(route.path, (route.handlers)())
    })
}

/// Whether `user` administers this IdP: `is_admin`, or a member of `ADMIN_GROUP`.
pub async fn is_administrator(state: &AppState, user: &User) -> Result<bool, IdpError> {
    if user.is_admin {
        return Ok(true);
    }
    match &state.config.admin_group {
        Some(g) => Ok(state.store.groups_of_user(&user.id).await?.contains(g)),
        None => Ok(false),
    }
}

/// What every console page knows: the administrator, their session, the form token.
pub struct Console {
    pub user: User,
    pub session: Session,
    pub csrf: String,
    pub actor: Actor,
    pub base: String,
    /// The last authentication is old enough that the next action asks for the password.
    pub stale: bool,
}

impl Console {
    /// The admin use cases, at the server's clock.
    pub fn admin<'a>(&self, state: &'a AppState) -> Admin<'a> {
        Admin::new(state.store.as_ref(), state.clock.as_ref())
    }
}

/// A console page (GET): signed in, an administrator, not idle.
pub struct AdminRead(pub Console);
/// A console action (POST): also a recent authentication. The CSRF token is checked by the
/// handler with the form ([`check_csrf`]).
pub struct AdminWrite(pub Console);

impl FromRequestParts<AppState> for AdminRead {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        console(parts, state, false).await.map(AdminRead)
    }
}

impl FromRequestParts<AppState> for AdminWrite {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        console(parts, state, true).await.map(AdminWrite)
    }
}

/// The path the browser asked for, base path included (the router may be nested under it).
fn full_path(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    match uri.query() {
        Some(q) if parts.method == axum::http::Method::GET => format!("{}?{q}", uri.path()),
        _ => uri.path().to_string(),
    }
}

/// The checks of every console request, in order.
async fn console(parts: &mut Parts, state: &AppState, action: bool) -> Result<Console, Response> {
    let back = full_path(parts);
    let meta = match ClientMeta::from_request_parts(parts, state).await {
        Ok(m) => m,
        Err(never) => match never {},
    };
    // 1. Signed in, else the login page, coming back here.
    let Some((session, user)) = current_user(state, &parts.headers)
        .await
        .map_err(|e| PageError::from(e).into_response())?
    else {
        return Err(login_redirect(state, &back));
    };
    // 2. An administrator, else 403 whatever the path.
    if !is_administrator(state, &user)
        .await
        .map_err(|e| PageError::from(e).into_response())?
    {
        return Err(
            PageError::forbidden("This page is for administrators of this IdP.").into_response(),
        );
    }
    let now = state.now();
    // 3. Not idle on admin pages for longer than ADMIN_IDLE_TIMEOUT, else sign in again.
    if now.saturating_sub(session.last_used_at) > state.config.admin_idle_timeout {
        return Err(login_redirect(state, &back));
    }
    // 4. An action needs a recent authentication, else the password again first.
    let stale = now.saturating_sub(session.auth_time) > state.config.admin_reauth_after;
    if action && stale {
        return Err(reauth::redirect(state, &back));
    }
    // The session's last use was recorded by `accounts::session_user` (at most once a minute).
    let csrf = csrf::session_token(state, &parts.headers)
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    Ok(Console {
        actor: Actor::admin(&user.username, &meta.ip, &meta.user_agent),
        user,
        session,
        csrf,
        base: state.config.base_path.clone(),
        stale,
    })
}

/// Accepts an action's form only with the token of the admin's own session.
pub async fn check_csrf(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    token: &str,
) -> Result<(), PageError> {
    csrf::check_session(state, headers, token).await
}

/// What an admin use case's refusal looks like on a page: its message and status. Internal
/// errors are not shown (they become the generic 500 page and a log line).
pub fn refusal(e: IdpError) -> Result<(StatusCode, String), PageError> {
    match e {
        IdpError::Invalid(m) => Ok((StatusCode::BAD_REQUEST, m)),
        IdpError::NotFound(m) | IdpError::Store(StoreError::NotFound(m)) => {
            Ok((StatusCode::NOT_FOUND, m))
        }
        IdpError::Conflict(m) | IdpError::Store(StoreError::Conflict(m)) => {
            Ok((StatusCode::CONFLICT, m))
        }
        other => Err(PageError::from(other)),
    }
}

/// A Unix time as an RFC 3339 UTC timestamp for a page.
pub fn when(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

/// A duration in seconds, roughly, for a page ("3days 4h").
pub fn age(secs: u64) -> String {
    let rounded = if secs >= 86_400 {
        secs - secs % 3600
    } else if secs >= 3600 {
        secs - secs % 60
    } else {
        secs
    };
    humantime::format_duration(std::time::Duration::from_secs(rounded)).to_string()
}

/// A generic confirmation page: what the action does, and the button that does it.
#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub struct ConfirmPage<'a> {
    pub c: &'a Console,
    pub title: &'a str,
    pub message: &'a str,
    pub action: String,
    pub button: &'a str,
    pub hidden: Vec<(&'a str, String)>,
    pub back: String,
    pub error: Option<String>,
}

/// A generic result page: what happened, a secret shown once if any, and where to go next.
#[derive(Template)]
#[template(path = "admin/result.html")]
pub struct ResultPage<'a> {
    pub c: &'a Console,
    pub title: &'a str,
    pub message: &'a str,
    pub secret: Option<(&'a str, &'a str)>,
    pub back: String,
    pub back_label: &'a str,
    pub error: bool,
}

/// The result page with a status.
pub fn result(
    c: &Console,
    status: StatusCode,
    title: &str,
    message: &str,
    back: String,
) -> Response {
    let p = ResultPage {
        c,
        title,
        message,
        secret: None,
        back,
        back_label: "Back",
        error: !status.is_success(),
    };
    page(&p, status, None)
}

/// An action's refusal on the result page (internal errors: the generic 500 page).
pub fn refused(c: &Console, e: IdpError, title: &str, back: String) -> Response {
    match refusal(e) {
        Ok((status, m)) => result(c, status, title, &m, back),
        Err(pe) => pe.into_response(),
    }
}

/// A 303 to a console page after an action.
pub fn see(c: &Console, path: &str) -> Response {
    Redirect::to(&format!("{}{path}", c.base)).into_response()
}

/// A path segment (user name, group name, client id) as it goes into a link.
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
