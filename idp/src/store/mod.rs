//! Storage: the only place with SQL. One trait, implemented for SQLite and PostgreSQL, checked
//! by one conformance suite (`tests/store.rs`) that every backend must pass.
//!
//! Every method that must be atomic (code redemption, refresh rotation, device polling) is one
//! trait method, so each backend can use the transaction style its database needs.

mod postgres;
pub mod rules;
mod sqlite;

pub use postgres::{Change, Changes, PgStore};
pub use sqlite::SqliteStore;
/// The newest SQLite schema version this binary knows (`restore` refuses newer files).
pub use sqlite::SCHEMA_VERSION as SQLITE_SCHEMA_VERSION;

pub use crate::error::StoreError;
use async_trait::async_trait;

pub type StoreResult<T> = Result<T, StoreError>;

/// The longest refresh-reuse grace window the configuration accepts; the kept successor of a
/// rotated token is erased once this has passed.
pub const MAX_REUSE_GRACE_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Stable random identifier, the `sub` claim (OpenID Connect Core §2: never reassigned).
    pub id: String,
    pub username: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client (RFC 6749 §2.1).
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    /// Tokens of this client issued before this time are invalid (`client revoke-all`).
    pub tokens_valid_after: u64,
    pub created_at: u64,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthCode {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub auth_time: u64,
    pub created_at: u64,
    pub expires_at: u64,
}

/// What redeeming a code found.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeRedemption {
    /// First use: the code is now spent.
    Fresh(AuthCode),
    /// The code was used before; the family it produced (if any) has been revoked
    /// (RFC 6749 §4.1.2: "the authorization server ... SHOULD revoke (when possible) all tokens
    /// previously issued based on that authorization code").
    Replayed,
    NotFound,
}

/// A refresh token family: every token rotated from one grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub scope: String,
    pub auth_time: u64,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    pub token_hash: String,
    pub family_id: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub rotated_at: Option<u64>,
    /// The address and user agent of the request that obtained this token (issue or rotation).
    pub ip: String,
    pub user_agent: String,
}

/// When and from where a live refresh family was last used: its current token's issue (the
/// latest rotation, or the grant that started the family).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyActivity {
    pub family_id: String,
    pub last_used_at: u64,
    pub ip: String,
    pub user_agent: String,
}

/// What presenting a refresh token for rotation led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The token was current; it is now rotated and `new_hash` is stored in its place.
    Rotated(Family),
    /// The token was rotated moments ago (within the grace window): a client retrying after a
    /// lost response. Nothing is written; the rotation's successor is handed back, still
    /// encrypted (see `rotate_refresh_token`), so the retry gets the *same* successor and the
    /// family never forks (RFC 9700 §4.14.2). `None` when the ciphertext is gone.
    WithinGrace(Family, Option<String>),
    /// The token was rotated before the grace window: reuse, the family is now revoked.
    Reused(Family),
    /// The token belongs to another client; nothing was changed.
    WrongClient,
    /// Known, but expired or of a revoked family, or its user is disabled (which revokes the
    /// family now). The family says whose token it was, for the audit log.
    Refused(Family),
    /// Unknown.
    Invalid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCode {
    pub device_code_hash: String,
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub code_challenge: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
    pub interval: u64,
    pub last_polled_at: Option<u64>,
    pub status: DeviceStatus,
    pub user_id: Option<String>,
    pub auth_time: Option<u64>,
    /// Where the device authorization request came from (bounded client IP and user agent),
    /// shown on the approval page so a user can spot a request relayed by a phisher.
    pub request_ip: String,
    pub request_user_agent: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved,
    Denied,
    Consumed,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Denied => "denied",
            DeviceStatus::Consumed => "consumed",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "approved" => DeviceStatus::Approved,
            "denied" => DeviceStatus::Denied,
            "consumed" => DeviceStatus::Consumed,
            _ => DeviceStatus::Pending,
        }
    }
}

/// The outcome of one device-code poll (RFC 8628 §3.5), decided atomically with the poll's
/// timestamp so two pollers cannot both consume an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum DevicePoll {
    Pending,
    /// Polled faster than the interval; the interval has been raised by
    /// `shared::device::SLOW_DOWN_INCREMENT_SECS`.
    SlowDown,
    Denied,
    Expired,
    /// Approved and now consumed: issue tokens for this record.
    Approved(Box<DeviceCode>),
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id_hash: String,
    pub user_id: String,
    pub auth_time: u64,
    pub created_at: u64,
    pub expires_at: u64,
    pub ip: String,
    pub user_agent: String,
    /// The latest request that used the session, to within [`SESSION_TOUCH_SECS`] (the account
    /// pages show it; the console's idle timeout counts from it).
    pub last_used_at: u64,
}

