//! The login throttle on PostgreSQL: the row of a key is locked while its failure is counted
//! (an upsert that returns the row, which holds its lock to the end of the transaction), so
//! failures on several replicas at once all count, and `rules::throttle`'s state machine decides
//! what is written.

use super::{i, u, Conn, PgStore};
use crate::store::rules::{self, Blocked, ThrottleEntry};
use crate::store::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::sync::atomic::Ordering;

const COLS: &str = rules::THROTTLE_COLUMNS;

fn entry_from(r: &PgRow) -> Result<ThrottleEntry, sqlx::Error> {
    ThrottleEntry::from_columns(|c| r.try_get(c))
}

/// Writes `e` to the (locked, existing) row of `key`.
async fn save(conn: &mut Conn, key: &str, e: &ThrottleEntry) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE throttle SET window_start = $2, failures = $3, strikes = $4, blocked_from = $5, blocked_until = $6, refused = $7, last_failure = $8, forget_at = $9 WHERE key = $1",
    )
    .bind(key)
    .bind(i(e.window_start))
    .bind(i64::from(e.failures))
    .bind(i64::from(e.strikes))
    .bind(i(e.blocked_from))
    .bind(i(e.blocked_until))
    .bind(i(e.refused))
    .bind(i(e.last_failure))
    .bind(i(e.forget_at()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The key as stored, refused when longer than any key `accounts` builds.
fn bounded(key: &str) -> StoreResult<String> {
    if !rules::throttle_key_fits(key) {
        return Err(StoreError::Backend("throttle key too long".into()));
    }
    Ok(key.to_string())
}

impl PgStore {
    pub(super) async fn throttle_check_op(
        &self,
        key: &str,
        now: u64,
    ) -> StoreResult<Option<Blocked>> {
        let key = bounded(key)?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM throttle WHERE key = $1 FOR UPDATE"
        ))
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        let entry = row.as_ref().map(entry_from).transpose()?;
        // Not locked (the usual case): nothing to write; the transaction rolls back on drop.
        let Some((e, b)) = entry.and_then(|e| rules::throttle_check(e, now)) else {
            return Ok(None);
        };
        save(&mut tx, &key, &e).await?;
        tx.commit().await?;
        Ok(Some(b))
    }

    pub(super) async fn throttle_fail_op(&self, key: &str, max: u32, now: u64) -> StoreResult<()> {
        let key = bounded(key)?;
        let mut tx = self.pool.begin().await?;
        // Creates the row if there is none and locks it either way; a replica counting a
        // failure of the same key at once waits here and then reads this one's count.
        let row = sqlx::query(&format!(
            "INSERT INTO throttle (key) VALUES ($1) ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING {COLS}"
        ))
        .bind(&key)
        .fetch_one(&mut *tx)
        .await?;
        let e = rules::throttle_fail(entry_from(&row)?, max, now);
        save(&mut tx, &key, &e).await?;
        tx.commit().await?;
        let n = self.throttle_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(rules::THROTTLE_SWEEP_EVERY) {
            // After the failure is committed: a sweep that fails loses nothing but room, and
            // the next one tries again.
            if let Err(e) = self.throttle_sweep_op(now, rules::MAX_THROTTLE_KEYS).await {
                tracing::warn!(error = %e, "could not sweep the throttle table");
            }
        }
        Ok(())
    }

    pub(super) async fn throttle_reset_op(&self, key: &str) -> StoreResult<()> {
        let key = bounded(key)?;
        sqlx::query("DELETE FROM throttle WHERE key = $1")
            .bind(&key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn throttle_has_history_op(&self, key: &str, now: u64) -> StoreResult<bool> {
        let key = bounded(key)?;
        let row = sqlx::query(&format!("SELECT {COLS} FROM throttle WHERE key = $1"))
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
        let entry = row.as_ref().map(entry_from).transpose()?;
        Ok(rules::throttle_has_history(entry.unwrap_or_default(), now))
    }

    /// Forgets what has nothing left to remember, then caps the table at `capacity` keys (each
    /// statement on its own: a sweep never holds many row locks for long).
    pub(super) async fn throttle_sweep_op(&self, now: u64, capacity: u64) -> StoreResult<u64> {
        let mut n = sqlx::query("DELETE FROM throttle WHERE forget_at <= $1")
            .bind(i(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM throttle")
            .fetch_one(&self.pool)
            .await?;
        let drop = rules::throttle_overflow(u(held), capacity);
        if drop > 0 {
            // Unlocked keys first (false sorts before true), then the oldest failure.
            n += sqlx::query(
                "DELETE FROM throttle WHERE key IN (SELECT key FROM throttle ORDER BY blocked_until > $1, last_failure LIMIT $2)",
            )
            .bind(i(now))
            .bind(i(drop))
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    pub(super) async fn throttle_keys_op(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT key FROM throttle ORDER BY key")
            .fetch_all(&self.pool)
            .await?)
    }
}
