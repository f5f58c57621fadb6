//! `kubelogin-idp certs` (a local CA plus a server certificate signed by it) and loading PEM
//! files into a rustls `ServerConfig`.
//!
//! kube-apiserver fetches the issuer's discovery document and JWKS over HTTPS and must trust the
//! server certificate (`--oidc-ca-file`), so `certs` makes a CA to hand to it and a separate
//! leaf: rustls refuses a CA certificate used as the server's own (CaUsedAsEndEntity). A re-run
//! reuses the CA, read back from ca.crt with rcgen's `x509-parser` feature; files are written
//! atomically by `shared::fs`.

use std::fs;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate's subject; `certs` reuses only a CA with this subject (see `load_ca`).
const CA_COMMON_NAME: &str = "kubelogin-idp local CA";
/// Ten years: the CA is what kube-apiserver is configured to trust, so it should outlive leaves.
const CA_VALIDITY_DAYS: i64 = 3652;
/// 825 days is the longest server certificate lifetime macOS/iOS clients accept.
const SERVER_VALIDITY_DAYS: i64 = 825;

/// Errors of certificate generation and TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "at least one --host is required: the server certificate must name the DNS names or IP \
         addresses clients use to reach the IdP"
    )]
    NoHosts,
    #[error("invalid --host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error(
        "{} exists but {} does not: restore the missing file to keep the CA kube-apiserver \
         trusts, or remove both to create a new CA",
        present.display(),
        missing.display()
    )]
    IncompleteCa { present: PathBuf, missing: PathBuf },
    #[error("cannot reuse the CA in {}: {reason}", dir.display())]
    CaReuse { dir: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the time {0} (unix seconds) is outside the range a certificate can express")]
    TimeOutOfRange(u64),
    #[error("TLS configuration from {} and {}: {source}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Where `generate_certs` wrote its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// `kubelogin-idp certs --host NAME --host IP ... --out DIR`: creates DIR (0700) if needed; reuses DIR/ca.crt + DIR/ca.key if both exist (so re-running to add a host keeps the CA kube-apiserver already trusts), else creates a new CA (ECDSA P-256, CA:true, keyCertSign, 10 years, CN "kubelogin-idp local CA"); then issues DIR/server.crt + server.key (ECDSA P-256, not a CA, serverAuth EKU, SANs: each host as DNS name or IP address, valid 825 days), keys written mode 0600, certs 0644. Returns the paths. Hosts must be non-empty; invalid host strings give a clear error.
///
/// A ca.crt without its ca.key is an error rather than a reason to make a new CA, since a new
/// ca.crt would silently break every kube-apiserver that trusts the old one; a ca.key without
/// its ca.crt gets the certificate re-created from it.
pub fn generate_certs(
    hosts: &[String],
    out_dir: &Path,
    now_unix: u64,
) -> Result<CertPaths, TlsError> {
    let first_host = hosts.first().ok_or(TlsError::NoHosts)?;
    let mut sans: Vec<SanType> = Vec::with_capacity(hosts.len());
    for host in hosts {
        let san = parse_host(host)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let today = i64::try_from(now_unix / 86_400).map_err(|_| TlsError::TimeOutOfRange(now_unix))?;
    // Refuse a date certificates cannot express before writing anything.
    if midnight(today + CA_VALIDITY_DAYS).is_err() {
        return Err(TlsError::TimeOutOfRange(now_unix));
    }

    create_private_dir(out_dir)?;
    let paths = CertPaths {
        ca_cert: out_dir.join("ca.crt"),
        ca_key: out_dir.join("ca.key"),
        server_cert: out_dir.join("server.crt"),
        server_key: out_dir.join("server.key"),
    };
    let (ca_cert, ca_key) = match (exists(&paths.ca_cert)?, exists(&paths.ca_key)?) {
        (true, true) => load_ca(&paths, out_dir)?,
        (false, false) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let cert = ca_params(today)?.self_signed(&key)?;
            // Key first: a crash in between leaves a lone ca.key, which the next run completes.
            write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
            (cert, key)
        }
        (true, false) => {
            return Err(TlsError::IncompleteCa {
                present: paths.ca_cert,
                missing: paths.ca_key,
            })
        }
        (false, true) => {
            // A lone ca.key (an interrupted run, or a deleted ca.crt) gets its certificate back.
            // Same key and subject, so leaves still chain to any copy of an earlier ca.crt that
            // kube-apiserver holds; replacing the key instead would orphan that copy.
            let key = read_ca_key(&paths.ca_key)?;
            let cert = ca_params(today)?.self_signed(&key)?;
            write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
            (cert, key)
        }
    };

    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, first_host.as_str());
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, today, today + SERVER_VALIDITY_DAYS)?;
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;
    write_file(
        &paths.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&paths.server_cert, server_cert.pem().as_bytes(), 0o644)?;
    Ok(paths)
}

