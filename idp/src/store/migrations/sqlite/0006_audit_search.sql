-- Version 6: indexes for the console's audit search (measured with `idp-bench --console` on
-- 1,000,000 events; README, Performance). Each filter reads newest first (ORDER BY id DESC,
-- keyset-paged on id); an SQLite index holds the rowid after its columns, so an index on one
-- column hands out the rows of one value already in id order and the query stops after a page
-- instead of sorting every match (event) or scanning the whole log (user, IP).
-- The user filter is `actor = ? OR subject = ?`: one index per side (a multi-index OR).
CREATE INDEX IF NOT EXISTS audit_events_event ON audit_events(event);
CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events(actor);
CREATE INDEX IF NOT EXISTS audit_events_subject ON audit_events(subject);
CREATE INDEX IF NOT EXISTS audit_events_ip ON audit_events(ip);
