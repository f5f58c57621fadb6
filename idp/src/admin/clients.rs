//! OAuth clients: create (public or confidential, with redirect URIs, post-logout redirect
//! URIs, grant types and scopes), rotate the secret (shown once), delete, live tokens per
//! client, and forced re-authentication.

use super::{valid_name, valid_text, Actor, Admin, Secret};
use crate::audit::{self, Event};
use crate::bootstrap::default_scopes;
use crate::crypto;
use crate::error::IdpError;
use crate::store::{Client, Family, FamilyQuery};
use shared::loopback::is_loopback_host;
use shared::token::grant_type;
use std::collections::BTreeMap;

/// The out-of-band redirect URI kubelogin's keyboard mode sends (the IdP shows the code on a
/// page, `web::code`); allowed as a redirect URI, not as a post-logout one.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";
/// The most redirect URIs (and, separately, post-logout redirect URIs) of one client.
pub const MAX_URIS: usize = 32;
/// The longest redirect URI accepted.
pub const MAX_URI: usize = 2048;
/// The most scopes of one client, and the longest scope.
pub const MAX_SCOPES: usize = 32;
pub const MAX_SCOPE: usize = 64;
pub const MAX_CLIENT_NAME: usize = 128;
/// The most live families one listing returns.
pub const MAX_TOKENS_PAGE: u32 = 1000;

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClientRequest {
    pub client_id: String,
    pub name: String,
    /// A public client has no secret (RFC 6749 §2.1): kubectl on a laptop cannot keep one.
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Grant type names (`authorization_code`, `refresh_token`, `device_code` or its URN,
    /// `client_credentials`, `password`); empty: the defaults for the client's type.
    pub grant_types: Vec<String>,
    /// Empty: the built-in scopes.
    pub scopes: Vec<String>,
}

/// A registered client and, for a confidential one, its secret (shown once; only the hash is
/// stored).
#[derive(Debug, Clone)]
pub struct CreatedClient {
    pub client: Client,
    pub secret: Option<Secret>,
}

/// A live refresh family of a client and the username it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFamily {
    pub family: Family,
    pub username: String,
}

/// A client's live tokens: how many refresh families can still refresh, and the newest of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTokens {
    pub live: u64,
    pub newest: Vec<LiveFamily>,
}

/// The grant type a name given by an admin means.
pub fn normalise_grant(g: &str) -> Result<String, IdpError> {
    Ok(match g {
        "authorization_code" | "authcode" => grant_type::AUTHORIZATION_CODE,
        "refresh_token" => grant_type::REFRESH_TOKEN,
        "device_code" | grant_type::DEVICE_CODE => grant_type::DEVICE_CODE,
        "client_credentials" => grant_type::CLIENT_CREDENTIALS,
        "password" => grant_type::PASSWORD,
        other => {
            return Err(IdpError::Invalid(format!(
                "unknown grant type {:?}",
                audit::bounded(other, MAX_SCOPE)
            )))
        }
    }
    .to_string())
}

/// Checks a redirect URI (or, with `allow_oob` false, a post-logout redirect URI):
/// - an absolute URI without a fragment (RFC 6749 §3.1.2);
/// - https (RFC 6749 §3.1.2.1 asks for TLS on the redirect), except http on a loopback
///   address, which a native client listens on with any port (RFC 8252 §7.3, §8.3);
/// - no user name or password in it (RFC 3986 §3.2.1 deprecates them; they would be sent
///   wherever the browser is redirected);
/// - or exactly the out-of-band URN kubelogin's keyboard mode uses.
pub fn check_redirect_uri(uri: &str, allow_oob: bool) -> Result<(), IdpError> {
    let shown = audit::bounded(uri, 100);
    if uri.len() > MAX_URI {
        return Err(IdpError::Invalid(format!(
            "redirect URI {shown:?} is longer than {MAX_URI} characters"
        )));
    }
    if allow_oob && uri == OOB_REDIRECT_URI {
        return Ok(());
    }
    let u = url::Url::parse(uri)
        .map_err(|e| IdpError::Invalid(format!("redirect URI {shown:?}: {e}")))?;
    if u.fragment().is_some() {
        return Err(IdpError::Invalid(format!(
            "redirect URI {shown:?} must not have a fragment (RFC 6749 §3.1.2)"
        )));
    }
    let loopback = u.host().map(|h| is_loopback_host(&h)).unwrap_or(false);
    let secure = u.scheme() == "https" && u.host().is_some();
    let loopback_http = u.scheme() == "http" && loopback;
    if !(secure || loopback_http) {
        return Err(IdpError::Invalid(format!(
            "redirect URI {shown:?} must use https (RFC 6749 §3.1.2.1); plain http is only for \
             a loopback address such as http://127.0.0.1:8000 (RFC 8252 §7.3)"
        )));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(IdpError::Invalid(format!(
            "redirect URI {shown:?} must not carry a user name or password"
        )));
    }
    Ok(())
}

