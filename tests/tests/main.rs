//! Whole-system tests: the built binaries as users and kubectl run them.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// kubectl-oidc_login as a process against the real IdP in-process: every grant, the cache
// lifecycle, parallel calls, offboarding.
mod client_idp;
