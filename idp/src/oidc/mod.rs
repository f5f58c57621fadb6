//! OpenID Connect and OAuth endpoints other than the token endpoint.

pub mod authorize;
pub mod device;
pub mod discovery;
pub mod end_session;
pub mod introspect;
pub mod jwks;
pub mod revoke;
pub mod userinfo;
