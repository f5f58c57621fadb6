//! The login throttle's lock state machine, one entry per key: failures counted in a window, the
//! `max`-th failure locks the key, each lock twice as long as the one before (15 min, 30 min,
//! 1 h, ... up to a day), so five guesses every 15 minutes cannot keep going at the old pace.
//! Attempts refused while locked are counted (the audit row shows the running count), and an
//! entry with nothing left to remember is forgotten.
//!
//! The entry lives in the database (table `throttle`), so every replica counts the same
//! failures; a backend loads it under a lock, applies the function here and writes the result.
//! These rules know nothing of what a key names: `accounts` builds the keys (addresses,
//! accounts, device sessions) and decides what counts as a failure.

/// Failures are counted in windows of this length; it is also the first lock's length.
pub const THROTTLE_WINDOW_SECS: u64 = 15 * 60;

/// The longest lock, however often a key has been locked.
pub const MAX_LOCK_SECS: u64 = 24 * 3600;

/// Past locks are forgotten after this long without a failure.
pub const STRIKE_MEMORY_SECS: u64 = 24 * 3600;

/// Keys the throttle table holds at most, give or take the failures of one sweep interval
/// ([`THROTTLE_SWEEP_EVERY`]) per replica (a few hundred bytes each).
pub const MAX_THROTTLE_KEYS: u64 = 100_000;

/// The longest key a backend stores. The keys `accounts` builds are shorter: a prefix, a name
/// of at most 64 bytes and an address of at most 64 characters (`audit::MAX_IP`).
pub const MAX_THROTTLE_KEY_LEN: usize = 512;

/// A replica sweeps the throttle table (forgets what has nothing left to remember, then caps
/// it at [`MAX_THROTTLE_KEYS`]) once per this many failures it counts: cheap on average, and
/// the table cannot grow faster than failures arrive.
pub const THROTTLE_SWEEP_EVERY: u64 = 256;

/// Whether a backend stores `key` (see [`MAX_THROTTLE_KEY_LEN`]).
pub fn throttle_key_fits(key: &str) -> bool {
    key.len() <= MAX_THROTTLE_KEY_LEN
}

/// What the throttle remembers of one key. An absent key is the default (all zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleEntry {
    /// When the current failure window began (Unix seconds).
    pub window_start: u64,
    /// Failures in the current window.
    pub failures: u32,
    /// Locks so far; the next lock lasts `THROTTLE_WINDOW_SECS * 2^strikes`.
    pub strikes: u32,
    /// When the current (or last) lock began and ends.
    pub blocked_from: u64,
    pub blocked_until: u64,
    /// Attempts refused during the current lock.
    pub refused: u64,
    pub last_failure: u64,
}

/// The stored columns of an entry, in the order [`ThrottleEntry::from_columns`] reads them: both
/// backends' `throttle` tables name them alike.
pub const THROTTLE_COLUMNS: &str =
    "window_start, failures, strikes, blocked_from, blocked_until, refused, last_failure";

impl ThrottleEntry {
    /// The entry from its stored columns, each read as the integer `get` finds under its name
    /// (negative times read as 0, counts past `u32` as `u32::MAX`).
    pub fn from_columns<E>(get: impl Fn(&str) -> Result<i64, E>) -> Result<Self, E> {
        let time = |c: &str| get(c).map(|v| u64::try_from(v).unwrap_or(0));
        let count = |c: &str| get(c).map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        Ok(ThrottleEntry {
            window_start: time("window_start")?,
            failures: count("failures")?,
            strikes: count("strikes")?,
            blocked_from: time("blocked_from")?,
            blocked_until: time("blocked_until")?,
            refused: time("refused")?,
            last_failure: time("last_failure")?,
        })
    }
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

impl ThrottleEntry {
    /// From when the entry has nothing left to remember: not locked, no open window, no strike
    /// worth keeping. Stored beside the entry so a backend forgets rows with one indexed
    /// comparison.
    pub fn forget_at(&self) -> u64 {
        let strikes = if self.strikes == 0 {
            0
        } else {
            self.strikes_forgotten_at()
        };
        self.blocked_until
            .max(self.window_start.saturating_add(THROTTLE_WINDOW_SECS))
            .max(strikes)
    }

    pub fn forgettable(&self, now: u64) -> bool {
        now >= self.forget_at()
    }

