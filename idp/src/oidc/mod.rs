//! OpenID Connect and OAuth endpoints other than the token endpoint, and the authorization
//! endpoint's protocol decisions (`authorize`) and RP-initiated logout's (`end_session`), whose
//! pages are in `web`.
//!
//! May depend on: `token` (client authentication, access-token checks), `audit`, `http`,
//! `state`, `store`, `keys`, `crypto`, `error`. Never on `web`.

pub mod authorize;
pub mod device;
pub mod discovery;
pub mod end_session;
pub mod introspect;
pub mod jwks;
pub mod revoke;
pub mod userinfo;
