//! The command line: `serve`, `certs`, and the admin commands that work on the same database as
//! a running server (`user`, `group`, `client`, `keys`, `audit`).
//!
//! One file per command group, each a thin layer: parse the arguments, call one use case of
//! `admin` (where the rules and the audit events live, shared with the web console), print
//! the result. The actor of every command is `cli:<unix user>` (`admin::Actor::cli`).

mod audit;
pub mod backup;
mod clients;
mod groups;
mod keys;
mod users;

pub use audit::AuditCmd;
pub use clients::ClientCmd;
pub use groups::GroupCmd;
pub use keys::KeysCmd;
pub use users::UserCmd;

use crate::admin::{Actor, Admin, Secret};
use crate::clock::SystemClock;
use crate::config::ServeArgs;
use crate::error::IdpError;
use crate::server::DataArgs;
use crate::store::Store;
use clap::{Parser, Subcommand};
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
    /// Log format on stderr: text, or json (one JSON object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
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
    /// Copy the SQLite database to FILE, consistently, while the server runs (PostgreSQL:
    /// use pg_dump).
    Backup {
        /// The backup file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replace the SQLite database with a backup; the server must be stopped.
    Restore {
        /// A file written by `backup`.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database.
        #[arg(long)]
        force: bool,
    },
}

/// The longest password read from standard input (the admin layer refuses longer ones).
const MAX_STDIN_PASSWORD_BYTES: u64 = 64 * 1024;

/// A password from standard input, without its line ending (the admin layer checks its length).
fn read_password_stdin() -> Result<Secret, IdpError> {
    let mut s = String::new();
    std::io::stdin()
        .take(MAX_STDIN_PASSWORD_BYTES)
        .read_to_string(&mut s)?;
    Ok(Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
}

/// Runs an admin command against the store; everything it prints goes to `out`, hints about
/// the next page to stderr.
pub async fn run_admin(
    cmd: Command,
    store: &dyn Store,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    let clock = SystemClock;
    let admin = Admin::new(store, &clock);
    let actor = Actor::cli();
    match cmd {
        Command::Serve(_)
        | Command::Certs { .. }
        | Command::Backup { .. }
        | Command::Restore { .. } => Ok(()),
        Command::User(c) => users::run(c, &admin, &actor, out).await,
        Command::Group(c) => groups::run(c, &admin, &actor, out).await,
        Command::Client(c) => clients::run(c, &admin, &actor, out).await,
        Command::Keys(c) => keys::run(c, &admin, &actor, out).await,
        Command::Audit(c) => audit::run(c, &admin, out).await,
    }
}

/// `"disabled"` or `"active"`, as every listing shows a user.
fn status(disabled: bool) -> &'static str {
    if disabled {
        "disabled"
    } else {
        "active"
    }
}
