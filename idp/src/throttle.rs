//! The throttle: failure counters per key, in memory and bounded, with locks that double in
//! length (15 min, 30 min, 1 h, ... up to a day), so five guesses every 15 minutes cannot keep
//! going at the old pace. It knows nothing of what a key names: `accounts` builds the keys
//! (addresses, accounts, device sessions) and decides what counts as a failure.
//!
//! Depends on nothing else in the crate, so `state` can hold one.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failures are counted in windows of this length; it is also the first lock's length.
pub const THROTTLE_WINDOW_SECS: u64 = 15 * 60;

/// The longest lock, however often a key has been locked.
pub const MAX_LOCK_SECS: u64 = 24 * 3600;

/// Past locks are forgotten after this long without a failure.
const STRIKE_MEMORY_SECS: u64 = 24 * 3600;

/// Keys the throttle holds at most (a few hundred bytes each).
pub const MAX_THROTTLE_KEYS: usize = 100_000;

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
