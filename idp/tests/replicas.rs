//! Several replicas on one PostgreSQL database: two real `kubelogin-idp serve` processes (A and
//! B) on a fresh database of the throwaway cluster (`idp::testing::pg`), seeded with the admin
//! CLI through the same `DATABASE_URL`. Whatever one replica (or an admin command) changes, the
//! other acts on at once: there is no per-process state that could disagree.
//!
//! Waits are bounded polls, never a sleep standing in for an event.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kubelogin-idp");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const CLIENT: &str = "legacy";
const ALICE_PASSWORD: &str = "alice-password-123";

/// A running `serve`, killed and reaped on drop.
struct Replica {
    child: Child,
    stderr_path: PathBuf,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// Two replicas on one fresh database with user alice and a public client allowed the password
/// and refresh grants.
struct Pair {
    dir: tempfile::TempDir,
    url: String,
    a: Replica,
    b: Replica,
    http: reqwest::blocking::Client,
}

impl Pair {
    fn start() -> Pair {
        let cluster = idp::testing::pg::PgCluster::shared();
        let url = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cluster.database())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pair_dir = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (dir_a, dir_b) = (pair_dir("a"), pair_dir("b"));
        let cli = dir.path().to_path_buf();
        let mut add = cmd(
            &cli,
            &url,
            &[
                "user",
                "add",
                "alice",
                "--email",
                "alice@example.com",
                "--password-stdin",
            ],
        );
        let mut child = add
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{ALICE_PASSWORD}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "user add: {out:?}");
        ok(
            &cli,
            &url,
            &[
                "client",
                "add",
                CLIENT,
                "--public",
                "--grant-type",
                "password",
                "--grant-type",
                "refresh_token",
                "--scope",
                "openid",
                "--scope",
                "offline_access",
            ],
        );
        // The periodic key reload is an hour away: only the changes channel can tell a replica
        // about a rotation in time.
        let a = spawn(&dir_a, &url);
        let b = spawn(&dir_b, &url);
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let pair = Pair {
            dir,
            url,
            a,
            b,
            http,
        };
        pair.wait_up(&pair.a);
        pair.wait_up(&pair.b);
        pair
    }

    fn cli(&self) -> &Path {
        self.dir.path()
    }

    fn wait_up(&self, r: &Replica) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(resp) = self.http.get(format!("{}/health", r.base)).send() {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "a replica did not come up; stderr:\n{}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// POSTs a token request to `r`; returns the status and the JSON body.
    fn token(&self, r: &Replica, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}/oauth/token", r.base))
            .form(form)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(serde_json::Value::Null))
    }

    /// Logs alice in with the password grant on `r`; returns the token response.
    fn login(&self, r: &Replica) -> serde_json::Value {
        let (status, body) = self.token(
            r,
            &[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("scope", "openid offline_access"),
            ],
        );
        assert_eq!(status, 200, "{body}; stderr:\n{}", r.stderr());
        body
    }

    fn refresh(&self, r: &Replica, refresh_token: &str) -> (u16, serde_json::Value) {
        self.token(
            r,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT),
                ("refresh_token", refresh_token),
            ],
        )
    }
}

/// The binary with a clean environment, the database URL and a data directory of its own.
fn cmd(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", url)
        .env("JWT_SIGNING_ALGORITHM", "ES256")
        .current_dir(dir)
        .stdin(Stdio::null())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args);
    c
}

fn ok(dir: &Path, url: &str, args: &[&str]) -> String {
    let out = cmd(dir, url, args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn spawn(dir: &Path, url: &str) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr_path = dir.join("serve.stderr");
    let child = cmd(dir, url, &["serve", "--addr", &format!("127.0.0.1:{port}")])
        .env("KEY_RELOAD_INTERVAL", "1h")
        .env("REFRESH_TOKEN_REUSE_GRACE", "30s")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    Replica {
        child,
        stderr_path,
        base: format!("http://127.0.0.1:{port}"),
    }
}

fn str_of<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// The `kid` in a JWT's header.
fn kid_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    str_of(&header, "kid").to_string()
}

/// Log in on A, refresh on B: the family A started is B's to rotate, and A sees the rotation.
#[test]
fn login_on_a_refresh_on_b() {
    let p = Pair::start();
    let first = p.login(&p.a);
    let (status, second) = p.refresh(&p.b, str_of(&first, "refresh_token"));
    assert_eq!(status, 200, "{second}; B's stderr:\n{}", p.b.stderr());
    assert!(second["id_token"].is_string());
    // The successor works on A; the first token, past the grace window's use, is B's history.
    let (status, third) = p.refresh(&p.a, str_of(&second, "refresh_token"));
    assert_eq!(status, 200, "{third}");
}

