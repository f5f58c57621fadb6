//! Black-box tests of `kubelogin-idp serve` as a network service: header timeouts against
//! slowloris clients (HTTP and HTTPS), the per-address connection cap, key rotation by another
//! process reaching JWKS, and the modes of the database files.
//!
//! Each test runs the built binary in its own temporary directory on a port the OS picked, and
//! a guard kills the server however the test ends. Waits are bounded polls or socket reads with
//! a timeout, never a sleep standing in for an event.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_kubelogin-idp");
/// How long a server may take to answer discovery after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A throwaway installation: its own working directory and data directory, clean environment.
pub(crate) struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    pub(crate) fn new() -> Self {
        Install {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// The binary with a clean environment and `--data-dir`.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .current_dir(self.path())
            .stdin(Stdio::null())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args);
        c
    }

    /// Runs an admin command expected to succeed; returns (stdout, stderr).
    pub(crate) fn ok(&self, cmd: &mut Command) -> (String, String) {
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    }

    /// Starts `serve` with ES256 keys (fast to make) and extra environment; waits until it
    /// answers discovery.
    pub(crate) fn serve(&self, env: &[(&str, &str)]) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let stderr_path = self.path().join("serve.stderr");
        let mut cmd = self.cmd(&["serve", "--addr", &format!("127.0.0.1:{port}")]);
        cmd.env("JWT_SIGNING_ALGORITHM", "ES256")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let server = Server {
            child: cmd.spawn().unwrap(),
            stderr_path,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        server.wait_until_up(env);
        server
    }
}

/// A running `serve`, killed and reaped on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) stderr_path: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn tls(env: &[(&str, &str)]) -> bool {
        env.iter().any(|(k, _)| *k == "TLS_CERT_FILE")
    }

    fn wait_until_up(&self, env: &[(&str, &str)]) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // Any TCP answer means the listener is up; discovery needs no TLS client here.
            let up = match TcpStream::connect(self.addr) {
                Ok(mut s) if !Self::tls(env) => {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let _ = s
                        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out);
                    out.starts_with("HTTP/1.1 200")
                }
                Ok(_) => true,
                Err(_) => false,
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not come up; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Sends a request header that never ends, one byte at a time, waiting up to 100 ms for the
/// server after each byte, until the server closes the connection; returns how long that took.
/// Panics if the connection is still open after `bound`.
fn slowloris(
    stream: &mut (impl Read + Write),
    set_timeout: impl Fn(Duration),
    bound: Duration,
) -> Duration {
    set_timeout(Duration::from_millis(100));
    let start = Instant::now();
    let header = b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut bytes = header.iter().chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            start.elapsed() < bound,
            "a client trickling its header bytes was still connected after {bound:?}"
        );
        let byte = *bytes.next().unwrap();
        if stream
            .write_all(&[byte])
            .and_then(|()| stream.flush())
            .is_err()
        {
            return start.elapsed();
        }
        match stream.read(&mut buf) {
            // Closed, possibly after an error response.
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return start.elapsed(),
        }
    }
}

#[test]
fn slowloris_is_cut_off_over_http() {
    let install = Install::new();
    let server = install.serve(&[("HTTP_HEADER_TIMEOUT", "300ms")]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let probe = stream.try_clone().unwrap();
    let took = slowloris(
        &mut stream,
        |t| probe.set_read_timeout(Some(t)).unwrap(),
        Duration::from_secs(5),
    );
    assert!(
        took >= Duration::from_millis(300),
        "closed before the timeout: {took:?}"
    );
    // A client that sends its request at once is still served.
    let resp = reqwest::blocking::get(server.url("/.well-known/openid-configuration")).unwrap();
    assert!(resp.status().is_success());
}

#[test]
fn slowloris_is_cut_off_over_https() {
    let install = Install::new();
    let certs = install.path().join("certs");
    let mut certs_cmd = Command::new(BIN);
    certs_cmd
        .env_clear()
        .args(["certs", "--host", "localhost", "--out"])
        .arg(&certs);
    install.ok(&mut certs_cmd);
    let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));
    let server = install.serve(&[
        ("HTTP_HEADER_TIMEOUT", "300ms"),
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
    ]);

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(server.addr).unwrap();
    let probe = tcp.try_clone().unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Complete the handshake first, so what is timed is the HTTP header, not the handshake.
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let took = slowloris(
        &mut tls,
        |t| probe.set_read_timeout(Some(t)).unwrap(),
        Duration::from_secs(5),
    );
    assert!(
        took >= Duration::from_millis(300),
        "closed before the timeout: {took:?}"
    );
}

/// The admin password `serve` wrote on first boot.
pub(crate) fn admin_password(install: &Install) -> String {
    let creds =
        std::fs::read_to_string(install.data_dir().join("kubelogin-idp-credentials.txt")).unwrap();
    creds
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap()
        .trim()
        .to_string()
}

