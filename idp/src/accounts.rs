//! Accounts: the password check shared by the login page and the password grant, and the
//! throttling of wrong guesses (passwords, and device user codes on the approval page).
//!
//! Throttle keys, all of bounded length so that long input cannot grow the map:
//! - `ip <address>`: every failed login from one address;
//! - `user <name> from <address>`: failed logins for one account from one address. An account
//!   is never locked as a whole: whatever an attacker's address does, the owner signing in with
//!   the right password from an address that has not failed gets in;
//! - `device-session <id>` and `device-ip <address>`: wrong user codes per browser session and
//!   per address.
//!
//! An IPv6 address counts as its /64: RFC 4291 §2.5.1 gives the interface identifier 64 bits, so
//! one host can take any address of its /64 and would otherwise get a fresh counter per attempt.
//! Each lock of a key lasts twice as long as the one before (15 min, 30 min, 1 h, ... up to a
//! day), so five guesses every 15 minutes cannot keep going at the old pace.

use crate::audit;
use crate::crypto;
use crate::error::IdpError;
use crate::state::AppState;
use crate::store::User;
use crate::web::ClientMeta;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// The longest username an account can have (the CLI's rule for `user add`).
pub const MAX_USERNAME_LEN: usize = 64;

/// Failures are counted in windows of this length; it is also the first lock's length.
pub const THROTTLE_WINDOW_SECS: u64 = 15 * 60;

/// The longest lock, however often a key has been locked.
pub const MAX_LOCK_SECS: u64 = 24 * 3600;

/// Past locks are forgotten after this long without a failure.
const STRIKE_MEMORY_SECS: u64 = 24 * 3600;

/// Keys the throttle holds at most (a few hundred bytes each).
pub const MAX_THROTTLE_KEYS: usize = 100_000;

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

/// Verifies a username and password with throttling and audit. Shared by the login page and the
/// password grant.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
    meta: &ClientMeta,
    client_id: &str,
) -> Result<PasswordCheck, IdpError> {
    let now = state.now();
    let addr = address_key(&meta.ip);
    let ip_key = format!("ip {addr}");
    // A name longer than any account's is wrong without asking the store or argon2, and it never
    // becomes a throttle key; it still counts against the address.
    let account_key = (username.len() <= MAX_USERNAME_LEN)
        .then(|| format!("user {} from {addr}", username.to_lowercase()));
    // The account across every address: a guesser spread over many addresses (one IPv6 /48
    // holds 65,536 /64s) locks it, but the lock only holds back addresses that have failed
    // before, so the owner signing in from a clean address is never locked out.
    let account_wide = account_key
        .as_ref()
        .map(|_| format!("account {}", username.to_lowercase()));
    let blocked = account_key
        .as_deref()
        .and_then(|k| state.throttle.check(k, now).map(|b| (k, b)))
        .or_else(|| {
            state
                .throttle
                .check(&ip_key, now)
                .map(|b| (ip_key.as_str(), b))
        })
        .or_else(|| {
            let k = account_wide.as_deref()?;
            if !state.throttle.has_history(&ip_key, now) {
                return None;
            }
            state.throttle.check(k, now).map(|b| (k, b))
        });
    if let Some((key, b)) = blocked {
        let e = audit::Event::new("login_throttled", audit::WARNING)
            .actor(username)
            .client(client_id)
            .meta(meta);
        record_refusal(state, e, key, &b).await;
        return Ok(PasswordCheck::Throttled(b.wait));
    }
    let Some(account_key) = account_key else {
        state
            .throttle
            .fail(&ip_key, state.config.login_max_failures_per_ip, now);
        let why = "username longer than any account's";
        record_failure(state, username, client_id, meta, why).await;
        return Ok(PasswordCheck::Wrong);
    };
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
    match user {
        Some(u) if ok && !u.disabled => {
            state.throttle.reset(&account_key);
            Ok(PasswordCheck::Ok(u))
        }
        Some(u) if ok => {
            record_failure(state, &u.username, client_id, meta, "account disabled").await;
            Ok(PasswordCheck::Disabled)
        }
        _ => {
            state
                .throttle
                .fail(&account_key, state.config.login_max_failures, now);
            state
                .throttle
                .fail(&ip_key, state.config.login_max_failures_per_ip, now);
            if let Some(k) = &account_wide {
                state
                    .throttle
                    .fail(k, state.config.login_max_failures_per_ip, now);
            }
            let why = "wrong username or password";
            record_failure(state, username, client_id, meta, why).await;
            Ok(PasswordCheck::Wrong)
        }
    }
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
/// many wrong codes (the refusal is audited, one row per lock).
pub async fn user_code_blocked(
    state: &AppState,
    session_id_hash: &str,
    username: &str,
    meta: &ClientMeta,
) -> Option<u64> {
    let now = state.now();
    let (session_key, ip_key) = user_code_keys(session_id_hash, meta);
    let (key, b) = state
        .throttle
        .check(&session_key, now)
        .map(|b| (session_key, b))
        .or_else(|| state.throttle.check(&ip_key, now).map(|b| (ip_key, b)))?;
    let e = audit::Event::new("device_code_throttled", audit::WARNING)
        .actor(username)
        .meta(meta);
    record_refusal(state, e, &key, &b).await;
    Some(b.wait)
}

/// Counts a wrong (unknown, expired or used) user code against the session and the address,
/// with the login limits (`LOGIN_MAX_FAILURES` per session, `LOGIN_MAX_FAILURES_PER_IP`).
pub fn user_code_failed(state: &AppState, session_id_hash: &str, meta: &ClientMeta) {
    let now = state.now();
    let (session_key, ip_key) = user_code_keys(session_id_hash, meta);
    let c = &state.config;
    state.throttle.fail(&session_key, c.login_max_failures, now);
    state
        .throttle
        .fail(&ip_key, c.login_max_failures_per_ip, now);
}

/// One audit row per locked key and lock, its details updated with the running count.
async fn record_refusal(state: &AppState, e: audit::Event, key: &str, b: &Blocked) {
    let details = format!(
        "{} attempts refused while locked; locked until {}",
        b.refused, b.until
    );
    audit::record_aggregated(state, e.subject(key).details(&details), b.since).await;
}

/// A locked key: how long it stays locked and how many attempts it refused so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Seconds until the lock ends.
    pub wait: u64,
    /// When the lock began and ends (Unix seconds).
    pub since: u64,
    pub until: u64,
    /// Attempts refused during this lock, this one included.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    window_start: u64,
    failures: u32,
    /// Locks so far; the next lock lasts `THROTTLE_WINDOW_SECS * 2^strikes`.
    strikes: u32,
    blocked_from: u64,
    blocked_until: u64,
    refused: u64,
    last_failure: u64,
}

