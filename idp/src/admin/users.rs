//! Users: create (with a generated or a given password), edit, disable and enable, reset the
//! password, delete, list with search and keyset paging, and a user's sessions and
//! authorizations with revoke.
//!
//! What an action ends is the store's atomic rule, called from here only: disabling a user or
//! setting their password ends every session and revokes every refresh family at once
//! (`Store::set_user_disabled`, `Store::set_password`), so a departing colleague's `kubectl`
//! stops at its next refresh whichever front end disabled them.

use super::{valid_name, valid_text, Actor, Admin, PasswordChoice, Secret};
use crate::audit::{self, Event};
use crate::crypto;
use crate::error::IdpError;
use crate::store::{Consent, Family, FamilyQuery, NewUser, Session, User, UserQuery};
use std::collections::BTreeMap;

/// Fewer characters than this is refused.
pub const MIN_PASSWORD: usize = 8;
/// More characters than this is refused (argon2 would take them, but nobody types them).
pub const MAX_PASSWORD: usize = 1024;
/// An address longer than this cannot be delivered (RFC 5321 §4.5.3.1.3: a path of 256
/// octets, two of them the angle brackets).
pub const MAX_EMAIL: usize = 254;
pub const MAX_DISPLAY_NAME: usize = 128;
/// The most groups one user may be put in at once.
pub const MAX_GROUPS: usize = 64;
/// The largest page of the user list.
pub const MAX_PAGE: u32 = 1000;

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUserRequest {
    pub username: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
    pub password: PasswordChoice,
    pub is_admin: bool,
}

/// A created user and, when the IdP generated it, their password (shown once).
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user: User,
    pub password: Option<Secret>,
}

/// Changes to a user; `None` leaves a field as it is, `groups: Some(vec![])` removes every group.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<Vec<String>>,
}

/// One user as an admin sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDetails {
    pub user: User,
    pub groups: Vec<String>,
    /// Refresh families not revoked (as `user show` has always counted them).
    pub open_families: usize,
}

/// One page of the user list; `next` is the cursor of the following page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPage {
    pub users: Vec<User>,
    pub next: Option<String>,
}

/// A client a user authorized: the consent (none for grants without one) and the refresh
/// families that can still refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub client_id: String,
    pub consent: Option<Consent>,
    pub live_families: Vec<Family>,
}

/// The most sessions or families listed for one user.
const PER_USER: u32 = 1000;

fn valid_email(email: &str) -> Result<(), IdpError> {
    if !email.contains('@') {
        return Err(IdpError::Invalid(format!(
            "{email:?} is not an email address"
        )));
    }
    valid_text("email address", email, MAX_EMAIL)
}

fn valid_password(p: &Secret) -> Result<(), IdpError> {
    let n = p.expose().chars().count();
    if n < MIN_PASSWORD {
        return Err(IdpError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        )));
    }
    if n > MAX_PASSWORD {
        return Err(IdpError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// The password to set and its argon2id hash (computed off the async threads: it takes tens
/// of milliseconds and 19 MiB). Returns the password only when it was generated.
async fn password_hash(choice: PasswordChoice) -> Result<(String, Option<Secret>), IdpError> {
    let (password, generated) = match choice {
        PasswordChoice::Given(p) => {
            valid_password(&p)?;
            (p, false)
        }
        PasswordChoice::Generate => (Secret::new(crypto::generate_password()), true),
    };
    let for_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(for_hash.expose()))
        .await
        .map_err(|e| IdpError::Internal(format!("password hashing stopped: {e}")))??;
    Ok((hash, generated.then_some(password)))
}

/// The entry for `client_id`, made empty if there is none yet.
fn slot<'m>(m: &'m mut BTreeMap<String, Authorization>, client_id: &str) -> &'m mut Authorization {
    m.entry(client_id.to_string())
        .or_insert_with(|| Authorization {
            client_id: client_id.to_string(),
            consent: None,
            live_families: Vec::new(),
        })
}

