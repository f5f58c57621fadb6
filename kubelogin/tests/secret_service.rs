//! The keyring storage against a real Secret Service.
//!
//! Runs when `DBUS_SESSION_BUS_ADDRESS` is set; with `KUBELOGIN_REQUIRE_KEYRING=1` a missing
//! bus is a failure, not a skip, so CI cannot silently stop testing the keyring:
//! `dbus-run-session -- sh -c 'echo -n pw | gnome-keyring-daemon --unlock --components=secrets; KUBELOGIN_REQUIRE_KEYRING=1 cargo test -p kubelogin secret_service'`

use std::sync::Arc;

use kubelogin::deps::real::OsKeyring;
use kubelogin::deps::Keyring;
use kubelogin::secret::Secret;
use kubelogin::testing::FakeDeps;
use kubelogin::token_cache::disk::DiskStore;
use kubelogin::token_cache::keyring::{account, KeyringStore, SERVICE};
use kubelogin::token_cache::{CacheEntry, TokenStore};

/// Whether to run; panics when the keyring is required but absent.
fn available() -> bool {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").is_ok_and(|v| !v.is_empty());
    let required = std::env::var("KUBELOGIN_REQUIRE_KEYRING").as_deref() == Ok("1");
    if !bus && required {
        panic!("KUBELOGIN_REQUIRE_KEYRING=1 but DBUS_SESSION_BUS_ADDRESS is not set: run under dbus-run-session with gnome-keyring unlocked");
    }
    if !bus {
        eprintln!("skipping: no D-Bus session (set KUBELOGIN_REQUIRE_KEYRING=1 to make this fail)");
    }
    bus
}

#[test]
fn os_keyring_roundtrip() {
    if !available() {
        return;
    }
    let k = OsKeyring;
    let acct = format!("kubelogin/test/{:x}", rand::random::<u64>());
    assert_eq!(k.get(SERVICE, &acct).unwrap(), None);
    k.set(SERVICE, &acct, "secret-1").unwrap();
    assert_eq!(k.get(SERVICE, &acct).unwrap().as_deref(), Some("secret-1"));
    k.delete(SERVICE, &acct).unwrap();
    k.delete(SERVICE, &acct).unwrap();
    assert_eq!(k.get(SERVICE, &acct).unwrap(), None);
}

#[test]
fn large_token_entry_through_the_real_keyring() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut fake = FakeDeps::new();
    fake.deps.keyring = Arc::new(OsKeyring);
    let store = KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into()));
    let key = format!("{:064x}", rand::random::<u128>());
    // An ID token with many groups: well past macOS/Windows limits.
    let entry = CacheEntry {
        id_token: Secret::new(format!("h.{}.s", "g".repeat(16 * 1024))),
        refresh_token: Secret::new("refresh"),
        ..Default::default()
    };
    store.save(&key, &entry).unwrap();
    assert!(OsKeyring.get(SERVICE, &account(&key)).unwrap().is_some());
    assert!(
        !tmp.path().join(&key).exists(),
        "stored on disk, not in the keyring"
    );
    assert_eq!(store.load(&key).unwrap(), Some(entry));
    store.delete(&key).unwrap();
    assert_eq!(OsKeyring.get(SERVICE, &account(&key)).unwrap(), None);
}

/// The chunked path through the real Secret Service: a small per-entry limit forces the
/// split (gnome-keyring itself takes large items), and the token reads back whole.
#[test]
fn chunked_entry_through_the_real_keyring() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut fake = FakeDeps::new();
    fake.deps.keyring = Arc::new(OsKeyring);
    let store =
        KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into())).with_entry_limit(300);
    let key = format!("{:064x}", rand::random::<u128>());
    let acct = account(&key);
    let entry = CacheEntry {
        id_token: Secret::new(format!("h.{}.s", "g".repeat(2000))),
        refresh_token: Secret::new("refresh"),
        ..Default::default()
    };
    store.save(&key, &entry).unwrap();
    // The main item is a manifest naming the chunks, each within the limit.
    let manifest: serde_json::Value =
        serde_json::from_str(&OsKeyring.get(SERVICE, &acct).unwrap().unwrap()).unwrap();
    let n = manifest["kubelogin_chunks"].as_u64().unwrap();
    assert!(n >= 7, "{manifest}");
    for i in 0..n {
        let part = OsKeyring
            .get(SERVICE, &format!("{acct}/{i}"))
            .unwrap()
            .unwrap();
        assert!(
            !part.is_empty() && part.len() <= 300,
            "chunk {i}: {}",
            part.len()
        );
    }
    assert!(!tmp.path().join(&key).exists(), "fell back to disk");
    // A fresh store (another process) reassembles it.
    let reader = KeyringStore::new(&fake.deps, DiskStore::new(tmp.path().into()));
    assert_eq!(reader.load(&key).unwrap(), Some(entry));
    store.delete(&key).unwrap();
    assert_eq!(OsKeyring.get(SERVICE, &acct).unwrap(), None);
    assert_eq!(OsKeyring.get(SERVICE, &format!("{acct}/0")).unwrap(), None);
}