impl Entry {
    /// Nothing left to remember: not locked, no open window, no strike worth keeping.
    fn forgettable(&self, now: u64) -> bool {
        now >= self.blocked_until
            && now >= self.window_start.saturating_add(THROTTLE_WINDOW_SECS)
            && (self.strikes == 0 || now >= self.strikes_forgotten_at())
    }

    fn strikes_forgotten_at(&self) -> u64 {
        self.last_failure
            .max(self.blocked_until)
            .saturating_add(STRIKE_MEMORY_SECS)
    }
}

/// Failure counters per key, in memory, bounded to [`MAX_THROTTLE_KEYS`] keys.
#[derive(Debug)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_capacity(MAX_THROTTLE_KEYS)
    }
}

impl Throttle {
    pub fn with_capacity(capacity: usize) -> Self {
        Throttle {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(10),
        }
    }

    /// Whether `key` is locked at `now`; if so the attempt is counted as refused.
    pub fn check(&self, key: &str, now: u64) -> Option<Blocked> {
        let mut m = self.entries.lock().ok()?;
        let e = m.get_mut(key)?;
        if now >= e.blocked_until {
            return None;
        }
        e.refused = e.refused.saturating_add(1);
        Some(Blocked {
            wait: e.blocked_until - now,
            since: e.blocked_from,
            until: e.blocked_until,
            refused: e.refused,
        })
    }

