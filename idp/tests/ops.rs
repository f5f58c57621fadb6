//! Operations on the built binary: the probes (readiness also while the database hangs, on
//! PostgreSQL and on SQLite), `/metrics` on its own listener (scraped and parsed after real
//! grants and logins), graceful shutdown on SIGTERM with a request in flight,
//! `LOG_FORMAT=json`, `backup` under refresh load and `restore` into a fresh installation, and
//! the examples/ manifests using the probes.
//!
//! Servers run through `serving`'s harness (own directory, port from the OS, killed on drop).
//! Waits are bounded polls, never a sleep standing in for an event.

use crate::serving::{admin_password, login, Install, Server};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn get(url: &str) -> (u16, String) {
    let r = reqwest::blocking::get(url).unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Registers a confidential client with `grants` before the server starts; returns its secret.
fn confidential_client(install: &Install, id: &str, grants: &[&str]) -> String {
    let mut args = vec!["client", "add", id, "--confidential", "--scope", "openid"];
    for g in grants {
        args.extend(["--grant-type", g]);
    }
    let (out, _) = install.ok(&mut install.cmd(&args));
    out.lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap()
        .trim()
        .to_string()
}

/// The OpenMetrics text as `name{labels}` → value, labels sorted by name (the order in a line
/// is free); comments and `# EOF` skipped.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let series = match series.split_once('{') {
            None => series.to_string(),
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap();
                let mut pairs: Vec<String> = labels
                    .split("\",")
                    .map(|p| p.trim_end_matches('"').to_string() + "\"")
                    .collect();
                pairs.sort();
                format!("{name}{{{}}}", pairs.join(","))
            }
        };
        assert!(
            samples
                .insert(series.to_string(), value.parse::<f64>().unwrap())
                .is_none(),
            "series {series} appears twice"
        );
    }
    samples
}

#[test]
fn probes_answer_without_credentials() {
    let install = Install::new();
    let server = install.serve(&[]);
    assert_eq!(get(&server.url("/healthz")), (200, "ok\n".into()));
    // ES256 keys are made before the listener opens, so the server is ready at once.
    assert_eq!(get(&server.url("/readyz")), (200, "ready\n".into()));
}

/// A first boot makes its RSA key in the background: until it is loaded the instance is alive
/// but not ready. (The test runtime has one thread, so the key task cannot run before the
/// first probe has its answer.)
#[tokio::test]
async fn not_ready_until_the_signing_key_is_loaded() {
    use idp::clock::{Clock, SystemClock};
    use tower::ServiceExt as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store: Arc<dyn idp::store::Store> =
        Arc::new(idp::store::SqliteStore::open(&url).await.unwrap());
    let config = idp::config::Config::for_issuer("https://idp.example").unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = idp::state::AppState::new_deferring_keygen(config, store, clock)
        .await
        .unwrap();
    let probe = |path: &'static str| {
        let app = idp::app(state.clone());
        async move {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(
        probe("/readyz").await,
        (503, "no signing key loaded yet\n".into())
    );
    assert_eq!(probe("/healthz").await, (200, "ok\n".into()));
    tokio::time::timeout(Duration::from_secs(30), state.keys())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(probe("/readyz").await, (200, "ready\n".into()));
}

// ---------------------------------------------------------------------------------------------
// Readiness while the database hangs: a real hang (the database's processes stopped, or its
// locks held by another process), not an error
// ---------------------------------------------------------------------------------------------

/// How much later than `READY_DB_TIMEOUT` the 503 may arrive (the request's own way).
const READY_MARGIN: Duration = Duration::from_secs(2);
/// How long readiness may take to come back once the database answers again.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// GET `url`, with the time it took. The client gives up well after the readiness bound, so a
/// server that waited on the database forever fails the test instead of hanging it.
fn timed_get(url: &str) -> (u16, String, Duration) {
    let http = reqwest::blocking::Client::builder()
        .timeout(idp::ops::READY_DB_TIMEOUT * 5)
        .build()
        .unwrap();
    let t = Instant::now();
    let r = http
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().unwrap(), t.elapsed())
}

