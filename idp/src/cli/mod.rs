//! The command line: `serve`, `certs`, and the admin commands that work on the same database as
//! a running server (`user`, `group`, `client`, `keys`, `audit`).

use crate::audit;
use crate::bootstrap::default_scopes;
use crate::clock::{Clock, SystemClock};
use crate::config::ServeArgs;
use crate::crypto;
use crate::error::IdpError;
use crate::keys::{Algorithm, SigningKey};
use crate::server::DataArgs;
use crate::store::{AuditFilter, Client, NewUser, Store, User};
use clap::{Parser, Subcommand};
use shared::token::grant_type;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kubelogin-idp",
    version,
    about = "A compact OpenID Connect provider for kubectl users"
)]
pub struct Cli {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the identity provider.
    Serve(Box<ServeArgs>),
    /// Create a local CA and a server certificate signed by it.
    Certs {
        /// Host name or IP address the certificate is for (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Output directory (an existing ca.crt/ca.key there is reused).
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage groups (the `groups` claim, for Kubernetes RBAC).
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
}

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
    List,
    Show {
        name: String,
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
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    Add { name: String },
    List,
    Delete { name: String },
    AddMember { group: String, user: String },
    RemoveMember { group: String, user: String },
}

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Register a client (a confidential client's secret is printed once).
    Add {
        id: String,
        #[arg(
            long,
            conflicts_with = "confidential",
            required_unless_present = "confidential"
        )]
        public: bool,
        #[arg(long)]
        confidential: bool,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// authorization_code, refresh_token, device_code (or urn:...:device_code), client_credentials, password
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Replace a confidential client's secret (printed once).
    RotateSecret {
        id: String,
    },
    /// Forced re-authentication: revoke every refresh token of the client.
    RevokeAll {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    List,
    /// Make a new signing key active; the old one stays published until its tokens expire.
    Rotate {
        #[arg(long, default_value = "RS256")]
        algorithm: String,
        /// Encrypt signing keys in the database with this key, as `serve` does (required when
        /// they are encrypted).
        #[arg(long, env = "KEY_ENCRYPTION_KEY_FILE")]
        key_encryption_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    List {
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print CSV (formula-safe) instead of a table.
        #[arg(long)]
        csv: bool,
    },
}

fn read_password_stdin() -> Result<String, IdpError> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let p = s.trim_end_matches(['\n', '\r']).to_string();
    if p.len() < 8 {
        return Err(IdpError::Invalid(
            "the password must have at least 8 characters".into(),
        ));
    }
    Ok(p)
}

async fn user_named(store: &dyn Store, name: &str) -> Result<User, IdpError> {
    store
        .user_by_username(name)
        .await?
        .ok_or_else(|| IdpError::NotFound(format!("no user {name:?}")))
}

fn normalise_grant(g: &str) -> Result<String, IdpError> {
    Ok(match g {
        "authorization_code" | "authcode" => grant_type::AUTHORIZATION_CODE,
        "refresh_token" => grant_type::REFRESH_TOKEN,
        "device_code" | grant_type::DEVICE_CODE => grant_type::DEVICE_CODE,
        "client_credentials" => grant_type::CLIENT_CREDENTIALS,
        "password" => grant_type::PASSWORD,
        other => return Err(IdpError::Invalid(format!("unknown grant type {other:?}"))),
    }
    .to_string())
}

fn valid_username(name: &str) -> Result<(), IdpError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(IdpError::Invalid(format!(
            "{name:?} is not a valid name (letters, digits, . _ - @; at most 64)"
        )))
    }
}

fn print_client(out: &mut impl Write, c: &Client) -> std::io::Result<()> {
    writeln!(out, "client_id: {}", c.client_id)?;
    writeln!(out, "name: {}", c.name)?;
    writeln!(
        out,
        "type: {}",
        if c.is_public() {
            "public"
        } else {
            "confidential"
        }
    )?;
    writeln!(out, "redirect_uris: {}", c.redirect_uris.join(" "))?;
    writeln!(
        out,
        "post_logout_redirect_uris: {}",
        c.post_logout_redirect_uris.join(" ")
    )?;
    writeln!(out, "grant_types: {}", c.grant_types.join(" "))?;
    writeln!(out, "scopes: {}", c.scopes.join(" "))
}

