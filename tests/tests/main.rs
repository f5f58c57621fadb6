//! Whole-system tests: the built binaries as users and kubectl run them.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// kubectl-oidc_login as a process against the real IdP in-process: every grant, the cache
// lifecycle, parallel calls, offboarding.
mod client_idp;

// Real kubectl (1.27, 1.32, 1.33) with the plugin in a kubeconfig, headless Chromium at the IdP,
// and a kube-apiserver stand-in: login, cache, refresh, device code, offboarding, key rotation.
mod kubectl;
// --grant-type=authcode-keyboard with headless Chromium reading the code off the IdP's page and
// the plugin in a pty reading it back.
mod keyboard;
// Every kubeconfig template, filled in and used by real kubectl.
mod templates;
// `kubectl oidc-login doctor`: a healthy setup and the landmines it names.
mod doctor;
// --grant-type=auto without a display, a failing browser launcher, the device code's QR code
// and countdown on a pty.
mod flow_choice;
// setup and doctor: the http issuer kube-apiserver refuses, the claims suggested from a token.
mod setup_advice;
// `setup --write-*`: kubeconfig, AuthenticationConfiguration, k3s config and RBAC, accepted by
// real kubectl, doctor and the stand-in; doctor --authentication-config with CEL.
mod setup_writers;
// axe-core in real Chromium on every page a person meets, at 360 px: no serious or critical
// WCAG 2.1 A/AA violation, no sideways scrolling.
mod accessibility;
// /account/authorizations in real Chromium: a revoke makes the plugin's next refresh fail.
mod account_revoke;
// The admin console in real headless Chromium: sign in at /admin, create a group, a user in it
// and a public client through the pages.
mod console;
// The story's journey in real headless Chromium: the admin's console, kubectl through the
// plugin, self-service revoke, force re-authentication, disable, audit search and CSV export.
mod journey;
// A real `kubelogin-idp serve` killed with SIGKILL in the middle of a refresh load and restarted:
// every acknowledged refresh token still works, no family is half-rotated.
mod durability;
