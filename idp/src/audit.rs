//! Audit events: logins, tokens issued/refreshed/revoked, device decisions, admin actions.
//! Recording never fails a request: a store error is logged instead.

use crate::state::AppState;
use crate::store::{AuditEvent, Store};
use crate::web::ClientMeta;

pub const INFO: &str = "info";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";

/// A builder for one audit event.
#[derive(Debug, Clone, Default)]
pub struct Event(AuditEvent);

impl Event {
    pub fn new(event: &str, severity: &str) -> Self {
        Event(AuditEvent {
            event: event.into(),
            severity: severity.into(),
            ..Default::default()
        })
    }
    pub fn actor(mut self, a: &str) -> Self {
        self.0.actor = a.into();
        self
    }
    pub fn subject(mut self, s: &str) -> Self {
        self.0.subject = s.into();
        self
    }
    pub fn client(mut self, c: &str) -> Self {
        self.0.client_id = c.into();
        self
    }
    pub fn meta(mut self, m: &ClientMeta) -> Self {
        self.0.ip = m.ip.clone();
        self.0.user_agent = m.user_agent.clone();
        self
    }
    pub fn details(mut self, d: &str) -> Self {
        self.0.details = d.into();
        self
    }
    /// The event for a store method that records it inside its own transaction (the store
    /// sets the time).
    pub fn into_event(self) -> AuditEvent {
        self.0
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

/// Escapes a CSV field, neutralising spreadsheet formulas (a leading `=`, `+`, `-`, `@`, tab or
/// carriage return gets a `'` prefix) so an exported audit log cannot run code in a spreadsheet.
pub fn csv_field(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// The audit events as CSV, header first.
pub fn to_csv(events: &[AuditEvent]) -> String {
    let mut out =
        String::from("id,at,event,severity,actor,subject,client_id,ip,user_agent,details\n");
    for e in events {
        let fields = [
            e.id.to_string(),
            e.at.to_string(),
            e.event.clone(),
            e.severity.clone(),
            e.actor.clone(),
            e.subject.clone(),
            e.client_id.clone(),
            e.ip.clone(),
            e.user_agent.clone(),
            e.details.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_neutralises_formulas_and_quotes() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