/// Loads a PEM certificate chain and a PEM private key (PKCS#1, PKCS#8 or SEC1) into a rustls ServerConfig using the ring provider explicitly (no process-default provider), ALPN h2 + http/1.1. Errors name the file and what was wrong.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = fs::read(cert_path).map_err(io_error(cert_path))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_path_buf(),
            reason: format!("unreadable PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE PEM block: expected the server certificate, optionally \
                     followed by intermediate CA certificates"
                .to_string(),
        });
    }
    let key = read_private_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_error = |source| TlsError::Config {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(config_error)?;
    // RFC 7301 ALPN: HTTP/1.1 only. hyper bounds an HTTP/1 connection's header read (which also
    // ends idle keep-alive connections); an HTTP/2 connection whose client answers pings could
    // stay open with no stream for ever and hold a connection slot. Our clients (kubectl's
    // plugin, kube-apiserver's JWKS fetch, browsers) all speak HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_private_key(key_path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let key_pem = fs::read(key_path).map_err(io_error(key_path))?;
    let pem_error = |reason: String| TlsError::Pem {
        path: key_path.to_path_buf(),
        reason,
    };
    match rustls_pemfile::private_key(&mut key_pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => {
            let text = String::from_utf8_lossy(&key_pem);
            let reason = if text.contains("ENCRYPTED") {
                "the private key is encrypted; give an unencrypted key (protect it with file \
                 permissions instead)"
            } else if text.contains("-----BEGIN CERTIFICATE-----") {
                "this is a certificate, not a private key (are the certificate and key paths \
                 swapped?)"
            } else {
                "no private key PEM block: expected PRIVATE KEY (PKCS#8), RSA PRIVATE KEY \
                 (PKCS#1) or EC PRIVATE KEY (SEC1)"
            };
            Err(pem_error(reason.to_string()))
        }
        Err(e) => Err(pem_error(format!("unreadable PEM: {e}"))),
    }
}

/// Reuses the CA on disk. Its certificate is read back with rcgen's `x509-parser` feature, so
/// leaves name its subject as their issuer and carry its subjectKeyIdentifier as their
/// authorityKeyIdentifier (RFC 5280 §4.2.1.1): they chain to the very ca.crt kube-apiserver
/// holds. ca.key must be ca.crt's key, and ca.crt one that `certs` made (CN=[`CA_COMMON_NAME`]):
/// a CA made with other tooling stays with that tooling.
fn load_ca(paths: &CertPaths, dir: &Path) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let reuse_error = |reason: String| TlsError::CaReuse {
        dir: dir.to_path_buf(),
        reason,
    };
    let key = read_ca_key(&paths.ca_key)?;
    let cert_pem = fs::read(&paths.ca_cert).map_err(io_error(&paths.ca_cert))?;
    let stored = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::Pem {
            path: paths.ca_cert.clone(),
            reason: "no CERTIFICATE PEM block".to_string(),
        })?;
    let not_a_certificate = |e: &dyn std::fmt::Display| TlsError::Pem {
        path: paths.ca_cert.clone(),
        reason: format!("not a valid certificate: {e}"),
    };
    let params = CertificateParams::from_ca_cert_der(&stored).map_err(|e| not_a_certificate(&e))?;
    let (_, stored_spki) = anchor_of(stored).map_err(|e| not_a_certificate(&e))?;
    let is_ours = params.distinguished_name == ca_name();
    // rcgen 0.13 signs leaves with a `Certificate` as issuer, of which it uses the parameters
    // read above and the key; this re-signed copy is never written.
    let issuer = params.self_signed(&key)?;
    let (_, key_spki) = anchor_of(issuer.der().clone()).map_err(|e| reuse_error(e.to_string()))?;
    if stored_spki != key_spki {
        return Err(reuse_error("ca.key is not the key of ca.crt".to_string()));
    }
    if !is_ours {
        return Err(reuse_error(format!(
            "ca.crt was not made by `kubelogin-idp certs` (its subject is not CN={CA_COMMON_NAME}); \
             sign the server certificate with that CA's own tooling, or remove ca.crt and ca.key \
             to create a new CA"
        )));
    }
    Ok((issuer, key))
}

fn read_ca_key(path: &Path) -> Result<KeyPair, TlsError> {
    let pem = fs::read_to_string(path).map_err(io_error(path))?;
    KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("not a usable PKCS#8 CA private key: {e}"),
    })
}

