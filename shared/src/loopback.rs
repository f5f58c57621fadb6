//! Redirect URI comparison, RFC 6749 §3.1.2 with the loopback rule of RFC 8252 §7.3.

use url::Url;

/// True when `host` names the loopback interface: `127.0.0.1`, `[::1]` or `localhost`
/// (RFC 8252 §7.3 and §8.3).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// Whether a requested redirect URI matches a registered one.
///
/// RFC 6749 §3.1.2.3 requires simple string comparison; RFC 8252 §7.3 requires the server to
/// "allow any port to be specified at the time of the request for loopback IP redirect URIs", so
/// for an `http` loopback registration the port is ignored and everything else must be equal.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    let (Some(reg_host), Some(req_host)) = (reg.host(), req.host()) else {
        return false;
    };
    reg.scheme() == "http"
        && req.scheme() == "http"
        && is_loopback_host(&reg_host)
        && reg_host == req_host
        && reg.path() == req.path()
        && reg.query() == req.query()
        && req.fragment().is_none()
        && req.username().is_empty()
        && req.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_port_is_free() {
        assert!(redirect_uri_matches(
            "http://localhost:8000",
            "http://localhost:41234"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:5000/callback"
        ));
        assert!(redirect_uri_matches("http://[::1]:8000", "http://[::1]:9/"));
    }

    #[test]
    fn everything_else_must_match() {
        assert!(!redirect_uri_matches(
            "http://localhost:8000",
            "http://127.0.0.1:8000"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:8000/a",
            "http://localhost:8000/b"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://app.example/cb",
            "http://app.example:81/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:8000",
            "https://localhost:8000"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:8000",
            "http://localhost.evil.example:8000"
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn uri() -> impl Strategy<Value = String> {
        (
            prop_oneof!["http", "https", "HTTP", "custom"],
            prop_oneof![
                "localhost",
                "127.0.0.1",
                "[::1]",
                "evil.example",
                "localhost.evil.example",
                "127.0.0.1.nip.io"
            ],
            proptest::option::of(0u16..),
            "(/[a-z%@:.\\\\]{0,8}){0,3}",
            proptest::option::of("[a-z=&]{0,8}"),
            proptest::option::of("[a-z]{0,4}"),
        )
            .prop_map(|(scheme, host, port, path, query, frag)| {
                let mut u = format!("{scheme}://{host}");
                if let Some(p) = port {
                    u.push_str(&format!(":{p}"));
                }
                u.push_str(&path);
                if let Some(q) = query {
                    u.push('?');
                    u.push_str(&q);
                }
                if let Some(f) = frag {
                    u.push('#');
                    u.push_str(&f);
                }
                u
            })
    }

    proptest! {
        /// A match is the identical string, or an http loopback URI that differs only in its
        /// port: never another host, scheme, path or query, never a fragment.
        #[test]
        fn a_match_never_leaves_the_registered_loopback(reg in uri(), req in uri()) {
            if redirect_uri_matches(&reg, &req) && reg != req {
                let (r, q) = (Url::parse(&reg).unwrap(), Url::parse(&req).unwrap());
                prop_assert_eq!(q.scheme(), "http");
                prop_assert!(is_loopback_host(&q.host().unwrap()));
                prop_assert_eq!(r.host_str(), q.host_str());
                prop_assert_eq!(r.path(), q.path());
                prop_assert_eq!(r.query(), q.query());
                prop_assert!(q.fragment().is_none());
            }
        }

        /// Arbitrary text never panics the comparison.
        #[test]
        fn arbitrary_text_never_panics(a in ".{0,80}", b in ".{0,80}") {
            let _ = redirect_uri_matches(&a, &b);
        }
    }
}
