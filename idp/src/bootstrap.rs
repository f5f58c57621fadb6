//! First boot: an admin account with a generated password written to a credentials file, and
//! the public `kubelogin` client, so a first try needs no setup.

use crate::audit;
use crate::crypto;
use crate::error::IdpError;
use crate::store::{Client, NewUser, Store, StoreError};
use shared::token::grant_type;
use std::path::Path;

pub const DEFAULT_CLIENT_ID: &str = "kubelogin";

/// Scopes every built-in client may ask for.
pub fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups", "offline_access"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The public client kubectl-oidc_login uses out of the box: loopback redirects on the
/// kubelogin ports (any port matches on loopback, RFC 8252 §7.3).
pub fn default_client(now: u64) -> Client {
    Client {
        client_id: DEFAULT_CLIENT_ID.into(),
        name: "kubectl (kubelogin)".into(),
        secret_hash: None,
        redirect_uris: vec![
            "http://localhost:8000".into(),
            "http://localhost:18000".into(),
            "http://127.0.0.1:8000".into(),
            "http://[::1]:8000".into(),
            "urn:ietf:wg:oauth:2.0:oob".into(),
        ],
        post_logout_redirect_uris: vec![],
        grant_types: vec![
            grant_type::AUTHORIZATION_CODE.into(),
            grant_type::REFRESH_TOKEN.into(),
            grant_type::DEVICE_CODE.into(),
        ],
        scopes: default_scopes(),
        tokens_valid_after: 0,
        created_at: now,
    }
}

/// Creates the admin and the default client on an empty database. The password goes to
/// `credentials_file`, created exclusively with mode 0600; if that fails nothing is created and
/// start-up stops (a password nobody can read would lock the admin out).
pub async fn first_boot(
    store: &dyn Store,
    credentials_file: &Path,
    now: u64,
) -> Result<bool, IdpError> {
    if store.count_users().await? > 0 {
        return Ok(false);
    }
    let password = crypto::generate_password();
    write_credentials(credentials_file, &password)?;
    let hash = crypto::hash_password(&password)?;
    let created = store
        .create_user(
            NewUser {
                username: "admin".into(),
                email: "admin@localhost".into(),
                name: "Administrator".into(),
                password_hash: Some(hash),
                is_admin: true,
            },
            now,
        )
        .await;
    match created {
        Ok(_) => {}
        // Another replica on the same database booted first: its admin stands, and this
        // password opens nothing.
        Err(StoreError::Conflict(_)) => {
            let _ = std::fs::remove_file(credentials_file);
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    if store.client(DEFAULT_CLIENT_ID).await?.is_none() {
        match store.create_client(default_client(now)).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    audit::record_in(
        store,
        now,
        audit::Event::new("first_boot", audit::INFO)
            .actor("system")
            .details("created user admin and client kubelogin"),
    )
    .await;
    tracing::info!(path = %credentials_file.display(), "first boot: created user \"admin\"; its password is in the credentials file");
    Ok(true)
}

/// Writes the first admin's password to `path` (mode 0600), refusing to replace an existing
/// file: it may be someone else's, or hold the password of an earlier first boot.
fn write_credentials(path: &Path, password: &str) -> Result<(), IdpError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                IdpError::Config(format!(
                    "cannot create the directory of the credentials file {}: {e} (set CREDENTIALS_FILE)",
                    path.display()
                ))
            })?;
        }
    }
    let contents = format!(
        "# kubelogin-idp first-boot credentials. Sign in, change the password (kubelogin-idp user passwd admin), then delete this file.\n\
         username=admin\n\
         password={password}\n"
    );
    shared::fs::create_atomic(path, contents.as_bytes(), 0o600).map_err(|e| {
        IdpError::Config(format!(
            "cannot create the credentials file {} for the first admin password: {e} (remove a stale file or set CREDENTIALS_FILE)",
            path.display()
        ))
    })
}