/// A scope token (RFC 6749 §3.3: printable ASCII except space, `"` and `\`), bounded.
fn check_scope(s: &str) -> Result<(), IdpError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCOPE
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdpError::Invalid(format!(
            "{:?} is not a scope (RFC 6749 §3.3: printable ASCII without space, \" or \\; at most {MAX_SCOPE})",
            audit::bounded(s, MAX_SCOPE)
        )))
    }
}

/// The grant types of a new client: the given ones, or the defaults for its type; refused when
/// they do not fit the client.
fn grants_for(req: &NewClientRequest) -> Result<Vec<String>, IdpError> {
    let mut grants: Vec<String> = req
        .grant_types
        .iter()
        .map(|g| normalise_grant(g))
        .collect::<Result<_, _>>()?;
    if grants.is_empty() {
        grants = vec![
            grant_type::AUTHORIZATION_CODE.into(),
            grant_type::REFRESH_TOKEN.into(),
            grant_type::DEVICE_CODE.into(),
        ];
        if !req.public {
            grants.push(grant_type::CLIENT_CREDENTIALS.into());
        }
    }
    let mut unique: Vec<String> = Vec::with_capacity(grants.len());
    for g in grants {
        if !unique.contains(&g) {
            unique.push(g);
        }
    }
    let grants = unique;
    if req.public && grants.iter().any(|g| g == grant_type::CLIENT_CREDENTIALS) {
        return Err(IdpError::Invalid(
            "a public client cannot use client_credentials (RFC 6749 §4.4)".into(),
        ));
    }
    if grants.iter().any(|g| g == grant_type::AUTHORIZATION_CODE) && req.redirect_uris.is_empty() {
        return Err(IdpError::Invalid(
            "the authorization_code grant needs at least one --redirect-uri".into(),
        ));
    }
    Ok(grants)
}

/// Everything about a new client that can be checked without the database.
fn check_new_client(req: &NewClientRequest) -> Result<Vec<String>, IdpError> {
    valid_name(&req.client_id)?;
    for (uris, oob) in [
        (&req.redirect_uris, true),
        (&req.post_logout_redirect_uris, false),
    ] {
        if uris.len() > MAX_URIS {
            return Err(IdpError::Invalid(format!(
                "at most {MAX_URIS} redirect URIs of each kind"
            )));
        }
        for r in uris {
            check_redirect_uri(r, oob)?;
        }
    }
    let grants = grants_for(req)?;
    valid_text("client name", &req.name, MAX_CLIENT_NAME)?;
    if req.scopes.len() > MAX_SCOPES {
        return Err(IdpError::Invalid(format!("at most {MAX_SCOPES} scopes")));
    }
    for s in &req.scopes {
        check_scope(s)?;
    }
    Ok(grants)
}

