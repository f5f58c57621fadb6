-- Version 5: when and from where sessions and refresh families were last used, for the
-- account pages. A session's last use is touched at most once a minute; a refresh family's last
-- use is its current token's row (created at the last rotation, with the address and user agent
-- of that request), so the refresh path writes nothing more than before.
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_used_at = created_at;
ALTER TABLE refresh_tokens ADD COLUMN ip TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