/// The DER subject name and SubjectPublicKeyInfo of a certificate, as rustls reads them.
fn anchor_of(cert: CertificateDer<'_>) -> Result<(Vec<u8>, Vec<u8>), rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    store.add(cert)?;
    let anchor = store
        .roots
        .first()
        .ok_or(rustls::Error::General("certificate not added".to_string()))?;
    Ok((
        anchor.subject.as_ref().to_vec(),
        anchor.subject_public_key_info.as_ref().to_vec(),
    ))
}

/// The subject of the CA `certs` makes.
fn ca_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name
}

fn ca_params(today: i64) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name();
    // Path length 0: this CA signs server certificates directly, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, today, today + CA_VALIDITY_DAYS)?;
    Ok(params)
}

/// RFC 5280 §4.1.2.2: a positive serial of at most 20 octets, unique per issuer; 127 random bits
/// make a collision between reissued leaves practically impossible.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Top bit clear keeps the INTEGER positive; the next bit set keeps all 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Sets validity from midnight UTC of day `from` to midnight UTC of day `to` (days since
/// 1970-01-01). Starting at the start of the current day also tolerates clients whose clocks
/// lag by a few hours.
fn set_validity(params: &mut CertificateParams, from: i64, to: i64) -> Result<(), TlsError> {
    params.not_before = midnight(from)?;
    params.not_after = midnight(to)?;
    Ok(())
}

/// Midnight UTC at the start of day `days` after 1970-01-01. Certificate times are written as
/// UTCTime or GeneralizedTime, both with four-digit years (RFC 5280 §4.1.2.5), so a day past
/// 9999-12-31 is refused rather than handed to rcgen.
fn midnight(days: i64) -> Result<time::OffsetDateTime, TlsError> {
    let out_of_range =
        || TlsError::TimeOutOfRange(u64::try_from(days).unwrap_or(0).saturating_mul(86_400));
    let seconds = days.checked_mul(86_400).ok_or_else(out_of_range)?;
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| out_of_range())?;
    if !(0..=9999).contains(&at.year()) {
        return Err(out_of_range());
    }
    Ok(at)
}

/// A `--host` as a subjectAltName: an IP address (RFC 5280 §4.2.1.6 iPAddress) or a DNS name
/// in preferred name syntax (RFC 1034 §3.5, RFC 5280 §4.2.1.6 dNSName), optionally with a
/// leading `*.` wildcard label (RFC 6125 §6.4.3).
fn parse_host(host: &str) -> Result<SanType, TlsError> {
    let invalid = |reason: &'static str| TlsError::InvalidHost {
        host: host.to_string(),
        reason,
    };
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| SanType::IpAddress(IpAddr::V6(ip)))
            .map_err(|_| invalid("brackets are only for IPv6 addresses"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if host.is_empty() {
        return Err(invalid("empty"));
    }
    if host.contains("://") {
        return Err(invalid("give a host name or IP address, not a URL"));
    }
    if host.contains(':') {
        return Err(invalid(
            "remove the port: certificates name hosts, not ports (IPv6 addresses are accepted as is)",
        ));
    }
    if !host.is_ascii() {
        return Err(invalid(
            "internationalized names must be given in their xn-- (punycode) form",
        ));
    }
    if host.ends_with('.') {
        return Err(invalid("remove the trailing dot"));
    }
    if host.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    let name = host.to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if i == 0 && *label == "*" {
            if labels.len() < 3 {
                return Err(invalid(
                    "a wildcard needs at least two labels after it, e.g. *.idp.example.com",
                ));
            }
            continue;
        }
        if label.is_empty() {
            return Err(invalid("empty label (two dots in a row or a leading dot)"));
        }
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "only letters, digits, '-' and '.' are allowed in a DNS name",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label cannot start or end with '-'"));
        }
    }
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("looks like an IP address but is not a valid one"));
    }
    let name = rcgen::Ia5String::try_from(name).map_err(|_| invalid("not an IA5 string"))?;
    Ok(SanType::DnsName(name))
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_error(path))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Writes via a temporary file and rename ([`shared::fs::write_atomic`]), so a server reading
/// the file never sees it half written, and a key file is never readable by others, not even
/// for a moment.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    shared::fs::write_atomic(path, contents, mode).map_err(io_error(path))
}

