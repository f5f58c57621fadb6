-- The login throttle's counters (`store::rules::throttle`), one row per key, so that every
-- process on this database counts the same failures. `forget_at` is derived from the others
-- (`ThrottleEntry::forget_at`): the sweep forgets rows with one indexed comparison.
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    strikes INTEGER NOT NULL DEFAULT 0,
    blocked_from INTEGER NOT NULL DEFAULT 0,
    blocked_until INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0,
    last_failure INTEGER NOT NULL DEFAULT 0,
    forget_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX throttle_forget_at ON throttle (forget_at);
