//! Protocol types and pure functions used by both the client and the IdP.
//!
//! One module per specification; nothing here performs I/O, so both sides (and their tests) compile
//! against the same definitions. The one exception is `fs`, the atomic file write both programs
//! need (token cache; IdP certificates and credentials), kept here so there is one of it.

#[cfg(feature = "authn-config")]
pub mod authn_config;
pub mod claims;
pub mod device;
pub mod discovery;
pub mod error_chain;
pub mod fs;
pub mod introspection;
pub mod jwk;
pub mod jwt;
pub mod kube_oidc;
pub mod loopback;
pub mod pkce;
pub mod token;