#[cfg(test)]
// Tests may fail loudly: the no-panic rule is for code that runs in the IdP.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// 2024-03-01T12:00:00Z.
    const NOW: u64 = 1_709_294_400;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generates_files_with_modes_and_reuses_ca() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("certs");
        let paths = generate_certs(&hosts(&["localhost", "127.0.0.1"]), &dir, NOW).expect("certs");
        assert_eq!(paths.ca_cert, dir.join("ca.crt"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.server_key), 0o600);
        assert_eq!(mode(&paths.ca_cert), 0o644);
        assert_eq!(mode(&paths.server_cert), 0o644);
        assert!(
            fs::read_dir(&dir).expect("ls").count() == 4,
            "no temporary files left"
        );

        let ca = fs::read(&paths.ca_cert).expect("ca");
        let ca_key = fs::read(&paths.ca_key).expect("ca key");
        let leaf = fs::read(&paths.server_cert).expect("leaf");
        let again = generate_certs(
            &hosts(&["localhost", "127.0.0.1", "idp.example.com"]),
            &dir,
            NOW + 60,
        )
        .expect("re-run");
        assert_eq!(again, paths);
        assert_eq!(
            fs::read(&paths.ca_cert).expect("ca"),
            ca,
            "CA reused byte for byte"
        );
        assert_eq!(fs::read(&paths.ca_key).expect("ca key"), ca_key);
        assert_ne!(
            fs::read(&paths.server_cert).expect("leaf"),
            leaf,
            "leaf reissued"
        );
        assert_eq!(mode(&paths.server_key), 0o600);
    }

    #[test]
    fn server_config_errors_name_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect("certs");
        let config = server_config(&paths.server_cert, &paths.server_key).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);

        let missing = tmp.path().join("nope.crt");
        let err = server_config(&missing, &paths.server_key).expect_err("missing");
        assert!(err.to_string().contains("nope.crt"), "{err}");

        // Swapped paths.
        let err = server_config(&paths.server_key, &paths.server_cert).expect_err("swapped");
        assert!(
            err.to_string().contains("server.key") && err.to_string().contains("CERTIFICATE"),
            "{err}"
        );

        let err = server_config(&paths.server_cert, &paths.server_cert).expect_err("cert as key");
        assert!(
            err.to_string().contains("server.crt") && err.to_string().contains("not a private key"),
            "{err}"
        );

        // The CA key does not belong to the server certificate.
        let err = server_config(&paths.server_cert, &paths.ca_key).expect_err("mismatch");
        assert!(matches!(err, TlsError::Config { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn server_config_accepts_pkcs1_and_sec1_keys() {
        use p256::pkcs8::{DecodePrivateKey as _, LineEnding};
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect("certs");
        let pkcs8 = fs::read_to_string(&paths.server_key).expect("key");
        let sec1 = p256::SecretKey::from_pkcs8_pem(&pkcs8)
            .expect("p256")
            .to_sec1_pem(LineEnding::LF)
            .expect("sec1");
        let sec1_path = tmp.path().join("sec1.key");
        fs::write(&sec1_path, sec1.as_bytes()).expect("write");
        server_config(&paths.server_cert, &sec1_path).expect("SEC1 key loads");

        // A PKCS#1 RSA key with a matching self-signed certificate.
        let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa");
        let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).expect("pkcs1");
        let rsa_pkcs8 = {
            use rsa::pkcs8::EncodePrivateKey as _;
            rsa.to_pkcs8_pem(LineEnding::LF).expect("pkcs8")
        };
        let key = KeyPair::from_pem(&rsa_pkcs8).expect("rcgen rsa");
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert_path = tmp.path().join("rsa.crt");
        let key_path = tmp.path().join("rsa.key");
        fs::write(&cert_path, cert.pem()).expect("write");
        fs::write(&key_path, pkcs1.as_bytes()).expect("write");
        server_config(&cert_path, &key_path).expect("PKCS#1 key loads");
    }

    #[test]
    fn host_validation() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            generate_certs(&[], tmp.path(), NOW),
            Err(TlsError::NoHosts)
        ));
        for bad in [
            "",
            "https://idp.example.com",
            "idp.example.com:8443",
            "a..b",
            "-a.example.com",
            "a_b.example.com",
            "idp.example.com.",
            "1.2.3.256",
            "*.com",
            "[idp.example.com]",
            "bücher.example",
            "has space",
        ] {
            let err = parse_host(bad).expect_err(bad);
            assert!(matches!(err, TlsError::InvalidHost { .. }), "{bad}: {err}");
        }
        let err = generate_certs(&hosts(&["ok.example", "https://x"]), tmp.path(), NOW)
            .expect_err("bad host");
        assert!(err.to_string().contains("https://x"), "{err}");
        assert!(
            !tmp.path().join("ca.crt").exists(),
            "nothing written for bad input"
        );

        assert!(matches!(parse_host("10.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_host("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_host("[::1]"), Ok(SanType::IpAddress(_))));
        assert!(matches!(
            parse_host("IdP.Example.COM"),
            Ok(SanType::DnsName(_))
        ));
        assert!(matches!(
            parse_host("*.idp.example.com"),
            Ok(SanType::DnsName(_))
        ));
        assert!(matches!(parse_host("localhost"), Ok(SanType::DnsName(_))));
    }

    #[test]
    fn incomplete_ca_is_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect("certs");
        fs::remove_file(&paths.ca_key).expect("rm");
        let ca = fs::read(&paths.ca_cert).expect("ca");
        let err = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect_err("incomplete");
        assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err}");
        assert_eq!(fs::read(&paths.ca_cert).expect("ca"), ca);

        // A lone ca.key gets its certificate back, and leaves still chain to the old ca.crt.
        let tmp2 = tempfile::tempdir().expect("tempdir");
        let first = generate_certs(&hosts(&["localhost"]), tmp2.path(), NOW).expect("certs");
        let old_ca = fs::read(&first.ca_cert).expect("ca");
        fs::remove_file(&first.ca_cert).expect("rm");
        generate_certs(&hosts(&["localhost"]), tmp2.path(), NOW).expect("lone key");
        assert!(first.ca_cert.exists());
        assert_eq!(mode(&first.ca_cert), 0o644);
        let (old_subject, old_spki) = anchor_of(
            rustls_pemfile::certs(&mut old_ca.as_slice())
                .next()
                .expect("pem")
                .expect("cert"),
        )
        .expect("anchor");
        let new_ca = fs::read(&first.ca_cert).expect("ca");
        let (new_subject, new_spki) = anchor_of(
            rustls_pemfile::certs(&mut new_ca.as_slice())
                .next()
                .expect("pem")
                .expect("cert"),
        )
        .expect("anchor");
        assert_eq!((old_subject, old_spki), (new_subject, new_spki));

        // A ca.key that is not ca.crt's key is refused too.
        let other = tempfile::tempdir().expect("tempdir");
        let other_paths = generate_certs(&hosts(&["localhost"]), other.path(), NOW).expect("certs");
        fs::copy(&other_paths.ca_key, &paths.ca_key).expect("copy");
        let err = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect_err("mismatch");
        assert!(matches!(err, TlsError::CaReuse { .. }), "{err}");
    }

    #[test]
    fn only_a_ca_made_by_certs_is_reused() {
        // A CA with another subject, with its key: refused, both files left as they were.
        let tmp = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = ca_params(19_723).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Some Other CA");
        let foreign = params.self_signed(&key).expect("foreign CA");
        fs::write(tmp.path().join("ca.crt"), foreign.pem()).expect("write");
        fs::write(tmp.path().join("ca.key"), key.serialize_pem()).expect("write");
        let err = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect_err("foreign");
        assert!(matches!(err, TlsError::CaReuse { .. }), "{err}");
        assert!(err.to_string().contains("not made by"), "{err}");
        assert_eq!(
            fs::read_to_string(tmp.path().join("ca.crt")).expect("ca"),
            foreign.pem()
        );
        assert!(!tmp.path().join("server.crt").exists());

        // A ca.crt that is not a certificate names the file.
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(
            tmp.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        fs::write(tmp.path().join("ca.key"), key.serialize_pem()).expect("write");
        let err = generate_certs(&hosts(&["localhost"]), tmp.path(), NOW).expect_err("garbage");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }

    #[test]
    fn civil_dates() {
        use time::Month::{December, February, January};
        let date = |days| {
            let at = midnight(days).unwrap();
            assert_eq!(at.time(), time::Time::MIDNIGHT);
            assert_eq!(at.offset(), time::UtcOffset::UTC);
            (at.year(), at.month(), at.day())
        };
        assert_eq!(date(0), (1970, January, 1));
        assert_eq!(date(11_016), (2000, February, 29));
        assert_eq!(date(19_723), (2024, January, 1));
        assert_eq!(date(-1), (1969, December, 31));
        assert_eq!(date(2_932_896), (9999, December, 31));
        assert!(matches!(
            midnight(2_932_897),
            Err(TlsError::TimeOutOfRange(_))
        ));
        assert!(matches!(
            generate_certs(&hosts(&["localhost"]), Path::new("/nonexistent"), u64::MAX),
            Err(TlsError::TimeOutOfRange(_))
        ));
    }
}
