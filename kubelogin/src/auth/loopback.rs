//! The one-shot loopback server that receives the authorization response (RFC 8252 §7.3).
//!
//! It binds the first free `--listen-address` (kubelogin: 127.0.0.1:8000, then :18000). The
//! redirect URI names `localhost`, which a browser may resolve to `::1` first (kubelogin #1151),
//! so with a `localhost` redirect the same port is bound on the IPv6 loopback too.
//!
//! Any local user can talk to a loopback port, so nothing served here may help another user:
//! the browser is opened on a one-time random path (not `/`, which would hand anyone the
//! authorization URL with its state, nonce and PKCE challenge), and a callback is judged by its
//! `state` before anything else (RFC 6749 §10.12), so a stranger can neither abort the login
//! with `?error=` nor inject a code for their own account.
//!
//! The start path is on the browser's command line, which other local users can read in
//! `/proc`. Whoever fetches it first gets the authorization URL, so a second request for it is
//! proof that someone else got there too, and the login is aborted (RFC 8252 §8.1: another
//! program on the same machine may try to intercept the authorization response).
//!
//! Served on std sockets: every connection gets its own thread with read and write timeouts
//! and one deadline for its whole request head, counted from accept (a browser's idle
//! preconnect, or a client trickling a byte at a time, cannot hold a slot), HTTPS
//! (`--local-server-cert`) uses the rustls 0.23 the provider connection already links, and the
//! request head is parsed by `httparse`. The waiting loop judges one request at a time and
//! answers with `Connection: close`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::printable::printable;
use crate::secret::Secret;

/// Read and write timeout of every loopback connection, TLS handshake included.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Total time from accept to a complete request head, TLS handshake included. A per-read
/// timeout alone lets a client send one byte every few seconds and keep its slot forever.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// Largest request head read (request line and headers); browsers send 1–2 KB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections served at once; more are closed at once (a local user flooding the port must
/// not exhaust threads).
const MAX_CONNECTIONS: usize = 32;

/// A bound loopback server, not yet serving.
pub struct Loopback {
    listeners: Vec<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub port: u16,
    /// The `redirect_uri` to send (RFC 6749 §3.1.2).
    pub redirect_uri: String,
    /// Where to point the browser: a one-time random path that redirects to the provider.
    pub start_url: String,
    start_path: String,
    callback_path: String,
    /// [`HEAD_DEADLINE`]; shorter in tests.
    head_deadline: Duration,
}

/// What the callback brought.
#[derive(Debug)]
pub struct Callback {
    pub code: Secret,
}

/// `host:port` as an address; a host name (`localhost:8000`, which Go's net.Listen accepts
/// for kubelogin) resolves to its first IPv4 address, else its first address.
fn resolve_listen_address(item: &str) -> Result<SocketAddr> {
    let item = item.trim();
    if let Ok(a) = item.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = item
        .to_socket_addrs()
        .map_err(|e| Error::invalid(format!("--listen-address \"{item}\" is not host:port"), e))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| Error::usage(format!("--listen-address \"{item}\" resolves to nothing")))
}

/// Binds `addr` and, for a `localhost` redirect on the IPv4 loopback, the same port on the
/// IPv6 loopback. `None` (the reason added to `failures`) when the address is taken; with port
/// 0 a twin taken by someone else is retried on a new port.
fn bind_address(
    addr: SocketAddr,
    localhost: bool,
    failures: &mut Vec<String>,
) -> Result<Option<(Vec<TcpListener>, u16)>> {
    let attempts = if addr.port() == 0 { 3 } else { 1 };
    for _ in 0..attempts {
        let v4 = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                return Ok(None);
            }
        };
        let port = v4
            .local_addr()
            .map_err(|e| Error::io("loopback", e))?
            .port();
        let mut listeners = vec![v4];
        if localhost && addr.ip().is_loopback() && addr.is_ipv4() {
            match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
                Ok(v6) => listeners.push(v6),
                // Another program answers on [::1]:port; a browser resolving localhost to ::1
                // would reach it instead of us.
                Err(e) if e.kind() == ErrorKind::AddrInUse => {
                    failures.push(format!("[::1]:{port}: {e}"));
                    continue;
                }
                // No IPv6 on this machine: localhost can only be 127.0.0.1.
                Err(_) => {}
            }
        }
        return Ok(Some((listeners, port)));
    }
    Ok(None)
}