/// Runs an admin command against the store; everything it prints goes to `out`.
pub async fn run_admin(
    cmd: Command,
    store: &dyn Store,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    let now = SystemClock.now();
    let ev = |name: &str| audit::Event::new(name, audit::INFO).actor("cli");
    match cmd {
        Command::Serve(_) | Command::Certs { .. } => {}
        Command::User(u) => match u {
            UserCmd::Add {
                name,
                email,
                display_name,
                groups,
                password_stdin,
                admin,
            } => {
                valid_username(&name)?;
                if !email.contains('@') {
                    return Err(IdpError::Invalid(format!(
                        "{email:?} is not an email address"
                    )));
                }
                for g in &groups {
                    if !store.list_groups().await?.iter().any(|x| &x.name == g) {
                        return Err(IdpError::NotFound(format!(
                            "no group {g:?} (create it with `kubelogin-idp group add {g}`)"
                        )));
                    }
                }
                let (password, generated) = if password_stdin {
                    (read_password_stdin()?, false)
                } else {
                    (crypto::generate_password(), true)
                };
                let hash = crypto::hash_password(&password)?;
                let user = store
                    .create_user(
                        NewUser {
                            username: name.clone(),
                            email,
                            name: display_name.unwrap_or_default(),
                            password_hash: Some(hash),
                            is_admin: admin,
                        },
                        now,
                    )
                    .await?;
                for g in &groups {
                    store.add_group_member(g, &user.id).await?;
                }
                audit::record_in(store, now, ev("user_created").subject(&name)).await;
                writeln!(out, "created user {name} (sub {})", user.id)?;
                if generated {
                    writeln!(out, "password: {password}")?;
                }
            }
            UserCmd::List => {
                writeln!(
                    out,
                    "{:<24} {:<32} {:<9} SUB",
                    "USERNAME", "EMAIL", "STATUS"
                )?;
                for u in store.list_users().await? {
                    writeln!(
                        out,
                        "{:<24} {:<32} {:<9} {}",
                        u.username,
                        u.email,
                        if u.disabled { "disabled" } else { "active" },
                        u.id
                    )?;
                }
            }
            UserCmd::Show { name } => {
                let u = user_named(store, &name).await?;
                let groups = store.groups_of_user(&u.id).await?;
                let live = store
                    .families_of_user(&u.id)
                    .await?
                    .iter()
                    .filter(|f| f.revoked_at.is_none())
                    .count();
                writeln!(out, "username: {}\nsub: {}\nemail: {}\nemail_verified: {}\nname: {}\nadmin: {}\nstatus: {}\ngroups: {}\nactive sessions (refresh families): {live}",
                    u.username, u.id, u.email, u.email_verified, u.name, u.is_admin, if u.disabled { "disabled" } else { "active" }, groups.join(" "))?;
            }
            UserCmd::Disable { name } => {
                let u = user_named(store, &name).await?;
                store.set_user_disabled(&u.id, true, now).await?;
                audit::record_in(store, now, ev("user_disabled").subject(&name)).await;
                writeln!(
                    out,
                    "disabled {name}; their refresh tokens and sessions are revoked"
                )?;
            }
            UserCmd::Enable { name } => {
                let u = user_named(store, &name).await?;
                store.set_user_disabled(&u.id, false, now).await?;
                audit::record_in(store, now, ev("user_enabled").subject(&name)).await;
                writeln!(out, "enabled {name}")?;
            }
            UserCmd::Passwd {
                name,
                password_stdin,
            } => {
                let u = user_named(store, &name).await?;
                let (password, generated) = if password_stdin {
                    (read_password_stdin()?, false)
                } else {
                    (crypto::generate_password(), true)
                };
                store
                    .set_password(&u.id, &crypto::hash_password(&password)?, now)
                    .await?;
                audit::record_in(store, now, ev("user_password_changed").subject(&name)).await;
                writeln!(
                    out,
                    "password of {name} changed; their sessions and refresh tokens are revoked"
                )?;
                if generated {
                    writeln!(out, "password: {password}")?;
                }
            }
            UserCmd::Delete { name } => {
                let u = user_named(store, &name).await?;
                store.delete_user(&u.id).await?;
                audit::record_in(store, now, ev("user_deleted").subject(&name)).await;
                writeln!(out, "deleted {name}")?;
            }
        },
        Command::Group(g) => match g {
            GroupCmd::Add { name } => {
                valid_username(&name)?;
                store.create_group(&name, now).await?;
                audit::record_in(store, now, ev("group_created").subject(&name)).await;
                writeln!(out, "created group {name}")?;
            }
            GroupCmd::List => {
                for g in store.list_groups().await? {
                    writeln!(out, "{}: {}", g.name, g.members.join(" "))?;
                }
            }
            GroupCmd::Delete { name } => {
                store.delete_group(&name).await?;
                audit::record_in(store, now, ev("group_deleted").subject(&name)).await;
                writeln!(out, "deleted group {name}")?;
            }
            GroupCmd::AddMember { group, user } => {
                let u = user_named(store, &user).await?;
                store.add_group_member(&group, &u.id).await?;
                audit::record_in(
                    store,
                    now,
                    ev("group_member_added").subject(&user).details(&group),
                )
                .await;
                writeln!(out, "added {user} to {group}")?;
            }
            GroupCmd::RemoveMember { group, user } => {
                let u = user_named(store, &user).await?;
                store.remove_group_member(&group, &u.id).await?;
                audit::record_in(
                    store,
                    now,
                    ev("group_member_removed").subject(&user).details(&group),
                )
                .await;
                writeln!(out, "removed {user} from {group}")?;
            }
        },
        Command::Client(c) => match c {
            ClientCmd::Add {
                id,
                public,
                confidential: _,
                redirect_uris,
                post_logout_redirect_uris,
                grant_types,
                scopes,
                name,
            } => {
                valid_username(&id)?;
                for r in redirect_uris.iter().chain(&post_logout_redirect_uris) {
                    let u = url::Url::parse(r)
                        .map_err(|e| IdpError::Invalid(format!("redirect URI {r:?}: {e}")))?;
                    if u.fragment().is_some() {
                        return Err(IdpError::Invalid(format!(
                            "redirect URI {r:?} must not have a fragment (RFC 6749 §3.1.2)"
                        )));
                    }
                }
                let mut grants: Vec<String> = grant_types
                    .iter()
                    .map(|g| normalise_grant(g))
                    .collect::<Result<_, _>>()?;
                if grants.is_empty() {
                    grants = vec![
                        grant_type::AUTHORIZATION_CODE.into(),
                        grant_type::REFRESH_TOKEN.into(),
                        grant_type::DEVICE_CODE.into(),
                    ];
                    if !public {
                        grants.push(grant_type::CLIENT_CREDENTIALS.into());
                    }
                }
                if public && grants.iter().any(|g| g == grant_type::CLIENT_CREDENTIALS) {
                    return Err(IdpError::Invalid(
                        "a public client cannot use client_credentials (RFC 6749 §4.4)".into(),
                    ));
                }
                if grants.iter().any(|g| g == grant_type::AUTHORIZATION_CODE)
                    && redirect_uris.is_empty()
                {
                    return Err(IdpError::Invalid(
                        "the authorization_code grant needs at least one --redirect-uri".into(),
                    ));
                }
                let secret = (!public).then(|| crypto::random_token(32));
                let client = Client {
                    client_id: id.clone(),
                    name: name.unwrap_or_default(),
                    secret_hash: secret.as_deref().map(crypto::hash_secret),
                    redirect_uris,
                    post_logout_redirect_uris,
                    grant_types: grants,
                    scopes: if scopes.is_empty() {
                        default_scopes()
                    } else {
                        scopes
                    },
                    tokens_valid_after: 0,
                    created_at: now,
                };
                store.create_client(client.clone()).await?;
                audit::record_in(store, now, ev("client_created").subject(&id)).await;
                print_client(out, &client)?;
                if let Some(s) = secret {
                    writeln!(out, "client_secret: {s}")?;
                    writeln!(out, "(shown once; only its hash is stored)")?;
                }
            }
            ClientCmd::List => {
                for c in store.list_clients().await? {
                    writeln!(
                        out,
                        "{:<24} {:<12} {}",
                        c.client_id,
                        if c.is_public() {
                            "public"
                        } else {
                            "confidential"
                        },
                        c.grant_types.join(",")
                    )?;
                }
            }
            ClientCmd::Show { id } => {
                let c = store
                    .client(&id)
                    .await?
                    .ok_or_else(|| IdpError::NotFound(format!("no client {id:?}")))?;
                print_client(out, &c)?;
            }
            ClientCmd::Delete { id } => {
                store.delete_client(&id).await?;
                audit::record_in(store, now, ev("client_deleted").subject(&id)).await;
                writeln!(out, "deleted client {id}")?;
            }
            ClientCmd::RotateSecret { id } => {
                let s = crypto::random_token(32);
                store
                    .set_client_secret_hash(&id, &crypto::hash_secret(&s))
                    .await?;
                audit::record_in(store, now, ev("client_secret_rotated").subject(&id)).await;
                writeln!(out, "client_secret: {s}")?;
            }
            ClientCmd::RevokeAll { id } => {
                let n = store.revoke_all_for_client(&id, now).await?;
                audit::record_in(
                    store,
                    now,
                    audit::Event::new("client_tokens_revoked", audit::WARNING)
                        .actor("cli")
                        .subject(&id)
                        .details(&format!("{n} refresh token families")),
                )
                .await;
                writeln!(
                    out,
                    "revoked {n} sessions of client {id}; every user must sign in again"
                )?;
            }
        },
        Command::Keys(k) => match k {
            KeysCmd::List => {
                writeln!(
                    out,
                    "{:<44} {:<6} {:<8} {:<10} AT REST",
                    "KID", "ALG", "STATUS", "CREATED"
                )?;
                for k in store.keys().await? {
                    writeln!(
                        out,
                        "{:<44} {:<6} {:<8} {:<10} {}",
                        k.kid,
                        k.alg,
                        if k.retired_at.is_none() {
                            "active"
                        } else {
                            "retired"
                        },
                        k.created_at,
                        if crypto::is_sealed(&k.private_pem) {
                            "encrypted"
                        } else {
                            "plaintext"
                        }
                    )?;
                }
            }
            KeysCmd::Rotate {
                algorithm,
                key_encryption_key_file,
            } => {
                let alg: Algorithm = algorithm.parse()?;
                let kek = key_encryption_key_file
                    .as_deref()
                    .map(crypto::KeyEncryptionKey::from_file)
                    .transpose()?;
                // Refuses a missing or wrong key file before anything is written, and encrypts
                // plaintext keys as `serve` would.
                crate::state::seal_keys_at_rest(store, kek.as_ref()).await?;
                let key = SigningKey::generate(alg)?;
                store
                    .activate_key(crate::state::stored_key(&key, kek.as_ref(), now)?, now)
                    .await?;
                audit::record_in(
                    store,
                    now,
                    audit::Event::new("signing_key_rotated", audit::WARNING)
                        .actor("cli")
                        .subject(key.kid()),
                )
                .await;
                writeln!(out, "new active key {} ({}); a running server picks it up within 30 s, and the old key stays published until its tokens expire", key.kid(), alg.as_str())?;
            }
        },
        Command::Audit(AuditCmd::List {
            event,
            actor,
            limit,
            csv,
        }) => {
            let events = store
                .audit_events(AuditFilter {
                    event,
                    actor,
                    since: None,
                    until: None,
                    limit,
                })
                .await?;
            if csv {
                write!(out, "{}", audit::to_csv(&events)?)?;
            } else {
                for e in events {
                    writeln!(
                        out,
                        "{} {} {} actor={} subject={} client={} ip={} {}",
                        e.at, e.severity, e.event, e.actor, e.subject, e.client_id, e.ip, e.details
                    )?;
                }
            }
        }
    }
    Ok(())
}
