//! The one-shot loopback server that receives the authorization response (RFC 8252 §7.3).
//!
//! It binds the first free `--listen-address` (kubelogin: 127.0.0.1:8000, then :18000). The
//! redirect URI names `localhost`, which a browser may resolve to `::1` first (kubelogin #1151),
//! so with a `localhost` redirect the same port is bound on the IPv6 loopback too.

use std::io::ErrorKind;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deps::Deps;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// A bound loopback server, not yet serving.
pub struct Loopback {
    servers: Vec<Arc<tiny_http::Server>>,
    pub port: u16,
    /// The `redirect_uri` to send (RFC 6749 §3.1.2).
    pub redirect_uri: String,
    /// Where to point the browser: the server root, which redirects to the provider.
    pub start_url: String,
    callback_path: String,
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
        .map_err(|e| Error::usage(format!("--listen-address \"{item}\" is not host:port: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| Error::usage(format!("--listen-address \"{item}\" resolves to nothing")))
}

fn listener_for(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
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
        let ssl = match tls {
            Some((cert, key)) => Some(read_tls(cert, key)?),
            None => None,
        };
        let scheme = if ssl.is_some() { "https" } else { "http" };
        let custom = if redirect_url.is_empty() {
            None
        } else {
            Some(url::Url::parse(redirect_url).map_err(|e| {
                Error::usage(format!("--oidc-redirect-url \"{redirect_url}\": {e}"))
            })?)
        };
        let redirect_is_localhost = custom
            .as_ref()
            .map(|u| u.host_str() == Some("localhost"))
            .unwrap_or(true);
        let mut failures = Vec::new();
        for item in listen {
            let addr = resolve_listen_address(item)?;
            // With port 0 the IPv6 twin may find its port taken by someone else; try again.
            let attempts = if addr.port() == 0 { 3 } else { 1 };
            for _ in 0..attempts {
                let v4 = match listener_for(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        failures.push(format!("{addr}: {e}"));
                        break;
                    }
                };
                let port = v4
                    .local_addr()
                    .map_err(|e| Error::io("loopback", e))?
                    .port();
                let mut listeners = vec![v4];
                if redirect_is_localhost && addr.ip().is_loopback() && addr.is_ipv4() {
                    match listener_for(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
                        Ok(v6) => listeners.push(v6),
                        // Another program answers on [::1]:port; a browser resolving
                        // localhost to ::1 would reach it instead of us.
                        Err(e) if e.kind() == ErrorKind::AddrInUse => {
                            failures.push(format!("[::1]:{port}: {e}"));
                            continue;
                        }
                        // No IPv6 on this machine: localhost can only be 127.0.0.1.
                        Err(_) => {}
                    }
                }
                let mut servers = Vec::new();
                for l in listeners {
                    let server = tiny_http::Server::from_listener(l, ssl.clone()).map_err(|e| {
                        Error::Login(format!("cannot start the loopback server: {e}"))
                    })?;
                    servers.push(Arc::new(server));
                }
                let (redirect_uri, callback_path, start_url) = match &custom {
                    Some(u) => {
                        let mut start = u.clone();
                        start.set_path("/");
                        start.set_query(None);
                        (u.to_string(), u.path().to_string(), start.to_string())
                    }
                    None => (
                        format!("{scheme}://localhost:{port}"),
                        "/".to_string(),
                        format!("{scheme}://localhost:{port}/"),
                    ),
                };
                return Ok(Loopback {
                    servers,
                    port,
                    redirect_uri,
                    start_url,
                    callback_path,
                });
            }
        }
        Err(Error::Login(format!(
            "could not listen on any --listen-address ({}); free one of these ports or choose others with --listen-address",
            failures.join(", ")
        )))
    }

    /// Serves until the callback arrives or `timeout` passes. The root redirects to
    /// `auth_url` so the printed URL stays short; the callback checks `state` (RFC 6749
    /// §10.12) and shows a success page or redirects to `open_url_after`.
    pub fn wait(
        &self,
        deps: &Deps,
        auth_url: &str,
        state: &Secret,
        timeout: Duration,
        open_url_after: Option<&str>,
    ) -> Result<Callback> {
        let (tx, rx) = mpsc::channel::<tiny_http::Request>();
        for server in &self.servers {
            let server = server.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Ends when the server is unblocked below or the receiver is gone.
                while let Ok(req) = server.recv() {
                    if tx.send(req).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = self.serve(deps, &rx, auth_url, state, timeout, open_url_after);
        for server in &self.servers {
            server.unblock();
        }
        result
    }

    fn serve(
        &self,
        deps: &Deps,
        rx: &mpsc::Receiver<tiny_http::Request>,
        auth_url: &str,
        state: &Secret,
        timeout: Duration,
        open_url_after: Option<&str>,
    ) -> Result<Callback> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = match rx.recv_timeout(left) {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Login(format!(
                        "timed out after {}s waiting for the browser login (--authentication-timeout-sec)",
                        timeout.as_secs()
                    )))
                }
            };
            let Ok(url) = url::Url::parse(&format!("http://localhost{}", req.url())) else {
                respond(req, 400, "Bad request.");
                continue;
            };
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let get = |name: &str| {
                query
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let is_callback = url.path() == self.callback_path
                && (get("code").is_some() || get("error").is_some());
            if !is_callback {
                if url.path() == "/" {
                    deps.log(1, || "redirecting the browser to the provider".to_string());
                    redirect(req, auth_url);
                } else {
                    respond(req, 404, "Not found.");
                }
                continue;
            }
            deps.log(1, || "received the authorization response".to_string());
            // RFC 6749 §4.1.2.1: an error response.
            if let Some(error) = get("error") {
                let desc = get("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                respond(req, 400, &format!("Authentication failed: {error}{desc}"));
                return Err(Error::Login(format!(
                    "the provider answered the authorization request with {error}{desc}"
                )));
            }
            if get("state").as_deref() != Some(state.expose()) {
                respond(req, 400, "Authentication failed: state does not match.");
                return Err(Error::Login(
                    "the authorization response has a wrong state (RFC 6749 §10.12); try again"
                        .into(),
                ));
            }
            let code = get("code").unwrap_or_default();
            match open_url_after {
                Some(target) => redirect(req, target),
                None => respond(
                    req,
                    200,
                    "Authenticated. You have logged in to the cluster. You can close this window.",
                ),
            }
            return Ok(Callback {
                code: Secret::new(code),
            });
        }
    }
}