/// Ready; then, while the guard `hang` returns holds the database hung, `/readyz` answers 503
/// "database unavailable" no sooner than `READY_DB_TIMEOUT` (it waited: the database hung, it
/// did not fail) and no later than the margin after it, twice (the second probe's query queues
/// behind the first's stuck one), while `/healthz` answers 200 at once; once the guard is
/// dropped, `/readyz` is 200 again within a bound.
fn unready_while_the_database_hangs<G>(server: &Server, hang: impl FnOnce() -> G) {
    let ready = server.url("/readyz");
    let (status, body, _) = timed_get(&ready);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let guard = hang();
    for _ in 0..2 {
        let (status, body, took) = timed_get(&ready);
        assert_eq!(
            (status, body.as_str()),
            (503, "database unavailable\n"),
            "stderr:\n{}",
            server.stderr()
        );
        assert!(took >= idp::ops::READY_DB_TIMEOUT, "answered in {took:?}");
        assert!(
            took < idp::ops::READY_DB_TIMEOUT + READY_MARGIN,
            "answered in {took:?}"
        );
        let (status, body, took) = timed_get(&server.url("/healthz"));
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert!(took < Duration::from_secs(1), "liveness took {took:?}");
    }
    drop(guard);
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        let (status, body, _) = timed_get(&ready);
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {body:?} {RECOVERY_BOUND:?} after the database came back; stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PostgreSQL server stopped with SIGSTOP (the postmaster, then every process it forked):
/// connections stay open and queries are never answered. SIGCONT on drop, however the test
/// ends.
struct StoppedPostgres(Vec<rustix::process::Pid>);

impl StoppedPostgres {
    fn stop(cluster: &idp::testing::pg::PgCluster) -> StoppedPostgres {
        use rustix::process::{kill_process, Pid, Signal};
        let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
        let pid = |n: i32| Pid::from_raw(n).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut stopped = StoppedPostgres(Vec::new());
        // The postmaster first, so it forks nothing new while its children are found.
        kill_process(pid(postmaster), Signal::STOP).unwrap();
        stopped.0.push(pid(postmaster));
        for child in children_of(postmaster) {
            // A child may have exited since it was listed.
            if kill_process(pid(child), Signal::STOP).is_ok() {
                stopped.0.push(pid(child));
            }
        }
        assert!(stopped.0.len() > 1, "no backend found under the postmaster");
        stopped
    }
}

impl Drop for StoppedPostgres {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = rustix::process::kill_process(*p, rustix::process::Signal::CONT);
        }
    }
}

/// The processes whose parent is `parent` (from /proc/<pid>/stat, whose 4th field is the
/// parent's pid; the 2nd, the name in parentheses, may hold spaces).
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let ppid: i32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// On PostgreSQL: the server stopped, readiness fails within its bound and liveness does not;
/// continued, readiness comes back. The cluster is this test's own: stopping the shared one
/// would hang every other PostgreSQL test of the binary.
#[test]
fn readyz_is_503_while_postgresql_hangs_and_200_once_it_answers() {
    let cluster = idp::testing::pg::PgCluster::start().unwrap();
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.database())
        .unwrap();
    let install = Install::new();
    let server = install.serve(&[("DATABASE_URL", &url)]);
    unready_while_the_database_hangs(&server, || StoppedPostgres::stop(&cluster));
}

/// Exclusive locks on the read marks of an SQLite database in WAL mode, held by this process
/// as a hung SQLite process would hold them: every reader of another process then retries
/// (SQLite's `walTryBeginRead`, about ten seconds before it gives up with SQLITE_PROTOCOL).
///
/// The WAL-index locks are bytes 120 to 127 of the `-shm` file, read marks 0 to 4 at bytes 123
/// to 127 (https://sqlite.org/walformat.html §2.3.1, "How the locks are implemented" in the unix
/// VFS). The simpler hold, another connection in `PRAGMA locking_mode=EXCLUSIVE` with a write
/// transaction, cannot be had in WAL mode while the server has the database open: taking the
/// exclusive lock fails with SQLITE_BUSY instead of blocking the server's readers.
struct HeldReadMarks(std::fs::File);

impl HeldReadMarks {
    const FIRST_READ_MARK_BYTE: i64 = 123;
    const READ_MARKS: i64 = 5;

    fn lock(file: &std::fs::File, kind: i32) -> nix::Result<i32> {
        use nix::fcntl::{fcntl, FcntlArg};
        use std::os::fd::AsRawFd as _;
        let range = nix::libc::flock {
            l_type: kind as i16,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: Self::FIRST_READ_MARK_BYTE,
            l_len: Self::READ_MARKS,
            l_pid: 0,
        };
        fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&range))
    }

    /// Takes the locks, retrying (bounded) while a reader of the server holds one of them.
    fn hold(db: &Path) -> HeldReadMarks {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&shm)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::lock(&file, nix::libc::F_WRLCK) {
                Ok(_) => return HeldReadMarks(file),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("locking the read marks of {shm:?}: {e}"),
            }
        }
    }
}

