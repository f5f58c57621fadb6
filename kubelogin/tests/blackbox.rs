//! The built binary, as kubectl runs it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use clap::Parser;
use kubelogin::cli::{Cli, Command as Sub};
use kubelogin::deps::real::SystemClock;

use crate::stub::{Config, Stub};

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-oidc_login");

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary with a clean environment: no KUBELOGIN_*, no exec info, HOME in `home`.
fn bin(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("KUBELOGIN_") || k == "KUBERNETES_EXEC_INFO" || k == "KUBECACHEDIR" {
            c.env_remove(k);
        }
    }
    c.env("HOME", home).stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Out {
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Exit 1, nothing on stdout, exactly one `error:` line on stderr.
fn assert_bad_input(o: &Out) {
    assert_eq!(o.code, 1, "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "");
    assert_eq!(o.stderr.lines().count(), 1, "stderr: {}", o.stderr);
    assert!(o.stderr.starts_with("error: "), "stderr: {}", o.stderr);
}

/// The cache file name the binary computes for these get-token flags.
fn key_for(args: &[&str]) -> String {
    let mut all = vec!["kubectl-oidc_login", "get-token"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).unwrap();
    let Some(Sub::GetToken(a)) = cli.command else {
        panic!()
    };
    kubelogin::commands::resolve(&a.provider, Some(&a.cache), false)
        .unwrap()
        .key
        .hex()
}

fn unsigned_jwt(exp: i64) -> String {
    let b = |v: serde_json::Value| shared::jwt::b64url(v.to_string().as_bytes());
    format!(
        "{}.{}.c2ln",
        b(serde_json::json!({"alg":"RS256"})),
        b(serde_json::json!({"iss":"http://127.0.0.1:1","sub":"s","exp":exp}))
    )
}

fn plant(dir: &Path, key: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(key), body).unwrap();
}

#[test]
fn bad_input_is_one_error_line_and_no_stdout() {
    let home = tempfile::tempdir().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["get-token", "--no-such-flag"],
        vec!["get-token", "--oidc-client-id=x"],
        vec![
            "get-token",
            "--oidc-issuer-url=https://i",
            "--oidc-client-id=x",
            "--grant-type=magic",
        ],
        vec![
            "get-token",
            "--oidc-issuer-url=not a url",
            "--oidc-client-id=x",
        ],
        vec![
            "get-token",
            "--oidc-issuer-url=https://i",
            "--oidc-client-id=x",
            "--oidc-request-header=novalue",
        ],
        vec![
            "get-token",
            "--oidc-issuer-url=https://i",
            "--oidc-client-id=x",
            "--authentication-timeout-sec=soon",
        ],
        vec![
            "get-token",
            "--oidc-issuer-url=https://i",
            "--oidc-client-id=x",
            "--oidc-pkce-method=plain",
        ],
    ];
    for args in cases {
        let o = run(bin(home.path()).args(&args));
        assert_bad_input(&o);
    }
    assert!(!home.path().join(".kube").exists(), "the cache was touched");
}

#[test]
fn malformed_exec_info_is_refused_before_anything_else() {
    let home = tempfile::tempdir().unwrap();
    for info in [
        "{not json",
        r#"{"apiVersion":"client.authentication.k8s.io/v1alpha1"}"#,
        r#"{"kind":"ExecCredential"}"#,
    ] {
        let o = run(bin(home.path())
            .args([
                "get-token",
                "--oidc-issuer-url=https://i",
                "--oidc-client-id=x",
            ])
            .env("KUBERNETES_EXEC_INFO", info));
        assert_bad_input(&o);
        assert!(o.stderr.contains("KUBERNETES_EXEC_INFO"), "{}", o.stderr);
    }
    assert!(!home.path().join(".kube").exists());
}

#[test]
fn unreachable_issuer_and_cache_untouched() {
    let home = tempfile::tempdir().unwrap();
    let o = run(bin(home.path()).args([
        "get-token",
        "--oidc-issuer-url=http://127.0.0.1:1",
        "--oidc-client-id=x",
    ]));
    assert_bad_input(&o);
    assert!(o.stderr.contains("127.0.0.1:1"), "{}", o.stderr);
    let dir = home.path().join(".kube/cache/oidc-login");
    let tokens = std::fs::read_dir(&dir)
        .map(|d| d.flatten().filter(|e| e.file_name().len() == 64).count())
        .unwrap_or(0);
    assert_eq!(tokens, 0);
}

