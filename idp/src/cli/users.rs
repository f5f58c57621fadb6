//! `kubelogin-idp user ...`: parse, call `admin`, print.

use super::{read_password_stdin, status};
use crate::admin::users::{NewUserRequest, UserEdit};
use crate::admin::{Actor, Admin, PasswordChoice};
use crate::error::IdpError;
use crate::store::UserQuery;
use clap::Subcommand;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user (a password is generated and printed unless --password-stdin).
    Add {
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long = "name", id = "display_name")]
        display_name: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        admin: bool,
    },
    /// List users by username (all of them, or one page with --limit).
    List {
        /// Only users whose username, email or name contains this.
        #[arg(long)]
        search: Option<String>,
        /// Start after this username (the cursor a previous page printed on stderr).
        #[arg(long)]
        after: Option<String>,
        /// At most this many users (at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    Show {
        name: String,
    },
    /// Change a user's email, display name or groups.
    Edit {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long = "name", id = "display_name")]
        display_name: Option<String>,
        /// The user's groups from now on (repeatable; replaces the current ones).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Remove the user from every group.
        #[arg(long, conflicts_with = "groups")]
        no_groups: bool,
    },
    /// Disable a user: every refresh token and session of theirs stops working at once.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Set a new password (generated and printed unless --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    Delete {
        name: String,
    },
    /// List a user's browser sessions.
    Sessions {
        name: String,
    },
    /// End one browser session of a user (SESSION as `user sessions` shows it).
    RevokeSession {
        name: String,
        session: String,
    },
    /// List the clients a user authorized, with their live refresh token families.
    Authorizations {
        name: String,
    },
    /// Withdraw a user's authorization of a client: its refresh tokens stop working at once and
    /// the next login asks for consent again.
    RevokeAuthorization {
        name: String,
        client: String,
    },
}

/// Users listed per query when the whole list is printed.
const LIST_PAGE: u32 = 500;

fn password_choice(from_stdin: bool) -> Result<PasswordChoice, IdpError> {
    Ok(if from_stdin {
        PasswordChoice::Given(read_password_stdin()?)
    } else {
        PasswordChoice::Generate
    })
}

