//! Shared application state: configuration, store, clock, signing keys and in-memory counters.
//!
//! May depend on: `clock`, `config`, `crypto`, `error`, `keys`, `metadata`, `metrics`, `store`.
//! Everything that handles a request sits above it.

use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::{self, KeyEncryptionKey};
use crate::error::IdpError;
use crate::keys::SigningKey;
use crate::store::{Client, Store, StoreResult, StoredKey};
use std::collections::HashMap;
use std::sync::Arc;

/// The keys in use: one that signs, all that verify (published in JWKS).
#[derive(Debug)]
pub struct KeySet {
    pub active: Arc<SigningKey>,
    pub published: Vec<Arc<SigningKey>>,
    /// The JWKS document, serialised once per key change (it is served very often).
    pub jwks_json: bytes::Bytes,
}

/// Client records read from the store, kept until a client changes (every grant looks its client
/// up; a lookup that hits costs no store hand-off). A change made through this process's store
/// drops the cache at once ([`Store::local_client_writes`]); one made by another process or
/// replica is seen within a second (of the injected clock), by comparing
/// [`Store::clients_version`].
/// Only clients that exist are kept, so unknown ids cannot grow it.
#[derive(Debug, Default)]
pub struct ClientCache {
    inner: std::sync::RwLock<ClientCacheState>,
}

#[derive(Debug, Default)]
struct ClientCacheState {
    clients: HashMap<String, Client>,
    /// The store's `clients_version` and `local_client_writes` the entries are valid for.
    version: u64,
    local_writes: u64,
    /// When (clock seconds) the version was last compared.
    checked: Option<u64>,
}

impl ClientCache {
    /// The client `client_id` at `now`, from the cache or the store.
    pub async fn get(
        &self,
        store: &dyn Store,
        client_id: &str,
        now: u64,
    ) -> StoreResult<Option<Client>> {
        self.revalidate(store, now).await?;
        let local = store.local_client_writes();
        if let Ok(s) = self.inner.read() {
            if let Some(c) = s.clients.get(client_id) {
                return Ok(Some(c.clone()));
            }
        }
        let found = store.client(client_id).await?;
        if let (Some(c), Ok(mut s)) = (&found, self.inner.write()) {
            // A client write of this process that began since the lookup began may not be in
            // what was read: then it is not kept (a write counts itself before and after).
            if store.local_client_writes() == local && s.local_writes == local {
                s.clients.insert(client_id.to_string(), c.clone());
            }
        }
        Ok(found)
    }

    /// Drops the entries when this process wrote a client, or (compared at most once a
    /// second) when the store's version moved.
    async fn revalidate(&self, store: &dyn Store, now: u64) -> StoreResult<()> {
        let local = store.local_client_writes();
        let (wrote_here, due) = match self.inner.read() {
            Ok(s) => (s.local_writes != local, s.checked.is_none_or(|t| now > t)),
            Err(_) => (true, true),
        };
        if !wrote_here && !due {
            return Ok(());
        }
        let version = store.clients_version().await?;
        if let Ok(mut s) = self.inner.write() {
            if s.version != version || s.local_writes != local {
                s.clients.clear();
            }
            s.version = version;
            s.local_writes = local;
            s.checked = Some(now);
        }
        Ok(())
    }
}

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// `None` only while a first boot generates the signing key in the background.
    keys: tokio::sync::watch::Sender<Option<Arc<KeySet>>>,
    /// Prometheus counters (`metrics`): atomics, cheap on the token path.
    pub metrics: crate::metrics::Metrics,
    /// Client records (see [`ClientCache`]); read them with [`AppState::client`].
    pub clients: ClientCache,
    /// argon2id checks in flight at once (each takes 19 MiB and a core for tens of ms): one per
    /// core, so a burst of logins queues instead of exhausting memory.
    pub password_slots: tokio::sync::Semaphore,
    pub discovery_json: bytes::Bytes,
    /// The key that binds CSRF tokens to sessions, read from (or first stored in) the store on
    /// first use so that every replica shares it (`web::csrf`).
    pub csrf_key: tokio::sync::OnceCell<ring::hmac::Key>,
}