/// A random URL path segment (256 bits, base64url), unguessable by other local users.
fn random_path() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "/{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Loopback {
    /// Binds the first free address of `listen` (`host:port`, port 0 for any).
    ///
    /// `redirect_url` overrides the redirect URI (its path becomes the callback path);
    /// `tls` is (certificate file, key file) for HTTPS.
    pub fn bind(
        listen: &[String],
        redirect_url: &str,
        tls: Option<&(String, String)>,
    ) -> Result<Loopback> {
        let tls = match tls {
            Some((cert, key)) => Some(read_tls(cert, key)?),
            None => None,
        };
        let custom = if redirect_url.is_empty() {
            None
        } else {
            Some(url::Url::parse(redirect_url).map_err(|e| {
                Error::invalid(format!("--oidc-redirect-url \"{redirect_url}\""), e)
            })?)
        };
        // A browser may resolve `localhost` to ::1 first (kubelogin #1151).
        let localhost = custom
            .as_ref()
            .map(|u| u.host_str() == Some("localhost"))
            .unwrap_or(true);
        let mut failures = Vec::new();
        for item in listen {
            let addr = resolve_listen_address(item)?;
            if let Some((listeners, port)) = bind_address(addr, localhost, &mut failures)? {
                return Ok(Loopback::on(listeners, port, tls, custom.as_ref()));
            }
        }
        Err(Error::Login(format!(
            "could not listen on any --listen-address ({}); free one of these ports or choose others with --listen-address",
            failures.join(", ")
        )))
    }

    /// The server on `listeners`, with a fresh one-time start path, and the redirect URI and
    /// callback path of `custom` (`--oidc-redirect-url`) or of `localhost:port`.
    fn on(
        listeners: Vec<TcpListener>,
        port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        custom: Option<&url::Url>,
    ) -> Loopback {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let start_path = random_path();
        let (redirect_uri, callback_path, start_url) = match custom {
            Some(u) => {
                let mut start = u.clone();
                start.set_path(&start_path);
                start.set_query(None);
                start.set_fragment(None);
                (u.to_string(), u.path().to_string(), start.to_string())
            }
            None => (
                format!("{scheme}://localhost:{port}"),
                "/".to_string(),
                format!("{scheme}://localhost:{port}{start_path}"),
            ),
        };
        Loopback {
            listeners,
            tls,
            port,
            redirect_uri,
            start_url,
            start_path,
            callback_path,
            head_deadline: HEAD_DEADLINE,
        }
    }

    /// Serves until the callback arrives or `timeout` passes. The one-time start path
    /// redirects to `auth_url` so the printed URL stays short; the callback checks `state`
    /// first (RFC 6749 §10.12) and shows a success page or redirects to `open_url_after`.
    pub fn wait(
        &self,
        deps: &Deps,
        auth_url: &str,
        state: &Secret,
        timeout: Duration,
        open_url_after: Option<&str>,
    ) -> Result<Callback> {
        let (tx, rx) = mpsc::channel::<Incoming>();
        let done = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let mut wake = Vec::new();
        for listener in &self.listeners {
            let listener = listener
                .try_clone()
                .map_err(|e| Error::io("loopback server", e))?;
            if let Ok(a) = listener.local_addr() {
                wake.push(a);
            }
            let (tx, done, active, tls) =
                (tx.clone(), done.clone(), active.clone(), self.tls.clone());
            let head_deadline = self.head_deadline;
            std::thread::spawn(move || accept_loop(listener, tls, tx, done, active, head_deadline));
        }
        drop(tx);
        let result = self.serve(deps, &rx, auth_url, state, timeout, open_url_after);
        // Wake every accept loop so it sees `done`, ends, and closes its listener.
        done.store(true, Ordering::SeqCst);
        for addr in wake {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        result
    }

    /// Judges one request at a time until the callback arrives or `timeout` passes.
    fn serve(
        &self,
        deps: &Deps,
        rx: &mpsc::Receiver<Incoming>,
        auth_url: &str,
        state: &Secret,
        timeout: Duration,
        open_url_after: Option<&str>,
    ) -> Result<Callback> {
        let deadline = Instant::now() + timeout;
        let mut wait = Wait {
            deps,
            loopback: self,
            auth_url,
            state,
            open_url_after,
            started: false,
            wrong_state: 0,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(incoming) = rx.recv_timeout(left) else {
                return Err(wait.timed_out(timeout));
            };
            if let Some(outcome) = wait.answer(incoming) {
                return outcome;
            }
        }
    }
}

