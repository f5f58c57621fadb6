//! Accounts: the password check shared by the login page and the password grant, the
//! throttling of wrong guesses (passwords, and device user codes on the approval page), and the
//! browser sessions a sign-in starts.
//!
//! Signing in is a sequence of steps, each its own function: the password (`check_password`),
//! then the session (`start_session`). A second factor joins between the two.
//!
//! The throttle's counters live in the database (`Store::throttle_*`, the lock state machine in
//! `store::rules::throttle`), so every replica counts the same failures: with N replicas an
//! attacker still gets the limit once, not N times.
//!
//! Throttle keys, all of bounded length so that long input cannot grow the table:
//! - `ip <address>`: every failed login from one address;
//! - `user <name> from <address>`: failed logins for one account from one address. An account
//!   is never locked as a whole: whatever an attacker's address does, the owner signing in with
//!   the right password from an address that has not failed gets in;
//! - `account <name>`: the account across addresses, holding back only addresses that have
//!   failed before;
//! - `device-session <id>` and `device-ip <address>`: wrong user codes per browser session and
//!   per address.
//!
//! An IPv6 address counts as its /64: RFC 4291 §2.5.1 gives the interface identifier 64 bits, so
//! one host can take any address of its /64 and would otherwise get a fresh counter per attempt.
//! Each lock of a key lasts twice as long as the one before (`store::rules::throttle`).
//!
//! The throttle fails closed: when the database cannot answer or count, the attempt is refused
//! with the generic internal error (logged), never let through uncounted, or a database in
//! trouble would give an attacker unlimited guesses.
//!
//! May depend on: `state`, `store`, `crypto`, `error`, `metrics`, `audit`, `http` (the request's
//! `ClientMeta`).

use crate::audit;
use crate::crypto;
use crate::error::IdpError;
use crate::http::ClientMeta;
use crate::metrics::LoginOutcome;
use crate::state::AppState;
use crate::store::rules::Blocked;
use crate::store::{Session, Store, StoreError, StoreResult, User, SESSION_TOUCH_SECS};
use std::net::{IpAddr, Ipv6Addr};

/// The longest username an account can have (the CLI's rule for `user add`).
pub const MAX_USERNAME_LEN: usize = 64;

/// Why a username/password pair was not accepted.
pub enum PasswordCheck {
    Ok(User),
    Wrong,
    Disabled,
    /// Seconds until the address (or the account from this address) may try again.
    Throttled(u64),
}

/// The throttle key part for a client address: IPv4 as is, IPv6 as its /64 (IPv4-mapped IPv6
/// as the IPv4 address), anything else ("unknown") bounded.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Err(_) => audit::bounded(ip, audit::MAX_IP),
    }
}

/// The throttle keys a login attempt counts against (see the module comment).
struct LoginKeys {
    /// `ip <address>`: every failed login from one address.
    ip: String,
    /// `user <name> from <address>`; none for a name longer than any account's, which is wrong
    /// without asking the store or argon2 and never becomes a key (it still counts against
    /// the address).
    account: Option<String>,
    /// `account <name>`: the account across every address. A guesser spread over many
    /// addresses (one IPv6 /48 holds 65,536 /64s) locks it, but the lock only holds back
    /// addresses that have failed before, so the owner signing in from a clean address is never
    /// locked out.
    account_wide: Option<String>,
}

impl LoginKeys {
    fn new(username: &str, meta: &ClientMeta) -> Self {
        let addr = address_key(&meta.ip);
        let account = (username.len() <= MAX_USERNAME_LEN)
            .then(|| format!("user {} from {addr}", username.to_lowercase()));
        let account_wide = account
            .as_ref()
            .map(|_| format!("account {}", username.to_lowercase()));
        LoginKeys {
            ip: format!("ip {addr}"),
            account,
            account_wide,
        }
    }

    /// The first of the keys that is locked now, with its lock: the account from this address,
    /// the address, then the whole account if this address has failed before.
    async fn locked(&self, store: &dyn Store, now: u64) -> StoreResult<Option<(&str, Blocked)>> {
        if let Some(k) = self.account.as_deref() {
            if let Some(b) = store.throttle_check(k, now).await? {
                return Ok(Some((k, b)));
            }
        }
        if let Some(b) = store.throttle_check(&self.ip, now).await? {
            return Ok(Some((&self.ip, b)));
        }
        let Some(k) = self.account_wide.as_deref() else {
            return Ok(None);
        };
        if !store.throttle_has_history(&self.ip, now).await? {
            return Ok(None);
        }
        Ok(store.throttle_check(k, now).await?.map(|b| (k, b)))
    }

    /// Counts a wrong password against every key.
    async fn fail(&self, state: &AppState, now: u64) -> StoreResult<()> {
        let (c, store) = (&state.config, &state.store);
        if let Some(k) = &self.account {
            store.throttle_fail(k, c.login_max_failures, now).await?;
        }
        store
            .throttle_fail(&self.ip, c.login_max_failures_per_ip, now)
            .await?;
        if let Some(k) = &self.account_wide {
            store
                .throttle_fail(k, c.login_max_failures_per_ip, now)
                .await?;
        }
        Ok(())
    }
}

