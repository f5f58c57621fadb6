//! Audit events: logins, tokens issued/refreshed/revoked, device decisions, admin actions.
//! Recording never fails a request: a store error is logged instead. Every field is bounded
//! here, whoever builds the event: much of it (usernames typed on the login page, user agents,
//! client ids) comes straight from the request, and an attacker must not fill the table.
//!
//! May depend on: `state`, `store`, `error`, `http` (the request's `ClientMeta`).

use crate::error::IdpError;
use crate::http::ClientMeta;
use crate::state::AppState;
use crate::store::{AuditEvent, Store};
use std::borrow::Cow;

pub const INFO: &str = "info";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// How many characters each field keeps (the CLI allows 64-character names and client ids).
pub const MAX_EVENT: usize = 64;
pub const MAX_SEVERITY: usize = 16;
pub const MAX_ACTOR: usize = 64;
/// A subject may be a throttle key: an address plus a 64-character name.
pub const MAX_SUBJECT: usize = 128;
pub const MAX_CLIENT_ID: usize = 64;
/// An IPv6 address in text is at most 45 characters.
pub const MAX_IP: usize = 64;
pub const MAX_USER_AGENT: usize = 256;
pub const MAX_DETAILS: usize = 512;

/// What ends a truncated field. Names are ASCII (the CLI's rule), so an actor ending in it was
/// cut, not typed.
pub const TRUNCATION_MARK: char = '…';

/// `s` when it has at most `max` characters, else its first `max - 1` characters and
/// [`TRUNCATION_MARK`]: never more than `max` characters either way.
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{keep}{TRUNCATION_MARK}")
        }
    }
}

/// A builder for one audit event; each setter bounds its field.
#[derive(Debug, Clone, Default)]
pub struct Event(AuditEvent);

impl Event {
    pub fn new(event: &str, severity: &str) -> Self {
        Event(AuditEvent {
            event: bounded(event, MAX_EVENT),
            severity: bounded(severity, MAX_SEVERITY),
            ..Default::default()
        })
    }
    pub fn actor(mut self, a: &str) -> Self {
        self.0.actor = bounded(a, MAX_ACTOR);
        self
    }
    pub fn subject(mut self, s: &str) -> Self {
        self.0.subject = bounded(s, MAX_SUBJECT);
        self
    }
    pub fn client(mut self, c: &str) -> Self {
        self.0.client_id = bounded(c, MAX_CLIENT_ID);
        self
    }
    pub fn meta(mut self, m: &ClientMeta) -> Self {
        self.0.ip = bounded(&m.ip, MAX_IP);
        self.0.user_agent = bounded(&m.user_agent, MAX_USER_AGENT);
        self
    }
    pub fn details(mut self, d: &str) -> Self {
        self.0.details = bounded(d, MAX_DETAILS);
        self
    }
    /// The event for a store method that records it inside its own transaction (the store
    /// sets the time).
    pub fn into_event(self) -> AuditEvent {
        self.0
    }
}

/// The name the audit log gives a user: their username, which is what an administrator searches
/// for (the user filter matches actor or subject), or the id when the account is gone.
pub async fn username_of(store: &dyn Store, user_id: &str) -> String {
    match store.user_by_id(user_id).await {
        Ok(Some(u)) => u.username,
        _ => user_id.to_string(),
    }
}

pub async fn record(state: &AppState, e: Event) {
    record_in(state.store.as_ref(), state.now(), e).await
}

pub async fn record_in(store: &dyn Store, now: u64, e: Event) {
    let mut ev = e.0;
    ev.at = now;
    let name = ev.event.clone();
    if let Err(err) = store.record_audit(ev).await {
        tracing::error!(error = %err, event = %name, "could not record audit event");
    }
}

/// Records `e` at most once per `subject` (a throttle key) and window: when an event of the
/// same name and subject was recorded at or after `since`, that row's details are replaced by
/// `e`'s (which carry the running count) instead of adding a row. A throttled attacker costs us
/// no password hashing, so without this every refused attempt would be a cheap row.
pub async fn record_aggregated(state: &AppState, e: Event, since: u64) {
    let mut ev = e.0;
    ev.at = state.now();
    let name = ev.event.clone();
    if let Err(err) = state.store.record_audit_aggregated(ev, since).await {
        tracing::error!(error = %err, event = %name, "could not record audit event");
    }
}