/// Cheap to clone; handed to every handler.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state, making sure a signing key of the configured algorithm is active.
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IdpError> {
        seal_keys_at_rest(store.as_ref(), config.key_encryption_key.as_deref()).await?;
        ensure_active_key(&config, store.as_ref(), clock.now()).await?;
        let keys = load_keys(&config, store.as_ref(), clock.now()).await?;
        Self::build(config, store, clock, Some(Arc::new(keys)))
    }

    /// Like [`AppState::new`], but when a signing key must first be generated (a first boot:
    /// RSA key generation takes 50–300 ms) the state is returned at once and the key is made in
    /// the background; discovery is served meanwhile and anything that needs the key waits.
    pub async fn new_deferring_keygen(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IdpError> {
        if !needs_generation(&config, store.as_ref()).await? {
            return Self::new(config, store, clock).await;
        }
        // Other keys (of another algorithm) may be stored: refuse now, not in the background,
        // if they cannot be read.
        seal_keys_at_rest(store.as_ref(), config.key_encryption_key.as_deref()).await?;
        let state = Self::build(config, store, clock, None)?;
        let bg = state.clone();
        tokio::spawn(async move {
            let made = async {
                ensure_active_key(&bg.config, bg.store.as_ref(), bg.now()).await?;
                bg.reload_keys().await
            };
            if let Err(e) = made.await {
                tracing::error!(error = %e, "could not create the signing key; token requests will fail");
            }
        });
        Ok(state)
    }

    fn build(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Option<Arc<KeySet>>,
    ) -> Result<Self, IdpError> {
        let discovery_json = crate::metadata::document_json(&config)?;
        Ok(AppState(Arc::new(Inner {
            config,
            store,
            clock,
            keys: tokio::sync::watch::Sender::new(keys),
            metrics: crate::metrics::Metrics::new(),
            clients: ClientCache::default(),
            password_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            ),
            discovery_json,
            csrf_key: tokio::sync::OnceCell::new(),
        })))
    }

    /// Whether a signing key is loaded (false while a first boot still generates it).
    pub fn keys_loaded(&self) -> bool {
        self.keys.borrow().is_some()
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// A client record, through the cache (see [`ClientCache`]).
    pub async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        self.clients
            .get(self.store.as_ref(), client_id, self.now())
            .await
    }

    /// The keys, waiting for a first boot's key generation if it is still running.
    pub async fn keys(&self) -> Result<Arc<KeySet>, IdpError> {
        if let Some(k) = self.keys.borrow().clone() {
            return Ok(k);
        }
        let mut rx = self.keys.subscribe();
        let ready = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| IdpError::Config("no signing key".into()))?;
        ready
            .clone()
            .ok_or_else(|| IdpError::Config("no signing key".into()))
    }

    /// Re-reads the keys from the store (another process may have rotated them).
    pub async fn reload_keys(&self) -> Result<(), IdpError> {
        let ks = load_keys(&self.config, self.store.as_ref(), self.now()).await?;
        let changed = match self.keys.borrow().as_ref() {
            Some(old) => {
                ks.active.kid() != old.active.kid() || ks.published.len() != old.published.len()
            }
            None => true,
        };
        if changed {
            tracing::info!(
                active = ks.active.kid(),
                published = ks.published.len(),
                "signing keys loaded"
            );
        }
        self.keys.send_replace(Some(Arc::new(ks)));
        Ok(())
    }
}

/// Whether starting needs a new key generated (no configured key file, and no active key of the
/// configured algorithm yet).
pub async fn needs_generation(config: &Config, store: &dyn Store) -> Result<bool, IdpError> {
    if config.private_key_path.is_some() {
        return Ok(false);
    }
    let keys = store.keys().await?;
    Ok(!keys
        .iter()
        .any(|k| k.retired_at.is_none() && k.alg == config.signing_alg.as_str()))
}

/// Makes sure the store holds an active key matching the configuration: the configured key file
/// when one is given, else a generated key of the configured algorithm.
pub async fn ensure_active_key(
    config: &Config,
    store: &dyn Store,
    now: u64,
) -> Result<(), IdpError> {
    let keys = store.keys().await?;
    let active = keys.iter().find(|k| k.retired_at.is_none());
    let wanted = match &config.private_key_path {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                IdpError::Config(format!(
                    "cannot read JWT_PRIVATE_KEY_PATH {}: {e}",
                    path.display()
                ))
            })?;
            let key = SigningKey::from_pem(&pem).map_err(|e| {
                IdpError::Config(format!("JWT_PRIVATE_KEY_PATH {}: {e}", path.display()))
            })?;
            if active.map(|a| a.kid == key.kid()).unwrap_or(false) {
                return Ok(());
            }
            key
        }
        None => {
            if let Some(a) = active {
                if a.alg == config.signing_alg.as_str() {
                    return Ok(());
                }
            }
            let alg = config.signing_alg;
            tokio::task::spawn_blocking(move || SigningKey::generate(alg))
                .await
                .map_err(|e| IdpError::Config(format!("key generation stopped: {e}")))??
        }
    };
    let row = stored_key(&wanted, config.key_encryption_key.as_deref(), now)?;
    store.activate_key(row, now).await?;
    tracing::info!(
        kid = wanted.kid(),
        alg = wanted.alg().as_str(),
        "activated signing key"
    );
    Ok(())
}