impl Admin<'_> {
    /// The user named `username`.
    pub async fn user_named(&self, username: &str) -> Result<User, IdpError> {
        self.store
            .user_by_username(username)
            .await?
            .ok_or_else(|| IdpError::NotFound(format!("no user {username:?}")))
    }

    /// Every group name in `groups` exists (the hint says how to make one).
    async fn require_groups(&self, groups: &[String]) -> Result<(), IdpError> {
        if groups.len() > MAX_GROUPS {
            return Err(IdpError::Invalid(format!(
                "at most {MAX_GROUPS} groups at once"
            )));
        }
        let known = self.store.list_groups().await?;
        match groups.iter().find(|g| !known.iter().any(|k| &k.name == *g)) {
            Some(g) => Err(IdpError::NotFound(format!(
                "no group {g:?} (create it with `kubelogin-idp group add {g}`)"
            ))),
            None => Ok(()),
        }
    }

    /// Creates a user (email verified: an admin vouches for it) in the given groups.
    pub async fn create_user(
        &self,
        actor: &Actor,
        req: NewUserRequest,
    ) -> Result<CreatedUser, IdpError> {
        valid_name(&req.username)?;
        valid_email(&req.email)?;
        valid_text("display name", &req.name, MAX_DISPLAY_NAME)?;
        self.require_groups(&req.groups).await?;
        let (hash, password) = password_hash(req.password).await?;
        let new = NewUser {
            username: req.username.clone(),
            email: req.email,
            name: req.name,
            password_hash: Some(hash),
            is_admin: req.is_admin,
        };
        let user = self.store.create_user(new, self.now()).await?;
        if !req.groups.is_empty() {
            self.store.set_user_groups(&user.id, &req.groups).await?;
        }
        self.record(
            actor,
            Event::new("user_created", audit::INFO).subject(&req.username),
        )
        .await;
        Ok(CreatedUser { user, password })
    }

    /// One page of users ordered by username (see `UserQuery`); `limit` is capped at
    /// [`MAX_PAGE`].
    pub async fn list_users(&self, query: UserQuery) -> Result<UserPage, IdpError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        if let Some(s) = &query.search {
            valid_text("search", s, MAX_DISPLAY_NAME)?;
        }
        // One more than the page, to know whether another follows.
        let mut users = self
            .store
            .users_page(UserQuery {
                limit: limit + 1,
                ..query
            })
            .await?;
        let next = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users.last().map(|u| u.username.clone())
        } else {
            None
        };
        Ok(UserPage { users, next })
    }

    /// A user with their groups and open refresh families.
    pub async fn user(&self, username: &str) -> Result<UserDetails, IdpError> {
        let user = self.user_named(username).await?;
        let groups = self.store.groups_of_user(&user.id).await?;
        let open_families = self
            .store
            .families_of_user(&user.id)
            .await?
            .iter()
            .filter(|f| f.revoked_at.is_none())
            .count();
        Ok(UserDetails {
            user,
            groups,
            open_families,
        })
    }

    /// Changes a user's email, display name and groups (each checked before anything is
    /// written); the event's details name what changed.
    pub async fn edit_user(
        &self,
        actor: &Actor,
        username: &str,
        edit: UserEdit,
    ) -> Result<UserDetails, IdpError> {
        let user = self.user_named(username).await?;
        if let Some(email) = &edit.email {
            valid_email(email)?;
        }
        if let Some(name) = &edit.name {
            valid_text("display name", name, MAX_DISPLAY_NAME)?;
        }
        if let Some(groups) = &edit.groups {
            self.require_groups(groups).await?;
        }
        let email = edit.email.unwrap_or_else(|| user.email.clone());
        let name = edit.name.unwrap_or_else(|| user.name.clone());
        let mut changed = Vec::new();
        if email != user.email {
            changed.push("email");
        }
        if name != user.name {
            changed.push("name");
        }
        if !changed.is_empty() {
            self.store
                .update_user(&user.id, &email, &name, self.now())
                .await?;
        }
        if let Some(groups) = &edit.groups {
            self.store.set_user_groups(&user.id, groups).await?;
            changed.push("groups");
        }
        self.record(
            actor,
            Event::new("user_updated", audit::INFO)
                .subject(username)
                .details(&changed.join(" ")),
        )
        .await;
        self.user(username).await
    }

    /// Disables (ending every session and refresh family at once) or enables a user.
    pub async fn set_user_disabled(
        &self,
        actor: &Actor,
        username: &str,
        disabled: bool,
    ) -> Result<(), IdpError> {
        let user = self.user_named(username).await?;
        self.store
            .set_user_disabled(&user.id, disabled, self.now())
            .await?;
        let event = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        self.record(actor, Event::new(event, audit::INFO).subject(username))
            .await;
        Ok(())
    }

    /// Sets a new password, ending every session and refresh family of the user; returns the
    /// password when it was generated.
    pub async fn reset_password(
        &self,
        actor: &Actor,
        username: &str,
        password: PasswordChoice,
    ) -> Result<Option<Secret>, IdpError> {
        let user = self.user_named(username).await?;
        let (hash, generated) = password_hash(password).await?;
        self.store.set_password(&user.id, &hash, self.now()).await?;
        self.record(
            actor,
            Event::new("user_password_changed", audit::INFO).subject(username),
        )
        .await;
        Ok(generated)
    }

    /// Deletes a user with their sessions, refresh families, consents and memberships.
    pub async fn delete_user(&self, actor: &Actor, username: &str) -> Result<(), IdpError> {
        let user = self.user_named(username).await?;
        self.store.delete_user(&user.id).await?;
        self.record(
            actor,
            Event::new("user_deleted", audit::INFO).subject(username),
        )
        .await;
        Ok(())
    }

    /// A user's unexpired browser sessions, newest first.
    pub async fn sessions(&self, username: &str) -> Result<Vec<Session>, IdpError> {
        let user = self.user_named(username).await?;
        Ok(self.store.sessions_of_user(&user.id, self.now()).await?)
    }

    /// Ends one browser session of a user (`id_hash` as [`Admin::sessions`] lists it).
    pub async fn revoke_session(
        &self,
        actor: &Actor,
        username: &str,
        id_hash: &str,
    ) -> Result<(), IdpError> {
        let user = self.user_named(username).await?;
        if !self.store.delete_user_session(&user.id, id_hash).await? {
            return Err(IdpError::NotFound(format!(
                "{username} has no session {:?}",
                audit::bounded(id_hash, 64)
            )));
        }
        self.record(
            actor,
            Event::new("session_revoked", audit::INFO).subject(username),
        )
        .await;
        Ok(())
    }

    /// The clients a user authorized: consents and live refresh families, by client id.
    pub async fn authorizations(&self, username: &str) -> Result<Vec<Authorization>, IdpError> {
        let user = self.user_named(username).await?;
        let mut by_client: BTreeMap<String, Authorization> = BTreeMap::new();
        for c in self.store.consents_of_user(&user.id).await? {
            let client_id = c.client_id.clone();
            slot(&mut by_client, &client_id).consent = Some(c);
        }
        let query = FamilyQuery {
            user_id: Some(user.id.clone()),
            client_id: None,
            limit: PER_USER,
        };
        for f in self.store.live_families(query, self.now()).await? {
            slot(&mut by_client, &f.client_id).live_families.push(f);
        }
        Ok(by_client.into_values().collect())
    }

    /// Withdraws a user's authorization of a client: its refresh tokens stop working at once
    /// and the consent is forgotten, so the next login asks again. Returns how many refresh
    /// families were revoked.
    pub async fn revoke_authorization(
        &self,
        actor: &Actor,
        username: &str,
        client_id: &str,
    ) -> Result<u64, IdpError> {
        let user = self.user_named(username).await?;
        let authorized = self.authorizations(username).await?;
        if !authorized.iter().any(|a| a.client_id == client_id) {
            return Err(IdpError::NotFound(format!(
                "{username} has not authorized client {:?}",
                audit::bounded(client_id, super::MAX_NAME)
            )));
        }
        let n = self
            .store
            .revoke_authorization(&user.id, client_id, self.now())
            .await?;
        self.record(
            actor,
            Event::new("authorization_revoked", audit::INFO)
                .subject(username)
                .client(client_id)
                .details(&format!("{n} refresh token families")),
        )
        .await;
        Ok(n)
    }
}
