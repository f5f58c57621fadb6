//! The two binaries: `kubectl-oidc_login` (the shim kubectl runs, `src/shim.rs`) answers a
//! fresh cached token itself and execs `kubelogin-rs` (the full plugin) for everything else.
//!
//! Two ways to tell who answered: the pair as cargo built it (`target/<profile>/`, both files
//! side by side, as installed), whose every answer must equal the full binary's byte for byte;
//! and the shim alone in a directory of its own (a hard link, no `kubelogin-rs` beside it),
//! which can only print a cached token or the error that the full binary is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SHIM: &str = env!("CARGO_BIN_EXE_kubectl-oidc_login");
const FULL: &str = env!("CARGO_BIN_EXE_kubelogin-rs");
const V1: &str = r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
const V1BETA1: &str =
    r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#;
const FLAGS: [&str; 2] = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];

/// A command line, its extra environment and the cache entry it finds.
type Case = (Vec<&'static str>, Vec<(&'static str, &'static str)>, String);

#[derive(Debug, PartialEq, Eq)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `binary` with a clean environment (no KUBELOGIN_*, no exec info, no KUBECACHEDIR), HOME in
/// `home`, stdin closed.
fn run(binary: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("KUBELOGIN_") || k == "KUBERNETES_EXEC_INFO" || k == "KUBECACHEDIR" {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

/// The shim alone: hard-linked into a fresh directory under cargo's target tmp dir (the same
/// file system as the build, so no 100 MB copy), without `kubelogin-rs` beside it.
fn lone_shim() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("kubectl-oidc_login");
    std::fs::hard_link(SHIM, &path).unwrap();
    (dir, path)
}

fn key_for(args: &[&str]) -> String {
    use clap::Parser;
    let mut all = vec!["kubectl-oidc_login", "get-token"];
    all.extend_from_slice(args);
    let Some(kubelogin::cli::Command::GetToken(a)) =
        kubelogin::Cli::try_parse_from(all).unwrap().command
    else {
        panic!("not get-token")
    };
    kubelogin::commands::resolve(&a.provider, Some(&a.cache), false)
        .unwrap()
        .key
        .hex()
}

fn jwt(exp: i64) -> String {
    let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
    format!(
        "{}.{}.c2ln",
        b(serde_json::json!({"alg":"RS256"})),
        b(serde_json::json!({"iss":"http://127.0.0.1:1","sub":"s","exp":exp}))
    )
}

fn now() -> i64 {
    use kubelogin::deps::Clock;
    kubelogin::deps::real::SystemClock.now().timestamp()
}

fn plant(home: &Path, key: &str, body: &str) -> PathBuf {
    let dir = home.join(".kube/cache/oidc-login");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(key), body).unwrap();
    dir.join(key)
}

/// The shim's one line when the full binary is not beside it.
fn assert_full_missing(o: &Out, lone: &Path) {
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(o.stdout, "", "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    let expected = format!(
        "error: {}: not found;",
        lone.with_file_name("kubelogin-rs").display()
    );
    assert!(o.stderr.starts_with(&expected), "{o:?}");
    assert!(o.stderr.contains("cargo install --path kubelogin"), "{o:?}");
}

/// A fresh cached token: the shim alone prints it (so it answered without the full binary),
/// byte for byte what the full binary prints for the same cache, in both ExecCredential
/// versions (unset, v1beta1, v1), for the ID token and for an opaque access token with its
/// stored expiry; and the entry, its lock and the directory are left as they were.
#[test]
fn cache_hit_is_answered_by_the_shim_byte_identical_to_the_full_binary() {
    let home = tempfile::tempdir().unwrap();
    let (_d, lone) = lone_shim();
    let id = jwt(4_102_444_800);
    let mut access = FLAGS.to_vec();
    access.push("--oidc-use-access-token");
    let cases = [
        (
            FLAGS.to_vec(),
            format!(r#"{{"id_token":"{id}","refresh_token":"r"}}"#),
            id.clone(),
        ),
        (
            access,
            format!(
                r#"{{"access_token":"opaque-at","access_token_expires_at":{},"refresh_token":"r"}}"#,
                now() + 3600
            ),
            "opaque-at".to_string(),
        ),
    ];
    for (flags, body, token) in cases {
        let key = key_for(&flags);
        let file = plant(home.path(), &key, &body);
        let mut args = vec!["get-token"];
        args.extend(&flags);
        for exec_info in ["", V1BETA1, V1] {
            let env = [("KUBERNETES_EXEC_INFO", exec_info)];
            let full = run(Path::new(FULL), home.path(), &args, &env);
            assert_eq!(full.code, 0, "{full:?}");
            assert_eq!(full.stderr, "");
            assert!(full.stdout.contains(&format!(r#""token":"{token}""#)));
            let version = if exec_info == V1 { "v1" } else { "v1beta1" };
            assert!(full.stdout.contains(&format!(
                r#""apiVersion":"client.authentication.k8s.io/{version}""#
            )));
            assert_eq!(run(Path::new(SHIM), home.path(), &args, &env), full);
            assert_eq!(run(&lone, home.path(), &args, &env), full, "{exec_info}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), body);
    }
}

/// Everything but a fresh cached token on disk goes to the full binary: the shim alone says
/// that binary is missing (it did not answer), and the installed pair answers exactly as the
/// full binary does.
#[test]
fn everything_else_goes_to_the_full_binary() {
    let home = tempfile::tempdir().unwrap();
    let (_d, lone) = lone_shim();
    let key = key_for(&FLAGS);
    let fresh = format!(r#"{{"id_token":"{}"}}"#, jwt(4_102_444_800));
    let get_token = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec!["get-token"];
        a.extend(FLAGS);
        a.extend(extra);
        a
    };
    // (args, environment, cache body): each is one the shim must not answer.
    let expired = format!(r#"{{"id_token":"{}"}}"#, jwt(1_000_000_000));
    let near_expiry = format!(r#"{{"id_token":"{}"}}"#, jwt(now() + 30));
    let no_exp = r#"{"id_token":"not-a-jwt"}"#.to_string();
    let cases: Vec<Case> = vec![
        (get_token(&[]), vec![], expired.clone()),
        // Inside the default 60 s refresh margin.
        (get_token(&[]), vec![], near_expiry.clone()),
        (get_token(&[]), vec![], no_exp),
        (get_token(&[]), vec![], "{corrupt".into()),
        (get_token(&["--force-refresh"]), vec![], fresh.clone()),
        (
            get_token(&["--token-cache-storage=keyring"]),
            vec![],
            fresh.clone(),
        ),
        (get_token(&["-v1"]), vec![], fresh.clone()),
        (get_token(&[]), vec![("KUBELOGIN_V", "0")], fresh.clone()),
        (
            get_token(&[]),
            vec![("KUBERNETES_EXEC_INFO", r#"{"apiVersion":"v9"}"#)],
            fresh.clone(),
        ),
        (
            vec!["get-token", "--oidc-client-id=x"],
            vec![],
            fresh.clone(),
        ),
        (vec!["version"], vec![], fresh.clone()),
        (vec!["--help"], vec![], fresh.clone()),
        (vec!["get-token", "--help"], vec![], fresh.clone()),
        (vec!["status"], vec![], fresh.clone()),
        (vec![], vec![], fresh.clone()),
    ];
    for (args, env, body) in &cases {
        plant(home.path(), &key, body);
        assert_full_missing(&run(&lone, home.path(), args, env), &lone);
    }
    // Through the installed pair: the full binary's answer, byte for byte (the keyring case is
    // left out: it needs the Secret Service session of tests/run-all.sh).
    for (args, env, body) in cases
        .iter()
        .filter(|c| !c.0.iter().any(|a| a.contains("keyring")))
    {
        plant(home.path(), &key, body);
        let full = run(Path::new(FULL), home.path(), args, env);
        plant(home.path(), &key, body);
        let shim = run(Path::new(SHIM), home.path(), args, env);
        assert_eq!(shim, full, "{args:?} {env:?}");
    }
    // A few answers that prove the full binary ran: usage, version, a refresh attempt.
    let o = run(Path::new(SHIM), home.path(), &["--help"], &[]);
    assert!(o.stdout.contains("Usage: kubectl-oidc_login"), "{o:?}");
    let o = run(Path::new(SHIM), home.path(), &["version"], &[]);
    assert!(o.stderr.starts_with("kubectl-oidc_login version "), "{o:?}");
    plant(home.path(), &key, &expired);
    let o = run(Path::new(SHIM), home.path(), &get_token(&[]), &[]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("127.0.0.1:1"), "{o:?}");
}

/// While another process holds the key's lock (it is refreshing or logging in), the shim does
/// not read the entry: the full binary waits for the lock, as every get-token does.
#[test]
fn a_held_lock_goes_to_the_full_binary() {
    let home = tempfile::tempdir().unwrap();
    let (_d, lone) = lone_shim();
    let key = key_for(&FLAGS);
    let file = plant(
        home.path(),
        &key,
        &format!(r#"{{"id_token":"{}"}}"#, jwt(4_102_444_800)),
    );
    let held = std::fs::File::create(file.with_extension("lock")).unwrap();
    held.lock().unwrap();
    let mut args = vec!["get-token"];
    args.extend(FLAGS);
    assert_full_missing(&run(&lone, home.path(), &args, &[]), &lone);
    drop(held);
    let o = run(&lone, home.path(), &args, &[]);
    assert_eq!(o.code, 0, "{o:?}");
}

/// A cache directory others can write to is refused by the full binary; the shim does not
/// answer from it either.
#[cfg(unix)]
#[test]
fn a_shared_cache_directory_goes_to_the_full_binary() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let (_d, lone) = lone_shim();
    let key = key_for(&FLAGS);
    let file = plant(
        home.path(),
        &key,
        &format!(r#"{{"id_token":"{}"}}"#, jwt(4_102_444_800)),
    );
    let dir = file.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut args = vec!["get-token"];
    args.extend(FLAGS);
    assert_full_missing(&run(&lone, home.path(), &args, &[]), &lone);
    let o = run(Path::new(SHIM), home.path(), &args, &[]);
    assert_eq!(o, run(Path::new(FULL), home.path(), &args, &[]));
    assert!(o.stderr.contains("writable by group or others"), "{o:?}");
}
