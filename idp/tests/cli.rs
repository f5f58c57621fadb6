//! Black-box tests of the built `kubelogin-idp` binary: the admin commands, `serve`'s start-up
//! refusals and first boot, and `certs` followed by HTTPS serving.
//!
//! Every test has its own temporary directory (database, credentials, certificates) and a port
//! picked by the OS, and every spawned server is killed by a guard even when an assertion fails.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers a test module
// shares; failing loudly is what a test helper should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubelogin-idp");

/// How long a server may take to answer discovery after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one run of the binary produced.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts the failure contract of `main`: exit 1, nothing on stdout, exactly one
    /// `error: ...` line on stderr. Returns that line.
    pub(crate) fn fails(&self) -> &str {
        assert_eq!(self.code, Some(1), "expected exit 1: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout on failure: {self:#?}");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {self:#?}");
        errors[0]
    }
}

/// A throwaway installation: its own working directory (so no stray `.env` is read) and data
/// directory, and a clean environment (so no `DATA_DIR`, `BASE_URL`, ... leaks in).
pub(crate) struct Idp {
    dir: tempfile::TempDir,
}

impl Idp {
    pub(crate) fn new() -> Self {
        Idp {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The binary with a clean environment and the data directory given as `DATA_DIR`.
    pub(crate) fn bare(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .current_dir(self.path())
            .stdin(Stdio::null());
        c
    }

    /// The binary with `--data-dir`.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bare();
        c.arg("--data-dir").arg(self.data_dir()).args(args);
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().unwrap().into()
    }

    pub(crate) fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }

    /// Runs a command expected to succeed and returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok().to_string()
    }

    /// Runs a command expected to fail and returns its `error:` line.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        self.run(args).fails().to_string()
    }
}

/// Kills and reaps a spawned server however the test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago (the OS picked it; the listener is dropped at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `serve` expecting it to refuse to start; a server that starts anyway is killed after
/// the start-up timeout instead of hanging the test.
fn serve_refused(cmd: &mut Command) -> Run {
    let out = tempfile::tempdir().unwrap();
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let child = cmd
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not refuse to start; stderr: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    }
}

/// A `serve` running in the background, its stderr going to a file.
struct Server {
    guard: ChildGuard,
    stderr_path: PathBuf,
    port: u16,
}

