//! The console's overview: counts of users, live sessions and live refresh families, failed
//! logins in the last 24 hours, the active signing key's age and the latest events.

use super::{age, when, AdminRead, Console};
use crate::admin::audit::AuditQuery;
use crate::error::PageError;
use crate::state::AppState;
use crate::store::AuditEvent;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

/// How many latest events the overview shows.
const LATEST: u32 = 20;
/// Failed logins are counted up to this many (one page of the audit log); more show as "1000+".
const FAILED_CAP: u32 = 1000;

/// An audit event with its time formatted for a page.
pub struct Row {
    pub e: AuditEvent,
    pub when: String,
}

pub fn rows(events: Vec<AuditEvent>) -> Vec<Row> {
    events
        .into_iter()
        .map(|e| Row {
            when: when(e.at),
            e,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage<'a> {
    c: &'a Console,
    users: u64,
    sessions: u64,
    families: u64,
    failed_logins: String,
    key_age: String,
    events: Vec<Row>,
}

pub async fn page(
    State(state): State<AppState>,
    AdminRead(c): AdminRead,
) -> Result<Response, PageError> {
    let admin = c.admin(&state);
    let store = state.store.as_ref();
    let now = state.now();
    let failed = admin
        .audit_page(
            &AuditQuery {
                event: Some("login_failed".into()),
                since: Some(now.saturating_sub(86_400)),
                ..AuditQuery::default()
            },
            None,
            FAILED_CAP,
        )
        .await?;
    let failed_logins = match failed.next {
        Some(_) => format!("{FAILED_CAP}+"),
        None => failed.events.len().to_string(),
    };
    let key_age = match admin.keys().await?.iter().find(|k| k.is_active()) {
        Some(k) => format!("{} ({} {})", age(k.age_secs), k.alg, k.kid),
        None => "no active key".into(),
    };
    let latest = admin
        .audit_page(&AuditQuery::default(), None, LATEST)
        .await?;
    let p = OverviewPage {
        c: &c,
        users: store.count_users().await?,
        sessions: store.count_live_sessions(now).await?,
        families: store.count_live_families(None, now).await?,
        failed_logins,
        key_age,
        events: rows(latest.events),
    };
    Ok(super::page(&p, StatusCode::OK, None))
}
