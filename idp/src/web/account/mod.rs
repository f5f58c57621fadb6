//! The self-service pages of every signed-in person, under `/account`: the profile and password
//! change (here), their browser sessions (`sessions.rs`) and the clients they authorized
//! (`authorizations.rs`).
//!
//! Each action runs the admin layer's use case on the person's own account, with them as the
//! actor, so the rule and the audit event are those the CLI and the console use; records are
//! looked up through the signed-in user only, so another person's session or authorization is
//! "not found". Every action is a POST form with the session's CSRF token; the destructive ones
//! come after a confirmation page.
//!
//! Two decisions:
//! - the email address is read-only here. ID tokens carry it with `email_verified: true` and
//!   kube-apiserver may take it as the username (`--oidc-username-claim=email`), so someone who
//!   could change their own would become another person in RBAC; an administrator changes it;
//! - a password change ends the person's other sessions *and* every refresh family (kubectl on
//!   every device signs in again), as an administrator's reset does: whoever learnt the old
//!   password may hold a refresh token as well. The browser that made the change gets a new
//!   session (new id, same sign-in time) and stays signed in. The page says so before and after.
//!
//! [`ROUTES`] is the path table of these pages, as the console has one: the router is built
//! from it and the access-control test walks it, so a page cannot be added untested.
//!
//! May depend on: `admin` (the use cases), `accounts`, `http`, `state`, `store`, `error`.

pub mod authorizations;
pub mod sessions;

use super::admin::Route;
use super::{csrf, current_user, login_redirect, page, SESSION_COOKIE};
use crate::accounts::{self, PasswordCheck};
use crate::admin::users::{UserEdit, MAX_PASSWORD};
use crate::admin::{Actor, Admin, PasswordChoice, Secret};
use crate::error::{IdpError, PageError, StoreError};
use crate::http::{set_cookie, ClientMeta};
use crate::state::AppState;
use crate::store::{Session, User};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Form;
use axum::Router;
use serde::Deserialize;

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "POST"];

/// Every `/account` path: a page (GET), an action (POST), or a confirmation page (GET) and
/// its action (POST) on one path.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/account",
        methods: GET,
        handlers: || get(profile_page),
    },
    Route {
        path: "/account/profile",
        methods: POST,
        handlers: || axum::routing::post(profile_submit),
    },
    Route {
        path: "/account/password",
        methods: POST,
        handlers: || axum::routing::post(password_submit),
    },
    Route {
        path: "/account/sessions",
        methods: GET,
        handlers: || get(sessions::sessions_page),
    },
    Route {
        path: "/account/sessions/revoke",
        methods: GET_POST,
        handlers: || get(sessions::revoke_confirm).post(sessions::revoke_submit),
    },
    Route {
        path: "/account/sessions/revoke-others",
        methods: GET_POST,
        handlers: || get(sessions::others_confirm).post(sessions::others_submit),
    },
    Route {
        path: "/account/authorizations",
        methods: GET,
        handlers: || get(authorizations::authorizations_page),
    },
    Route {
        path: "/account/authorizations/revoke",
        methods: GET_POST,
        handlers: || get(authorizations::revoke_confirm).post(authorizations::revoke_submit),
    },
];

/// The account pages' routes, built from [`ROUTES`].
pub fn router() -> Router<AppState> {
    ROUTES.iter().fold(Router::new(), |r, route| {
        r.route(route.path, (route.handlers)())
    })
}

/// The signed-in person on an account page, with the token for its forms.
pub struct Me {
    pub session: Session,
    pub user: User,
    pub csrf: String,
}

/// The person signed in, or the login page that comes back to `path` (below the base path).
pub async fn me_or_login(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Result<Me, Response>, PageError> {
    match current_user(state, headers).await? {
        Some((session, user)) => {
            let csrf = csrf::session_token(state, headers).await?;
            Ok(Ok(Me {
                session,
                user,
                csrf,
            }))
        }
        None => Ok(Err(login_redirect(
            state,
            &format!("{}{path}", state.config.base_path),
        ))),
    }
}

/// The person a form was posted by: the CSRF token first (it must belong to this browser's
/// session), then the session itself.
pub async fn me_posting(
    state: &AppState,
    headers: &HeaderMap,
    form_token: &str,
) -> Result<Me, PageError> {
    csrf::check_session(state, headers, form_token).await?;
    match current_user(state, headers).await? {
        Some((session, user)) => Ok(Me {
            session,
            user,
            csrf: form_token.to_string(),
        }),
        None => Err(PageError {
            status: StatusCode::UNAUTHORIZED,
            title: "Signed out".into(),
            message: "Your session ended. Sign in again and retry.".into(),
        }),
    }
}

/// The person acting on their own account, as the audit log names them.
pub fn actor(me: &Me, meta: &ClientMeta) -> Actor {
    Actor::admin(&me.user.username, &meta.ip, &meta.user_agent)
}

pub fn admin(state: &AppState) -> Admin<'_> {
    Admin::new(state.store.as_ref(), state.clock.as_ref())
}

/// A use case's refusal as the page shows it: bad input and "not yours / not there" are the
/// person's to fix; anything else is ours (a logged 500 without detail).
pub fn refusal(e: IdpError) -> PageError {
    match e {
        IdpError::Invalid(m) => PageError::bad_request("Not changed", m),
        IdpError::NotFound(_) | IdpError::Store(StoreError::NotFound(_)) => PageError {
            status: StatusCode::NOT_FOUND,
            title: "Not found".into(),
            message: "There is no such item on your account (it may have ended already).".into(),
        },
        other => PageError::from(other),
    }
}