pub(super) async fn run(
    cmd: UserCmd,
    admin: &Admin<'_>,
    actor: &Actor,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    match cmd {
        UserCmd::Add {
            name,
            email,
            display_name,
            groups,
            password_stdin,
            admin: is_admin,
        } => {
            let req = NewUserRequest {
                username: name.clone(),
                email,
                name: display_name.unwrap_or_default(),
                groups,
                password: password_choice(password_stdin)?,
                is_admin,
            };
            let created = admin.create_user(actor, req).await?;
            writeln!(out, "created user {name} (sub {})", created.user.id)?;
            if let Some(p) = created.password {
                writeln!(out, "password: {}", p.expose())?;
            }
        }
        UserCmd::List {
            search,
            after,
            limit,
        } => list(admin, search, after, limit, out).await?,
        UserCmd::Show { name } => show(admin, &name, out).await?,
        UserCmd::Edit {
            name,
            email,
            display_name,
            groups,
            no_groups,
        } => {
            let edit = UserEdit {
                email,
                name: display_name,
                groups: (no_groups || !groups.is_empty()).then_some(groups),
            };
            admin.edit_user(actor, &name, edit).await?;
            writeln!(out, "updated {name}")?;
            show(admin, &name, out).await?;
        }
        UserCmd::Disable { name } => {
            admin.set_user_disabled(actor, &name, true).await?;
            writeln!(
                out,
                "disabled {name}; their refresh tokens and sessions are revoked"
            )?;
        }
        UserCmd::Enable { name } => {
            admin.set_user_disabled(actor, &name, false).await?;
            writeln!(out, "enabled {name}")?;
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => passwd(admin, actor, &name, password_stdin, out).await?,
        UserCmd::Delete { name } => {
            admin.delete_user(actor, &name).await?;
            writeln!(out, "deleted {name}")?;
        }
        other => run_access(other, admin, actor, out).await?,
    }
    Ok(())
}

async fn passwd(
    admin: &Admin<'_>,
    actor: &Actor,
    name: &str,
    password_stdin: bool,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    // The user must exist before a password is read for them.
    admin.user_named(name).await?;
    let choice = password_choice(password_stdin)?;
    let generated = admin.reset_password(actor, name, choice).await?;
    writeln!(
        out,
        "password of {name} changed; their sessions and refresh tokens are revoked"
    )?;
    if let Some(p) = generated {
        writeln!(out, "password: {}", p.expose())?;
    }
    Ok(())
}

/// The commands on a user's sessions and authorizations.
async fn run_access(
    cmd: UserCmd,
    admin: &Admin<'_>,
    actor: &Actor,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    match cmd {
        UserCmd::Sessions { name } => {
            writeln!(
                out,
                "{:<64} {:<10} {:<10} {:<15} USER AGENT",
                "SESSION", "CREATED", "EXPIRES", "IP"
            )?;
            for s in admin.sessions(&name).await? {
                writeln!(
                    out,
                    "{:<64} {:<10} {:<10} {:<15} {}",
                    s.id_hash, s.created_at, s.expires_at, s.ip, s.user_agent
                )?;
            }
        }
        UserCmd::RevokeSession { name, session } => {
            admin.revoke_session(actor, &name, &session).await?;
            writeln!(out, "ended session {session} of {name}")?;
        }
        UserCmd::Authorizations { name } => {
            writeln!(
                out,
                "{:<24} {:<10} {:<14} SCOPES",
                "CLIENT", "CONSENTED", "LIVE FAMILIES"
            )?;
            for a in admin.authorizations(&name).await? {
                let (at, scopes) = match &a.consent {
                    Some(c) => (c.granted_at.to_string(), c.scopes.join(" ")),
                    None => ("-".to_string(), String::new()),
                };
                let live = a.live_families.len();
                writeln!(out, "{:<24} {at:<10} {live:<14} {scopes}", a.client_id)?;
            }
        }
        UserCmd::RevokeAuthorization { name, client } => {
            let n = admin.revoke_authorization(actor, &name, &client).await?;
            writeln!(
                out,
                "revoked the authorization of {client} by {name}: {n} refresh token families; the next login asks for consent again"
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// `user list`: every user a page at a time, or one page when `--limit` is given (the cursor
/// of the next one goes to stderr, so stdout stays the table).
async fn list(
    admin: &Admin<'_>,
    search: Option<String>,
    mut after: Option<String>,
    limit: Option<u32>,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    writeln!(
        out,
        "{:<24} {:<32} {:<9} SUB",
        "USERNAME", "EMAIL", "STATUS"
    )?;
    loop {
        let query = UserQuery {
            search: search.clone(),
            after: after.take(),
            limit: limit.unwrap_or(LIST_PAGE),
        };
        let page = admin.list_users(query).await?;
        for u in &page.users {
            writeln!(
                out,
                "{:<24} {:<32} {:<9} {}",
                u.username,
                u.email,
                status(u.disabled),
                u.id
            )?;
        }
        match (page.next, limit) {
            (None, _) => return Ok(()),
            (Some(next), Some(_)) => {
                eprintln!("more users: --after {next}");
                return Ok(());
            }
            (Some(next), None) => after = Some(next),
        }
    }
}

async fn show(admin: &Admin<'_>, name: &str, out: &mut impl Write) -> Result<(), IdpError> {
    let d = admin.user(name).await?;
    let u = &d.user;
    writeln!(out, "username: {}\nsub: {}\nemail: {}\nemail_verified: {}\nname: {}\nadmin: {}\nstatus: {}\ngroups: {}\nactive sessions (refresh families): {}",
        u.username, u.id, u.email, u.email_verified, u.name, u.is_admin, status(u.disabled), d.groups.join(" "), d.open_families)?;
    Ok(())
}
