//! No acknowledged token lost (issue 10 §6): a real `kubelogin-idp serve` is killed with SIGKILL
//! in the middle of a refresh load and restarted on the same database. Every refresh token the
//! load received in a 200 response must still work, and every family must still be one chain:
//! one live token, its predecessors answered from the grace window with that same token, and
//! refused (with the whole family revoked) once the window is over.
//!
//! The scenario is written against [`Database`]: SQLite in the data directory, and PostgreSQL
//! on the throwaway cluster of `idp::testing::pg` (its URL in `DATABASE_URL`, `psql` for the
//! read-only checks). The PostgreSQL server itself is not killed: it is the IdP process whose
//! death must not lose an acknowledged token.
//!
//! Bounded: 16 workers, the kill after 400 acknowledged refreshes, every wait a bounded poll;
//! loopback only, on ports the OS picked.

use idp::clock::{Clock, SystemClock};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKERS: usize = 16;
/// The server is killed when this many refreshes have been acknowledged (200) in all.
const KILL_AFTER: u64 = 400;
/// No worker goes on past this many refreshes, should the kill never come.
const MAX_PER_WORKER: u64 = KILL_AFTER;
const CLIENT_ID: &str = "durability";
const USER: &str = "dora";
const PASSWORD: &str = "durability-password-1234";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server keeps its state, and a read-only look at it.
trait Database {
    /// The environment that points `kubelogin-idp` (serve and admin commands) at it.
    fn env(&self) -> Vec<(&'static str, String)>;
    /// Runs one read-only query; its rows, one per line, columns separated by `|`.
    fn query(&self, sql: &str) -> String;
}

/// SQLite in the data directory (the default `sqlite://<data dir>/kubelogin-idp.db`), read with
/// the `sqlite3` shell opened read-only.
struct Sqlite {
    data_dir: PathBuf,
}

impl Database for Sqlite {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("DATA_DIR", self.data_dir.display().to_string())]
    }

    fn query(&self, sql: &str) -> String {
        let out = Command::new("sqlite3")
            .arg("-readonly")
            .arg(self.data_dir.join("kubelogin-idp.db"))
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .expect("the sqlite3 shell (Debian sqlite3) must be installed");
        assert!(
            out.status.success(),
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A database on the throwaway PostgreSQL cluster (`idp::testing::pg`), read with `psql`.
struct Postgres {
    url: String,
    /// `serve` still keeps its first-boot credentials file in a data directory.
    data_dir: PathBuf,
    psql: PathBuf,
}

impl Database for Postgres {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATA_DIR", self.data_dir.display().to_string()),
            ("DATABASE_URL", self.url.clone()),
        ]
    }

    fn query(&self, sql: &str) -> String {
        let out = Command::new(&self.psql)
            .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&self.url)
            .args(["-c", "SET default_transaction_read_only = on;"])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql (Debian postgresql-client) must be installed");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The SET prints its tag ("SET") first.
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| *l != "SET")
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The built server binary; `cargo test --workspace` (tests/run-all.sh) builds it next to this
/// test's own directory.
fn idp_bin() -> PathBuf {
    let bin = e2e::bin_dir().join("kubelogin-idp");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p idp` (tests/run-all.sh builds the workspace)",
        bin.display()
    );
    bin
}

/// A running `kubelogin-idp serve`; killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Server {
    fn start(db: &dyn Database, dir: &Path, extra: &[(&str, &str)]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stderr_path = dir.join(format!("serve-{port}.stderr"));
        let mut cmd = Command::new(idp_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("JWT_SIGNING_ALGORITHM", "ES256")
            .envs(db.env())
            .envs(extra.iter().copied())
            .current_dir(dir)
            .args(["serve", "--addr", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut server = Server {
            child: cmd.spawn().unwrap(),
            addr,
            stderr_path,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !discovery_ok(addr) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("serve exited ({status}): {}", server.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not answer within {STARTUP_TIMEOUT:?}: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server
    }

    fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no shutdown code runs.
    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn discovery_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(50))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

/// An admin command on the same database, expected to succeed.
fn admin(db: &dyn Database, dir: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(idp_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(db.env())
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubelogin-idp {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The outcome of one token request: the new refresh token, or why there is none.
#[derive(Debug)]
enum Answer {
    Ok(String),
    /// An HTTP answer other than 200: status and body.
    Refused(u16, String),
    /// No HTTP answer (connection refused or reset, timeout).
    Transport(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ok(_) => write!(f, "200 with a refresh token"),
            Answer::Refused(status, body) => write!(f, "HTTP {status}: {body}"),
            Answer::Transport(e) => write!(f, "no answer: {e}"),
        }
    }
}

async fn token_request(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Answer {
    let resp = match client.post(url).form(form).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Transport(e.to_string()),
    };
    let status = resp.status().as_u16();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return Answer::Transport(e.to_string()),
    };
    if status != 200 {
        return Answer::Refused(status, body);
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    Answer::Ok(json["refresh_token"].as_str().unwrap().to_string())
}

async fn refresh(client: &reqwest::Client, url: &str, token: &str) -> Answer {
    token_request(
        client,
        url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", token),
        ],
    )
    .await
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What one worker knows when the load ends.
#[derive(Debug)]
struct Chain {
    /// The last refresh token received in a 200 response.
    last_ok: String,
    acknowledged: u64,
    /// An error answered while the server was still meant to be up (a failure of the test).
    error_before_kill: Option<String>,
}

/// Rotates one family until the server dies (or `MAX_PER_WORKER`), remembering the last token
/// acknowledged; the refresh that makes the total reach `KILL_AFTER` fires `kill_now`.
async fn worker(
    url: String,
    first: String,
    acknowledged: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    kill_now: Arc<tokio::sync::Notify>,
) -> Chain {
    let client = http_client();
    let mut chain = Chain {
        last_ok: first,
        acknowledged: 0,
        error_before_kill: None,
    };
    while chain.acknowledged < MAX_PER_WORKER {
        match refresh(&client, &url, &chain.last_ok).await {
            Answer::Ok(next) => {
                chain.last_ok = next;
                chain.acknowledged += 1;
                if acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                    kill_now.notify_one();
                }
            }
            other => {
                if !killed.load(Ordering::SeqCst) {
                    chain.error_before_kill = Some(other.to_string());
                }
                break;
            }
        }
    }
    chain
}

/// One row per family of the test client: (revoked 0/1, count of unrotated tokens).
fn families(db: &dyn Database) -> Vec<(u32, u32)> {
    db.query(&format!(
        "SELECT CASE WHEN f.revoked_at IS NULL THEN 0 ELSE 1 END, \
           (SELECT COUNT(*) FROM refresh_tokens t WHERE t.family_id = f.id AND t.rotated_at IS NULL) \
         FROM token_families f WHERE f.client_id = '{CLIENT_ID}' ORDER BY f.id"
    ))
    .lines()
    .map(|l| {
        let (a, b) = l.split_once('|').unwrap();
        (a.trim().parse().unwrap(), b.trim().parse().unwrap())
    })
    .collect()
}

fn sigkill_loses_no_acknowledged_token(db: &dyn Database, dir: &Path) {
    // The grace window at its maximum (60 s) while the load runs and after the restart: the one
    // rotation a worker may not have heard about (its response was lost in the kill) must not
    // push an acknowledged token out of the window, however slow the restart.
    let grace = [("REFRESH_TOKEN_REUSE_GRACE", "60s")];
    let mut server = Server::start(db, dir, &grace);
    admin(
        db,
        dir,
        &[
            "user",
            "add",
            USER,
            "--email",
            "dora@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    admin(
        db,
        dir,
        &[
            "client",
            "add",
            CLIENT_ID,
            "--public",
            "--grant-type",
            "password",
            "--grant-type",
            "refresh_token",
        ],
        None,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // One family per worker (sequential password grants: each runs argon2 on the server).
    let url = server.token_url();
    let firsts: Vec<String> = rt.block_on(async {
        let client = http_client();
        let mut v = Vec::new();
        for _ in 0..WORKERS {
            let form = [
                ("grant_type", "password"),
                ("client_id", CLIENT_ID),
                ("username", USER),
                ("password", PASSWORD),
                ("scope", "openid email"),
            ];
            match token_request(&client, &url, &form).await {
                Answer::Ok(t) => v.push(t),
                other => panic!("password grant: {other}"),
            }
        }
        v
    });

    // The load, and SIGKILL once KILL_AFTER refreshes have been acknowledged: the other workers
    // have requests in flight at that moment.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let kill_now = Arc::new(tokio::sync::Notify::new());
    let chains: Vec<Chain> = rt.block_on(async {
        let handles: Vec<_> = firsts
            .into_iter()
            .map(|t| {
                tokio::spawn(worker(
                    url.clone(),
                    t,
                    acknowledged.clone(),
                    killed.clone(),
                    kill_now.clone(),
                ))
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(120), kill_now.notified())
            .await
            .expect("the load did not reach KILL_AFTER refreshes within 120 s");
        killed.store(true, Ordering::SeqCst);
        server.sigkill();
        let mut chains = Vec::new();
        for h in handles {
            chains.push(h.await.unwrap());
        }
        chains
    });
    for c in &chains {
        assert!(
            c.error_before_kill.is_none(),
            "a refresh failed before the kill: {:?}",
            c.error_before_kill
        );
    }
    let total: u64 = chains.iter().map(|c| c.acknowledged).sum();
    assert!(
        total >= KILL_AFTER,
        "{total} refreshes acknowledged before the kill"
    );
    assert!(
        chains.iter().all(|c| c.acknowledged < MAX_PER_WORKER),
        "a worker ran to its bound: the kill came too late to be in the middle of the load"
    );
    let killed_stderr = server.stderr();
    drop(server);

    // Restart on the same database.
    let server = Server::start(db, dir, &grace);
    let url = server.token_url();
    let successors: Vec<String> = rt.block_on(async {
        let client = http_client();
        let mut successors = Vec::new();
        for (i, c) in chains.iter().enumerate() {
            // 1. The token acknowledged last still works: either it is the live token, or the
            //    server committed one more rotation whose answer the kill cut off, and the grace
            //    window hands back that successor (RFC 9700 §4.14.2).
            let next = match refresh(&client, &url, &c.last_ok).await {
                Answer::Ok(t) => t,
                other => panic!(
                    "worker {i}: its last acknowledged refresh token (after {} refreshes) was lost: {other}\nkilled server's stderr:\n{killed_stderr}",
                    c.acknowledged
                ),
            };
            // 2. Presented again, it gets the same successor: the family did not fork.
            match refresh(&client, &url, &c.last_ok).await {
                Answer::Ok(t) => assert_eq!(
                    t, next,
                    "worker {i}: the rotated token started a second live chain"
                ),
                other => panic!("worker {i}: retry within the grace window refused: {other}"),
            }
            successors.push(next);
        }
        successors
    });

    // 3. In the database: every family alive, each with exactly one unrotated token.
    let rows = families(db);
    assert_eq!(rows.len(), WORKERS, "families of {CLIENT_ID}: {rows:?}");
    for (revoked, live) in &rows {
        assert_eq!(
            (*revoked, *live),
            (0, 1),
            "a family is half-rotated or revoked (revoked, live tokens): {rows:?}"
        );
    }
    drop(server);

    // 4. Reuse detection once the window is over: a server with no grace window refuses every
    //    rotated token and revokes its family, so the successor handed out above dies with it
    //    (one chain, not two). The window is counted in the server's whole clock seconds, so
    //    the one wait here is for the wall clock to leave the second of the last rotation; a
    //    bounded poll of at most one second on the clock the server itself reads.
    let last_rotation = SystemClock.now();
    let deadline = Instant::now() + Duration::from_secs(3);
    while SystemClock.now() <= last_rotation {
        assert!(Instant::now() < deadline, "the clock did not advance");
        std::thread::sleep(Duration::from_millis(10));
    }
    let server = Server::start(db, dir, &[("REFRESH_TOKEN_REUSE_GRACE", "0")]);
    let url = server.token_url();
    rt.block_on(async {
        let client = http_client();
        for (i, (c, next)) in chains.iter().zip(&successors).enumerate() {
            match refresh(&client, &url, &c.last_ok).await {
                Answer::Refused(400, body) => assert!(body.contains("invalid_grant"), "{body}"),
                other => panic!("worker {i}: a reused refresh token was not refused: {other}"),
            }
            match refresh(&client, &url, next).await {
                Answer::Refused(400, body) => assert!(body.contains("invalid_grant"), "{body}"),
                other => panic!(
                    "worker {i}: the live token survived the reuse of its predecessor: {other}"
                ),
            }
        }
    });
    let rows = families(db);
    assert!(
        rows.iter().all(|(revoked, _)| *revoked == 1),
        "reuse left a family alive: {rows:?}"
    );
}

#[test]
fn sqlite_sigkill_during_refresh_load_loses_no_acknowledged_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite {
        data_dir: dir.path().join("data"),
    };
    sigkill_loses_no_acknowledged_token(&db, dir.path());
}

#[test]
fn postgres_sigkill_during_refresh_load_loses_no_acknowledged_token() {
    let cluster = idp::testing::pg::PgCluster::shared();
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cluster.database())
        .unwrap();
    let psql = [cluster.bin().join("psql"), PathBuf::from("/usr/bin/psql")]
        .into_iter()
        .find(|p| p.is_file())
        .expect("psql (Debian postgresql-client) must be installed");
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres {
        url,
        data_dir: dir.path().join("data"),
        psql,
    };
    sigkill_loses_no_acknowledged_token(&db, dir.path());
}
