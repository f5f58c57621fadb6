-- Version 5: when each browser session was last used, for the admin console's idle timeout
-- (and for showing it). Existing sessions count as used when they were created.
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_used_at = created_at;
