-- Version 3: where a device authorization request came from (shown on the approval page so a
-- person can spot a relayed code), and an index for finding the open aggregated audit row of a
-- throttle key.
ALTER TABLE device_codes ADD COLUMN request_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN request_user_agent TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS audit_events_event_subject ON audit_events(event, subject, id);
