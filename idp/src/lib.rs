//! kubelogin-idp: a compact OpenID Connect provider for kubectl users.
//!
//! `app(state)` is the whole HTTP surface as a `Router`, testable without a socket;
//! `server::run` adds the listener, TLS and background jobs.
//!
//! Modules depend one way, each only on modules listed before it (`tests/module_deps.rs`
//! fails on a cycle or a step out of this order):
//!
//! 1. `clock`, `keys`, `tls`, `metrics`: leaves, no other module of the crate;
//! 2. `error`: the error types (protocol errors' JSON; pages render theirs in `web`);
//! 3. `crypto`, `store`, `config`, `metadata` (the discovery document): storage and settings;
//! 4. `state`: what every request shares;
//! 5. `http`: reading requests, redirects, cookies;
//! 6. `audit`, `bootstrap`, `accounts` (password check, throttling, sessions), then `admin`
//!    (the administrators' use cases, shared by the CLI and the web console);
//! 7. `token`: the token endpoint, one file per grant, minting, access-token checks;
//! 8. `oidc`: the other protocol endpoints and the authorization endpoint's decisions;
//! 9. `web`: pages, which call into the protocol layers and render what they decide;
//! 10. `ops` (probes and the metrics endpoint), `routes` (the path table and `app`), then
//!     `server`, `testing`, `cli`.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
// A real IdP in-process for tests (this crate's, kubelogin's, e2e); never in the shipped binary.
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod token;
pub mod web;

pub use routes::{app, MAX_BODY_BYTES};