/// A session's `last_used_at` is rewritten at most this often (one write a minute per session,
/// not one per request).
pub const SESSION_TOUCH_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    /// PKCS#8 PEM, or the same sealed with the key encryption key (`crypto::SEALED_PREFIX`).
    pub private_pem: String,
    pub created_at: u64,
    /// When it stopped signing; published until every token it signed has expired.
    pub retired_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditEvent {
    pub id: i64,
    pub at: u64,
    pub event: String,
    pub severity: String,
    pub actor: String,
    pub subject: String,
    pub client_id: String,
    pub ip: String,
    pub user_agent: String,
    pub details: String,
}

/// Which audit events to read, newest first. Every condition given must hold; `None` (or an
/// empty list) places no condition.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event: Option<String>,
    pub actor: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// At most this many events (0: 1000).
    pub limit: u32,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    /// The actor or the subject is this name (everything a person did or had done to them).
    pub user: Option<String>,
    /// The event's name is one of these.
    pub event_in: Vec<String>,
    /// The event's name is none of these.
    pub event_not_in: Vec<String>,
    /// Keyset paging: only events with an id below this one (the last id of the page before).
    pub before_id: Option<i64>,
}

/// A user's standing consent to a client (OpenID Connect Core §3.1.2.4).
#[derive(Debug, Clone, PartialEq)]
pub struct Consent {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub granted_at: u64,
}

/// One page of the user list: users ordered by username, keyset-paged on it.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Only users whose username, email or display name contains this (ASCII letters compared
    /// without case); `%` and `_` match themselves.
    pub search: Option<String>,
    /// Only users whose username sorts after this one (the last of the page before).
    pub after: Option<String>,
    /// At most this many users (0: 100).
    pub limit: u32,
}

/// Which live refresh token families to read: a user's, a client's, or both conditions.
#[derive(Debug, Clone, Default)]
pub struct FamilyQuery {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// At most this many families (0: 100).
    pub limit: u32,
}

/// All persistent state of the IdP.
#[async_trait]
pub trait Store: Send + Sync {
    // users
    async fn create_user(&self, user: NewUser, now: u64) -> StoreResult<User>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>>;
    /// A user and the names of their groups, in one query (the token endpoint's hot path).
    async fn user_with_groups(&self, id: &str) -> StoreResult<Option<(User, Vec<String>)>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Sets a user's password hash and, in the same transaction, ends every session and revokes
    /// every refresh family of the user: whoever knew the old password is out.
    async fn set_password(&self, user_id: &str, hash: &str, now: u64) -> StoreResult<()>;
    /// Disabling also revokes every refresh token family and session of the user at once.
    async fn set_user_disabled(&self, user_id: &str, disabled: bool, now: u64) -> StoreResult<()>;
    async fn delete_user(&self, user_id: &str) -> StoreResult<()>;
    async fn count_users(&self) -> StoreResult<u64>;
    /// One page of users (see [`UserQuery`]).
    async fn users_page(&self, query: UserQuery) -> StoreResult<Vec<User>>;
    /// Replaces a user's email address and display name.
    async fn update_user(
        &self,
        user_id: &str,
        email: &str,
        name: &str,
        now: u64,
    ) -> StoreResult<()>;
    /// Makes `groups` exactly the user's groups, in one transaction: an unknown group is
    /// `NotFound` and changes nothing.
    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> StoreResult<()>;

    // groups
    async fn create_group(&self, name: &str, now: u64) -> StoreResult<()>;
    async fn list_groups(&self) -> StoreResult<Vec<Group>>;
    async fn delete_group(&self, name: &str) -> StoreResult<()>;
    async fn add_group_member(&self, group: &str, user_id: &str) -> StoreResult<()>;
    async fn remove_group_member(&self, group: &str, user_id: &str) -> StoreResult<()>;
    async fn groups_of_user(&self, user_id: &str) -> StoreResult<Vec<String>>;

