//! The login throttle on SQLite: each method is one job on one connection's thread (a writer
//! closure in one `BEGIN IMMEDIATE` transaction where it writes), applying
//! `rules::throttle`'s state machine to the row it loads.

use super::{exec, i, immediate, one, u, SqliteStore};
use crate::store::rules::{self, Blocked, ThrottleEntry};
use crate::store::{StoreError, StoreResult};
use rusqlite::{params, Connection, Row};
use std::sync::atomic::Ordering;

const COLS: &str = rules::THROTTLE_COLUMNS;

fn entry_from(r: &Row) -> Result<ThrottleEntry, rusqlite::Error> {
    ThrottleEntry::from_columns(|c| r.get(c))
}

/// The key as stored, refused when longer than any key `accounts` builds.
fn bounded(key: &str) -> StoreResult<String> {
    if !rules::throttle_key_fits(key) {
        return Err(StoreError::Backend("throttle key too long".into()));
    }
    Ok(key.to_string())
}

/// The entry of `key`; the default (nothing remembered) when there is no row.
fn load(c: &Connection, key: &str) -> StoreResult<ThrottleEntry> {
    Ok(one(
        c,
        &format!("SELECT {COLS} FROM throttle WHERE key = ?"),
        [key],
        entry_from,
    )?
    .unwrap_or_default())
}

fn save(c: &Connection, key: &str, e: &ThrottleEntry) -> StoreResult<()> {
    exec(
        c,
        &format!(
            "INSERT OR REPLACE INTO throttle (key, {COLS}, forget_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        params![
            key,
            i(e.window_start),
            e.failures,
            e.strikes,
            i(e.blocked_from),
            i(e.blocked_until),
            i(e.refused),
            i(e.last_failure),
            i(e.forget_at()),
        ],
    )?;
    Ok(())
}

/// Forgets what has nothing left to remember, then caps the table at `capacity` keys.
fn sweep(c: &Connection, now: u64, capacity: u64) -> StoreResult<u64> {
    let mut n = exec(c, "DELETE FROM throttle WHERE forget_at <= ?", [i(now)])? as u64;
    let held: i64 = one(c, "SELECT COUNT(*) FROM throttle", [], |r| r.get(0))?.unwrap_or(0);
    let drop = rules::throttle_overflow(u(held), capacity);
    if drop > 0 {
        // Unlocked keys first (false sorts before true), then the oldest failure.
        n += exec(
            c,
            "DELETE FROM throttle WHERE key IN (SELECT key FROM throttle ORDER BY blocked_until > ?, last_failure LIMIT ?)",
            params![i(now), i(drop)],
        )? as u64;
    }
    Ok(n)
}

impl SqliteStore {
    pub(super) async fn throttle_check_op(
        &self,
        key: &str,
        now: u64,
    ) -> StoreResult<Option<Blocked>> {
        let key = bounded(key)?;
        self.write(move |c| {
            immediate(c, |tx| {
                let Some((e, b)) = rules::throttle_check(load(tx, &key)?, now) else {
                    return Ok(None);
                };
                save(tx, &key, &e)?;
                Ok(Some(b))
            })
        })
        .await
    }

    pub(super) async fn throttle_fail_op(&self, key: &str, max: u32, now: u64) -> StoreResult<()> {
        let key = bounded(key)?;
        let n = self.throttle_fails.fetch_add(1, Ordering::Relaxed) + 1;
        let due = n.is_multiple_of(rules::THROTTLE_SWEEP_EVERY);
        self.write(move |c| {
            immediate(c, |tx| {
                let e = rules::throttle_fail(load(tx, &key)?, max, now);
                save(tx, &key, &e)
            })?;
            if due {
                // After the failure is counted, and only logged when it fails: a failed sweep
                // (each DELETE is atomic) loses nothing but room, and the next one tries again.
                if let Err(e) = immediate(c, |tx| sweep(tx, now, rules::MAX_THROTTLE_KEYS)) {
                    tracing::warn!(error = %e, "could not sweep the throttle table");
                }
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn throttle_reset_op(&self, key: &str) -> StoreResult<()> {
        let key = bounded(key)?;
        self.write(move |c| exec(c, "DELETE FROM throttle WHERE key = ?", [key]).map(|_| ()))
            .await
    }

    pub(super) async fn throttle_has_history_op(&self, key: &str, now: u64) -> StoreResult<bool> {
        let key = bounded(key)?;
        self.read(move |c| Ok(rules::throttle_has_history(load(c, &key)?, now)))
            .await
    }

    pub(super) async fn throttle_sweep_op(&self, now: u64, capacity: u64) -> StoreResult<u64> {
        self.write(move |c| immediate(c, |tx| sweep(tx, now, capacity)))
            .await
    }

    pub(super) async fn throttle_keys_op(&self) -> StoreResult<Vec<String>> {
        self.read(|c| super::all(c, "SELECT key FROM throttle ORDER BY key", [], |r| r.get(0)))
            .await
    }
}
