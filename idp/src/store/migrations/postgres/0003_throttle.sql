-- The login throttle's counters (`store::rules::throttle`), one row per key, so that every
-- replica counts the same failures. `forget_at` is derived from the others
-- (`ThrottleEntry::forget_at`): the sweep forgets rows with one indexed comparison.
CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    strikes BIGINT NOT NULL DEFAULT 0,
    blocked_from BIGINT NOT NULL DEFAULT 0,
    blocked_until BIGINT NOT NULL DEFAULT 0,
    refused BIGINT NOT NULL DEFAULT 0,
    last_failure BIGINT NOT NULL DEFAULT 0,
    forget_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX throttle_forget_at ON throttle (forget_at);
