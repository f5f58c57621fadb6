//! HTTPS and serving for the IdP: `certs` makes a local CA and server certificate and loads PEM
//! files into rustls; `serve` is the one accept loop for plain HTTP and HTTPS, with its time
//! and connection limits.

mod certs;
mod serve;

pub use certs::{generate_certs, server_config, CertPaths, TlsError};
pub use serve::{ip_bucket, serve, serve_tls, ServeLimits};
