//! `kubelogin-idp serve`: open the store, first boot, keys, listener (HTTP or built-in HTTPS)
//! and the background jobs (key reload for rotations made by other processes, purging).

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ServeArgs};
use crate::error::IdpError;
use crate::state::AppState;
use crate::store::{Change, Changes, PgStore, SqliteStore, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the data lives, shared by `serve` and the admin commands.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Directory for the SQLite database and the first-boot credentials file.
    #[arg(long, env = "DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Database URL (default: sqlite://<data dir>/kubelogin-idp.db).
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

impl DataArgs {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}",
                self.data_dir.join("kubelogin-idp.db").display()
            ),
        }
    }
}

/// Opens the configured store: PostgreSQL for a `postgres://` (or `postgresql://`) URL, where
/// several replicas may share the database, and SQLite otherwise. A SQLite database is private
/// whatever `DATABASE_URL` says: a missing directory is created 0700 and a missing file 0600
/// (SQLite gives its -wal and -shm files the database file's mode); an existing file or
/// directory others can read is left as it is, with a warning.
pub async fn open_store(data: &DataArgs) -> Result<Arc<dyn Store>, IdpError> {
    let url = data.url();
    if is_postgres(&url) {
        return Ok(Arc::new(PgStore::open(&url).await?));
    }
    if !url.starts_with("sqlite:") {
        // Not the URL itself: a PostgreSQL URL may carry a password.
        return Err(IdpError::Config(
            "DATABASE_URL is neither a sqlite:// nor a postgres:// URL".into(),
        ));
    }
    if data.database_url.is_none() {
        create_private_dir(&data.data_dir)?;
    }
    if let Some(file) = sqlite_file(&url)? {
        prepare_private_file(&file)?;
    }
    Ok(Arc::new(SqliteStore::open(&url).await?))
}

/// The database file a sqlite URL names, or None for an in-memory database.
fn sqlite_file(url: &str) -> Result<Option<PathBuf>, IdpError> {
    use std::str::FromStr as _;
    let in_memory = url.starts_with("sqlite::memory:") || url.contains("mode=memory");
    if in_memory {
        return Ok(None);
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| IdpError::Config(format!("DATABASE_URL is not a usable sqlite URL: {e}")))?;
    Ok(Some(options.get_filename().to_path_buf()))
}

/// Makes sure the database file exists with mode 0600 in a directory that exists (created
/// 0700 if it did not), before SQLite creates it with the umask's mode.
fn prepare_private_file(file: &Path) -> Result<(), IdpError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() {
            warn_if_shared(dir, "database directory");
        } else {
            create_private_dir(dir)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(file) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(file, "database file");
            for suffix in ["-wal", "-shm"] {
                let mut side = file.as_os_str().to_owned();
                side.push(suffix);
                let side = PathBuf::from(side);
                if side.exists() {
                    warn_if_shared(&side, "database file");
                }
            }
        }
        Err(e) => {
            return Err(IdpError::Config(format!(
                "cannot create database file {}: {e}",
                file.display()
            )))
        }
    }
    Ok(())
}

/// Logs a warning when group or others may access `path` (the database holds password hashes,
/// signing keys and session hashes). Existing modes are the operator's to change: a directory
/// such as /var/lib may be shared on purpose.
fn warn_if_shared(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the {what} is accessible to other users; chmod {} it",
                    if meta.is_dir() { "700" } else { "600" }
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}

fn create_private_dir(dir: &Path) -> Result<(), IdpError> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        IdpError::Config(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Several replicas on one PostgreSQL database: applies what another replica announces on the
/// changes channel (`LISTEN/NOTIFY`), so a key rotated on one replica signs on the others
/// within a moment instead of at the next `KEY_RELOAD_INTERVAL`. A lost connection re-reads
/// the keys, since announcements may have been missed meanwhile.
async fn follow_changes(url: String, state: AppState) {
    let mut changes: Option<Changes> = None;
    loop {
        let listening = match changes.as_mut() {
            Some(c) => c,
            None => match Changes::listen(&url).await {
                Ok(c) => changes.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for other replicas' changes; retrying");
                    tokio::time::sleep(CHANGES_RETRY).await;
                    continue;
                }
            },
        };
        match listening.next().await {
            Ok(Change::Keys) | Ok(Change::Lost) => {
                if let Err(e) = state.reload_keys().await {
                    tracing::error!(error = %e, "reloading signing keys failed");
                }
            }
            // No client record is held in memory yet.
            Ok(Change::Clients) => {}
            Err(e) => {
                tracing::warn!(error = %e, "lost the changes channel; reconnecting");
                changes = None;
                tokio::time::sleep(CHANGES_RETRY).await;
            }
        }
    }
}

/// How long to wait before listening again after the database could not be reached.
const CHANGES_RETRY: Duration = Duration::from_secs(1);

/// How often expired codes, tokens and sessions are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Deletes expired rows, and audit events older than `AUDIT_RETENTION`.
pub async fn purge_expired(state: &AppState) -> Result<u64, IdpError> {
    let now = state.now();
    let audit_before = crate::audit::retention_cutoff(state.config.audit_retention, now);
    Ok(state.store.purge_expired(now, audit_before).await?)
}

/// Keeps keys fresh (every `KEY_RELOAD_INTERVAL`, so a `keys rotate` run by another process
/// is published) and the database tidy while the server runs.
pub fn spawn_background(state: AppState) {
    let keys = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(keys.config.key_reload_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; keys were just loaded.
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = keys.reload_keys().await {
                tracing::error!(error = %e, "reloading signing keys failed");
            }
        }
    });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            match purge_expired(&state).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired records"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "purging expired records failed"),
            }
        }
    });
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(args: &ServeArgs, data: &DataArgs) -> Result<(), IdpError> {
    let config = Config::from_args(args)?;
    let store = open_store(data).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let creds = args
        .credentials_file
        .clone()
        .unwrap_or_else(|| data.data_dir.join("kubelogin-idp-credentials.txt"));
    crate::bootstrap::first_boot(store.as_ref(), &creds, clock.now()).await?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let state = AppState::new_deferring_keygen(config.clone(), store, clock).await?;
    spawn_background(state.clone());
    let url = data.url();
    if is_postgres(&url) {
        tokio::spawn(follow_changes(url, state.clone()));
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| IdpError::Config(format!("cannot listen on {}: {e}", config.addr)))?;
    tracing::info!(issuer = %config.issuer, addr = %config.addr, tls = tls.is_some(), "kubelogin-idp is serving");
    let app = crate::app(state);
    let limits = config.limits.clone();
    crate::tls::serve(listener, tls, app, limits, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