/// One login's wait for its callback: what the loopback answers with, and what it has seen.
struct Wait<'a> {
    deps: &'a Deps,
    loopback: &'a Loopback,
    auth_url: &'a str,
    state: &'a Secret,
    open_url_after: Option<&'a str>,
    /// Whether the one-time start path was requested.
    started: bool,
    /// Callbacks refused for a wrong state, for the timeout message.
    wrong_state: u32,
}

impl Wait<'_> {
    fn timed_out(&self, timeout: Duration) -> Error {
        let refused = if self.wrong_state > 0 {
            format!(
                "; {} callback(s) with a wrong state were refused (RFC 6749 §10.12)",
                self.wrong_state
            )
        } else {
            String::new()
        };
        Error::Login(format!(
            "timed out after {}s waiting for the browser login (--authentication-timeout-sec){refused}",
            timeout.as_secs()
        ))
    }

    /// Answers one request; `Some` ends the login (the callback, or why it failed).
    fn answer(&mut self, Incoming { head, mut conn }: Incoming) -> Option<Result<Callback>> {
        let head = match head {
            Ok(h) => h,
            Err(status) => {
                conn.page(status, "Bad request.");
                return None;
            }
        };
        if head.method != "GET" {
            conn.page(405, "Method not allowed.");
            return None;
        }
        let Ok(url) = url::Url::parse(&format!("http://localhost{}", head.target)) else {
            conn.page(400, "Bad request.");
            return None;
        };
        if url.path() == self.loopback.start_path {
            return self.start(conn);
        }
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let is_callback = url.path() == self.loopback.callback_path
            && (get("code").is_some() || get("error").is_some());
        if !is_callback {
            conn.page(404, "Not found.");
            return None;
        }
        self.callback(conn, get)
    }

    /// The one-time start path: redirects the browser to the authorization URL, once.
    fn start(&mut self, mut conn: Conn) -> Option<Result<Callback>> {
        if self.started {
            // The start URL was on the browser's command line, readable by other local
            // users; two requests mean someone else holds the authorization URL and could
            // log in with their own account into our callback (RFC 6749 §10.12).
            conn.page(
                409,
                "This login URL was already opened once, possibly by another local user. The login was aborted; run the command again.",
            );
            return Some(Err(Error::Login(
                "the login URL was opened twice, possibly by another local user who read it from the browser's command line; the login was aborted for safety, retry it".to_string(),
            )));
        }
        // One time only: the URL carries state, nonce and the PKCE challenge.
        self.started = true;
        self.deps
            .log(1, || "redirecting the browser to the provider".to_string());
        conn.redirect(self.auth_url);
        None
    }

    /// The authorization response (RFC 6749 §4.1.2): judged by its state first, then an
    /// error or the code.
    fn callback<'q>(
        &mut self,
        mut conn: Conn,
        get: impl Fn(&str) -> Option<&'q str>,
    ) -> Option<Result<Callback>> {
        // RFC 6749 §10.12 first: a response without our state comes from someone else
        // (another local user, a stale tab) and must change nothing, error or code.
        if !state_matches(get("state"), self.state) {
            self.wrong_state += 1;
            self.deps.say("warning: refused a callback with a wrong state (RFC 6749 §10.12); still waiting for the browser login");
            conn.page(400, "Authentication failed: state does not match.");
            return None;
        }
        self.deps
            .log(1, || "received the authorization response".to_string());
        // RFC 6749 §4.1.2.1: an error response. Provider text is shown without control
        // characters (no terminal escapes from a URL).
        if let Some(error) = get("error") {
            let mut text = printable(error);
            for field in ["error_description", "error_uri"] {
                if let Some(v) = get(field).filter(|v| !v.is_empty()) {
                    text.push_str(": ");
                    text.push_str(&printable(v));
                }
            }
            conn.page(400, &format!("Authentication failed: {text}"));
            return Some(Err(Error::Login(format!(
                "the provider answered the authorization request with {text}"
            ))));
        }
        let code = get("code").unwrap_or_default().to_string();
        match self.open_url_after {
            Some(target) => conn.redirect(target),
            None => conn.page(
                200,
                "Authenticated. You have logged in to the cluster. You can close this window.",
            ),
        }
        Some(Ok(Callback {
            code: Secret::new(code),
        }))
    }
}

