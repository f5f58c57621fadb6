//! Serving the IdP's `Router` over plain TCP or TLS: one accept loop, one hyper builder with a
//! timer, and the limits that keep slow or numerous clients from tying the server up.
//!
//! - Header read: hyper's HTTP/1 header read timeout, which also ends a keep-alive connection
//!   that sits idle between requests; a TLS handshake gets the same time.
//! - Body: a request body that sends nothing for the body timeout fails the request (400).
//! - Request: a response not ready within the request timeout becomes a 503, and an HTTP/1
//!   connection is closed after it (RFC 9112 §9.6 `Connection: close`).
//! - Connections: at the global cap the loop stops accepting, so new connections wait in the
//!   kernel's listen backlog until one closes; beyond the per-address cap (an IPv6 /64 counts as
//!   one address) a new connection is closed at once. The per-address cap is what keeps one
//!   client from taking every slot; a trusted reverse proxy is exempt from it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutBody;

/// HTTP/2 keep-alive ping interval and how long to wait for the answer.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest request path written to the request log.
const MAX_LOGGED_PATH: usize = 256;
/// After an accept error such as EMFILE, pause instead of spinning on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Time and connection limits of the listener (`serve` flags set them; see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Time for the TLS handshake, and for each request's headers (idle keep-alive included).
    pub header_read_timeout: Duration,
    /// Longest silence while a request body is being read.
    pub body_read_timeout: Duration,
    /// Longest time from a request's headers to its response.
    pub request_timeout: Duration,
    /// Connections served at once; more wait for a free slot.
    pub max_connections: usize,
    /// Connections from one address (IPv6: one /64) at once; more are closed.
    pub max_connections_per_ip: usize,
    /// Peers without a per-address cap: a reverse proxy carries everyone's connections.
    pub per_ip_exempt: Vec<IpAddr>,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 64,
            per_ip_exempt: Vec::new(),
        }
    }
}

/// `serve` over TLS with the default limits (the test harnesses' entry point).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve(
        listener,
        Some(config),
        app,
        ServeLimits::default(),
        shutdown,
    )
    .await
}