/// A browser login: GET /login for the CSRF cookie, then POST /login; true when a session
/// cookie comes back.
pub(crate) async fn login(server: &Server, password: &str) -> bool {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let page = http.get(server.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    // The pre-login session cookie, and the CSRF token bound to it from the form.
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    let body = page.text().await.unwrap();
    let csrf = idp::testing::form_value(&body, "csrf_token").unwrap();
    let resp = http
        .post(server.url("/login"))
        .header("cookie", cookies.join("; "))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("username", "admin"),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    resp.status().is_redirection()
        && resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap_or("").starts_with("kl_session="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_lock_out_a_login() {
    const IDLE: usize = 1100;
    const PER_IP: usize = 64;
    let install = Install::new();
    // A long header timeout, so only the connection caps can close the idle connections.
    let server = install.serve(&[("HTTP_HEADER_TIMEOUT", "10m")]);
    let password = admin_password(&install);

    // More idle connections than the global cap (1024), all from 127.0.0.2 (Linux loopback
    // answers for all of 127/8).
    let mut idle = tokio::task::JoinSet::new();
    for _ in 0..IDLE {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        idle.spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 16];
            // Resolves when the server closes the connection.
            let _ = stream.read(&mut buf).await;
        });
    }
    // All but the per-address cap's worth are closed by the server, promptly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut closed = 0;
    while closed < IDLE - PER_IP {
        match tokio::time::timeout_at(deadline, idle.join_next()).await {
            Ok(Some(joined)) => {
                joined.unwrap();
                closed += 1;
            }
            Ok(None) => break,
            Err(_) => panic!(
                "only {closed} of {IDLE} idle connections from one address were closed; stderr:\n{}",
                server.stderr()
            ),
        }
    }

    // A real login from another address still gets through.
    assert!(login(&server, &password).await, "login failed");
    // The idle connections within the cap were left alone.
    assert!(
        idle.try_join_next().is_none(),
        "connections within the per-address cap were closed"
    );
    assert_eq!(idle.len(), PER_IP);
    idle.abort_all();
}

/// The `kid`s JWKS publishes.
fn jwks_kids(server: &Server) -> Vec<String> {
    let jwks: serde_json::Value = reqwest::blocking::get(server.url("/.well-known/jwks.json"))
        .unwrap()
        .json()
        .unwrap();
    jwks["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k["kid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn keys_rotated_by_another_process_reach_jwks() {
    let install = Install::new();
    let server = install.serve(&[("KEY_RELOAD_INTERVAL", "200ms")]);
    // The server makes its first key just after start-up.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let old = loop {
        if let [kid] = jwks_kids(&server).as_slice() {
            break kid.clone();
        }
        assert!(Instant::now() < deadline, "no signing key published");
        std::thread::sleep(Duration::from_millis(50));
    };

    let (out, _) = install.ok(&mut install.cmd(&["keys", "rotate", "--algorithm", "ES256"]));
    let new = out
        .strip_prefix("new active key ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output: {out}"))
        .to_string();
    assert_ne!(new, old);

    // Well within the default 30 s reload, which this test must not depend on.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kids = loop {
        let kids = jwks_kids(&server);
        if kids.contains(&new) {
            break kids;
        }
        assert!(
            Instant::now() < deadline,
            "rotated key {new} not in JWKS {kids:?}; stderr:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        kids.contains(&old),
        "the previous key still verifies live tokens: {kids:?}"
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn database_from_database_url_is_private() {
    let install = Install::new();
    let dir = install.path().join("db").join("nested");
    let db = dir.join("idp.db");
    let url = format!("sqlite://{}", db.display());
    // An admin command creates the directory and the file.
    install.ok(&mut install.cmd(&["--database-url", &url, "user", "list"]));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&install.path().join("db")), 0o700);
    assert_eq!(mode(&db), 0o600);

    // The server's write-ahead log and shared-memory files are as private as the database.
    let server = install.serve(&[("DATABASE_URL", &url)]);
    install.ok(&mut install.cmd(&[
        "--database-url",
        &url,
        "user",
        "add",
        "bob",
        "--email",
        "bob@example.com",
    ]));
    for side in ["idp.db-wal", "idp.db-shm"] {
        assert_eq!(mode(&dir.join(side)), 0o600, "{side}");
    }
    drop(server);
}

#[cfg(unix)]
#[test]
fn shared_database_is_warned_about_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let install = Install::new();
    let dir = install.path().join("shared");
    let db = dir.join("idp.db");
    let url = format!("sqlite://{}", db.display());
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    install.ok(&mut install.cmd(&["--database-url", &url, "user", "list"]));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let (_, stderr) = install.ok(&mut install.cmd(&["--database-url", &url, "user", "list"]));
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("database directory") && l.contains("755")),
        "{stderr}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("database file") && l.contains("644")),
        "{stderr}"
    );
    // The operator's modes are not changed behind their back.
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&db), 0o644);
}
