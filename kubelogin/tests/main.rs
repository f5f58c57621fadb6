//! Integration tests of `kubectl-oidc_login` (one binary, CONVENTIONS.md §15).

// Tests assert with unwrap/expect/panic; the product code may not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The built binary: bad-input rules, cache hit, environment flags, parallel refresh, TLS.
mod blackbox;
/// get-token, setup and clean in-process: every grant, cache lifecycle, refresh, back-off.
mod flows;
/// Runs whole commands in-process against the stub with fake clock, console and browser.
mod harness;
/// Property tests of the parsers a fuzz target calls (exec info, token, discovery, loopback).
mod properties;
/// The whole command against our real IdP in-process (idp::testing::TestIdp).
mod real_idp;
/// scripts/release.sh: the archive, and the krew manifest with the archive's sha256.
mod release;
/// The keyring storage against a real Secret Service (gnome-keyring under dbus-run-session).
mod secret_service;
/// The two binaries: the shim answers a cached token byte for byte as the full binary does,
/// and hands everything else to it.
mod shim;
/// A configurable stub OpenID provider for failures a real one never produces.
mod stub;
/// ID token verification failures and bad provider answers (iss, aud, exp, signature, HTML...).
mod verification;