/// A throttle the database could not check or count: logged, and the attempt refused with the
/// generic internal error (fail closed, see the module comment).
fn throttle_unavailable(e: StoreError) -> IdpError {
    tracing::error!(error = %e, "login throttle unavailable: refusing the attempt");
    IdpError::from(e)
}

/// Verifies a username and password with throttling and audit. Shared by the login page and the
/// password grant. The steps: refuse a locked key; refuse a name no account can have; verify the
/// password (argon2id, one check per core at a time); count a failure against every key.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
    meta: &ClientMeta,
    client_id: &str,
) -> Result<PasswordCheck, IdpError> {
    let checked = check_password_uncounted(state, username, password, meta, client_id).await?;
    state.metrics.login(match &checked {
        PasswordCheck::Ok(_) => LoginOutcome::Ok,
        PasswordCheck::Wrong => LoginOutcome::WrongPassword,
        PasswordCheck::Disabled => LoginOutcome::Disabled,
        PasswordCheck::Throttled(_) => LoginOutcome::Throttled,
    });
    Ok(checked)
}

async fn check_password_uncounted(
    state: &AppState,
    username: &str,
    password: &str,
    meta: &ClientMeta,
    client_id: &str,
) -> Result<PasswordCheck, IdpError> {
    let now = state.now();
    let keys = LoginKeys::new(username, meta);
    let locked = keys.locked(state.store.as_ref(), now).await;
    if let Some((key, b)) = locked.map_err(throttle_unavailable)? {
        let e = audit::Event::new("login_throttled", audit::WARNING)
            .actor(username)
            .client(client_id)
            .meta(meta);
        record_refusal(state, e, key, &b).await;
        return Ok(PasswordCheck::Throttled(b.wait));
    }
    let Some(account_key) = &keys.account else {
        keys.fail(state, now).await.map_err(throttle_unavailable)?;
        let why = "username longer than any account's";
        record_failure(state, username, client_id, meta, why).await;
        return Ok(PasswordCheck::Wrong);
    };
    let (user, ok) = verify_password(state, username, password).await?;
    match user {
        Some(u) if ok && !u.disabled => {
            state
                .store
                .throttle_reset(account_key)
                .await
                .map_err(throttle_unavailable)?;
            Ok(PasswordCheck::Ok(u))
        }
        Some(u) if ok => {
            record_failure(state, &u.username, client_id, meta, "account disabled").await;
            Ok(PasswordCheck::Disabled)
        }
        _ => {
            keys.fail(state, now).await.map_err(throttle_unavailable)?;
            let why = "wrong username or password";
            record_failure(state, username, client_id, meta, why).await;
            Ok(PasswordCheck::Wrong)
        }
    }
}