/// Audit events older than this time are purged (`AUDIT_RETENTION`; 0 keeps them forever).
pub fn retention_cutoff(retention_secs: u64, now: u64) -> u64 {
    if retention_secs == 0 {
        0
    } else {
        now.saturating_sub(retention_secs)
    }
}

/// A field defused for spreadsheets: a leading `=`, `+`, `-`, `@`, tab or carriage return gets a
/// `'` prefix, so an exported audit log cannot run a formula (OWASP "CSV injection").
fn defuse(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The CSV header line: the columns of [`to_csv`] and [`push_csv_rows`].
pub const CSV_HEADER: &str = "id,at,event,severity,actor,subject,client_id,ip,user_agent,details\n";

/// Appends `events` to `out` as CSV rows, one `\n`-terminated line each. Every field is
/// defused, then written by the `csv` crate, which quotes a field holding a comma, a quote or a
/// line break (RFC 4180 §2). The CLI listing, the streamed export and [`to_csv`] all write
/// their rows here.
pub fn push_csv_rows(out: &mut String, events: &[AuditEvent]) -> Result<(), IdpError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(events.len() * 160));
    for e in events {
        let (id, at) = (e.id.to_string(), e.at.to_string());
        let fields = [
            &id,
            &at,
            &e.event,
            &e.severity,
            &e.actor,
            &e.subject,
            &e.client_id,
            &e.ip,
            &e.user_agent,
            &e.details,
        ];
        w.write_record(fields.map(|f| defuse(f)).iter().map(|f| f.as_bytes()))
            .map_err(std::io::Error::from)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    let text = String::from_utf8(bytes)
        .map_err(|_| IdpError::Internal("the CSV export is not UTF-8".into()))?;
    out.push_str(&text);
    Ok(())
}

/// The audit events as CSV, header first.
pub fn to_csv(events: &[AuditEvent]) -> Result<String, IdpError> {
    let mut out = String::from(CSV_HEADER);
    push_csv_rows(&mut out, events)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One field as [`to_csv`] writes it: the `details` column of an event whose other fields
    /// are empty or zero.
    fn csv_field(s: &str) -> String {
        let e = AuditEvent {
            details: s.into(),
            ..Default::default()
        };
        let out = to_csv(&[e]).unwrap();
        let (_header, record) = out.split_once('\n').unwrap();
        let field = record.strip_prefix("0,0,,,,,,,,").unwrap();
        field.strip_suffix('\n').unwrap().to_string()
    }

    #[test]
    fn csv_neutralises_formulas_and_quotes() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }

    #[test]
    fn every_field_is_bounded_with_a_mark() {
        assert_eq!(bounded("alice", 64), "alice");
        assert_eq!(bounded(&"a".repeat(64), 64), "a".repeat(64));
        let cut = bounded(&"é".repeat(70_000), 64);
        assert_eq!(cut.chars().count(), 64);
        assert!(cut.ends_with(TRUNCATION_MARK));
        let huge = "x".repeat(70_000);
        let meta = ClientMeta {
            ip: huge.clone(),
            user_agent: huge.clone(),
        };
        let e = Event::new(&huge, &huge)
            .actor(&huge)
            .subject(&huge)
            .client(&huge)
            .meta(&meta)
            .details(&huge)
            .into_event();
        for (field, max) in [
            (&e.event, MAX_EVENT),
            (&e.severity, MAX_SEVERITY),
            (&e.actor, MAX_ACTOR),
            (&e.subject, MAX_SUBJECT),
            (&e.client_id, MAX_CLIENT_ID),
            (&e.ip, MAX_IP),
            (&e.user_agent, MAX_USER_AGENT),
            (&e.details, MAX_DETAILS),
        ] {
            assert_eq!(field.chars().count(), max);
            assert!(field.ends_with(TRUNCATION_MARK));
        }
    }

    #[test]
    fn retention_cutoff_keeps_a_year_by_default_and_zero_keeps_all() {
        let now = 1_800_000_000;
        assert_eq!(retention_cutoff(365 * 86_400, now), now - 365 * 86_400);
        assert_eq!(retention_cutoff(0, now), 0);
        assert_eq!(retention_cutoff(now + 1, now), 0);
    }
}