impl Drop for HeldReadMarks {
    fn drop(&mut self) {
        // Closing the file releases them too; unlocked first to say so.
        let _ = Self::lock(&self.0, nix::libc::F_UNLCK);
    }
}

/// On SQLite: the database's read locks held by another process, readiness fails within its
/// bound and liveness does not; released, readiness comes back.
#[test]
fn readyz_is_503_while_sqlite_hangs_and_200_once_it_answers() {
    let install = Install::new();
    let server = install.serve(&[]);
    let db = install.data_dir().join("kubelogin-idp.db");
    assert!(db.is_file(), "{db:?}");
    unready_while_the_database_hangs(&server, || HeldReadMarks::hold(&db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_metrics_addr_only_and_count_grants_and_logins() {
    let install = Install::new();
    let secret = confidential_client(&install, "ci", &["client_credentials"]);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = install.serve(&[("METRICS_ADDR", &metrics_addr)]);
    let http = reqwest::Client::new();
    let token = |secret: String| {
        let http = http.clone();
        let url = server.url("/oauth/token");
        async move {
            http.post(url)
                .basic_auth("ci", Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(token(secret.clone()).await, 200);
    }
    assert_eq!(token("wrong".into()).await, 401);
    let password = admin_password(&install);
    assert!(!login(&server, "not the password").await);
    assert!(login(&server, &password).await);

    // Not on the public listener.
    let public = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let scrape = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let content_type = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = scrape.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = parse_exposition(&text);
    let cc = "grant_type=\"client_credentials\"";
    let value = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("{k} missing from\n{text}"))
    };
    assert_eq!(
        value(&format!(
            "kubelogin_idp_grants_total{{{cc},outcome=\"ok\"}}"
        )),
        3.0
    );
    assert_eq!(
        value(&format!(
            "kubelogin_idp_grants_total{{{cc},outcome=\"invalid_client\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "kubelogin_idp_token_request_duration_seconds_count{{{cc}}}"
        )),
        4.0
    );
    assert_eq!(
        value(&format!(
            "kubelogin_idp_token_request_duration_seconds_bucket{{{cc},le=\"+Inf\"}}"
        )),
        4.0
    );
    assert!(
        value(&format!(
            "kubelogin_idp_token_request_duration_seconds_sum{{{cc}}}"
        )) > 0.0
    );
    assert_eq!(value("kubelogin_idp_logins_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(
        value("kubelogin_idp_logins_total{outcome=\"wrong_password\"}"),
        1.0
    );
    assert_eq!(value("kubelogin_idp_live_sessions"), 1.0);
    let pool = value("kubelogin_idp_db_pool_connections{state=\"idle\"}")
        + value("kubelogin_idp_db_pool_connections{state=\"busy\"}");
    assert!(pool >= 1.0, "{text}");
}

#[test]
fn without_metrics_addr_nothing_serves_metrics() {
    let install = Install::new();
    let server = install.serve(&[]);
    assert_eq!(get(&server.url("/metrics")).0, 404);
    assert!(
        !server.stderr().contains("metrics: Some"),
        "{}",
        server.stderr()
    );
}

/// Sends SIGTERM to the server process.
fn sigterm(server: &Server) {
    let pid = rustix::process::Pid::from_child(&server.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// Waits (bounded) until connecting to `addr` is refused: the listener is closed.
fn wait_until_refused(addr: SocketAddr, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the listener still accepts after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for the server to exit.
fn wait_for_exit(server: &mut Server, bound: Duration) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit; stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A token request whose body is only half sent, once the handler is reading it: with
/// `Expect: 100-continue` the server answers `100 Continue` when the handler first asks for the
/// body (RFC 9110 §10.1.1), so the request is in flight, not merely queued.
fn half_sent_request(addr: SocketAddr) -> (TcpStream, &'static [u8]) {
    let body: &'static [u8] = b"grant_type=client_credentials&client_id=nobody&client_secret=x";
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    let (first, rest) = body.split_at(10);
    s.write_all(first).unwrap();
    s.flush().unwrap();
    (s, rest)
}

#[test]
fn sigterm_refuses_new_connections_finishes_the_request_in_flight_and_exits_0() {
    let install = Install::new();
    let mut server = install.serve(&[]);
    let (mut stream, rest) = half_sent_request(server.addr);
    sigterm(&server);
    wait_until_refused(server.addr, Duration::from_secs(5));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    stream.write_all(rest).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    // The unknown client is refused: the request was handled to the end (RFC 6749 §5.2).
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.contains("invalid_client"), "{response}");
    let status = wait_for_exit(&mut server, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        server
            .stderr()
            .contains("every request in flight was answered"),
        "{}",
        server.stderr()
    );
}

#[test]
fn sigterm_with_a_request_stuck_past_the_grace_still_exits_0() {
    let install = Install::new();
    let mut server = install.serve(&[("SHUTDOWN_GRACE", "300ms")]);
    let (mut stream, _) = half_sent_request(server.addr);
    let signalled = Instant::now();
    sigterm(&server);
    let status = wait_for_exit(&mut server, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(signalled.elapsed() >= Duration::from_millis(300));
    assert!(server.stderr().contains("cut off"), "{}", server.stderr());
    // The connection was closed without an answer.
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(
        response.is_empty(),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[test]
fn log_format_json_writes_one_object_per_line_without_secrets() {
    let install = Install::new();
    let secret = confidential_client(&install, "rt", &["password", "refresh_token"]);
    // Debug: the level an operator raises to when something is wrong, with the request log.
    let mut server = install.serve(&[("LOG_FORMAT", "json"), ("RUST_LOG", "debug")]);
    let password = admin_password(&install);
    let refresh_token = password_grant(&server, &secret, &password);
    let http = reqwest::blocking::Client::new();
    let (status, _) = refresh(&http, &server.url("/oauth/token"), &secret, &refresh_token);
    assert_eq!(status, 200);
    sigterm(&server);
    assert!(wait_for_exit(&mut server, Duration::from_secs(10)).success());
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v["fields"].is_object() && v["level"].is_string(), "{line}");
    }
    assert!(stderr.contains("kubelogin-idp is serving"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("\"path\":\"/oauth/token\"") && l.contains("\"status\":200")),
        "no request log line for the token endpoint:\n{stderr}"
    );
    for (what, value) in [
        ("client secret", &secret),
        ("password", &password),
        ("refresh token", &refresh_token),
    ] {
        assert!(
            !stderr.contains(value.as_str()),
            "the {what} is in the log:\n{stderr}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_a_one_line_error() {
    let install = Install::new();
    let out = install
        .cmd(&["user", "list"])
        .env("LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: LOG_FORMAT \"xml\" is not text or json"),
        "{stderr}"
    );
}

/// A password grant for the admin; returns the refresh token.
fn password_grant(server: &Server, secret: &str, password: &str) -> String {
    let r = reqwest::blocking::Client::new()
        .post(server.url("/oauth/token"))
        .basic_auth("rt", Some(secret))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", password),
            ("scope", "openid"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    v["refresh_token"].as_str().unwrap().to_string()
}

/// A refresh grant: the HTTP status and the new refresh token.
fn refresh(
    http: &reqwest::blocking::Client,
    url: &str,
    secret: &str,
    token: &str,
) -> (u16, String) {
    let r = http
        .post(url)
        .basic_auth("rt", Some(secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().unwrap_or_default();
    (
        status,
        v["refresh_token"].as_str().unwrap_or("").to_string(),
    )
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn backup_under_refresh_load_restores_into_a_fresh_install_where_an_older_token_refreshes() {
    let install = Install::new();
    let secret = confidential_client(&install, "rt", &["password", "refresh_token"]);
    let server = install.serve(&[]);
    let password = admin_password(&install);
    // Issued before the backup and kept unused: it must work after the restore.
    let kept = password_grant(&server, &secret, &password);

    // Refresh load on another chain while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, done, secret) = (stop.clone(), done.clone(), secret.clone());
        let url = server.url("/oauth/token");
        let mut token = password_grant(&server, &secret, &password);
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, next) = refresh(&http, &url, &secret, &token);
                assert_eq!(status, 200);
                token = next;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Under load: some refreshes before the backup starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline, "no refresh went through");
        std::thread::sleep(Duration::from_millis(10));
    }
    let backup = install.path().join("backups").join("idp.db");
    std::fs::create_dir(backup.parent().unwrap()).unwrap();
    let (code, stdout, stderr) = run(install
        .cmd(&["backup", "--out", backup.to_str().unwrap()])
        .env("RUST_LOG", "off"));
    let during = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("written to"), "{stdout}");
    assert!(during >= 5);
    assert_eq!(mode(&backup), 0o600);
    // No stray temporary file beside it.
    assert_eq!(
        std::fs::read_dir(backup.parent().unwrap()).unwrap().count(),
        1
    );

    // An existing file is kept unless --force.
    let (code, stdout, stderr) =
        run(&mut install.cmd(&["backup", "--out", backup.to_str().unwrap()]));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--force"),
        "{stderr}"
    );
    let (code, _, stderr) =
        run(&mut install.cmd(&["backup", "--force", "--out", backup.to_str().unwrap()]));
    assert_eq!(code, Some(0), "{stderr}");

    // A restore over the running server's database is refused.
    let (code, stdout, stderr) =
        run(&mut install.cmd(&["restore", "--force", "--from", backup.to_str().unwrap()]));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(stderr.contains("server is using"), "{stderr}");
    drop(server);

    // A fresh installation from the backup.
    let fresh = Install::new();
    let (code, stdout, stderr) =
        run(&mut fresh.cmd(&["restore", "--from", backup.to_str().unwrap()]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(mode(&fresh.data_dir().join("kubelogin-idp.db")), 0o600);
    let (code, _, stderr) = run(&mut fresh.cmd(&["restore", "--from", backup.to_str().unwrap()]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--force"), "{stderr}");
    let restored = fresh.serve(&[]);
    let http = reqwest::blocking::Client::new();
    let (status, next) = refresh(&http, &restored.url("/oauth/token"), &secret, &kept);
    assert_eq!(status, 200);
    assert!(!next.is_empty());

    // Over the stopped server's own database (its -wal and -shm files beside it), with --force.
    let (code, _, stderr) =
        run(&mut install.cmd(&["restore", "--force", "--from", backup.to_str().unwrap()]));
    assert_eq!(code, Some(0), "{stderr}");
    let again = install.serve(&[]);
    let (status, _) = refresh(&http, &again.url("/oauth/token"), &secret, &kept);
    assert_eq!(status, 200);
}

#[test]
fn restore_refuses_a_file_that_is_not_a_kubelogin_idp_database() {
    let install = Install::new();
    let junk = install.path().join("junk.db");
    std::fs::write(
        &junk,
        b"not a database at all, just text that is long enough",
    )
    .unwrap();
    let (code, stdout, stderr) =
        run(&mut install.cmd(&["restore", "--from", junk.to_str().unwrap()]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("is not a kubelogin-idp database"),
        "{stderr}"
    );
    assert!(!install.data_dir().join("kubelogin-idp.db").exists());
}

#[test]
fn backup_of_postgresql_points_to_pg_dump() {
    let install = Install::new();
    let out = install.path().join("b.db");
    let (code, stdout, stderr) = run(install
        .cmd(&["backup", "--out", out.to_str().unwrap()])
        .env("DATABASE_URL", "postgres://idp@localhost/idp"));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(!out.exists());
}

/// Every YAML file under examples/ parses, and the Kubernetes Deployments probe /readyz for
/// readiness and /healthz for liveness.
#[test]
fn examples_parse_and_deployments_use_the_probes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let mut deployments = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = <serde_norway::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if v["kind"].as_str() != Some("Deployment") {
                continue;
            }
            deployments += 1;
            let c = &v["spec"]["template"]["spec"]["containers"][0];
            let probe = |p: &str| c[p]["httpGet"]["path"].as_str().map(str::to_string);
            assert_eq!(
                probe("readinessProbe").as_deref(),
                Some("/readyz"),
                "{}",
                file.display()
            );
            assert_eq!(
                probe("livenessProbe").as_deref(),
                Some("/healthz"),
                "{}",
                file.display()
            );
            let grace = v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64();
            assert!(
                grace.unwrap_or(30) > 10,
                "{}: longer than SHUTDOWN_GRACE",
                file.display()
            );
        }
    }
    // One replica on SQLite, two on PostgreSQL.
    assert!(deployments >= 2, "{deployments}");
    let unit = std::fs::read_to_string(root.join("systemd/kubelogin-idp.service")).unwrap();
    assert!(unit.contains("/readyz"), "{unit}");
}
