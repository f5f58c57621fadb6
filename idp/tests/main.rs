//! The IdP's integration tests, one binary (CONVENTIONS.md §15).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Support shared by the modules: a router with a manual clock, form posts, PKCE pairs.
mod common;
// The router without a socket: discovery, JWKS, headers, authorize errors, CSRF.
mod router;
// Browser-facing security: return_to, CSRF bound to the session, cookie prefixes, logout
// confirmation, `iss` in authorization responses, the out-of-band code page.
mod browser;
// A standard relying party (the openidconnect crate) over a real socket: authcode + PKCE,
// refresh with a verified ID token, device code.
mod rp;
// Protocol rules: one negative test per rule of the authorize and token endpoints.
mod rules;
// Revocation reaching everything a grant produced; disabled users; client authentication.
mod revocation;
// One audit row per event: every grant once, each of its events exactly once.
mod grant_audit;
// The client cache: a change here is seen at once, on another replica within a second.
mod client_cache;
// Accounts: bounded login input, throttling per address and account, device user-code
// limits, the device request's origin, audit aggregation and retention.
mod accounts;
// The self-service /account pages: effects, audit events, CSRF, other people's records.
mod account;
// The storage conformance suite every backend must pass.
mod store;
// Two `serve` replicas on one PostgreSQL database: what one does, the other acts on at once
// (failed logins on both add up to one lock).
mod replicas;
// Signing keys at rest: retired keys deleted, encryption with a key encryption key.
mod keys;
// The built binary: admin commands, serve start-up and refusals, certs.
mod cli;
// The admin layer on real SQLite: every use case, and one audit event per action.
mod admin;
// The built binary's commands on the admin layer: user edit, sessions, authorizations,
// client tokens, audit filters, paging and export, the cli:<unix user> actor.
mod admin_cli;
// The IdP's top-level modules depend one way: no import cycle, every import down the layers.
mod module_deps;
// The built binary as a network service: header timeouts, connection caps, key reload,
// database file modes.
mod serving;
// Operations: probes (readiness while the database hangs), /metrics on METRICS_ADDR, graceful shutdown on SIGTERM, LOG_FORMAT=json,
// backup under load and restore, the examples/ manifests.
mod ops;
// Who may use each admin console route: every route x method x {anonymous, user, admin, stale
// admin}, from the router's own table; admin group membership, idle timeout, re-authentication.
mod access_control;
// The admin console's actions through its pages: effect in the store, the audit event with the
// admin's name, IP and UA, CSRF refusal, confirmation pages, the streamed CSV export.
mod admin_console;
