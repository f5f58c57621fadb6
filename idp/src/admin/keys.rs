//! Signing keys: list them with algorithm, kid and age; rotate now.
//!
//! Rotation makes a new key active and retires the old one, which `state::load_keys` keeps
//! publishing in JWKS until every token it signed has expired (its retirement plus the token
//! lifetime and a leeway), so a rotation never breaks a live session. A running server sees a
//! rotation made elsewhere within `KEY_RELOAD_INTERVAL`; the web console reloads at once.

use super::{Actor, Admin};
use crate::audit::{self, Event};
use crate::crypto::{self, KeyEncryptionKey};
use crate::error::IdpError;
use crate::keys::{Algorithm, SigningKey};
use crate::store::StoredKey;

/// A signing key as an admin sees it (never its private part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub created_at: u64,
    /// Seconds since it was created.
    pub age_secs: u64,
    /// When it stopped signing; `None` for the active key.
    pub retired_at: Option<u64>,
    /// Encrypted at rest with the key encryption key.
    pub encrypted: bool,
}

impl KeyInfo {
    fn new(k: &StoredKey, now: u64) -> KeyInfo {
        KeyInfo {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            created_at: k.created_at,
            age_secs: now.saturating_sub(k.created_at),
            retired_at: k.retired_at,
            encrypted: crypto::is_sealed(&k.private_pem),
        }
    }

    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }
}

impl Admin<'_> {
    /// The stored keys, newest first.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, IdpError> {
        let now = self.now();
        Ok(self
            .store
            .keys()
            .await?
            .iter()
            .map(|k| KeyInfo::new(k, now))
            .collect())
    }

    /// Makes a new key of `alg` active now. With a key encryption key the new key is stored
    /// encrypted and plaintext keys are encrypted first, as `serve` does; a missing or wrong
    /// key file is refused before anything is written.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        alg: Algorithm,
        kek: Option<&KeyEncryptionKey>,
    ) -> Result<KeyInfo, IdpError> {
        crate::state::seal_keys_at_rest(self.store, kek).await?;
        // RSA generation takes 50–300 ms: off the async threads.
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg))
            .await
            .map_err(|e| IdpError::Internal(format!("key generation stopped: {e}")))??;
        let now = self.now();
        let row = crate::state::stored_key(&key, kek, now)?;
        let info = KeyInfo::new(&row, now);
        self.store.activate_key(row, now).await?;
        self.record(
            actor,
            Event::new("signing_key_rotated", audit::WARNING).subject(key.kid()),
        )
        .await;
        Ok(info)
    }
}
