//! `kubelogin-idp serve`: open the store, first boot, keys, listener (HTTP or built-in HTTPS)
//! and the background jobs (key reload for rotations made by other processes, purging).

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ServeArgs};
use crate::error::IdpError;
use crate::state::AppState;
use crate::store::{SqliteStore, Store};
use std::net::SocketAddr;
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

/// Opens the configured store, creating the data directory (0700) for the default SQLite file.
pub async fn open_store(data: &DataArgs) -> Result<Arc<dyn Store>, IdpError> {
    let url = data.url();
    if url.starts_with("postgres") {
        return Err(IdpError::Config("DATABASE_URL names PostgreSQL, which this build does not support yet; use a sqlite:// URL".into()));
    }
    if !url.starts_with("sqlite:") {
        return Err(IdpError::Config(format!(
            "DATABASE_URL {url:?} is not a sqlite:// URL"
        )));
    }
    if data.database_url.is_none() {
        create_private_dir(&data.data_dir)?;
    }
    Ok(Arc::new(SqliteStore::open(&url).await?))
}

fn create_private_dir(dir: &Path) -> Result<(), IdpError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        IdpError::Config(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Deletes expired rows, and audit events older than `AUDIT_RETENTION`.
pub async fn purge_expired(state: &AppState) -> Result<u64, IdpError> {
    let now = state.now();
    let audit_before = crate::audit::retention_cutoff(state.config.audit_retention, now);
    state.store.purge_expired(now, audit_before).await
}

/// Keeps keys fresh and the database tidy while the server runs.
pub fn spawn_background(state: AppState) {
    tokio::spawn(async move {
        let mut tick: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            tick += 1;
            if let Err(e) = state.reload_keys().await {
                tracing::error!(error = %e, "reloading signing keys failed");
            }
            if tick.is_multiple_of(20) {
                match purge_expired(&state).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired records"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "purging expired records failed"),
                }
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
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| IdpError::Config(format!("cannot listen on {}: {e}", config.addr)))?;
    tracing::info!(issuer = %config.issuer, addr = %config.addr, tls = tls.is_some(), "kubelogin-idp is serving");
    let app = crate::app(state);
    match tls {
        Some(tls) => crate::tls::serve_tls(listener, tls, app, shutdown_signal()).await?,
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?
        }
    }
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