    // clients
    async fn create_client(&self, client: Client) -> StoreResult<()>;
    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    async fn delete_client(&self, client_id: &str) -> StoreResult<()>;
    async fn set_client_secret_hash(&self, client_id: &str, hash: &str) -> StoreResult<()>;
    /// Forced re-authentication: every family of the client revoked, older tokens invalid, its
    /// consents forgotten and the browser sessions of every user who used it ended.
    async fn revoke_all_for_client(&self, client_id: &str, now: u64) -> StoreResult<u64>;
    /// How many live refresh families (see [`Store::live_families`]) there are, of one client
    /// or of all.
    async fn count_live_families(&self, client_id: Option<&str>, now: u64) -> StoreResult<u64>;
    /// A number that changes with every write to any client record, in the writing
    /// transaction, whichever process or replica writes: a cache of client records compares it
    /// (at most once a second, `state::ClientCache`) to see another replica's change.
    async fn clients_version(&self) -> StoreResult<u64>;
    /// How many client writes were made through this store object: the cache in this process
    /// drops a change made here at once, without waiting for its next [`Store::clients_version`]
    /// check.
    fn local_client_writes(&self) -> u64;

    // consent
    async fn consented_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Vec<String>>;
    async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: u64,
    ) -> StoreResult<()>;
    /// Every consent a user gave, by client id.
    async fn consents_of_user(&self, user_id: &str) -> StoreResult<Vec<Consent>>;
    /// Withdraws a user's authorization of a client in one transaction: every refresh family
    /// of the user at that client is revoked and the consent is forgotten, so the next
    /// authorization asks again. Returns how many families were live.
    async fn revoke_authorization(
        &self,
        user_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<u64>;

    // authorization codes
    async fn insert_auth_code(&self, code: AuthCode) -> StoreResult<()>;
    async fn redeem_auth_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeRedemption>;
    /// Remembers which family a redeemed code produced, so a replay can revoke it.
    async fn link_code_family(&self, code_hash: &str, family_id: &str) -> StoreResult<()>;

    // refresh tokens
    async fn create_family(&self, family: Family, first: RefreshToken) -> StoreResult<()>;
    async fn family(&self, family_id: &str) -> StoreResult<Option<Family>>;
    /// Rotates a refresh token presented by `client_id` in one transaction; on a rotation the
    /// `audit` event (its actor filled with the username) is recorded in the same transaction.
    /// `successor_enc` (the new token encrypted under a key only the presented token yields) is
    /// kept on the rotated row so a retry within `grace_secs` gets the same successor back.
    #[allow(clippy::too_many_arguments)]
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        client_id: &str,
        new_token: RefreshToken,
        successor_enc: &str,
        now: u64,
        grace_secs: u64,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Rotation>;
    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<(RefreshToken, Family)>>;
    async fn revoke_family(&self, family_id: &str, now: u64) -> StoreResult<()>;
    async fn families_of_user(&self, user_id: &str) -> StoreResult<Vec<Family>>;
    /// Families that can still refresh: not revoked, with a current (unrotated) token that has
    /// not expired at `now`. Newest first.
    async fn live_families(&self, query: FamilyQuery, now: u64) -> StoreResult<Vec<Family>>;
    /// The last use of each of a user's live families (see [`FamilyActivity`]).
    async fn family_activity(&self, user_id: &str, now: u64) -> StoreResult<Vec<FamilyActivity>>;

    // access token revocation (RFC 7009 §2: a denylist of JWT ids until they expire)
    async fn revoke_jti(&self, jti: &str, expires_at: u64) -> StoreResult<()>;
    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;

    // device authorization
    async fn insert_device_code(&self, code: DeviceCode) -> StoreResult<()>;
    async fn device_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceCode>>;
    /// The client a device code was issued to.
    async fn device_by_hash_client(&self, device_code_hash: &str) -> StoreResult<Option<String>>;
    async fn decide_device(
        &self,
        user_code: &str,
        approve: bool,
        user_id: &str,
        auth_time: u64,
        now: u64,
    ) -> StoreResult<bool>;
    async fn poll_device(&self, device_code_hash: &str, now: u64) -> StoreResult<DevicePoll>;

    // browser sessions
    async fn create_session(&self, session: Session) -> StoreResult<()>;
    async fn session(&self, id_hash: &str, now: u64) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;
    /// A user's unexpired browser sessions, newest first.
    async fn sessions_of_user(&self, user_id: &str, now: u64) -> StoreResult<Vec<Session>>;
    /// How many browser sessions have not expired at `now` (the console's overview).
    async fn count_live_sessions(&self, now: u64) -> StoreResult<u64>;
    /// The session's user just entered the password again (the console's re-authentication):
    /// `auth_time` and `last_used_at` become `now`; the lifetime is not extended.
    async fn reauthenticate_session(&self, id_hash: &str, now: u64) -> StoreResult<()>;
    /// Ends one session if it is the user's; false when the user has no such session.
    async fn delete_user_session(&self, user_id: &str, id_hash: &str) -> StoreResult<bool>;
    /// Records that a session was used at `now`, unless it was recorded less than
    /// [`SESSION_TOUCH_SECS`] before.
    async fn touch_session(&self, id_hash: &str, now: u64) -> StoreResult<()>;

    // signing keys
    async fn keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Stores a new active key and retires the previous active one at `now`.
    async fn activate_key(&self, key: StoredKey, now: u64) -> StoreResult<()>;
    /// Replaces the stored form of key `kid` (to encrypt it at rest) if it is still `old`;
    /// false when it was changed or deleted meanwhile (another process sealed it first).
    async fn replace_key_material(&self, kid: &str, old: &str, new: &str) -> StoreResult<bool>;
    /// Deletes the keys retired at or before `retired_at_or_before`, private key included;
    /// the active key is never deleted. Returns how many were deleted.
    async fn delete_retired_keys(&self, retired_at_or_before: u64) -> StoreResult<u64>;

    // server secrets
    /// The secret stored under `name`, storing `candidate` first when there is none yet. The
    /// first writer wins, so every replica on one database ends up with the same secret (the key
    /// that binds CSRF tokens to sessions, see `web::csrf`).
    async fn server_secret(&self, name: &str, candidate: &str, now: u64) -> StoreResult<String>;

    // audit
    async fn record_audit(&self, event: AuditEvent) -> StoreResult<()>;
    /// Records `event`, unless the newest event of the same name and subject was recorded at or
    /// after `since`: then only that row's `details` are replaced by `event`'s. One row per
    /// subject and window for events an attacker can repeat cheaply (refused throttled logins).
    async fn record_audit_aggregated(&self, event: AuditEvent, since: u64) -> StoreResult<()>;
    async fn audit_events(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEvent>>;

    /// Deletes expired codes, device codes, sessions, denylisted ids and dead families, the kept
    /// successors of rotated refresh tokens once the longest grace window
    /// ([`MAX_REUSE_GRACE_SECS`]) has passed, and audit events recorded before `audit_before`
    /// (the retention cutoff; 0 keeps them all).
    async fn purge_expired(&self, now: u64, audit_before: u64) -> StoreResult<u64>;

    // login throttle (`rules::throttle`): counters in the database, so every replica counts
    // the same failures. Each method is one operation (one transaction where it writes).

    /// Whether `key` is locked at `now`; if so the attempt is counted as refused.
    async fn throttle_check(&self, key: &str, now: u64) -> StoreResult<Option<rules::Blocked>>;
    /// Counts a failure of `key` (`rules::throttle_fail`) in one transaction. Every
    /// `rules::THROTTLE_SWEEP_EVERY`-th failure counted through this store object also sweeps
    /// the table with `rules::MAX_THROTTLE_KEYS` (see [`Store::throttle_sweep`]).
    async fn throttle_fail(&self, key: &str, max: u32, now: u64) -> StoreResult<()>;
    /// Forgets `key` (after a successful login from that address).
    async fn throttle_reset(&self, key: &str) -> StoreResult<()>;
    /// Whether `key` failed recently enough to be remembered (`rules::throttle_has_history`).
    async fn throttle_has_history(&self, key: &str, now: u64) -> StoreResult<bool>;
    /// Forgets the keys with nothing left to remember at `now`, then, if more than `capacity`
    /// remain, drops the oldest (`rules::throttle_overflow`), unlocked keys first. Returns how
    /// many keys were dropped.
    async fn throttle_sweep(&self, now: u64, capacity: u64) -> StoreResult<u64>;
    /// The keys held, for inspection and tests.
    async fn throttle_keys(&self) -> StoreResult<Vec<String>>;

    // operations (`ops`)

    /// A trivial query, for readiness: the database answers.
    async fn ping(&self) -> StoreResult<()> {
        self.count_users().await.map(|_| ())
    }
    /// Open connections of the backend's pool as (idle, busy), for `/metrics`; None when the
    /// backend has no pool to report.
    fn pool_usage(&self) -> Option<(u64, u64)> {
        None
    }
}