    /// Counts a failure of `key`; the `max`-th within one window locks it, each lock twice as
    /// long as the one before.
    pub fn fail(&self, key: &str, max: u32, now: u64) {
        let Ok(mut m) = self.entries.lock() else {
            return;
        };
        if !m.contains_key(key) && m.len() >= self.capacity {
            make_room(&mut m, self.capacity, now);
        }
        let e = m.entry(key.to_string()).or_default();
        if e.strikes > 0 && now >= e.strikes_forgotten_at() {
            e.strikes = 0;
        }
        if now >= e.window_start.saturating_add(THROTTLE_WINDOW_SECS) {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures >= max.max(1) {
            let lock = THROTTLE_WINDOW_SECS
                .saturating_mul(1u64 << e.strikes.min(16))
                .min(MAX_LOCK_SECS);
            e.strikes = e.strikes.saturating_add(1);
            e.blocked_from = now;
            e.blocked_until = now.saturating_add(lock);
            e.refused = 0;
            e.failures = 0;
            e.window_start = now;
        }
    }

    /// Whether `key` failed recently enough to be remembered (an address with a failure
    /// history, as opposed to a clean one).
    pub fn has_history(&self, key: &str, now: u64) -> bool {
        self.entries
            .lock()
            .map(|m| m.get(key).is_some_and(|e| !e.forgettable(now)))
            .unwrap_or(false)
    }

    /// Forgets `key` (after a successful login from that address).
    pub fn reset(&self, key: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(key);
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys held, for inspection and tests.
    pub fn keys(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Makes room for a new key: forgets what has nothing left to remember, then, if the map is
/// still full of live keys, drops the tenth that failed longest ago, unlocked keys first.
fn make_room(m: &mut HashMap<String, Entry>, capacity: usize, now: u64) {
    m.retain(|_, e| !e.forgettable(now));
    if m.len() < capacity {
        return;
    }
    let mut by_age: Vec<(bool, u64, String)> = m
        .iter()
        .map(|(k, e)| (now < e.blocked_until, e.last_failure, k.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, _, k) in by_age.into_iter().take(capacity / 10 + 1) {
        m.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000;

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

    #[test]
    fn the_max_th_failure_locks_for_a_window() {
        let t = Throttle::default();
        for _ in 0..4 {
            t.fail("k", 5, T);
        }
        assert_eq!(t.check("k", T), None);
        t.fail("k", 5, T + 10);
        let b = t.check("k", T + 10).unwrap();
        assert_eq!(
            (b.wait, b.since, b.refused),
            (THROTTLE_WINDOW_SECS, T + 10, 1)
        );
        assert_eq!(t.check("k", T + 11).unwrap().refused, 2);
        assert_eq!(t.check("k", T + 10 + THROTTLE_WINDOW_SECS), None);
        assert_eq!(t.check("other", T + 10), None);
    }

    #[test]
    fn failures_of_a_past_window_do_not_count() {
        let t = Throttle::default();
        for _ in 0..4 {
            t.fail("k", 5, T);
        }
        t.fail("k", 5, T + THROTTLE_WINDOW_SECS);
        assert_eq!(t.check("k", T + THROTTLE_WINDOW_SECS), None);
    }

    #[test]
    fn each_lock_is_twice_as_long_up_to_a_day() {
        let t = Throttle::default();
        let mut now = T;
        let mut locks = Vec::new();
        for _ in 0..9 {
            for _ in 0..5 {
                t.fail("k", 5, now);
            }
            let b = t.check("k", now).unwrap();
            locks.push(b.wait / 60);
            now = b.until;
        }
        assert_eq!(locks, [15, 30, 60, 120, 240, 480, 960, 1440, 1440]);
        // A day without failures forgets the past locks.
        now += STRIKE_MEMORY_SECS;
        for _ in 0..5 {
            t.fail("k", 5, now);
        }
        assert_eq!(t.check("k", now).unwrap().wait, THROTTLE_WINDOW_SECS);
    }

    #[test]
    fn reset_forgets_a_key() {
        let t = Throttle::default();
        for _ in 0..5 {
            t.fail("k", 5, T);
        }
        t.reset("k");
        assert_eq!(t.check("k", T), None);
        assert!(t.is_empty());
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_locked_keys() {
        let t = Throttle::with_capacity(100);
        for _ in 0..5 {
            t.fail("locked", 5, T);
        }
        for i in 0..1000 {
            t.fail(&format!("k{i}"), 5, T + 1);
            assert!(t.len() <= 100, "{} keys", t.len());
        }
        assert!(t.check("locked", T + 1).is_some(), "a locked key stays");
        // Once its window, lock and strike memory are over, a key is forgotten to make room.
        let later = T + 2 * MAX_LOCK_SECS + STRIKE_MEMORY_SECS;
        for i in 0..100 {
            t.fail(&format!("new{i}"), 5, later);
        }
        assert!(t.len() <= 100);
        assert!(t.keys().iter().all(|k| k.starts_with("new")));
    }
}