/// Reads and checks the loopback certificate and key. tiny_http panics on a key file it
/// cannot parse, so the PEM is checked here first: at least one certificate, and a PKCS#8 or
/// PKCS#1 (RSA) key, the two forms it reads.
fn read_tls(cert: &str, key: &str) -> Result<tiny_http::SslConfig> {
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
    let mut usable = false;
    for item in rustls_pemfile::read_all(&mut private_key.as_slice()) {
        match item.map_err(|e| Error::io(format!("--local-server-key {key}"), e))? {
            rustls_pemfile::Item::Pkcs8Key(_) | rustls_pemfile::Item::Pkcs1Key(_) => usable = true,
            _ => {}
        }
    }
    if !usable {
        return Err(Error::usage(format!(
            "--local-server-key {key}: expected a PKCS#8 (BEGIN PRIVATE KEY) or RSA (BEGIN RSA PRIVATE KEY) PEM key"
        )));
    }
    Ok(tiny_http::SslConfig {
        certificate,
        private_key,
    })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn respond(req: tiny_http::Request, status: u16, text: &str) {
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>kubectl oidc-login</title></head><body><p>{}</p></body></html>",
        html_escape(text)
    );
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8") {
        response.add_header(h);
    }
    // The browser may have gone; nothing to do about it.
    let _ = req.respond(response);
}

fn redirect(req: tiny_http::Request, location: &str) {
    let mut response = tiny_http::Response::empty(302);
    if let Ok(h) = tiny_http::Header::from_bytes("Location", location) {
        response.add_header(h);
    }
    let _ = req.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn localhost_redirect_listens_on_both_loopbacks() {
        let lb = Loopback::bind(&["127.0.0.1:0".to_string()], "", None).unwrap();
        assert_eq!(lb.redirect_uri, format!("http://localhost:{}", lb.port));
        // Both addresses are taken by us now (IPv6 only when the machine has it).
        assert!(TcpListener::bind(("127.0.0.1", lb.port)).is_err());
        if TcpListener::bind("[::1]:0").is_ok() {
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
        assert_eq!(lb.servers.len(), 1);
    }
}