/// Serves `app` on an already-bound listener until `shutdown` resolves, over TLS when `tls` is
/// given, else plain HTTP/1.1. One task per connection; `ConnectInfo<SocketAddr>` of the peer
/// is in every request's extensions, as with axum's `into_make_service_with_connect_info`.
///
/// With TLS the protocol follows ALPN: `h2` gets HTTP/2, anything else HTTP/1.1 (RFC 9113 §3.2
/// allows HTTP/2 over TLS only via ALPN). Plain HTTP is HTTP/1.1 only: guessing the version
/// from the first bytes would wait for them without any timeout.
///
/// On shutdown it stops accepting, asks open connections to finish their current requests
/// (HTTP/2 GOAWAY, HTTP/1 close after the response), and returns once they have; a caller that
/// must not wait on a slow client wraps the call in `tokio::time::timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    tracing::debug!(addr = %listener.local_addr()?, tls = acceptor.is_some(), ?limits, "serving");
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::new(&limits));
    let limits = Arc::new(limits);
    // Connection tasks hold receivers; `closed()` on the sender tells when the last one is done.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The global cap: no accept without a free slot, so the excess waits in the backlog.
        let slot = tokio::select! {
            () = shutdown.as_mut() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let accepted = tokio::select! {
            () = shutdown.as_mut() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(err) if is_connection_error(&err) => {
                tracing::debug!(error = %err, "accept failed");
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed; pausing");
                tokio::select! {
                    () = shutdown.as_mut() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Some(ip_slot) = PerIp::acquire(&per_ip, peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address; closing");
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(Connection {
            stream,
            peer,
            acceptor: acceptor.clone(),
            app: app.clone(),
            limits: limits.clone(),
            stop: stop_rx.clone(),
            _slots: (slot, ip_slot),
        }));
    }
    drop(listener);
    drop(stop_rx);
    // Err only means no connection is open, which is fine.
    let _ = stop_tx.send(());
    stop_tx.closed().await;
    Ok(())
}

/// One accepted connection and what it holds until it ends.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: axum::Router,
    limits: Arc<ServeLimits>,
    stop: watch::Receiver<()>,
    /// Released when the connection task ends, whichever way.
    _slots: (OwnedSemaphorePermit, IpSlot),
}

async fn serve_connection(mut conn: Connection) {
    let peer = conn.peer;
    // Small responses (discovery, JWKS, tokens) should not wait for Nagle.
    if let Err(err) = conn.stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    let Some(acceptor) = conn.acceptor.take() else {
        let stream = TokioIo::new(conn.stream);
        return serve_http(stream, false, peer, conn.app, &conn.limits, conn.stop).await;
    };
    let handshake = tokio::time::timeout(
        conn.limits.header_read_timeout,
        acceptor.accept(conn.stream),
    );
    let tls = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = conn.stop.changed() => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    serve_http(
        TokioIo::new(tls),
        h2,
        peer,
        conn.app,
        &conn.limits,
        conn.stop,
    )
    .await;
}

/// Runs HTTP/1.1 (or HTTP/2 when `h2`) on an established stream until it closes or the server
/// stops.
async fn serve_http<I>(
    io: I,
    h2: bool,
    peer: SocketAddr,
    app: axum::Router,
    limits: &ServeLimits,
    mut stop: watch::Receiver<()>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Request = hyper::Request<Incoming>;
    let (body_timeout, request_timeout) = (limits.body_read_timeout, limits.request_timeout);
    let service = hyper::service::service_fn(move |mut req: Request| {
        // The same extension axum's `into_make_service_with_connect_info` adds.
        req.extensions_mut().insert(ConnectInfo(peer));
        // The request log (debug level): method and path only. Never the query, which carries
        // authorization codes, state and user codes, nor headers or bodies (credentials).
        let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let path: String = req.uri().path().chars().take(MAX_LOGGED_PATH).collect();
            (req.method().clone(), path, std::time::Instant::now())
        });
        let req = req.map(|body| TimeoutBody::new(body_timeout, body));
        let response = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let response = match tokio::time::timeout(request_timeout, response).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::debug!(%peer, "request timed out");
                    Ok(request_timed_out(h2))
                }
            };
            if let (Some((method, path, started)), Ok(r)) = (logged, &response) {
                tracing::debug!(
                    %peer,
                    %method,
                    path,
                    status = r.status().as_u16(),
                    micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "request"
                );
            }
            response
        }
    });

    // Knowing the protocol up front (ALPN, or HTTP/1.1 on plain TCP) skips the builder's
    // version sniffing, so the HTTP/1 header timeout covers a client that says nothing at all.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Pings find HTTP/2 peers that vanished without closing, which would otherwise keep their
    // connection task forever.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            return;
        }
        _ = stop.changed() => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(err) = conn.await {
        tracing::debug!(%peer, error = %err, "connection ended with an error during shutdown");
    }
}

