//! Signing keys at rest (issue 7 item 10b): retired private keys deleted once nothing they
//! signed can be live, and encryption of private keys with `KEY_ENCRYPTION_KEY_FILE`. Driven
//! through `AppState` with a manual clock, over a real SQLite file.

use super::common::*;
use idp::clock::ManualClock;
use idp::config::Config;
use idp::crypto::KeyEncryptionKey;
use idp::keys::{Algorithm, SigningKey};
use idp::state::AppState;
use idp::store::{SqliteStore, Store};
use std::sync::Arc;

const NOW: u64 = 1_800_000_000;

fn kek(byte: u8) -> Arc<KeyEncryptionKey> {
    Arc::new(KeyEncryptionKey::from_bytes(&[byte; 32]).unwrap())
}

fn config(alg: &str, kek: Option<Arc<KeyEncryptionKey>>) -> Config {
    let mut c = Config::for_issuer(ISSUER).unwrap();
    c.signing_alg = alg.parse().unwrap();
    c.key_encryption_key = kek;
    c
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap(),
    )
}

async fn start(config: Config, store: &Arc<dyn Store>) -> Result<AppState, String> {
    AppState::new(config, store.clone(), Arc::new(ManualClock::new(NOW)))
        .await
        .map_err(|e| e.to_string())
}

/// The error of a start expected to fail.
async fn refused(config: Config, store: &Arc<dyn Store>) -> String {
    match start(config, store).await {
        Ok(_) => panic!("the state started"),
        Err(e) => e,
    }
}

/// The kids the JWKS publishes, sorted.
fn jwks_kids(keys: &idp::state::KeySet) -> Vec<String> {
    let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks_json).unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

fn sorted<const N: usize>(kids: [&str; N]) -> Vec<String> {
    let mut v: Vec<String> = kids.iter().map(|k| k.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn retired_keys_are_deleted_once_their_tokens_have_expired() {
    let h = harness().await;
    let old = h.state.keys().await.unwrap().active.kid().to_string();
    let new = SigningKey::generate(Algorithm::Es256).unwrap();
    let now = h.clock_now();
    h.state
        .store
        .activate_key(idp::state::stored_key(&new, None, now).unwrap(), now)
        .await
        .unwrap();
    h.state.reload_keys().await.unwrap();

    // A token the old key signed at `now` expires at now + lifetime; with the 60 s leeway the
    // key is published, and kept, until then.
    h.clock.advance(h.state.config.token_lifetime + 60 - 1);
    h.state.reload_keys().await.unwrap();
    let keys = h.state.keys().await.unwrap();
    assert_eq!(jwks_kids(&keys), sorted([new.kid(), old.as_str()]));
    assert_eq!(h.state.store.keys().await.unwrap().len(), 2);

    // One second later nothing it signed can be verified: the row and private key are gone.
    h.clock.advance(1);
    h.state.reload_keys().await.unwrap();
    let keys = h.state.keys().await.unwrap();
    assert_eq!(jwks_kids(&keys), [new.kid()]);
    let stored: Vec<String> = h
        .state
        .store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(stored, [new.kid()]);
}

#[tokio::test]
async fn with_a_kek_new_keys_are_stored_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let state = start(config("ES256", Some(kek(1))), &store).await.unwrap();
    let rows = store.keys().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].private_pem.starts_with("enc:v1:"), "{rows:?}");
    assert!(!rows[0].private_pem.contains("PRIVATE KEY"));
    let active = state.keys().await.unwrap().active.clone();
    assert_eq!(active.kid(), rows[0].kid);

    // A restart with the same KEK signs with the same key.
    let again = start(config("ES256", Some(kek(1))), &store).await.unwrap();
    assert_eq!(again.keys().await.unwrap().active.kid(), active.kid());
    let token = again
        .keys()
        .await
        .unwrap()
        .active
        .sign_jwt(&serde_json::json!({"sub": "x"}))
        .unwrap();
    let claims: serde_json::Value =
        idp::keys::verify_jwt(std::slice::from_ref(&active), &token).unwrap();
    assert_eq!(claims["sub"], "x");
}

#[tokio::test]
async fn with_a_kek_existing_plaintext_keys_are_encrypted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let old = SigningKey::generate(Algorithm::Es256).unwrap();
    let current = SigningKey::generate(Algorithm::Es256).unwrap();
    for key in [&old, &current] {
        store
            .activate_key(idp::state::stored_key(key, None, NOW).unwrap(), NOW)
            .await
            .unwrap();
    }
    assert!(store
        .keys()
        .await
        .unwrap()
        .iter()
        .all(|k| k.private_pem.starts_with("-----BEGIN PRIVATE KEY-----")));

    let state = start(config("ES256", Some(kek(1))), &store).await.unwrap();
    let rows = store.keys().await.unwrap();
    assert_eq!(rows.len(), 2, "the same keys, encrypted in place");
    for row in &rows {
        assert!(row.private_pem.starts_with("enc:v1:"), "{row:?}");
    }
    let keys = state.keys().await.unwrap();
    assert_eq!(keys.active.kid(), current.kid());
    assert_eq!(jwks_kids(&keys), sorted([current.kid(), old.kid()]));
}

#[tokio::test]
async fn encrypted_keys_need_the_right_kek_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    start(config("ES256", Some(kek(1))), &store).await.unwrap();
    let before = store.keys().await.unwrap();

    let err = refused(config("ES256", None), &store).await;
    assert!(
        err.contains("encrypted signing keys") && err.contains("KEY_ENCRYPTION_KEY_FILE"),
        "{err}"
    );
    let err = refused(config("ES256", Some(kek(2))), &store).await;
    assert!(
        err.contains("cannot be decrypted") && err.contains("KEY_ENCRYPTION_KEY_FILE"),
        "{err}"
    );
    // A first boot of another algorithm generates its key in the background, but the stored
    // key it cannot read is refused before the server starts.
    let err = AppState::new_deferring_keygen(
        config("RS256", None),
        store.clone(),
        Arc::new(ManualClock::new(NOW)),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("KEY_ENCRYPTION_KEY_FILE"), "{err}");
    assert_eq!(
        store.keys().await.unwrap(),
        before,
        "nothing was generated or rewritten"
    );
}