/// A 303 back to an account page after an action, with the notice it shows.
pub fn done(state: &AppState, path: &str, notice: &str) -> Response {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("done", notice);
    Redirect::to(&format!("{}{path}?{}", state.config.base_path, q.finish())).into_response()
}

/// What `?done=` shows: only our own fixed sentences, never text from the URL.
pub fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "profile" => "Your profile was saved.",
        "password" => {
            "Your password was changed. Your other sessions were signed out and every refresh \
             token ended: kubectl will ask you to sign in again."
        }
        "session" => "The session was signed out.",
        "others" => "Every other session was signed out.",
        "authorization" => {
            "The authorization was revoked: its refresh tokens no longer work and the \
             application will ask for your consent again."
        }
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
pub struct DoneQuery {
    #[serde(default)]
    pub done: String,
}

#[derive(Template)]
#[template(path = "account/profile.html")]
pub struct ProfilePage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub password_error: Option<&'a str>,
}

fn profile(
    state: &AppState,
    me: &Me,
    name: &str,
    notice: Option<&str>,
    errors: (Option<&str>, Option<&str>),
    status: StatusCode,
) -> Response {
    let p = ProfilePage {
        base: &state.config.base_path,
        csrf: &me.csrf,
        username: &me.user.username,
        email: &me.user.email,
        name,
        notice,
        error: errors.0,
        password_error: errors.1,
    };
    page(&p, status, None)
}

/// GET /account
pub async fn profile_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let me = match me_or_login(&state, &headers, "/account").await? {
        Ok(me) => me,
        Err(login) => return Ok(login),
    };
    let name = me.user.name.clone();
    let n = notice(&q.done);
    Ok(profile(&state, &me, &name, n, (None, None), StatusCode::OK))
}

#[derive(Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub name: String,
}

/// POST /account/profile: the display name (the admin layer's rule: bounded, no control
/// characters). A refusal shows the page again with what was typed.
pub async fn profile_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<ProfileForm>,
) -> Result<Response, PageError> {
    let me = me_posting(&state, &headers, &form.csrf_token).await?;
    let edit = UserEdit {
        name: Some(form.name.clone()),
        ..UserEdit::default()
    };
    match admin(&state)
        .edit_user(&actor(&me, &meta), &me.user.username, edit)
        .await
    {
        Ok(_) => Ok(done(&state, "/account", "profile")),
        Err(IdpError::Invalid(m)) => {
            // What was typed comes back, bounded so a huge value is not echoed whole.
            let typed: String = form.name.chars().take(256).collect();
            let errors = (Some(m.as_str()), None);
            Ok(profile(
                &state,
                &me,
                &typed,
                None,
                errors,
                StatusCode::BAD_REQUEST,
            ))
        }
        Err(e) => Err(refusal(e)),
    }
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub new_password: String,
    #[serde(default)]
    pub confirm_password: String,
}

/// POST /account/password: the current password is checked as a login is (throttled, a wrong
/// one audited as `login_failed`), then the admin layer's reset sets the new one and ends every
/// session and refresh family in one transaction; this browser gets a new session.
pub async fn password_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    meta: ClientMeta,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    let me = me_posting(&state, &headers, &form.csrf_token).await?;
    let refuse = |msg: &str, status: StatusCode| {
        let name = me.user.name.clone();
        profile(&state, &me, &name, None, (None, Some(msg)), status)
    };
    if form.new_password != form.confirm_password {
        let msg = "The new password and its confirmation differ.";
        return Ok(refuse(msg, StatusCode::BAD_REQUEST));
    }
    let wrong = "The current password is wrong.";
    // Longer than any password we accept: wrong without spending argon2 on it.
    if form.current_password.chars().count() > MAX_PASSWORD {
        return Ok(refuse(wrong, StatusCode::BAD_REQUEST));
    }
    let checked =
        accounts::check_password(&state, &me.user.username, &form.current_password, &meta, "")
            .await?;
    match checked {
        PasswordCheck::Ok(_) => {}
        PasswordCheck::Wrong | PasswordCheck::Disabled => {
            return Ok(refuse(wrong, StatusCode::BAD_REQUEST));
        }
        PasswordCheck::Throttled(wait) => {
            let msg = format!(
                "Too many wrong passwords. Try again in {} minutes.",
                wait.div_ceil(60)
            );
            return Ok(refuse(&msg, StatusCode::TOO_MANY_REQUESTS));
        }
    }
    let new = PasswordChoice::Given(Secret::new(form.new_password));
    match admin(&state)
        .reset_password(&actor(&me, &meta), &me.user.username, new)
        .await
    {
        Ok(_) => {}
        Err(IdpError::Invalid(m)) => return Ok(refuse(&m, StatusCode::BAD_REQUEST)),
        Err(e) => return Err(refusal(e)),
    }
    let sid = accounts::renew_session(&state, &me.session).await?;
    let mut r = done(&state, "/account", "password");
    let left = me.session.expires_at.saturating_sub(state.now());
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &sid, Some(left)),
    );
    Ok(r)
}

#[derive(Template)]
#[template(path = "account/confirm.html")]
pub struct ConfirmPage<'a> {
    pub base: &'a str,
    pub csrf: &'a str,
    pub title: &'a str,
    pub text: &'a str,
    /// The POST target below the base path, and its fields besides the CSRF token.
    pub action: &'a str,
    pub fields: Vec<(&'a str, &'a str)>,
    pub button: &'a str,
    pub cancel: &'a str,
}

/// "RFC 3339 in UTC" for a Unix time, for the tables.
pub fn when(t: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
    humantime::format_rfc3339_seconds(at).to_string()
}
