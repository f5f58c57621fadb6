//! The audit log: filters (event type, actor, subject, user, client, IP, time range, outcome),
//! keyset paging, each row with IP and user agent, the retention setting, and the CSV export
//! of exactly the filtered set, streamed as the response body a chunk at a time from
//! `admin::audit::AuditCsv` (never built in memory), with spreadsheet-formula escaping done by
//! the shared CSV writer (`audit::push_csv_rows`).

use super::overview::{rows, Row};
use super::{refusal, AdminRead, Console};
use crate::admin::audit::{AuditCsv, AuditQuery, Outcome};
use crate::error::PageError;
use crate::state::AppState;
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Events per page.
const PAGE: u32 = 100;
/// The longest filter value kept from the query string (the admin layer refuses any longer
/// than its field; this bounds what is echoed back into the form).
const MAX_FILTER: usize = 256;

/// The filter form's fields, as typed.
#[derive(Deserialize, Default, Clone)]
pub struct Filters {
    #[serde(default)]
    event: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    before: String,
}

/// A time from the form: `YYYY-MM-DDTHH:MM[:SS]` (an HTML `datetime-local` value) or a date,
/// read as UTC (RFC 3339 §5.6 without the offset), or Unix seconds.
fn parse_time(what: &str, s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Some(n));
    }
    let full = match s.len() {
        10 => format!("{s}T00:00:00"),
        16 => format!("{s}:00"),
        _ => s.to_string(),
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs()))
        .ok_or_else(|| {
            format!(
                "The {what} time {:?} is not a date and time such as 2026-01-31T13:45 (UTC).",
                crate::audit::bounded(s, 40)
            )
        })
}

impl Filters {
    fn bounded(mut self) -> Filters {
        for f in [
            &mut self.event,
            &mut self.actor,
            &mut self.user,
            &mut self.subject,
            &mut self.client,
            &mut self.ip,
            &mut self.since,
            &mut self.until,
            &mut self.outcome,
            &mut self.before,
        ] {
            *f = crate::audit::bounded(f.trim(), MAX_FILTER);
        }
        self
    }

    fn query(&self) -> Result<AuditQuery, String> {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(AuditQuery {
            event: opt(&self.event),
            actor: opt(&self.actor),
            subject: opt(&self.subject),
            user: opt(&self.user),
            client_id: opt(&self.client),
            ip: opt(&self.ip),
            since: parse_time("from", &self.since)?,
            until: parse_time("to", &self.until)?,
            outcome: match self.outcome.as_str() {
                "success" => Some(Outcome::Success),
                "failure" => Some(Outcome::Failure),
                _ => None,
            },
        })
    }

    /// The query string of these filters (without the page cursor), for links.
    fn query_string(&self, before: Option<i64>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("event", &self.event),
            ("actor", &self.actor),
            ("user", &self.user),
            ("subject", &self.subject),
            ("client", &self.client),
            ("ip", &self.ip),
            ("since", &self.since),
            ("until", &self.until),
            ("outcome", &self.outcome),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            s.append_pair("before", &b.to_string());
        }
        s.finish()
    }
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage<'a> {
    c: &'a Console,
    f: &'a Filters,
    events: Vec<Row>,
    next: Option<String>,
    csv: String,
    retention: String,
    error: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    let f = f.bounded();
    let retention = match state.config.audit_retention {
        0 => "Events are kept forever.".to_string(),
        r if r % 86_400 == 0 => {
            format!("Events are kept for {} days (AUDIT_RETENTION).", r / 86_400)
        }
        r => format!("Events are kept for {} (AUDIT_RETENTION).", super::age(r)),
    };
    let csv = format!("{}/admin/audit.csv?{}", c.base, f.query_string(None));
    let render = |events, next, error: Option<String>, status| {
        let p = AuditPage {
            c: &c,
            f: &f,
            events,
            next,
            csv: csv.clone(),
            retention: retention.clone(),
            error,
        };
        super::page(&p, status, None)
    };
    let query = match f.query() {
        Ok(q) => q,
        Err(m) => return Ok(render(Vec::new(), None, Some(m), StatusCode::BAD_REQUEST)),
    };
    let before = f.before.parse::<i64>().ok();
    match c.admin(&state).audit_page(&query, before, PAGE).await {
        Ok(p) => {
            let next = p
                .next
                .map(|n| format!("{}/admin/audit?{}", c.base, f.query_string(Some(n))));
            Ok(render(rows(p.events), next, None, StatusCode::OK))
        }
        Err(e) => {
            let (status, m) = refusal(e)?;
            Ok(render(Vec::new(), None, Some(m), status))
        }
    }
}

/// `GET /admin/audit.csv`: the filtered set as a CSV attachment, streamed chunk by chunk.
pub async fn csv(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    let f = f.bounded();
    let back = format!("{}/admin/audit?{}", c.base, f.query_string(None));
    let query = match f.query() {
        Ok(q) => q,
        Err(m) => {
            return Ok(super::result(
                &c,
                StatusCode::BAD_REQUEST,
                "Export refused",
                &m,
                back,
            ))
        }
    };
    let export = match AuditCsv::new(state.store.clone(), query) {
        Ok(e) => e,
        Err(e) => return Ok(super::refused(&c, e, "Export refused", back)),
    };
    // Each poll of the body runs one keyset query; an error after the headers were sent can
    // only cut the body short (logged here; the client sees a truncated transfer).
    let chunks = futures_util::stream::unfold(Some(export), |export| async move {
        let mut export = export?;
        match export.next_chunk().await {
            Ok(Some(text)) => Some((Ok(Bytes::from(text)), Some(export))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "audit export stopped");
                Some((Err(std::io::Error::other("audit export stopped")), None))
            }
        }
    });
    let mut resp = Body::from_stream(chunks).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.csv\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