impl Admin<'_> {
    /// Registers a client; a confidential client's secret is returned once.
    pub async fn create_client(
        &self,
        actor: &Actor,
        req: NewClientRequest,
    ) -> Result<CreatedClient, IdpError> {
        let grants = check_new_client(&req)?;
        let secret = (!req.public).then(|| Secret::new(crypto::random_token(32)));
        let client = Client {
            client_id: req.client_id.clone(),
            name: req.name,
            secret_hash: secret.as_ref().map(|s| crypto::hash_secret(s.expose())),
            redirect_uris: req.redirect_uris,
            post_logout_redirect_uris: req.post_logout_redirect_uris,
            grant_types: grants,
            scopes: if req.scopes.is_empty() {
                default_scopes()
            } else {
                req.scopes
            },
            tokens_valid_after: 0,
            created_at: self.now(),
        };
        self.store.create_client(client.clone()).await?;
        self.record(
            actor,
            client_event("client_created", audit::INFO, &req.client_id),
        )
        .await;
        Ok(CreatedClient { client, secret })
    }

    /// Every client, by id.
    pub async fn clients(&self) -> Result<Vec<Client>, IdpError> {
        Ok(self.store.list_clients().await?)
    }

    pub async fn client(&self, client_id: &str) -> Result<Client, IdpError> {
        self.store
            .client(client_id)
            .await?
            .ok_or_else(|| IdpError::NotFound(format!("no client {client_id:?}")))
    }

    /// Deletes a client with its refresh families and consents.
    pub async fn delete_client(&self, actor: &Actor, client_id: &str) -> Result<(), IdpError> {
        self.store.delete_client(client_id).await?;
        self.record(
            actor,
            client_event("client_deleted", audit::INFO, client_id),
        )
        .await;
        Ok(())
    }

    /// Replaces a confidential client's secret; the new one is returned once and the old one
    /// stops working at once.
    pub async fn rotate_client_secret(
        &self,
        actor: &Actor,
        client_id: &str,
    ) -> Result<Secret, IdpError> {
        let secret = Secret::new(crypto::random_token(32));
        self.store
            .set_client_secret_hash(client_id, &crypto::hash_secret(secret.expose()))
            .await?;
        self.record(
            actor,
            client_event("client_secret_rotated", audit::INFO, client_id),
        )
        .await;
        Ok(secret)
    }

    /// How many refresh families of the client can still refresh, and the newest `limit`
    /// (at most [`MAX_TOKENS_PAGE`]) with their users.
    pub async fn client_tokens(
        &self,
        client_id: &str,
        limit: u32,
    ) -> Result<ClientTokens, IdpError> {
        self.client(client_id).await?;
        let now = self.now();
        let live = self.store.count_live_families(Some(client_id), now).await?;
        let query = FamilyQuery {
            user_id: None,
            client_id: Some(client_id.to_string()),
            limit: limit.clamp(1, MAX_TOKENS_PAGE),
        };
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut newest = Vec::new();
        for family in self.store.live_families(query, now).await? {
            if !names.contains_key(&family.user_id) {
                let name = self
                    .store
                    .user_by_id(&family.user_id)
                    .await?
                    .map(|u| u.username)
                    .unwrap_or_default();
                names.insert(family.user_id.clone(), name);
            }
            let username = names.get(&family.user_id).cloned().unwrap_or_default();
            newest.push(LiveFamily { family, username });
        }
        Ok(ClientTokens { live, newest })
    }

    /// Forced re-authentication (a stolen laptop): every refresh family of the client is
    /// revoked, tokens it issued before now stop being accepted, its consents are forgotten
    /// and every user who used it is signed out (`Store::revoke_all_for_client`). Returns how
    /// many families were revoked.
    pub async fn force_reauthentication(
        &self,
        actor: &Actor,
        client_id: &str,
    ) -> Result<u64, IdpError> {
        let n = self
            .store
            .revoke_all_for_client(client_id, self.now())
            .await?;
        self.record(
            actor,
            client_event("client_tokens_revoked", audit::WARNING, client_id)
                .details(&format!("{n} refresh token families")),
        )
        .await;
        Ok(n)
    }
}

/// The event of an action on a client: the client is both its subject and its client.
fn client_event(name: &str, severity: &str, client_id: &str) -> Event {
    Event::new(name, severity)
        .subject(client_id)
        .client(client_id)
}