#[test]
fn cache_hit_from_planted_file_needs_no_network() {
    let home = tempfile::tempdir().unwrap();
    let flags = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];
    let key = key_for(&flags);
    let token = unsigned_jwt(4_102_444_800); // 2100-01-01
    plant(
        &home.path().join(".kube/cache/oidc-login"),
        &key,
        &format!(r#"{{"id_token":"{token}","refresh_token":"r"}}"#),
    );
    let o = run(bin(home.path()).arg("get-token").args(flags).env(
        "KUBERNETES_EXEC_INFO",
        r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stderr, "");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["status"]["token"], token.as_str());
    assert_eq!(v["status"]["expirationTimestamp"], "2100-01-01T00:00:00Z");

    // Empty KUBERNETES_EXEC_INFO means v1beta1.
    let o = run(bin(home.path())
        .arg("get-token")
        .args(flags)
        .env("KUBERNETES_EXEC_INFO", ""));
    assert!(o.stdout.contains("client.authentication.k8s.io/v1beta1"));
}

/// The lean parser (kubelogin::lean) and clap give the same process the same answer, byte for
/// byte: a cache hit (both ExecCredential versions), a stale entry whose refresh cannot reach
/// the issuer, and a command line the lean parser declines (it falls through to clap). The
/// clap side is forced with `KUBELOGIN_V=0` (any KUBELOGIN_* variable sends the lean parser to
/// clap, and this one changes nothing) or with `-v0`.
#[test]
fn lean_and_clap_parse_give_byte_identical_answers() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".kube/cache/oidc-login");
    let flags = [
        "--oidc-issuer-url=http://127.0.0.1:1",
        "--oidc-client-id",
        "x",
        "--oidc-extra-scope=email,groups",
        "--token-cache-name=work",
    ];
    let key = key_for(&flags);
    let token = unsigned_jwt(4_102_444_800);
    let fresh = format!(r#"{{"id_token":"{token}","refresh_token":"r"}}"#);
    let stale = format!(
        r#"{{"id_token":"{}","refresh_token":"r"}}"#,
        unsigned_jwt(1_000_000_000)
    );
    let both = |extra: &[&str], exec_info: &str| -> (Out, Out, Out) {
        let go = |c: &mut Command, last: &[&str]| {
            run(c
                .arg("get-token")
                .args(flags)
                .args(extra)
                .args(last)
                .env("KUBERNETES_EXEC_INFO", exec_info))
        };
        let lean = go(&mut bin(home.path()), &[]);
        let by_env = go(bin(home.path()).env("KUBELOGIN_V", "0"), &[]);
        let by_flag = go(&mut bin(home.path()), &["-v0"]);
        (lean, by_env, by_flag)
    };
    let same = |(a, b, c): (Out, Out, Out)| -> Out {
        for other in [&b, &c] {
            assert_eq!(a.code, other.code, "{} | {}", a.stderr, other.stderr);
            assert_eq!(a.stdout, other.stdout);
            assert_eq!(a.stderr, other.stderr);
        }
        a
    };
    plant(&dir, &key, &fresh);
    for exec_info in [
        "",
        r#"{"apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
    ] {
        let o = same(both(&[], exec_info));
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.contains(&token), "{}", o.stdout);
    }
    // --force-refresh=yes: clap's boolish value, declined by the lean parser; the same refresh
    // attempt as --force-refresh, which the lean parser takes.
    let declined = same(both(&["--force-refresh=yes"], ""));
    let taken = same(both(&["--force-refresh"], ""));
    assert_bad_input(&declined);
    assert_eq!(declined.stderr, taken.stderr);
    assert_eq!(std::fs::read_to_string(dir.join(&key)).unwrap(), fresh);

    plant(&dir, &key, &stale);
    let o = same(both(&[], ""));
    assert_bad_input(&o);
    assert_eq!(
        std::fs::read_to_string(dir.join(&key)).unwrap(),
        stale,
        "cache untouched"
    );
}