/// The account called `username`, if any, and whether `password` is its password. An unknown
/// name is checked against a dummy hash, so the answer takes as long either way.
async fn verify_password(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<(Option<User>, bool), IdpError> {
    let user = state.store.user_by_username(username).await?;
    let hash = user
        .as_ref()
        .and_then(|u| u.password_hash.clone())
        .unwrap_or_else(|| crypto::dummy_password_hash().to_string());
    let pw = password.to_string();
    let ok = {
        let _slot = state.password_slots.acquire().await;
        tokio::task::spawn_blocking(move || crypto::verify_password(&pw, &hash))
            .await
            .unwrap_or(false)
    };
    Ok((user, ok))
}

async fn record_failure(
    state: &AppState,
    actor: &str,
    client_id: &str,
    meta: &ClientMeta,
    why: &str,
) {
    let e = audit::Event::new("login_failed", audit::WARNING)
        .actor(actor)
        .client(client_id)
        .meta(meta)
        .details(why);
    audit::record(state, e).await;
}

/// The longest user code input looked up (a code is 8 letters; dashes and spaces are allowed).
pub const MAX_USER_CODE_INPUT: usize = 32;

fn user_code_keys(session_id_hash: &str, meta: &ClientMeta) -> (String, String) {
    // A prefix of the session id's hash names the session well enough and keeps it short.
    let session: String = session_id_hash.chars().take(16).collect();
    (
        format!("device-session {session}"),
        format!("device-ip {}", address_key(&meta.ip)),
    )
}

/// RFC 8628 §5.1: user codes are short enough to guess, so "the authorization server SHOULD
/// rate-limit user code attempts". Seconds to wait when this session or address entered too
/// many wrong codes (the refusal is audited, one row per lock). Fails closed: an error when the
/// database cannot check.
pub async fn user_code_blocked(
    state: &AppState,
    session_id_hash: &str,
    username: &str,
    meta: &ClientMeta,
) -> Result<Option<u64>, IdpError> {
    let now = state.now();
    let (session_key, ip_key) = user_code_keys(session_id_hash, meta);
    let store = &state.store;
    let mut locked = None;
    for key in [session_key, ip_key] {
        let b = store.throttle_check(&key, now).await;
        if let Some(b) = b.map_err(throttle_unavailable)? {
            locked = Some((key, b));
            break;
        }
    }
    let Some((key, b)) = locked else {
        return Ok(None);
    };
    let e = audit::Event::new("device_code_throttled", audit::WARNING)
        .actor(username)
        .meta(meta);
    record_refusal(state, e, &key, &b).await;
    Ok(Some(b.wait))
}

/// Counts a wrong (unknown, expired or used) user code against the session and the address,
/// with the login limits (`LOGIN_MAX_FAILURES` per session, `LOGIN_MAX_FAILURES_PER_IP`).
/// Fails closed: an error when the database cannot count.
pub async fn user_code_failed(
    state: &AppState,
    session_id_hash: &str,
    meta: &ClientMeta,
) -> Result<(), IdpError> {
    let now = state.now();
    let (session_key, ip_key) = user_code_keys(session_id_hash, meta);
    let (c, store) = (&state.config, &state.store);
    store
        .throttle_fail(&session_key, c.login_max_failures, now)
        .await
        .map_err(throttle_unavailable)?;
    store
        .throttle_fail(&ip_key, c.login_max_failures_per_ip, now)
        .await
        .map_err(throttle_unavailable)
}

/// Starts a browser session for `user`, who just signed in, and returns its id (for the
/// cookie; only its hash is stored). A new id at every sign-in (no fixation), and the browser's
/// previous session (`previous`, its cookie), if any, ends here rather than lingering until it
/// expires.
pub async fn start_session(
    state: &AppState,
    user: &User,
    meta: &ClientMeta,
    previous: Option<&str>,
) -> Result<String, IdpError> {
    let now = state.now();
    if let Some(old) = previous {
        state
            .store
            .delete_session(&crypto::hash_secret(old))
            .await?;
    }
    let sid = crypto::random_token(32);
    state
        .store
        .create_session(Session {
            id_hash: crypto::hash_secret(&sid),
            user_id: user.id.clone(),
            auth_time: now,
            created_at: now,
            expires_at: now + state.config.session_lifetime,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            last_used_at: now,
        })
        .await?;
    audit::record(
        state,
        audit::Event::new("login_succeeded", audit::INFO)
            .actor(&user.username)
            .meta(meta),
    )
    .await;
    Ok(sid)
}

/// The live session with id `sid` and its user, if the user is enabled.
pub async fn session_user(
    state: &AppState,
    sid: &str,
) -> Result<Option<(Session, User)>, IdpError> {
    let Some(session) = state
        .store
        .session(&crypto::hash_secret(sid), state.now())
        .await?
    else {
        return Ok(None);
    };
    match state.store.user_by_id(&session.user_id).await? {
        Some(u) if !u.disabled => {
            // The account pages show when a session was last used; one write a minute at most.
            let now = state.now();
            // A failed write only makes "last used" older: the request goes on.
            if session.last_used_at + SESSION_TOUCH_SECS <= now {
                if let Err(e) = state.store.touch_session(&session.id_hash, now).await {
                    tracing::warn!(error = %e, "could not record a session's last use");
                }
            }
            Ok(Some((session, u)))
        }
        _ => Ok(None),
    }
}

/// A new session for the browser of `old`, whose sessions all just ended (a password change):
/// the same sign-in time, address and user agent, a new id. No login event: nobody signed in.
pub async fn renew_session(state: &AppState, old: &Session) -> Result<String, IdpError> {
    let now = state.now();
    let sid = crypto::random_token(32);
    state
        .store
        .create_session(Session {
            id_hash: crypto::hash_secret(&sid),
            last_used_at: now,
            ..old.clone()
        })
        .await?;
    Ok(sid)
}

/// Ends `user`'s `session` (signing out), with an audit event.
pub async fn end_session(
    state: &AppState,
    session: &Session,
    user: &User,
    meta: &ClientMeta,
) -> Result<(), IdpError> {
    state.store.delete_session(&session.id_hash).await?;
    audit::record(
        state,
        audit::Event::new("logout", audit::INFO)
            .actor(&user.username)
            .meta(meta),
    )
    .await;
    Ok(())
}

/// One audit row per locked key and lock, its details updated with the running count.
async fn record_refusal(state: &AppState, e: audit::Event, key: &str, b: &Blocked) {
    let details = format!(
        "{} attempts refused while locked; locked until {}",
        b.refused, b.until
    );
    audit::record_aggregated(state, e.subject(key).details(&details), b.since).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_as_their_64() {
        assert_eq!(
            address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:2:ffff::9")
        );
        assert_ne!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:3::1")
        );
        assert_eq!(address_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("unknown"), "unknown");
        assert_eq!(
            address_key(&"x".repeat(10_000)).chars().count(),
            audit::MAX_IP
        );
    }
}
