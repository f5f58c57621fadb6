//! Audit queries: filters by event type, actor, subject, user, client, IP, time range and
//! outcome; keyset paging (newest first, a page ends at an event id and the next page starts
//! below it); and the CSV export of exactly the filtered set, produced a page at a time so its
//! memory does not grow with the log.

use super::Admin;
use crate::audit;
use crate::error::IdpError;
use crate::store::{AuditEvent, AuditFilter, Store};
use std::ops::Deref;

/// The events that record a refused or failed attempt; every other event records something
/// that happened. The outcome filter is this list, kept here in one place.
pub const FAILURE_EVENTS: &[&str] = &[
    "login_failed",
    "login_throttled",
    "device_code_throttled",
    "consent_denied",
    "device_denied",
    "refresh_token_reused",
    "authorization_code_replayed",
];

/// The largest page of events.
pub const MAX_PAGE: u32 = 1000;
/// Rows per CSV chunk (one query each).
pub const CSV_CHUNK: u32 = 1000;
/// The header line of every export.
pub use crate::audit::CSV_HEADER;

/// Whether an event records a success or a failure (see [`FAILURE_EVENTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn of(event: &str) -> Outcome {
        if FAILURE_EVENTS.contains(&event) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

/// What to look for in the audit log; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub event: Option<String>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    /// The actor or the subject: everything a person did or had done to them.
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    /// Unix times, both inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub outcome: Option<Outcome>,
}

impl AuditQuery {
    /// Refuses a filter longer than the field it compares with: nothing stored could match it.
    fn check(&self) -> Result<(), IdpError> {
        let fields = [
            ("event", &self.event, audit::MAX_EVENT),
            ("actor", &self.actor, audit::MAX_ACTOR),
            ("subject", &self.subject, audit::MAX_SUBJECT),
            ("user", &self.user, audit::MAX_SUBJECT),
            ("client", &self.client_id, audit::MAX_CLIENT_ID),
            ("IP", &self.ip, audit::MAX_IP),
        ];
        for (what, value, max) in fields {
            if value.as_ref().is_some_and(|v| v.chars().count() > max) {
                return Err(IdpError::Invalid(format!(
                    "the {what} filter must have at most {max} characters"
                )));
            }
        }
        Ok(())
    }

    fn filter(&self, before_id: Option<i64>, limit: u32) -> AuditFilter {
        let failures = || FAILURE_EVENTS.iter().map(|e| e.to_string()).collect();
        AuditFilter {
            event: self.event.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            user: self.user.clone(),
            client_id: self.client_id.clone(),
            ip: self.ip.clone(),
            since: self.since,
            until: self.until,
            event_in: match self.outcome {
                Some(Outcome::Failure) => failures(),
                _ => Vec::new(),
            },
            event_not_in: match self.outcome {
                Some(Outcome::Success) => failures(),
                _ => Vec::new(),
            },
            before_id,
            limit,
        }
    }
}

/// One page of events, newest first; `next` is the cursor of the following page, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next: Option<i64>,
}

impl<'a> Admin<'a> {
    /// The events matching `query` below event id `before` (the previous page's `next`), at
    /// most `limit` (capped at [`MAX_PAGE`]).
    pub async fn audit_page(
        &self,
        query: &AuditQuery,
        before: Option<i64>,
        limit: u32,
    ) -> Result<AuditPage, IdpError> {
        query.check()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut events = self
            .store
            .audit_events(query.filter(before, limit + 1))
            .await?;
        let next = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }

    /// The CSV export of every event matching `query` (see [`AuditCsv`]).
    pub fn audit_csv(&self, query: AuditQuery) -> Result<AuditCsv<&'a dyn Store>, IdpError> {
        AuditCsv::new(self.store, query)
    }
}

/// The CSV export of the events matching a query, newest first, pulled a chunk at a time:
/// the header, then [`CSV_CHUNK`] rows per chunk, each chunk one keyset query. Rows recorded
/// after the export started are not in it (they sort above its first page), so it is exactly
/// the filtered set as of its start. `S` is any handle to the store: a borrowed one for the
/// command line, an `Arc<dyn Store>` for a response body that outlives the handler.
pub struct AuditCsv<S> {
    store: S,
    query: AuditQuery,
    /// Below this event id comes the next chunk; `None` before the first.
    before: Option<i64>,
    started: bool,
    done: bool,
}

impl<'s, S: Deref<Target = dyn Store + 's>> AuditCsv<S> {
    pub fn new(store: S, query: AuditQuery) -> Result<AuditCsv<S>, IdpError> {
        query.check()?;
        Ok(AuditCsv {
            store,
            query,
            before: None,
            started: false,
            done: false,
        })
    }

    /// The next chunk of CSV text (the first one starts with the header), or `None` at the
    /// end.
    pub async fn next_chunk(&mut self) -> Result<Option<String>, IdpError> {
        if self.done {
            return Ok(None);
        }
        let events = self
            .store
            .audit_events(self.query.filter(self.before, CSV_CHUNK))
            .await?;
        let mut out = String::with_capacity(events.len() * 160 + CSV_HEADER.len());
        if !self.started {
            out.push_str(CSV_HEADER);
            self.started = true;
        }
        audit::push_csv_rows(&mut out, &events)?;
        self.before = events.last().map(|e| e.id);
        self.done = events.len() < CSV_CHUNK as usize;
        Ok(Some(out))
    }
}