#[test]
fn flags_from_environment_and_command_line_wins_and_kubecachedir() {
    let home = tempfile::tempdir().unwrap();
    let cachedir = tempfile::tempdir().unwrap();
    let flags = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];
    let key = key_for(&flags);
    let token = unsigned_jwt(4_102_444_800);
    plant(
        &cachedir.path().join("oidc-login"),
        &key,
        &format!(r#"{{"id_token":"{token}"}}"#),
    );
    let base = |c: &mut Command| {
        c.env("KUBECACHEDIR", cachedir.path());
    };
    // Everything from the environment.
    let mut c = bin(home.path());
    base(&mut c);
    let o = run(c
        .arg("get-token")
        .env("KUBELOGIN_OIDC_ISSUER_URL", "http://127.0.0.1:1")
        .env("KUBELOGIN_OIDC_CLIENT_ID", "x"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains(&token));
    // The command line wins over the environment.
    let mut c = bin(home.path());
    base(&mut c);
    let o = run(c
        .arg("get-token")
        .args(flags)
        .env("KUBELOGIN_OIDC_ISSUER_URL", "http://wrong.invalid")
        .env("KUBELOGIN_SKIP_OPEN_BROWSER", "true"));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn version_goes_to_stderr() {
    let home = tempfile::tempdir().unwrap();
    for args in [vec!["version"], vec!["--version"]] {
        let o = run(bin(home.path()).args(&args));
        assert_eq!(o.code, 0);
        assert_eq!(o.stdout, "");
        assert!(
            o.stderr.starts_with("kubectl-oidc_login version "),
            "{}",
            o.stderr
        );
    }
}

#[test]
fn lock_wait_is_bounded_and_explained() {
    let home = tempfile::tempdir().unwrap();
    let flags = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];
    let key = key_for(&flags);
    let dir = home.path().join(".kube/cache/oidc-login");
    std::fs::create_dir_all(&dir).unwrap();
    let held = std::fs::File::create(dir.join(format!("{key}.lock"))).unwrap();
    held.lock().unwrap();
    let o = run(bin(home.path())
        .arg("get-token")
        .args(flags)
        .arg("--token-cache-lock-timeout-sec=2"));
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert!(o.stderr.contains("waiting up to 2s"), "{}", o.stderr);
    assert!(o.stderr.contains(&format!("{key}.lock")), "{}", o.stderr);
    assert!(
        o.stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("error: timed out"),
        "{}",
        o.stderr
    );
}

/// Logs in once with the password grant, then makes the cached token about to expire for 50
/// processes started together (`KUBELOGIN_PARALLEL` to change it): exactly one refresh grant
/// reaches the provider and all print the same new token.
#[test]
fn parallel_processes_at_expiry_cause_one_refresh() {
    let n: usize = std::env::var("KUBELOGIN_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let home = tempfile::tempdir().unwrap();
    let stub = Stub::start(
        Arc::new(SystemClock),
        Config {
            id_token_lifetime: 30,
            token_delay: std::time::Duration::from_millis(200),
            ..Config::default()
        },
    );
    let issuer = format!("--oidc-issuer-url={}", stub.issuer);
    let args = [
        "get-token",
        issuer.as_str(),
        "--oidc-client-id=kubernetes",
        "--username=alice",
        "--password=alice-password-123",
        "--token-refresh-margin-sec=60",
    ];
    let o = run(bin(home.path()).args(args));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(stub.grants("password"), 1);
    // From now on tokens live an hour: the first refresher makes the cache fresh for all.
    stub.config(|c| c.id_token_lifetime = 3600);
    let children: Vec<_> = (0..n)
        .map(|_| {
            bin(home.path())
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut tokens = std::collections::BTreeSet::new();
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        tokens.insert(v["status"]["token"].as_str().unwrap().to_string());
    }
    assert_eq!(stub.grants("refresh_token"), 1);
    assert_eq!(stub.grants("password"), 1);
    assert_eq!(outs.len(), n);
    assert_eq!(tokens.len(), 1);
}

/// A browser launcher that prints on stdout must not corrupt the ExecCredential.
#[test]
fn browser_command_output_goes_to_stderr() {
    let home = tempfile::tempdir().unwrap();
    let stub = Stub::start(Arc::new(SystemClock), Config::default());
    let script = home.path().join("browser.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'launcher noise on stdout'\ncurl -s -L -o /dev/null \"$1\" &\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = run(bin(home.path()).args([
        "get-token",
        &format!("--oidc-issuer-url={}", stub.issuer),
        "--oidc-client-id=kubernetes",
        "--listen-address=127.0.0.1:0",
        &format!("--browser-command={}", script.display()),
        "--authentication-timeout-sec=20",
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("launcher noise on stdout"),
        "{}",
        o.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(v["status"]["token"].as_str().unwrap().contains('.'));
    assert_eq!(stub.grants("authorization_code"), 1);
}

/// The start URL fetched twice (another local user read it from the browser's command line,
/// then the browser came): the binary ends with one `error:` line saying so, exit 1, nothing
/// on stdout, and no code was exchanged.
#[test]
fn start_url_opened_twice_ends_with_one_error_line() {
    let home = tempfile::tempdir().unwrap();
    let stub = Stub::start(Arc::new(SystemClock), Config::default());
    let script = home.path().join("browser.sh");
    std::fs::write(
        &script,
        "#!/bin/sh
(curl -s -o /dev/null \"$1\"; curl -s -o /dev/null \"$1\") >/dev/null 2>&1 &
",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = run(bin(home.path()).args([
        "get-token",
        &format!("--oidc-issuer-url={}", stub.issuer),
        "--oidc-client-id=kubernetes",
        "--listen-address=127.0.0.1:0",
        &format!("--browser-command={}", script.display()),
        "--authentication-timeout-sec=20",
    ]));
    // The login reached the user, so stderr first says which flow `auto` picked and the URL
    // (always printed); it ends with the one error line.
    assert_eq!(o.code, 1, "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "");
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert!(
        lines[0].starts_with("Using the browser login (authcode)"),
        "{}",
        o.stderr
    );
    assert!(
        lines[1].starts_with("Please visit the following URL in your browser: http://localhost:"),
        "{}",
        o.stderr
    );
    assert_eq!(lines.len(), 3, "{}", o.stderr);
    assert!(lines[2].starts_with("error: "), "{}", o.stderr);
    assert!(o.stderr.contains("opened twice"), "{}", o.stderr);
    assert!(o.stderr.contains("another local user"), "{}", o.stderr);
    assert!(o.stderr.contains("retry"), "{}", o.stderr);
    assert_eq!(stub.grants("authorization_code"), 0);
}

fn tls_fixture(dir: &Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubelogin test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    (
        ca_path.display().to_string(),
        format!("{}{}", leaf.pem(), ca.pem()),
        leaf_key.serialize_pem(),
    )
}

#[test]
fn tls_failure_hints_at_certificate_authority_and_the_flags_fix_it() {
    let home = tempfile::tempdir().unwrap();
    let (ca_path, chain, key) = tls_fixture(home.path());
    let stub = Stub::start_with(Arc::new(SystemClock), Config::default(), Some((chain, key)));
    let base = |extra: &[&str]| {
        let mut c = bin(home.path());
        c.args([
            "get-token",
            &format!("--oidc-issuer-url={}", stub.issuer),
            "--oidc-client-id=kubernetes",
            "--username=alice",
            "--password=alice-password-123",
            "--token-cache-storage=none",
        ])
        .args(extra);
        run(&mut c)
    };
    let o = base(&[]);
    assert_bad_input(&o);
    assert!(o.stderr.contains("--certificate-authority"), "{}", o.stderr);

    let o = base(&[&format!("--certificate-authority={ca_path}")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let data = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca_path).unwrap());
    let o = base(&[&format!("--certificate-authority-data={data}")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = base(&["--insecure-skip-tls-verify"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(stub.grants("password"), 3);
}

/// A `--token-cache-dir` others can write to (or that another user owns) is refused before
/// anything is read or written: exit 1, one `error:` line naming the fix, nothing on stdout.
#[cfg(unix)]
#[test]
fn shared_or_foreign_cache_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let flags = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];
    let key = key_for(&flags);
    let dir = home.path().join("shared-cache");
    // A valid cached token: without the check it would be served (exit 0).
    plant(
        &dir,
        &key,
        &format!(r#"{{"id_token":"{}"}}"#, unsigned_jwt(4_102_444_800)),
    );
    let cache_flag = format!("--token-cache-dir={}", dir.display());
    for mode in [0o777, 0o775] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = run(bin(home.path())
            .arg("get-token")
            .args(flags)
            .arg(&cache_flag));
        assert_bad_input(&o);
        assert!(
            o.stderr.contains("writable by group or others"),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("chmod 700"), "{}", o.stderr);
        assert!(!dir.join(format!("{key}.lock")).exists());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = run(bin(home.path())
        .arg("get-token")
        .args(flags)
        .arg(&cache_flag));
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Owned by another user: only root can give a directory away, so only root tests it.
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let o = run(bin(home.path())
            .arg("get-token")
            .args(flags)
            .arg(&cache_flag));
        assert_bad_input(&o);
        assert!(o.stderr.contains("owned by uid 65534"), "{}", o.stderr);
        assert!(o.stderr.contains("--token-cache-dir"), "{}", o.stderr);
    } else {
        eprintln!("not root: the foreign-owner case needs chown and is covered when run as root");
    }
}

/// A `<key>.lock` that is a symlink is refused, and what it points to is not created.
#[cfg(unix)]
#[test]
fn symlinked_lock_file_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let flags = ["--oidc-issuer-url=http://127.0.0.1:1", "--oidc-client-id=x"];
    let key = key_for(&flags);
    let dir = home.path().join(".kube/cache/oidc-login");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = home.path().join("victim");
    std::os::unix::fs::symlink(&victim, dir.join(format!("{key}.lock"))).unwrap();
    let o = run(bin(home.path()).arg("get-token").args(flags));
    assert_bad_input(&o);
    assert!(o.stderr.contains("symbolic link"), "{}", o.stderr);
    assert!(!victim.exists());
}

/// `man` pages render with the real man(1) (groff) without a warning, main page and each
/// command's page.
#[test]
fn man_pages_render_with_man_without_warnings() {
    let home = tempfile::tempdir().unwrap();
    for (page, title, words) in [
        ("", "kubectl-oidc_login(1)", "SUBCOMMANDS"),
        (
            "get-token",
            "kubectl-oidc_login-get-token(1)",
            "--oidc-issuer-url",
        ),
        (
            "doctor",
            "kubectl-oidc_login-doctor(1)",
            "--apiserver-oidc-issuer-url",
        ),
    ] {
        let mut c = bin(home.path());
        c.arg("man");
        if !page.is_empty() {
            c.arg(page);
        }
        let roff = run(&mut c);
        assert_eq!(roff.code, 0, "{}", roff.stderr);
        let path = home.path().join("page.1");
        std::fs::write(&path, &roff.stdout).unwrap();
        let shown = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man(1) is installed");
        let text = String::from_utf8_lossy(&shown.stdout);
        let warnings = String::from_utf8_lossy(&shown.stderr);
        assert!(shown.status.success(), "{warnings}");
        assert!(warnings.is_empty(), "groff warnings: {warnings}");
        assert!(text.starts_with(title), "{text}");
        assert!(text.contains(words), "{page}: {text}");
    }
}

/// The bash completion script, loaded into real bash, and the completion function it
/// registers for `kubectl-oidc_login` called as bash calls it (`complete -F`): `$1` the command,
/// `$2` the word being completed, `$3` the word before it, with COMP_WORDS/COMP_CWORD set. The
/// last word of `words` is the one being completed. Returns COMPREPLY.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let script = run(bin(home.path()).args(["completion", "bash"]));
    assert_eq!(script.code, 0, "{}", script.stderr);
    let path = home.path().join("completion.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let shown = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1" || exit 2
shift
spec=$(complete -p kubectl-oidc_login) || exit 3
fn=$(printf '%s' "$spec" | sed -E 's/.*-F ([^ ]+).*/\1/')
[ -n "$fn" ] || exit 4
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
prev=""
[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD-1]}
"$fn" kubectl-oidc_login "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&path)
        .args(words)
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    String::from_utf8_lossy(&shown.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The bash completion script offers every command after the program name.
#[test]
fn bash_completion_offers_every_command_in_bash() {
    let offered = bash_complete(&["kubectl-oidc_login", ""]);
    use clap::CommandFactory;
    let commands: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    for command in &commands {
        assert!(offered.contains(command), "{command}: {offered:?}");
    }
}

/// After `get-token`, bash completes its flags (by prefix, and all of them after `--`), and
/// the values of `--grant-type`: the possible values clap declares, narrowed by prefix.
#[test]
fn bash_completion_completes_get_token_flags_and_grant_type_values() {
    let cmd = ["kubectl-oidc_login", "get-token"];
    let with = |more: &[&str]| bash_complete(&[&cmd[..], more].concat());
    assert_eq!(with(&["--grant"]), vec!["--grant-type"]);
    assert_eq!(with(&["--oidc-iss"]), vec!["--oidc-issuer-url"]);
    let all = with(&["--"]);
    use clap::CommandFactory;
    let get_token = Cli::command();
    let get_token = get_token.find_subcommand("get-token").unwrap();
    for arg in get_token.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            let flag = format!("--{long}");
            assert!(all.contains(&flag), "{flag}: {all:?}");
        }
    }
    // Not another command's flags.
    assert!(
        !all.iter()
            .any(|f| f == "--write-kubeconfig" || f == "--revoke"),
        "{all:?}"
    );

    use clap::ValueEnum;
    let grants: Vec<String> = kubelogin::cli::GrantType::value_variants()
        .iter()
        .filter_map(|g| g.to_possible_value())
        .map(|v| v.get_name().to_string())
        .collect();
    assert_eq!(grants.len(), 6, "{grants:?}");
    assert_eq!(with(&["--grant-type", ""]), grants);
    assert_eq!(with(&["--grant-type", "dev"]), vec!["device-code"]);
    assert_eq!(
        with(&["--grant-type", "authcode"]),
        vec!["authcode", "authcode-keyboard"]
    );
    // Flags after a value still complete.
    assert_eq!(
        with(&["--grant-type", "device-code", "--token-cache-st"]),
        vec!["--token-cache-storage"]
    );
    assert_eq!(
        with(&["--token-cache-storage", ""]),
        vec!["disk", "keyring", "none"]
    );
}

/// The default cache lives under the home directory `directories` finds: `$HOME` when set,
/// else the password database (checked against `getent passwd`, an independent reader of it).
#[test]
fn default_cache_dir_under_home_else_the_password_database() {
    let home = tempfile::tempdir().unwrap();
    let cache_dir = |o: &Out| -> String {
        assert_eq!(o.code, 0, "{}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["cache_dir"].as_str().unwrap().to_string()
    };
    let o = run(bin(home.path()).args(["status", "-o", "json"]));
    assert_eq!(
        cache_dir(&o),
        home.path()
            .join(".kube/cache/oidc-login")
            .display()
            .to_string()
    );

    let uid = rustix::process::getuid().as_raw().to_string();
    let pw = Command::new("getent")
        .args(["passwd", &uid])
        .output()
        .unwrap();
    let line = String::from_utf8(pw.stdout).unwrap();
    let pw_home = line.trim().split(':').nth(5).unwrap().to_string();
    for unset in [None, Some("")] {
        let mut c = bin(home.path());
        match unset {
            None => c.env_remove("HOME"),
            Some(v) => c.env("HOME", v),
        };
        let o = run(c.args(["status", "-o", "json"]));
        assert_eq!(cache_dir(&o), format!("{pw_home}/.kube/cache/oidc-login"));
    }

    // A bad output format is bad input like any other.
    assert_bad_input(&run(bin(home.path()).args(["status", "-o", "yaml"])));
}