/// 50 refreshes of one token at once, half on A and half on B: every one is answered 200 with
/// the same successor (one rotation, the others inside the grace window), and the family is left
/// with one live chain that keeps working.
#[test]
fn fifty_concurrent_refreshes_across_replicas_leave_one_chain() {
    let p = Pair::start();
    let first = p.login(&p.a);
    let token = str_of(&first, "refresh_token").to_string();
    let barrier = std::sync::Barrier::new(50);
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|n| {
                let (p, token, barrier) = (&p, &token, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    p.refresh(if n % 2 == 0 { &p.a } else { &p.b }, token)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    let successors: std::collections::BTreeSet<&str> = results
        .iter()
        .map(|(_, b)| str_of(b, "refresh_token"))
        .collect();
    assert_eq!(successors.len(), 1, "the family forked: {successors:?}");
    let out = ok(p.cli(), &p.url, &["client", "tokens", CLIENT]);
    assert!(
        out.contains("live refresh token families: 1\n"),
        "one live family: {out}"
    );
    let successor = successors.into_iter().next().unwrap();
    let (status, next) = p.refresh(&p.b, successor);
    assert_eq!(status, 200, "{next}");
}

/// A client's forced re-authentication is refused on the other replica at once: the refresh
/// token dies on B with no delay.
#[test]
fn revoke_all_is_refused_on_the_other_replica_at_once() {
    let p = Pair::start();
    let on_a = p.login(&p.a);
    // Through A's database, by the admin command (the console's revoke-all calls the same
    // store operation).
    ok(p.cli(), &p.url, &["client", "revoke-all", CLIENT]);
    let (status, body) = p.refresh(&p.b, str_of(&on_a, "refresh_token"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// A user disabled (here by the admin command on the shared database) cannot refresh on either
/// replica, whichever issued the token.
#[test]
fn a_user_disabled_cannot_refresh_on_the_other_replica() {
    let p = Pair::start();
    let on_b = p.login(&p.b);
    ok(p.cli(), &p.url, &["user", "disable", "alice"]);
    let (status, body) = p.refresh(&p.a, str_of(&on_b, "refresh_token"));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// A key rotated by another process is the key both replicas sign with within a second, though
/// their periodic reload is an hour away: the rotation is announced on the changes channel.
#[test]
fn a_rotated_key_signs_on_both_replicas_within_a_second() {
    let p = Pair::start();
    let mut token = str_of(&p.login(&p.a), "refresh_token").to_string();
    let out = ok(p.cli(), &p.url, &["keys", "rotate"]);
    let rotated_at = Instant::now();
    // "new active key KID (ALG)"
    let new_kid = out
        .strip_prefix("new active key ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output: {out}"))
        .to_string();
    for replica in [&p.b, &p.a] {
        loop {
            let (status, body) = p.refresh(replica, &token);
            assert_eq!(status, 200, "{body}");
            token = str_of(&body, "refresh_token").to_string();
            let kid = kid_of(str_of(&body, "id_token"));
            if kid == new_kid {
                break;
            }
            assert!(
                rotated_at.elapsed() < Duration::from_secs(1),
                "still signing with {kid} a second after the rotation to {new_kid}; stderr:\n{}",
                replica.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Two replicas started together on an empty database both serve: one migrates while the other
/// waits on the advisory lock, one creates the first admin and the other finds it there (and
/// keeps no credentials file with a password that opens nothing).
#[test]
fn two_replicas_starting_together_on_an_empty_database_both_serve() {
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(idp::testing::pg::PgCluster::shared().database())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .collect();
    let replicas: Vec<Replica> = dirs.iter().map(|d| spawn(d, &url)).collect();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for r in &replicas {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let up = http
                .get(format!("{}/health", r.base))
                .send()
                .is_ok_and(|resp| resp.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a replica did not come up; stderr:\n{}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let users = ok(dir.path(), &url, &["user", "list"]);
    assert_eq!(
        users.lines().filter(|l| l.starts_with("admin ")).count(),
        1,
        "{users}"
    );
    let credentials = dirs
        .iter()
        .filter(|d| d.join("data/kubelogin-idp-credentials.txt").exists())
        .count();
    assert_eq!(credentials, 1, "one credentials file, the winner's");
}

/// Wrong passwords for one account, split across A and B, add up: the throttle's counters are
/// in the database, so after `LOGIN_MAX_FAILURES` (5) failures in total (3 on A, 2 on B, fewer
/// than the limit on either) the account is locked from that address on both replicas, even
/// with the right password. With counters per process neither replica would have locked it.
#[test]
fn failed_logins_split_across_replicas_add_up_to_a_lock_on_both() {
    let p = Pair::start();
    let attempt = |r: &Replica, password: &str| {
        p.token(
            r,
            &[
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("username", "alice"),
                ("password", password),
                ("scope", "openid"),
            ],
        )
    };
    for n in 0..5 {
        let r = if n % 2 == 0 { &p.a } else { &p.b };
        let (status, body) = attempt(r, &format!("wrong-guess-{n}"));
        assert_eq!(status, 400, "failure {n}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    for r in [&p.a, &p.b] {
        let (status, body) = attempt(r, ALICE_PASSWORD);
        assert_eq!(status, 429, "{body}; stderr:\n{}", r.stderr());
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    let audit = ok(
        p.cli(),
        &p.url,
        &["audit", "list", "--event", "login_throttled"],
    );
    assert!(audit.contains("user alice from 127.0.0.1"), "{audit}");
    // One row for the lock, whichever replica refused: its count is the total.
    assert_eq!(audit.matches("login_throttled").count(), 1, "{audit}");
    assert!(audit.contains("2 attempts refused"), "{audit}");
}