/// The binary reads a token that a previous run stored in the keyring.
#[test]
fn binary_serves_a_cache_hit_from_the_keyring() {
    if !available() {
        return;
    }
    use clap::Parser;
    let home = tempfile::tempdir().unwrap();
    let name = format!("ss-{:x}", rand::random::<u64>());
    let args = [
        "kubectl-oidc_login".to_string(),
        "get-token".into(),
        "--oidc-issuer-url=http://127.0.0.1:1".into(),
        "--oidc-client-id=x".into(),
        "--token-cache-storage=keyring".into(),
        format!("--token-cache-name={name}"),
    ];
    let cli = kubelogin::Cli::try_parse_from(&args).unwrap();
    let Some(kubelogin::cli::Command::GetToken(a)) = cli.command else {
        panic!()
    };
    let key = kubelogin::commands::resolve(&a.provider, Some(&a.cache), false)
        .unwrap()
        .key
        .hex();
    let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
    let token = format!(
        "{}.{}.c2ln",
        b(serde_json::json!({"alg":"RS256"})),
        b(serde_json::json!({"exp":4102444800u64}))
    );
    let entry = serde_json::json!({"id_token": token}).to_string();
    OsKeyring.set(SERVICE, &account(&key), &entry).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-oidc_login"))
        .args(&args[1..])
        .env("HOME", home.path())
        .env_remove("KUBERNETES_EXEC_INFO")
        .output()
        .unwrap();
    OsKeyring.delete(SERVICE, &account(&key)).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&token));
}

/// `status` and `clean --issuer` against real entries: one login stored in the real Secret
/// Service and one on disk, made by the whole get-token flow against the stub provider.
#[test]
fn status_and_selective_clean_with_the_real_keyring() {
    if !available() {
        return;
    }
    let mut h = crate::harness::Harness::new(crate::stub::Config::default());
    h.fake.deps.keyring = Arc::new(OsKeyring);
    let name = format!("ss-{:x}", rand::random::<u64>());
    h.run(&[
        "--token-cache-storage=keyring",
        &format!("--token-cache-name={name}"),
    ])
    .unwrap();
    h.run(&[]).unwrap();
    let keys = kubelogin::token_cache::keys_in(&h.cache_dir());
    let in_keyring: Vec<String> = keys
        .iter()
        .filter_map(|k| OsKeyring.get(SERVICE, &account(k)).unwrap())
        .collect();
    assert_eq!(in_keyring.len(), 1, "one login in the real keyring");

    let json = h.run_bare("status", &["-o", "json"]).unwrap();
    let text = h.run_bare("status", &[]).unwrap();
    for t in h.cached_tokens(&in_keyring) {
        assert!(!json.contains(&t) && !text.contains(&t), "token shown: {t}");
    }
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{json}");
    let kr = entries.iter().find(|e| e["storage"] == "keyring").unwrap();
    assert_eq!(kr["token_cache_name"], name.as_str());
    assert_eq!(kr["issuer"], h.stub.issuer.as_str());
    assert_eq!(kr["id_token"]["claims_unverified"]["sub"], "alice-sub");
    assert_eq!(kr["refresh_token"], true);
    assert!(text.contains(&format!("account name:  {name}")), "{text}");

    // Only the named keyring login goes; the disk login stays.
    h.run_bare(
        "clean",
        &[
            &format!("--issuer={}", h.stub.issuer),
            &format!("--token-cache-name={name}"),
            "--token-cache-storage=keyring",
        ],
    )
    .unwrap();
    for k in &keys {
        assert_eq!(OsKeyring.get(SERVICE, &account(k)).unwrap(), None);
    }
    let v: serde_json::Value =
        serde_json::from_str(&h.run_bare("status", &["-o", "json"]).unwrap()).unwrap();
    let left = v["entries"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["storage"], "disk");
    assert_eq!(h.cache_entries().len(), 1);
}