/// The answer when the router took longer than the request timeout: 503 (RFC 9110 §15.6.4), and
/// on HTTP/1 `Connection: close` so the connection ends with it (RFC 9112 §9.6; HTTP/2 forbids
/// the header, RFC 9113 §8.2.2, and only the stream ends).
fn request_timed_out(h2: bool) -> Response {
    let mut response = Response::new(axum::body::Body::from("request timed out\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if !h2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Errors that concern one connection only; anything else (EMFILE, ENOMEM) affects all.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The address a per-address limit counts: an IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 an IPv6 address is in. A host is usually given a whole /64 (RFC 4291 §2.5.1: 64-bit
/// interface identifiers), so counting single IPv6 addresses would not limit it at all.
pub fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Open connections per address bucket.
struct PerIp {
    max: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its bucket until dropped.
struct IpSlot {
    table: Arc<PerIp>,
    bucket: Option<IpAddr>,
}

impl PerIp {
    fn new(limits: &ServeLimits) -> Self {
        PerIp {
            max: limits.max_connections_per_ip.max(1),
            exempt: limits
                .per_ip_exempt
                .iter()
                .map(|ip| ip.to_canonical())
                .collect(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or None when its bucket is full.
    fn acquire(table: &Arc<PerIp>, ip: IpAddr) -> Option<IpSlot> {
        if table.exempt.contains(&ip.to_canonical()) {
            return Some(IpSlot {
                table: table.clone(),
                bucket: None,
            });
        }
        let bucket = ip_bucket(ip);
        // A panic elsewhere cannot leave the counts half-updated: each update is one statement.
        let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(bucket).or_insert(0);
        if *count >= table.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: table.clone(),
            bucket: Some(bucket),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(bucket) = self.bucket else { return };
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&bucket) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&bucket);
            }
        }
    }
}

#[cfg(test)]
// Tests may fail loudly: the no-panic rule is for code that runs in the IdP.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::tls::{generate_certs, server_config, CertPaths};
    use axum::routing::get;
    use std::fs;
    use std::path::Path;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// 2024-03-01T12:00:00Z.
    const NOW: u64 = 1_709_294_400;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn app() -> axum::Router {
        axum::Router::new().route(
            "/peer",
            get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.to_string() }),
        )
    }

    async fn start(
        paths: &CertPaths,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let config = server_config(&paths.server_cert, &paths.server_key).expect("config");
        start_with(Some(config), app(), ServeLimits::default()).await
    }

    async fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        app: axum::Router,
        limits: ServeLimits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, tls, app, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    /// Certificate validity is checked against this fixed clock rather than the machine's, so
    /// the tests read no wall clock and pass whenever they run.
    #[derive(Debug)]
    struct FixedTime(u64);

    impl rustls::time_provider::TimeProvider for FixedTime {
        fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
            Some(rustls::pki_types::UnixTime::since_unix_epoch(
                Duration::from_secs(self.0),
            ))
        }
    }

    /// A client config trusting only `ca_cert`, at time `at`.
    fn client_config(ca_cert: &Path, at: u64, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut fs::read(ca_cert).expect("ca").as_slice()) {
            roots.add(cert.expect("cert")).expect("add");
        }
        let mut config = rustls::ClientConfig::builder_with_details(
            Arc::new(rustls::crypto::ring::default_provider()),
            Arc::new(FixedTime(at)),
        )
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    fn client(ca_cert: &Path, addr: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(client_config(ca_cert, NOW + 3_600, &[b"http/1.1"]))
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    async fn handshake(
        addr: SocketAddr,
        config: rustls::ClientConfig,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    #[tokio::test]
    async fn https_request_trusting_only_the_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        generate_certs(&hosts(&["localhost"]), dir, NOW).expect("certs");
        // Re-run to add the IP: the reissued leaf must chain to the CA of the first run.
        let paths = generate_certs(&hosts(&["localhost", "127.0.0.1"]), dir, NOW).expect("re-run");
        let (addr, stop, server) = start(&paths).await;

        // A client that connects and stays silent, and one that does not speak TLS, must not
        // stop anyone else from being served.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");

        let client = client(&paths.ca_cert, addr);
        for url in [
            format!("https://127.0.0.1:{}/peer", addr.port()),
            format!("https://localhost:{}/peer", addr.port()),
        ] {
            let resp = client.get(&url).send().await.expect("request");
            assert_eq!(resp.status(), 200, "{url}");
            let peer: SocketAddr = resp.text().await.expect("body").parse().expect("peer addr");
            assert_eq!(
                peer.ip(),
                IpAddr::from([127, 0, 0, 1]),
                "ConnectInfo reached the handler"
            );
        }

        // A client offering h2 gets HTTP/1.1 (idle HTTP/2 connections would escape the header
        // timeout); an HTTP/1.1-only client gets served.
        let tls = handshake(
            addr,
            client_config(&paths.ca_cert, NOW, &[b"h2", b"http/1.1"]),
        )
        .await
        .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        drop(tls);
        let mut tls = handshake(addr, client_config(&paths.ca_cert, NOW, &[b"http/1.1"]))
            .await
            .expect("handshake");
        tls.write_all(b"GET /peer HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        tls.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        let local = tls.get_ref().0.local_addr().expect("addr");
        assert!(response.ends_with(&local.to_string()), "{response}");

        // The leaf is valid from the start of the issuing day for 825 days.
        let day_start = NOW - NOW % 86_400;
        for (at, valid) in [
            (day_start, true),
            (day_start - 1, false),
            (day_start + 825 * 86_400 - 1, true),
            (day_start + 825 * 86_400 + 1, false),
        ] {
            let result = handshake(addr, client_config(&paths.ca_cert, at, &[])).await;
            assert_eq!(result.is_ok(), valid, "at {at}: {:?}", result.err());
        }

        drop(client);
        drop(plain);
        drop(_silent);
        stop.send(()).expect("stop");
        let result = tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("server stops")
            .expect("join");
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn client_trusting_another_ca_refuses_the_server() {
        // A client trusting a different CA must fail the handshake: proves the chain is checked.
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = generate_certs(&hosts(&["localhost"]), &tmp.path().join("a"), NOW).expect("a");
        let other = generate_certs(&hosts(&["localhost"]), &tmp.path().join("b"), NOW).expect("b");
        let (addr, stop, server) = start(&paths).await;
        let client = client(&other.ca_cert, addr);
        let url = format!("https://localhost:{}/peer", addr.port());
        let err = client.get(&url).send().await.expect_err("untrusted");
        // Both CAs share the subject name, so the client finds the other CA and then refuses
        // its signature on the leaf.
        assert!(format!("{err:?}").contains("BadSignature"), "{err:?}");
        stop.send(()).expect("stop");
        assert!(server.await.expect("join").is_ok());
    }

    /// A plain HTTP test server: `/peer`, a `/slow` handler that never answers and an `/echo`
    /// that reads the whole body.
    async fn start_plain(
        limits: ServeLimits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let app = app()
            .route("/slow", get(std::future::pending::<&'static str>))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            );
        start_with(None, app, limits).await
    }

    /// A connection from `source` (any 127/8 address: Linux loopback answers for all of them).
    async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind source");
        socket.connect(addr).await.expect("connect")
    }

    /// Everything the server sends until it closes the connection, or None if it is still
    /// open after `bound`.
    async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<String> {
        let mut out = Vec::new();
        match tokio::time::timeout(bound, stream.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => None,
        }
    }

    fn short_limits() -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ..ServeLimits::default()
        }
    }

    #[tokio::test]
    async fn slow_response_gets_503_and_the_connection_closes() {
        let limits = ServeLimits {
            request_timeout: Duration::from_millis(300),
            ..short_limits()
        };
        let (addr, stop, server) = start_plain(limits).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let response = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("the connection is closed after the timeout response");
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{response}"
        );
        stop.send(()).expect("stop");
        assert!(server.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn stalled_body_fails_the_request_and_closes_the_connection() {
        let limits = ServeLimits {
            body_read_timeout: Duration::from_millis(300),
            ..short_limits()
        };
        let (addr, stop, server) = start_plain(limits).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Ten bytes announced, one sent.
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\na")
            .await
            .expect("write");
        let response = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("the connection is closed after the body stalled");
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        stop.send(()).expect("stop");
        assert!(server.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn at_the_global_cap_new_connections_wait_for_a_free_slot() {
        let limits = ServeLimits {
            max_connections: 2,
            ..short_limits()
        };
        let (addr, stop, server) = start_plain(limits).await;
        let first = connect_from([127, 0, 0, 2], addr).await;
        let second = connect_from([127, 0, 0, 3], addr).await;
        let mut third = connect_from([127, 0, 0, 1], addr).await;
        third
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        // Not refused and not served while both slots are held...
        assert_eq!(
            read_until_closed(&mut third, Duration::from_millis(500)).await,
            None,
            "a connection beyond the cap waits"
        );
        // ...and served as soon as one is free.
        drop(first);
        let response = read_until_closed(&mut third, Duration::from_secs(5))
            .await
            .expect("served once a slot is free");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        drop(second);
        stop.send(()).expect("stop");
        assert!(server.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn beyond_the_per_address_cap_connections_are_closed() {
        let limits = ServeLimits {
            max_connections_per_ip: 2,
            per_ip_exempt: vec![IpAddr::from([127, 0, 0, 3])],
            ..short_limits()
        };
        let (addr, stop, server) = start_plain(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(connect_from([127, 0, 0, 2], addr).await);
        }
        let mut over = connect_from([127, 0, 0, 2], addr).await;
        assert_eq!(
            read_until_closed(&mut over, Duration::from_secs(5)).await,
            Some(String::new()),
            "closed at once, without an answer"
        );
        // Other addresses, and an exempt proxy, are not affected.
        for source in [
            [127, 0, 0, 1],
            [127, 0, 0, 3],
            [127, 0, 0, 3],
            [127, 0, 0, 3],
        ] {
            let mut other = connect_from(source, addr).await;
            other
                .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let response = read_until_closed(&mut other, Duration::from_secs(5))
                .await
                .expect("answered");
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "{source:?}: {response}"
            );
            held.push(other);
        }
        // A slot is given back when its connection closes.
        held.remove(0);
        let mut again = connect_from([127, 0, 0, 2], addr).await;
        again
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let response = read_until_closed(&mut again, Duration::from_secs(5))
            .await
            .expect("answered");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        drop(held);
        stop.send(()).expect("stop");
        assert!(server.await.expect("join").is_ok());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(ip_bucket(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            ip_bucket(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip_bucket(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            ip_bucket(ip("2001:db8:1:3::1")),
            ip_bucket(ip("2001:db8:1:2::1"))
        );
        assert_eq!(ip_bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(ip_bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