/// How long after its tokens' expiry a retired key stays published, for clocks that run behind.
const RETIRED_KEY_LEEWAY_SECS: u64 = 60;

/// Loads the active key and every retired key that may still have live tokens: a key retired at
/// `t` signed tokens that expire by `t + token lifetime`, so it stays published until then (plus
/// a leeway). After that nothing it signed can be verified any more, so its row and private key
/// are deleted.
pub async fn load_keys(config: &Config, store: &dyn Store, now: u64) -> Result<KeySet, IdpError> {
    let stored = store.keys().await?;
    let kek = config.key_encryption_key.as_deref();
    let mut active = None;
    let mut published = Vec::new();
    let mut dead = false;
    for k in &stored {
        let live = match k.retired_at {
            None => true,
            Some(t) => now < t + config.token_lifetime + RETIRED_KEY_LEEWAY_SECS,
        };
        if !live {
            dead = true;
            continue;
        }
        let key = Arc::new(open_stored_key(k, kek)?);
        if k.retired_at.is_none() && active.is_none() {
            active = Some(key.clone());
        }
        published.push(key);
    }
    if dead {
        let cutoff = now.saturating_sub(config.token_lifetime + RETIRED_KEY_LEEWAY_SECS);
        match store.delete_retired_keys(cutoff).await {
            Ok(n) => tracing::info!(
                keys = n,
                "deleted retired signing keys whose tokens have all expired"
            ),
            // The keys stay unpublished; the next reload tries again.
            Err(e) => tracing::warn!(error = %e, "could not delete retired signing keys"),
        }
    }
    let active = active.ok_or_else(|| IdpError::Config("no active signing key".into()))?;
    let jwks = shared::jwk::JwkSet {
        keys: published.iter().map(|k| k.public_jwk()).collect(),
    };
    Ok(KeySet {
        active,
        published,
        jwks_json: bytes::Bytes::from(serde_json::to_vec(&jwks)?),
    })
}

/// The row that stores `key`: its PKCS#8 PEM, encrypted with the key encryption key if there is
/// one.
pub fn stored_key(
    key: &SigningKey,
    kek: Option<&KeyEncryptionKey>,
    now: u64,
) -> Result<StoredKey, IdpError> {
    let pem = key.to_pkcs8_pem();
    let private_pem = match kek {
        Some(kek) => kek.seal(key.kid(), pem.as_bytes())?,
        None => pem,
    };
    Ok(StoredKey {
        kid: key.kid().to_string(),
        alg: key.alg().as_str().to_string(),
        private_pem,
        created_at: now,
        retired_at: None,
    })
}

/// Reads a stored key, decrypting it if it is encrypted.
pub fn open_stored_key(
    stored: &StoredKey,
    kek: Option<&KeyEncryptionKey>,
) -> Result<SigningKey, IdpError> {
    if !crypto::is_sealed(&stored.private_pem) {
        return Ok(SigningKey::from_pem(&stored.private_pem)?);
    }
    let pem = kek
        .ok_or_else(missing_kek)?
        .open(&stored.kid, &stored.private_pem)?;
    let pem = std::str::from_utf8(&pem)
        .map_err(|_| IdpError::Config(format!("signing key {} decrypts to no PEM", stored.kid)))?;
    Ok(SigningKey::from_pem(pem)?)
}

fn missing_kek() -> IdpError {
    IdpError::Config(format!(
        "the database holds encrypted signing keys: set {} (or --key-encryption-key-file) to the \
         key file they were encrypted with",
        crypto::KEK_VARIABLE
    ))
}

/// Brings the stored keys in line with the key encryption setting before anything uses them.
/// With a key encryption key every encrypted key must decrypt with it (a wrong file is an
/// error, not a reason to make new keys) and plaintext keys are encrypted now; without one,
/// encrypted keys are an error, since nothing could sign or verify with them.
pub async fn seal_keys_at_rest(
    store: &dyn Store,
    kek: Option<&KeyEncryptionKey>,
) -> Result<(), IdpError> {
    let mut sealed = 0;
    for k in store.keys().await? {
        if crypto::is_sealed(&k.private_pem) {
            kek.ok_or_else(missing_kek)?.open(&k.kid, &k.private_pem)?;
        } else if let Some(kek) = kek {
            let text = kek.seal(&k.kid, k.private_pem.as_bytes())?;
            // False when another process sealed it first, which is as good.
            if store
                .replace_key_material(&k.kid, &k.private_pem, &text)
                .await?
            {
                sealed += 1;
            }
        }
    }
    if sealed > 0 {
        tracing::info!(keys = sealed, "encrypted stored signing keys at rest");
    }
    Ok(())
}