impl Server {
    /// Spawns `cmd` (a `serve` without `--addr`) on a fresh port.
    fn spawn(mut cmd: Command, log_dir: &Path) -> Server {
        let port = free_port();
        let stderr_path = log_dir.join("serve.stderr");
        let child = cmd
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Server {
            guard: ChildGuard(child),
            stderr_path,
            port,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls the discovery document until the server answers (bounded), and returns it.
    fn discovery(&mut self, http: &reqwest::blocking::Client, scheme: &str) -> serde_json::Value {
        let url = format!(
            "{scheme}://127.0.0.1:{}/.well-known/openid-configuration",
            self.port
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.guard.0.try_wait().unwrap() {
                panic!("serve exited with {status}; stderr:\n{}", self.stderr());
            }
            let last_error = match http.get(&url).send() {
                Ok(resp) if resp.status().is_success() => return resp.json().unwrap(),
                Ok(resp) => format!("status {}", resp.status()),
                Err(e) => format!("{e:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "no discovery document at {url} within {STARTUP_TIMEOUT:?} ({last_error}); stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The value after `label` on the line that starts with it.
pub(crate) fn field<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

/// The rows of `user list` as (username, status).
pub(crate) fn users(idp: &Idp) -> Vec<(String, String)> {
    idp.ok(&["user", "list"])
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// user
// ---------------------------------------------------------------------------------------------

#[test]
fn user_add_prints_a_generated_password() {
    let idp = Idp::new();
    idp.ok(&["group", "add", "devs"]);
    let out = idp.ok(&[
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.com",
        "--group",
        "devs",
    ]);
    assert!(out.contains("created user alice"), "{out}");
    let password = field(&out, "password:").expect("a generated password is printed");
    assert!(password.len() >= 16, "{password:?}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));

    let show = idp.ok(&["user", "show", "alice"]);
    assert_eq!(field(&show, "username:"), Some("alice"));
    assert_eq!(field(&show, "email:"), Some("alice@example.com"));
    assert_eq!(field(&show, "groups:"), Some("devs"));
    assert_eq!(field(&show, "status:"), Some("active"));
    assert!(!show.contains(password), "show never prints the password");
}

#[test]
fn user_add_password_stdin() {
    let idp = Idp::new();
    let run = idp.run_stdin(
        &[
            "user",
            "add",
            "bob",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "correct horse battery staple\n",
    );
    let out = run.ok();
    assert!(out.contains("created user bob"), "{out}");
    assert!(!out.contains("password"), "no password is printed: {out}");
    assert!(!run.stderr.contains("correct horse"), "{run:#?}");
    assert_eq!(users(&idp), [("bob".to_string(), "active".to_string())]);
}

#[test]
fn user_add_refuses_short_password() {
    let idp = Idp::new();
    let run = idp.run_stdin(
        &[
            "user",
            "add",
            "bob",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    let err = run.fails();
    assert!(err.contains("at least 8 characters"), "{err}");
    assert!(users(&idp).is_empty(), "no user was created");
}

#[test]
fn user_add_refuses_unknown_group() {
    let idp = Idp::new();
    let err = idp.fails(&[
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.com",
        "--group",
        "nope",
    ]);
    assert!(err.contains("nope"), "{err}");
    assert!(
        err.contains("group add"),
        "the error says how to fix it: {err}"
    );
    assert!(users(&idp).is_empty(), "no user was created");
}

#[test]
fn user_add_refuses_duplicate() {
    let idp = Idp::new();
    idp.ok(&["user", "add", "alice", "--email", "alice@example.com"]);
    let err = idp.fails(&["user", "add", "alice", "--email", "other@example.com"]);
    assert!(err.contains("already exists"), "{err}");
    let show = idp.ok(&["user", "show", "alice"]);
    assert_eq!(field(&show, "email:"), Some("alice@example.com"));
}

#[test]
fn user_lifecycle() {
    let idp = Idp::new();
    idp.ok(&["user", "add", "alice", "--email", "alice@example.com"]);
    idp.ok(&["user", "add", "bob", "--email", "bob@example.com"]);
    let list = idp.ok(&["user", "list"]);
    assert!(list.starts_with("USERNAME"), "a header first: {list}");
    assert_eq!(
        users(&idp),
        [
            ("alice".to_string(), "active".to_string()),
            ("bob".to_string(), "active".to_string())
        ]
    );

    let out = idp.ok(&["user", "disable", "alice"]);
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(
        users(&idp)[0],
        ("alice".to_string(), "disabled".to_string())
    );
    assert_eq!(
        field(&idp.ok(&["user", "show", "alice"]), "status:"),
        Some("disabled")
    );
    idp.ok(&["user", "enable", "alice"]);
    assert_eq!(users(&idp)[0], ("alice".to_string(), "active".to_string()));

    let out = idp.ok(&["user", "passwd", "alice"]);
    assert!(out.contains("password of alice changed"), "{out}");
    let p1 = field(&out, "password:").expect("a generated password is printed");
    let out2 = idp.ok(&["user", "passwd", "alice"]);
    assert_ne!(field(&out2, "password:"), Some(p1), "a new one each time");
    let run = idp.run_stdin(
        &["user", "passwd", "alice", "--password-stdin"],
        "another long password\n",
    );
    assert!(!run.ok().contains("password:"), "{run:#?}");
    let err = idp
        .run_stdin(&["user", "passwd", "alice", "--password-stdin"], "short\n")
        .fails()
        .to_string();
    assert!(err.contains("at least 8"), "{err}");

    assert!(idp
        .ok(&["user", "delete", "alice"])
        .contains("deleted alice"));
    assert_eq!(users(&idp), [("bob".to_string(), "active".to_string())]);
    let err = idp.fails(&["user", "show", "alice"]);
    assert!(err.contains("alice"), "{err}");
    idp.fails(&["user", "delete", "alice"]);
    idp.fails(&["user", "disable", "alice"]);
}

// ---------------------------------------------------------------------------------------------
// group
// ---------------------------------------------------------------------------------------------

#[test]
fn group_commands() {
    let idp = Idp::new();
    assert!(idp
        .ok(&["group", "add", "devs"])
        .contains("created group devs"));
    idp.ok(&["group", "add", "ops"]);
    assert!(idp
        .fails(&["group", "add", "devs"])
        .contains("already exists"));
    idp.ok(&["user", "add", "alice", "--email", "alice@example.com"]);
    idp.ok(&["user", "add", "bob", "--email", "bob@example.com"]);

    idp.ok(&["group", "add-member", "devs", "bob"]);
    idp.ok(&["group", "add-member", "devs", "alice"]);
    idp.ok(&["group", "add-member", "ops", "alice"]);
    assert_eq!(idp.ok(&["group", "list"]), "devs: alice bob\nops: alice\n");
    assert_eq!(
        field(&idp.ok(&["user", "show", "alice"]), "groups:"),
        Some("devs ops")
    );
    assert!(idp
        .fails(&["group", "add-member", "nope", "alice"])
        .contains("nope"));
    assert!(idp
        .fails(&["group", "add-member", "devs", "carol"])
        .contains("carol"));

    idp.ok(&["group", "remove-member", "devs", "alice"]);
    assert_eq!(idp.ok(&["group", "list"]), "devs: bob\nops: alice\n");
    idp.fails(&["group", "remove-member", "devs", "alice"]);

    idp.ok(&["group", "delete", "ops"]);
    assert_eq!(idp.ok(&["group", "list"]), "devs: bob\n");
    assert_eq!(
        field(&idp.ok(&["user", "show", "alice"]), "groups:"),
        Some("")
    );
    idp.fails(&["group", "delete", "ops"]);
}

// ---------------------------------------------------------------------------------------------
// client
// ---------------------------------------------------------------------------------------------

#[test]
fn client_public_and_confidential() {
    let idp = Idp::new();
    let out = idp.ok(&[
        "client",
        "add",
        "kubectl",
        "--public",
        "--redirect-uri",
        "http://localhost:8000",
    ]);
    assert_eq!(field(&out, "type:"), Some("public"));
    assert_eq!(field(&out, "redirect_uris:"), Some("http://localhost:8000"));
    assert!(!out.contains("client_secret"), "{out}");

    let out = idp.ok(&[
        "client",
        "add",
        "automation",
        "--confidential",
        "--redirect-uri",
        "http://localhost:9000/cb",
    ]);
    assert_eq!(field(&out, "type:"), Some("confidential"));
    let secret = field(&out, "client_secret:")
        .expect("the secret is printed once")
        .to_string();
    assert!(secret.len() >= 32, "{secret:?}");
    assert!(out.contains("shown once"), "{out}");

    let show = idp.ok(&["client", "show", "automation"]);
    assert_eq!(field(&show, "client_id:"), Some("automation"));
    assert_eq!(field(&show, "type:"), Some("confidential"));
    assert!(
        field(&show, "grant_types:")
            .unwrap()
            .contains("client_credentials"),
        "{show}"
    );
    assert!(
        !show.contains("secret"),
        "show never prints the secret: {show}"
    );
    assert!(!show.contains(&secret));

    let list = idp.ok(&["client", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[0][..2], ["automation", "confidential"]);
    assert_eq!(rows[1][..2], ["kubectl", "public"]);
    assert!(!list.contains(&secret));

    // A new secret each rotation; a public client has none to rotate.
    let rotated = idp.ok(&["client", "rotate-secret", "automation"]);
    let new_secret = field(&rotated, "client_secret:").unwrap();
    assert_ne!(new_secret, secret);
    idp.fails(&["client", "rotate-secret", "kubectl"]);
    idp.fails(&["client", "rotate-secret", "nope"]);

    let out = idp.ok(&["client", "revoke-all", "kubectl"]);
    assert!(out.contains("revoked 0"), "{out}");
    idp.fails(&["client", "revoke-all", "nope"]);

    assert!(idp
        .ok(&["client", "delete", "kubectl"])
        .contains("deleted client kubectl"));
    assert!(idp
        .fails(&["client", "show", "kubectl"])
        .contains("kubectl"));
    idp.fails(&["client", "delete", "kubectl"]);
    assert!(idp
        .fails(&[
            "client",
            "add",
            "automation",
            "--public",
            "--redirect-uri",
            "http://localhost:1"
        ])
        .contains("already exists"));
}

#[test]
fn client_public_refuses_client_credentials() {
    let idp = Idp::new();
    let err = idp.fails(&[
        "client",
        "add",
        "cron",
        "--public",
        "--grant-type",
        "client_credentials",
    ]);
    assert!(err.contains("client_credentials"), "{err}");
    assert!(idp.fails(&["client", "show", "cron"]).contains("cron"));
    assert_eq!(idp.ok(&["client", "list"]), "");
}

// ---------------------------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------------------------

/// `keys list` rows as (kid, alg, status).
fn keys(idp: &Idp) -> Vec<(String, String, String)> {
    let out = idp.ok(&["keys", "list"]);
    assert!(out.starts_with("KID"), "{out}");
    out.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[0].to_string(), c[1].to_string(), c[2].to_string())
        })
        .collect()
}

/// The kid in `keys rotate`'s "new active key KID (ALG)".
fn rotated_kid(out: &str) -> String {
    out.strip_prefix("new active key ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output: {out}"))
        .to_string()
}

#[test]
fn keys_rotate_retires_the_previous_key() {
    let idp = Idp::new();
    assert!(keys(&idp).is_empty());
    let k1 = rotated_kid(&idp.ok(&["keys", "rotate", "--algorithm", "ES256"]));
    assert_eq!(
        keys(&idp),
        [(k1.clone(), "ES256".to_string(), "active".to_string())]
    );
    let k2 = rotated_kid(&idp.ok(&["keys", "rotate", "--algorithm", "ES256"]));
    assert_ne!(k1, k2);
    let mut listed = keys(&idp);
    listed.sort();
    let mut expected = vec![
        (k1, "ES256".to_string(), "retired".to_string()),
        (k2, "ES256".to_string(), "active".to_string()),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn keys_rotate_refuses_hs256() {
    let idp = Idp::new();
    let err = idp.fails(&["keys", "rotate", "--algorithm", "HS256"]);
    assert!(err.contains("HS256"), "{err}");
    assert_eq!(
        err.matches("kube-apiserver").count(),
        1,
        "the reason is given once, not repeated as its own cause: {err}"
    );
    assert!(keys(&idp).is_empty());
}

// ---------------------------------------------------------------------------------------------
// audit
// ---------------------------------------------------------------------------------------------

#[test]
fn audit_lists_admin_actions() {
    let idp = Idp::new();
    idp.ok(&["group", "add", "devs"]);
    idp.ok(&[
        "user",
        "add",
        "alice",
        "--email",
        "a@example.com",
        "--group",
        "devs",
    ]);
    idp.ok(&["user", "disable", "alice"]);
    idp.ok(&[
        "client",
        "add",
        "kubectl",
        "--public",
        "--redirect-uri",
        "http://localhost:8000",
    ]);

    let out = idp.ok(&["audit", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    // Newest first.
    for (line, event) in lines.iter().zip([
        "client_created",
        "user_disabled",
        "user_created",
        "group_created",
    ]) {
        assert!(line.contains(&format!(" {event} ")), "{line} / {event}");
        assert!(line.contains("actor=cli"), "{line}");
    }
    assert!(lines[1].contains("subject=alice"), "{out}");

    let only = idp.ok(&["audit", "list", "--event", "user_created"]);
    assert_eq!(only.lines().count(), 1, "{only}");
    assert_eq!(
        idp.ok(&["audit", "list", "--limit", "2"]).lines().count(),
        2
    );
    assert_eq!(idp.ok(&["audit", "list", "--actor", "someone-else"]), "");
}

#[test]
fn audit_csv_is_formula_safe() {
    let idp = Idp::new();
    // Only names reach the audit log (a display name does not), and `@` is the one formula
    // trigger a user name may start with.
    idp.ok(&[
        "user",
        "add",
        "@SUM",
        "--email",
        "x@example.com",
        "--name",
        "=HYPERLINK(\"http://evil\")",
    ]);
    let csv = idp.ok(&["audit", "list", "--csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,at,event,severity,actor,subject,client_id,ip,user_agent,details")
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row.len(), 10, "{csv}");
    assert_eq!(row[2], "user_created");
    assert!(
        row[4].starts_with("cli:"),
        "the actor is cli:<unix user>: {csv}"
    );
    assert_eq!(
        row[5], "'@SUM",
        "a formula-looking value is prefixed with '"
    );
    assert_eq!(lines.next(), None);
    for field in csv.split([',', '\n']) {
        assert!(
            !field.starts_with(['=', '+', '-', '@']),
            "unguarded field {field:?} in {csv}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// serve: refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_refuses_base_url_with_trailing_slash() {
    let idp = Idp::new();
    let mut cmd = idp.cmd(&["serve", "--addr", &format!("127.0.0.1:{}", free_port())]);
    cmd.env("BASE_URL", "http://127.0.0.1:1/");
    let run = serve_refused(&mut cmd);
    let err = run.fails();
    assert!(err.contains("slash"), "{err}");
    assert!(
        err.contains("\"http://127.0.0.1:1\""),
        "suggests the fix: {err}"
    );
}

#[test]
fn serve_refuses_base_url_with_query() {
    let idp = Idp::new();
    let mut cmd = idp.cmd(&["serve", "--addr", &format!("127.0.0.1:{}", free_port())]);
    cmd.env("BASE_URL", "http://127.0.0.1:1/realm?tenant=a");
    let err = serve_refused(&mut cmd).fails().to_string();
    assert!(err.contains("query"), "{err}");
}

#[test]
fn serve_refuses_hs256() {
    let idp = Idp::new();
    let mut cmd = idp.cmd(&["serve", "--addr", &format!("127.0.0.1:{}", free_port())]);
    cmd.env("JWT_SIGNING_ALGORITHM", "HS256");
    let err = serve_refused(&mut cmd).fails().to_string();
    assert!(err.contains("HS256"), "{err}");
    assert!(err.contains("kube-apiserver"), "{err}");
}

#[test]
fn serve_refuses_existing_credentials_file_and_creates_no_admin() {
    let idp = Idp::new();
    let creds = idp.path().join("creds.txt");
    std::fs::write(&creds, "someone else's file\n").unwrap();
    let mut cmd = idp.cmd(&["serve", "--addr", &format!("127.0.0.1:{}", free_port())]);
    cmd.env("CREDENTIALS_FILE", &creds);
    let err = serve_refused(&mut cmd).fails().to_string();
    assert!(err.contains("credentials file"), "{err}");
    assert!(
        err.contains(creds.to_str().unwrap()),
        "names the file: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        "someone else's file\n",
        "an existing file is never overwritten"
    );
    assert!(
        users(&idp).is_empty(),
        "no admin without a readable password"
    );
    assert_eq!(idp.ok(&["client", "list"]), "", "first boot did nothing");
}

#[test]
fn serve_refuses_credentials_file_under_a_file() {
    let idp = Idp::new();
    let blocker = idp.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let creds = blocker.join("creds.txt");
    let mut cmd = idp.cmd(&["serve", "--addr", &format!("127.0.0.1:{}", free_port())]);
    cmd.env("CREDENTIALS_FILE", &creds);
    let err = serve_refused(&mut cmd).fails().to_string();
    assert!(
        err.contains(creds.to_str().unwrap()),
        "names the file: {err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "said once: {err}");
    assert!(
        users(&idp).is_empty(),
        "no admin without a readable password"
    );
}

// ---------------------------------------------------------------------------------------------
// serve: first boot
// ---------------------------------------------------------------------------------------------

#[test]
fn serve_first_boot() {
    let idp = Idp::new();
    // The data directory from the environment this time.
    let mut cmd = idp.bare();
    cmd.env("DATA_DIR", idp.data_dir())
        .env("JWT_SIGNING_ALGORITHM", "ES256")
        .arg("serve");
    let mut server = Server::spawn(cmd, idp.path());
    let doc = server.discovery(&http_client(), "http");
    assert_eq!(
        doc["issuer"],
        format!("http://127.0.0.1:{}", server.port).as_str()
    );

    let creds = idp.data_dir().join("kubelogin-idp-credentials.txt");
    #[cfg(unix)]
    assert_eq!(mode(&creds), 0o600);
    let text = std::fs::read_to_string(&creds).unwrap();
    assert!(text.contains("username=admin"), "{text}");
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .expect("password= line")
        .trim()
        .to_string();
    assert!(password.len() >= 16, "{password:?}");
    let log = server.stderr();
    assert!(
        log.contains(creds.to_str().unwrap()),
        "the log names the file: {log}"
    );
    assert!(
        !log.contains(&password),
        "the log never shows the password: {log}"
    );

    // Admin commands share the database with the running server.
    let out = idp.ok(&["user", "add", "alice", "--email", "alice@example.com"]);
    assert!(out.contains("created user alice"), "{out}");
    let names: Vec<String> = users(&idp).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["admin", "alice"]);
    let clients = idp.ok(&["client", "list"]);
    assert!(clients.starts_with("kubelogin "), "{clients}");
    assert!(
        keys(&idp)
            .iter()
            .any(|(_, alg, status)| alg == "ES256" && status == "active"),
        "the server stored its signing key"
    );
    // The server is still up after the concurrent writes.
    assert!(http_client()
        .get(format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            server.port
        ))
        .send()
        .unwrap()
        .status()
        .is_success());
}

// ---------------------------------------------------------------------------------------------
// signing keys at rest (KEY_ENCRYPTION_KEY_FILE)
// ---------------------------------------------------------------------------------------------

/// A key encryption key file as the README says to make one: base64 of 32 random bytes.
#[cfg(unix)]
fn kek_file(idp: &Idp, name: &str, mode: u32) -> PathBuf {
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let path = idp.path().join(name);
    std::fs::write(
        &path,
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Everything SQLite keeps on disk for the database: the file and its write-ahead log.
fn database_bytes(idp: &Idp) -> Vec<u8> {
    let db = idp.data_dir().join("kubelogin-idp.db");
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(idp.data_dir().join("kubelogin-idp.db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `keys list` rows as (kid, at rest).
fn keys_at_rest(idp: &Idp) -> Vec<(String, String)> {
    idp.ok(&["keys", "list"])
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[0].to_string(), c[c.len() - 1].to_string())
        })
        .collect()
}

/// Starts `serve` with `kek` (if any), waits until the first boot's key is published, and
/// returns the published kids; the server is stopped on return.
fn serve_once(idp: &Idp, kek: Option<&Path>) -> Vec<String> {
    let mut cmd = idp.cmd(&["serve"]);
    cmd.env("JWT_SIGNING_ALGORITHM", "ES256");
    if let Some(kek) = kek {
        cmd.env("KEY_ENCRYPTION_KEY_FILE", kek);
    }
    let mut server = Server::spawn(cmd, idp.path());
    server.discovery(&http_client(), "http");
    // JWKS waits for a first boot's key to be generated and stored.
    let jwks: serde_json::Value = http_client()
        .get(format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            server.port
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 7 item 10b: with a key encryption key the database holds no PEM, and without it (or
/// with another one) the server refuses to start instead of making new keys.
#[cfg(unix)]
#[test]
fn serve_with_a_kek_stores_no_pem_and_refuses_to_start_without_it() {
    let idp = Idp::new();
    let kek = kek_file(&idp, "kek", 0o600);
    let published = serve_once(&idp, Some(&kek));
    assert_eq!(published.len(), 1);
    assert_eq!(
        keys_at_rest(&idp),
        [(published[0].clone(), "encrypted".to_string())]
    );
    let disk = database_bytes(&idp);
    assert!(holds(&disk, "enc:v1:"), "the key is in the database");
    assert!(
        !holds(&disk, "PRIVATE KEY"),
        "no PEM anywhere in the database or its WAL"
    );

    let addr = format!("127.0.0.1:{}", free_port());
    let err = serve_refused(&mut idp.cmd(&["serve", "--addr", &addr]))
        .fails()
        .to_string();
    assert!(
        err.contains("encrypted signing keys") && err.contains("KEY_ENCRYPTION_KEY_FILE"),
        "{err}"
    );
    let other = kek_file(&idp, "other-kek", 0o600);
    let mut cmd = idp.cmd(&["serve", "--addr", &addr]);
    cmd.env("KEY_ENCRYPTION_KEY_FILE", &other);
    let err = serve_refused(&mut cmd).fails().to_string();
    assert!(err.contains("cannot be decrypted"), "{err}");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = idp.cmd(&["serve", "--addr", &addr]);
        cmd.arg("--key-encryption-key-file").arg(&kek);
        let err = serve_refused(&mut cmd).fails().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // The admin command that writes keys follows the same rules.
    let err = idp.fails(&["keys", "rotate", "--algorithm", "ES256"]);
    assert!(err.contains("KEY_ENCRYPTION_KEY_FILE"), "{err}");
    let kek_arg = kek.to_str().unwrap();
    let out = idp.ok(&[
        "keys",
        "rotate",
        "--algorithm",
        "ES256",
        "--key-encryption-key-file",
        kek_arg,
    ]);
    let new_kid = rotated_kid(&out);
    let rows = keys_at_rest(&idp);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|(_, at_rest)| at_rest == "encrypted"),
        "{rows:?}"
    );
    assert!(!holds(&database_bytes(&idp), "PRIVATE KEY"));

    // And the right file still starts the server, which signs with the rotated key.
    let published = serve_once(&idp, Some(&kek));
    assert!(published.contains(&new_kid), "{published:?}");
}

/// Issue 7 item 10b: keys stored before a key encryption key was configured are encrypted when
/// the server starts with one, and their plaintext does not stay behind in the file.
#[cfg(unix)]
#[test]
fn serve_with_a_kek_encrypts_existing_plaintext_keys() {
    let idp = Idp::new();
    // Two keys, so one row is not the last one written: its cell is freed in the middle of its
    // page when it is rewritten, where SQLite leaves the old bytes unless told to zero them.
    let retired = rotated_kid(&idp.ok(&["keys", "rotate", "--algorithm", "ES256"]));
    let active = rotated_kid(&idp.ok(&["keys", "rotate", "--algorithm", "ES256"]));
    let mut rows = keys_at_rest(&idp);
    rows.sort();
    let mut expected = vec![
        (retired.clone(), "plaintext".to_string()),
        (active.clone(), "plaintext".to_string()),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    assert!(
        holds(&database_bytes(&idp), "PRIVATE KEY"),
        "the check can see a PEM"
    );

    let kek = kek_file(&idp, "kek", 0o600);
    let mut published = serve_once(&idp, Some(&kek));
    published.sort();
    let mut both = vec![retired, active];
    both.sort();
    assert_eq!(published, both, "the same keys");
    assert!(
        keys_at_rest(&idp)
            .iter()
            .all(|(_, at_rest)| at_rest == "encrypted"),
        "{:?}",
        keys_at_rest(&idp)
    );
    assert!(
        !holds(&database_bytes(&idp), "PRIVATE KEY"),
        "the plaintext is overwritten, not left in free space or the WAL"
    );
}

// ---------------------------------------------------------------------------------------------
// certs + HTTPS
// ---------------------------------------------------------------------------------------------

#[test]
fn certs_then_serve_https() {
    let idp = Idp::new();
    let certs = idp.path().join("certs");
    let out = idp
        .bare()
        .args([
            "certs",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(&certs)
        .output()
        .unwrap();
    let run = Run::from(out);
    let stdout = run.ok();
    let ca = certs.join("ca.crt");
    assert!(
        stdout.contains(ca.to_str().unwrap()),
        "prints the CA path: {stdout}"
    );
    for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
        assert!(certs.join(f).is_file(), "{f} exists");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&certs.join("ca.key")), 0o600);
        assert_eq!(mode(&certs.join("server.key")), 0o600);
    }

    let mut cmd = idp.cmd(&["serve"]);
    cmd.env("TLS_CERT_FILE", certs.join("server.crt"))
        .env("TLS_KEY_FILE", certs.join("server.key"))
        .env("JWT_SIGNING_ALGORITHM", "ES256");
    let mut server = Server::spawn(cmd, idp.path());
    // Trust exactly the new CA, nothing from the system.
    let ca_pem = std::fs::read(&ca).unwrap();
    let https = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let doc = server.discovery(&https, "https");
    let issuer = doc["issuer"].as_str().unwrap();
    assert!(issuer.starts_with("https://"), "{issuer}");
    assert_eq!(issuer, format!("https://127.0.0.1:{}", server.port));
    assert!(doc["jwks_uri"].as_str().unwrap().starts_with("https://"));

    // Without the CA the certificate is not trusted.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!(
            "https://127.0.0.1:{}/.well-known/openid-configuration",
            server.port
        ))
        .send()
        .is_err());
}