    fn strikes_forgotten_at(&self) -> u64 {
        self.last_failure
            .max(self.blocked_until)
            .saturating_add(STRIKE_MEMORY_SECS)
    }
}

/// Whether a key with `entry` is locked at `now`; if so, the entry to write back (the attempt
/// counted as refused) and the lock.
pub fn throttle_check(entry: ThrottleEntry, now: u64) -> Option<(ThrottleEntry, Blocked)> {
    if now >= entry.blocked_until {
        return None;
    }
    let e = ThrottleEntry {
        refused: entry.refused.saturating_add(1),
        ..entry
    };
    let b = Blocked {
        wait: e.blocked_until - now,
        since: e.blocked_from,
        until: e.blocked_until,
        refused: e.refused,
    };
    Some((e, b))
}

/// Counts a failure at `now`: the `max`-th within one window locks the key, each lock twice as
/// long as the one before, up to [`MAX_LOCK_SECS`]; strikes are forgotten after
/// [`STRIKE_MEMORY_SECS`] without a failure.
pub fn throttle_fail(entry: ThrottleEntry, max: u32, now: u64) -> ThrottleEntry {
    let mut e = entry;
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
    e
}

/// Whether a key failed recently enough to be remembered (an address with a failure history,
/// as opposed to a clean one).
pub fn throttle_has_history(entry: ThrottleEntry, now: u64) -> bool {
    entry != ThrottleEntry::default() && !entry.forgettable(now)
}

/// How many keys a sweep that found `held` keys (after forgetting the forgettable ones) drops,
/// oldest failure first and unlocked keys before locked ones, so `capacity` is kept with room
/// for a tenth more.
pub fn throttle_overflow(held: u64, capacity: u64) -> u64 {
    if held <= capacity {
        return 0;
    }
    held - capacity + capacity / 10 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000;

    /// A key in memory: the state a backend would load and write back.
    #[derive(Default)]
    struct Key(ThrottleEntry);

    impl Key {
        fn fail(&mut self, max: u32, now: u64) {
            self.0 = throttle_fail(self.0, max, now);
        }
        fn check(&mut self, now: u64) -> Option<Blocked> {
            let (e, b) = throttle_check(self.0, now)?;
            self.0 = e;
            Some(b)
        }
    }

    #[test]
    fn the_max_th_failure_locks_for_a_window() {
        let mut k = Key::default();
        for _ in 0..4 {
            k.fail(5, T);
        }
        assert_eq!(k.check(T), None);
        k.fail(5, T + 10);
        let b = k.check(T + 10).unwrap();
        assert_eq!(
            (b.wait, b.since, b.refused),
            (THROTTLE_WINDOW_SECS, T + 10, 1)
        );
        assert_eq!(k.check(T + 11).unwrap().refused, 2);
        assert_eq!(k.check(T + 10 + THROTTLE_WINDOW_SECS), None);
        assert_eq!(Key::default().check(T + 10), None, "another key");
    }

    #[test]
    fn failures_of_a_past_window_do_not_count() {
        let mut k = Key::default();
        for _ in 0..4 {
            k.fail(5, T);
        }
        k.fail(5, T + THROTTLE_WINDOW_SECS);
        assert_eq!(k.check(T + THROTTLE_WINDOW_SECS), None);
    }

    #[test]
    fn each_lock_is_twice_as_long_up_to_a_day() {
        let mut k = Key::default();
        let mut now = T;
        let mut locks = Vec::new();
        for _ in 0..9 {
            for _ in 0..5 {
                k.fail(5, now);
            }
            let b = k.check(now).unwrap();
            locks.push(b.wait / 60);
            now = b.until;
        }
        assert_eq!(locks, [15, 30, 60, 120, 240, 480, 960, 1440, 1440]);
        // A day without failures forgets the past locks.
        now += STRIKE_MEMORY_SECS;
        for _ in 0..5 {
            k.fail(5, now);
        }
        assert_eq!(k.check(now).unwrap().wait, THROTTLE_WINDOW_SECS);
    }

    #[test]
    fn a_new_lock_counts_its_refusals_from_zero() {
        let mut k = Key::default();
        for _ in 0..5 {
            k.fail(5, T);
        }
        for _ in 0..3 {
            k.check(T + 1);
        }
        let until = k.check(T + 1).unwrap().until;
        for _ in 0..5 {
            k.fail(5, until);
        }
        assert_eq!(k.check(until).unwrap().refused, 1);
    }

    #[test]
    fn an_entry_is_forgettable_once_window_lock_and_strikes_are_over() {
        let mut k = Key::default();
        assert!(!throttle_has_history(k.0, T), "a clean key");
        k.fail(5, T);
        assert!(throttle_has_history(k.0, T + 1));
        assert_eq!(k.0.forget_at(), T + THROTTLE_WINDOW_SECS, "no strike yet");
        assert!(k.0.forgettable(T + THROTTLE_WINDOW_SECS));
        for _ in 0..4 {
            k.fail(5, T);
        }
        // Locked: remembered for the lock, then the strike for a day after it.
        let until = T + THROTTLE_WINDOW_SECS;
        assert_eq!(k.0.forget_at(), until + STRIKE_MEMORY_SECS);
        assert!(throttle_has_history(k.0, until + STRIKE_MEMORY_SECS - 1));
        assert!(!throttle_has_history(k.0, until + STRIKE_MEMORY_SECS));
        // forget_at is the first instant `forgettable` holds, for any entry.
        for e in [k.0, Key::default().0] {
            let at = e.forget_at();
            assert!(e.forgettable(at));
            assert!(at == 0 || !e.forgettable(at - 1));
        }
    }

    #[test]
    fn an_overflow_drops_down_to_nine_tenths() {
        assert_eq!(throttle_overflow(100, 100), 0);
        assert_eq!(throttle_overflow(101, 100), 12);
        assert_eq!(throttle_overflow(1000, 100), 911);
    }
}