/// Compares the returned state with ours in constant time (it is a one-time secret).
fn state_matches(got: Option<&str>, want: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    got.is_some_and(|g| g.as_bytes().ct_eq(want.expose().as_bytes()).into())
}

/// A parsed request head: method and request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
}

/// Outcome of parsing the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    Complete(RequestHead),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP/1.x request head; the HTTP status to answer.
    Invalid(u16),
}

/// Parses an HTTP/1.x request head (RFC 9112 §2–3) with `httparse`. Never panics, whatever
/// the bytes; a head longer than [`MAX_HEAD_BYTES`] is refused with 431.
pub fn parse_request_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) if p.starts_with('/') => HeadParse::Complete(RequestHead {
                method: m.to_string(),
                target: p.to_string(),
            }),
            _ => HeadParse::Invalid(400),
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => HeadParse::Partial,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            HeadParse::Invalid(431)
        }
        Err(_) => HeadParse::Invalid(400),
    }
}

/// One request handed to the waiting loop: its head (or the status to refuse it with) and
/// the connection to answer on.
struct Incoming {
    head: std::result::Result<RequestHead, u16>,
    conn: Conn,
}

fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    tx: mpsc::Sender<Incoming>,
    done: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    head_deadline: Duration,
) {
    let mut errors = 0u32;
    for stream in listener.incoming() {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => {
                errors = 0;
                Socket {
                    stream: s,
                    head_deadline: Instant::now() + head_deadline,
                }
            }
            // A reset before accept is routine; a persistent failure (out of descriptors)
            // ends the loop rather than spinning, and the login times out with its message.
            Err(_) => {
                errors += 1;
                if errors > 1000 {
                    break;
                }
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (tx, tls, active) = (tx.clone(), tls.clone(), active.clone());
        std::thread::spawn(move || {
            read_request(stream, tls, &tx);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Reads one request head on its own thread (timeouts set) and hands it to the waiting loop.
fn read_request(
    stream: Socket,
    tls: Option<Arc<rustls::ServerConfig>>,
    tx: &mpsc::Sender<Incoming>,
) {
    if stream.stream.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let mut conn = match tls {
        None => Conn::Plain(stream),
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(c) => Conn::Tls(Box::new(rustls::StreamOwned::new(c, stream))),
            Err(_) => return,
        },
    };
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let head = loop {
        let n = match conn.read(&mut chunk) {
            // Closed, timed out (the head deadline passed), or a failed TLS handshake: nothing
            // to answer.
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_request_head(&buf) {
            HeadParse::Complete(h) => break Ok(h),
            HeadParse::Partial => {}
            HeadParse::Invalid(status) => break Err(status),
        }
    };
    // The login may be over already; then the connection is simply closed.
    let _ = tx.send(Incoming { head, conn });
}

/// An accepted socket whose reads share one deadline: before each read its timeout is set to
/// the time left (capped at [`IO_TIMEOUT`]), and with no time left a read fails at once. Below
/// TLS, so the handshake counts too, however many socket reads rustls makes for one record.
struct Socket {
    stream: TcpStream,
    head_deadline: Instant,
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .head_deadline
            .saturating_duration_since(Instant::now())
            .min(IO_TIMEOUT);
        // A zero timeout is refused by set_read_timeout (and would mean "none").
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "request head deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A loopback connection, plain or TLS.
enum Conn {
    Plain(Socket),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, Socket>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Conn {
    fn page(&mut self, status: u16, text: &str) {
        let body = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>kubectl oidc-login</title></head><body><p>{}</p></body></html>",
            html_escape(text)
        );
        self.send(
            status,
            &[("Content-Type", "text/html; charset=utf-8")],
            &body,
        );
    }

    fn redirect(&mut self, location: &str) {
        // A header value cannot carry control characters (no response splitting).
        let location: String = location.chars().filter(|c| !c.is_control()).collect();
        self.send(302, &[("Location", &location)], "");
    }

    /// Writes the response and closes. The browser may have gone; nothing to do about it.
    fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let reason = match status {
            200 => "OK",
            302 => "Found",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        // no-referrer: the page after the callback must not leak the code in a Referer.
        head.push_str(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let _ = self
            .write_all(head.as_bytes())
            .and_then(|_| self.write_all(body.as_bytes()))
            .and_then(|_| self.flush());
        match self {
            Conn::Plain(s) => {
                let _ = s.stream.shutdown(Shutdown::Write);
            }
            Conn::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                let _ = s.sock.stream.shutdown(Shutdown::Write);
            }
        }
    }
}

/// Reads and checks the loopback certificate and key into a rustls server configuration.
fn read_tls(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>> {
    let certificate =
        std::fs::read(cert).map_err(|e| Error::io(format!("--local-server-cert {cert}"), e))?;
    let private_key =
        std::fs::read(key).map_err(|e| Error::io(format!("--local-server-key {key}"), e))?;
    let certs = rustls_pemfile::certs(&mut certificate.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::io(format!("--local-server-cert {cert}"), e))?;
    if certs.is_empty() {
        return Err(Error::usage(format!(
            "--local-server-cert {cert}: no PEM certificate found"
        )));
    }
    let key_der = rustls_pemfile::private_key(&mut private_key.as_slice())
        .map_err(|e| Error::io(format!("--local-server-key {key}"), e))?
        .ok_or_else(|| {
            Error::usage(format!(
                "--local-server-key {key}: expected a PKCS#8 (BEGIN PRIVATE KEY), RSA or EC PEM key"
            ))
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
        .map_err(|e| {
            Error::invalid(
                format!("--local-server-cert {cert} / --local-server-key {key}"),
                e,
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeDeps;

    /// Whether the machine has an IPv6 loopback. With `REQUIRE_IPV6=1` (set by
    /// `tests/run-all.sh`) a missing one fails the test instead of skipping its IPv6 part.
    pub(crate) fn ipv6_loopback() -> bool {
        let ok = TcpListener::bind("[::1]:0").is_ok();
        if !ok && std::env::var("REQUIRE_IPV6").as_deref() == Ok("1") {
            panic!("REQUIRE_IPV6=1 but [::1] cannot be bound here");
        }
        ok
    }

    /// Two different ports free on 127.0.0.1 and [::1] right now (never 8000/18000: those
    /// belong to users).
    fn two_free_ports() -> (u16, u16) {
        let v6 = ipv6_loopback();
        let mut held: Vec<TcpListener> = Vec::new();
        while held.len() < 2 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            if !v6 || TcpListener::bind(("::1", port)).is_ok() {
                held.push(l);
            }
        }
        let port = |l: &TcpListener| l.local_addr().unwrap().port();
        (port(&held[0]), port(&held[1]))
    }

    #[test]
    fn both_busy_names_both_and_the_flag() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = vec![
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
        ];
        let err = Loopback::bind(&listen, "", None).err().unwrap().to_string();
        assert!(
            err.contains(&listen[0]) && err.contains(&listen[1]),
            "{err}"
        );
        assert!(err.contains("--listen-address"), "{err}");
    }

    /// kubelogin's 8000 → 18000 fallback, on two free ports: the first busy, the second used.
    #[test]
    fn first_address_busy_falls_back_to_the_second() {
        let (p1, p2) = two_free_ports();
        let _busy = TcpListener::bind(("127.0.0.1", p1)).unwrap();
        let listen = vec![format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}")];
        let lb = Loopback::bind(&listen, "", None).unwrap();
        assert_eq!(lb.port, p2);
        assert_eq!(lb.redirect_uri, format!("http://localhost:{p2}"));
    }

    /// A program on [::1]:first would receive a browser that resolves localhost to ::1, so
    /// that address is given up for the next one (and the port-0 retry path re-binds).
    #[test]
    fn ipv6_twin_busy_moves_on() {
        if !ipv6_loopback() {
            return;
        }
        let (p1, p2) = two_free_ports();
        let _busy = TcpListener::bind(("::1", p1)).unwrap();
        let listen = vec![format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}")];
        let lb = Loopback::bind(&listen, "", None).unwrap();
        assert_eq!(lb.port, p2);
        // The IPv4 side of the abandoned first port was released.
        TcpListener::bind(("127.0.0.1", p1)).unwrap();
        // Both busy: the error names the IPv6 address that was taken.
        drop(lb);
        let _busy2 = TcpListener::bind(("::1", p2)).unwrap();
        let err = Loopback::bind(&listen, "", None).err().unwrap().to_string();
        assert!(err.contains(&format!("[::1]:{p1}")), "{err}");
    }

    #[test]
    fn localhost_redirect_listens_on_both_loopbacks() {
        let lb = Loopback::bind(&["127.0.0.1:0".to_string()], "", None).unwrap();
        assert_eq!(lb.redirect_uri, format!("http://localhost:{}", lb.port));
        // Both addresses are taken by us now (IPv6 only when the machine has it).
        assert!(TcpListener::bind(("127.0.0.1", lb.port)).is_err());
        if ipv6_loopback() {
            assert_eq!(lb.listeners.len(), 2);
            assert!(TcpListener::bind(("::1", lb.port)).is_err());
        }
    }

    #[test]
    fn redirect_url_path_is_the_callback() {
        let lb = Loopback::bind(
            &["127.0.0.1:0".to_string()],
            "http://127.0.0.1:8000/oidc/callback",
            None,
        )
        .unwrap();
        assert_eq!(lb.callback_path, "/oidc/callback");
        assert_eq!(lb.redirect_uri, "http://127.0.0.1:8000/oidc/callback");
        assert_eq!(lb.listeners.len(), 1);
        assert_ne!(lb.start_path, "/");
        assert!(lb.start_url.ends_with(&lb.start_path), "{}", lb.start_url);
    }

    const AUTH_URL: &str = "https://idp.test/authorize?state=the-state&nonce=n&code_challenge=c";

    /// Runs `wait` on a thread; returns the base URL and the join handle.
    fn serving(
        fake: &FakeDeps,
        timeout: Duration,
    ) -> (String, String, std::thread::JoinHandle<Result<Callback>>) {
        let lb = Loopback::bind(&["127.0.0.1:0".to_string()], "", None).unwrap();
        serving_on(lb, fake, timeout)
    }

    fn serving_on(
        lb: Loopback,
        fake: &FakeDeps,
        timeout: Duration,
    ) -> (String, String, std::thread::JoinHandle<Result<Callback>>) {
        let base = format!("http://127.0.0.1:{}", lb.port);
        let start = format!("{base}{}", lb.start_path);
        let deps = fake.deps.clone();
        let handle = std::thread::spawn(move || {
            lb.wait(&deps, AUTH_URL, &Secret::new("the-state"), timeout, None)
        });
        (base, start, handle)
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    #[test]
    fn root_does_not_reveal_the_authorization_url_and_the_start_path_redirects() {
        let fake = FakeDeps::new();
        let (base, start, handle) = serving(&fake, Duration::from_secs(20));
        let c = client();
        let root = c.get(format!("{base}/")).send().unwrap();
        assert_eq!(root.status(), 404);
        assert!(root.headers().get("location").is_none());
        assert!(!root.text().unwrap().contains("the-state"));
        let first = c.get(&start).send().unwrap();
        assert_eq!(first.status(), 302);
        assert_eq!(first.headers()["location"], AUTH_URL);
        let ok = c
            .get(format!("{base}/?code=the-code&state=the-state"))
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(handle.join().unwrap().unwrap().code.expose(), "the-code");
    }

    /// The start URL is readable on the browser's command line: a second request for it means
    /// another local user may hold the authorization URL, so the login ends at once with an
    /// error instead of a 404 and more waiting; not even the right callback is taken after it.
    #[test]
    fn start_path_opened_twice_aborts_the_login() {
        let fake = FakeDeps::new();
        let (base, start, handle) = serving(&fake, Duration::from_secs(20));
        let c = client();
        let first = c.get(&start).send().unwrap();
        assert_eq!(first.status(), 302);
        let again = c.get(&start).send().unwrap();
        assert_eq!(again.status(), 409);
        assert!(again.headers().get("location").is_none());
        let page = again.text().unwrap();
        assert!(page.contains("already opened"), "{page}");
        assert!(!page.contains("the-state"), "{page}");
        let err = handle.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("opened twice"), "{err}");
        assert!(err.contains("another local user"), "{err}");
        assert!(err.contains("retry"), "{err}");
        assert!(!err.contains('\n'), "{err:?}");
        // The server is gone: a callback now reaches nobody.
        assert!(c
            .get(format!("{base}/?code=attacker-code&state=the-state"))
            .send()
            .is_err());
    }

    /// Sends `bytes` one at a time, each followed by up to `every` waiting for the server to
    /// close (that wait is the trickle's pace); returns how long the server kept the
    /// connection, or None when it was still open after `give_up`.
    fn trickle(
        addr: SocketAddr,
        bytes: &[u8],
        every: Duration,
        give_up: Duration,
    ) -> Option<Duration> {
        let began = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(every)).unwrap();
        let mut reply = [0u8; 64];
        for b in bytes.iter().cycle() {
            if began.elapsed() > give_up {
                return None;
            }
            if s.write_all(std::slice::from_ref(b)).is_err() {
                return Some(began.elapsed());
            }
            match s.read(&mut reply) {
                Ok(0) => return Some(began.elapsed()),
                Ok(n) => panic!("the server answered a partial head: {:?}", &reply[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(began.elapsed()),
            }
        }
        None
    }

    /// A local user trickling a request head a byte at a time (each read well within the
    /// per-read timeout) is cut off at the head deadline counted from accept, so it cannot
    /// hold the connection slots; the login goes on and completes.
    #[test]
    fn trickled_request_head_is_cut_off_at_the_deadline() {
        let fake = FakeDeps::new();
        let mut lb = Loopback::bind(&["127.0.0.1:0".to_string()], "", None).unwrap();
        lb.head_deadline = Duration::from_millis(500);
        let addr = SocketAddr::from(([127, 0, 0, 1], lb.port));
        let (base, _start, handle) = serving_on(lb, &fake, Duration::from_secs(20));
        let held = trickle(
            addr,
            b"GET /?code=x&state=y HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Duration::from_millis(100),
            Duration::from_secs(4),
        );
        let held = held.expect("a trickling client was still connected after 4 s");
        assert!(held < Duration::from_secs(3), "held for {held:?}");
        let ok = client()
            .get(format!("{base}/?code=the-code&state=the-state"))
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(handle.join().unwrap().unwrap().code.expose(), "the-code");
    }

    /// The same over HTTPS, where rustls makes many socket reads for one TLS record: the
    /// deadline sits below TLS, so a trickled handshake is cut off too.
    #[test]
    fn trickled_tls_handshake_is_cut_off_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let tls = (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        );
        let fake = FakeDeps::new();
        let mut lb = Loopback::bind(&["127.0.0.1:0".to_string()], "", Some(&tls)).unwrap();
        lb.head_deadline = Duration::from_millis(500);
        let addr = SocketAddr::from(([127, 0, 0, 1], lb.port));
        let (_base, _start, handle) = serving_on(lb, &fake, Duration::from_secs(6));
        // A TLS handshake record header announcing 512 bytes, then its body a byte at a time.
        let mut record = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        record.extend(std::iter::repeat_n(0u8, 511));
        let held = trickle(
            addr,
            &record,
            Duration::from_millis(100),
            Duration::from_secs(4),
        );
        let held = held.expect("a trickled TLS handshake was still connected after 4 s");
        assert!(held < Duration::from_secs(3), "held for {held:?}");
        assert!(handle.join().unwrap().is_err());
    }

    /// RFC 6749 §10.12: a stranger's `?error=` (or code) without our state changes nothing;
    /// the genuine callback still completes the login.
    #[test]
    fn error_or_code_with_a_wrong_state_does_not_end_the_login() {
        let fake = FakeDeps::new();
        let (base, _start, handle) = serving(&fake, Duration::from_secs(20));
        let c = client();
        for q in [
            "error=access_denied",
            "error=access_denied&state=guess",
            "code=attacker-code&state=guess",
            "code=attacker-code",
        ] {
            let r = c.get(format!("{base}/?{q}")).send().unwrap();
            assert_eq!(r.status(), 400, "{q}");
        }
        let ok = c
            .get(format!("{base}/?code=the-code&state=the-state"))
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(handle.join().unwrap().unwrap().code.expose(), "the-code");
        assert!(fake.console_text().contains("wrong state"));
    }

    #[test]
    fn provider_error_text_loses_control_characters() {
        let fake = FakeDeps::new();
        let (base, _start, handle) = serving(&fake, Duration::from_secs(20));
        let r = client()
            .get(format!(
                "{base}/?error=access_denied%1b%5b2J&error_description=no%1b%5d0%3bpwned%07%0dnow&error_uri=https%3a%2f%2fx%1b&state=the-state"
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        let err = handle.join().unwrap().unwrap_err().to_string();
        assert!(!err.chars().any(|c| c.is_control()), "{err:?}");
        assert!(err.contains("access_denied"), "{err}");
        assert!(err.contains("pwned"), "{err}");
    }

    #[test]
    fn timeout_mentions_refused_callbacks() {
        let fake = FakeDeps::new();
        let (base, _start, handle) = serving(&fake, Duration::from_secs(2));
        client()
            .get(format!("{base}/?code=x&state=wrong"))
            .send()
            .unwrap();
        let err = handle.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("1 callback(s) with a wrong state"), "{err}");
    }

    #[test]
    fn head_parser_bounds() {
        assert_eq!(
            parse_request_head(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n"),
            HeadParse::Complete(RequestHead {
                method: "GET".into(),
                target: "/a?b=c".into()
            })
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nHo"),
            HeadParse::Partial
        );
        assert_eq!(
            parse_request_head(b"\x00\x01garbage\r\n\r\n"),
            HeadParse::Invalid(400)
        );
        // An absolute-form or authority-form target is not ours to serve.
        assert_eq!(
            parse_request_head(b"GET http://evil/ HTTP/1.1\r\n\r\n"),
            HeadParse::Invalid(400)
        );
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(parse_request_head(&long), HeadParse::Invalid(431));
    }
}
