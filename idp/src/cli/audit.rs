//! `kubelogin-idp audit ...`: parse the filters, call `admin`, print a table or CSV.

use crate::admin::audit::{AuditQuery, Outcome, MAX_PAGE};
use crate::admin::Admin;
use crate::audit::{push_csv_rows, CSV_HEADER};
use crate::clock::{Clock, SystemClock};
use crate::error::IdpError;
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Print the newest matching events, newest first.
    List {
        #[command(flatten)]
        filters: AuditFilters,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start below this event id (the cursor a previous page printed on stderr).
        #[arg(long)]
        before: Option<i64>,
        /// Print CSV (formula-safe) instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Print every matching event as CSV (formula-safe), newest first, streamed.
    Export {
        #[command(flatten)]
        filters: AuditFilters,
    },
}

/// The audit filters both commands take; each one given must hold.
#[derive(Debug, Args)]
pub struct AuditFilters {
    /// Event type, e.g. login_failed.
    #[arg(long)]
    event: Option<String>,
    /// Who acted: a username, or cli:<unix user>.
    #[arg(long)]
    actor: Option<String>,
    /// Whom or what the event is about (a username, group, client or key id).
    #[arg(long)]
    subject: Option<String>,
    /// The actor or the subject.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    ip: Option<String>,
    /// From this time on: Unix seconds, RFC 3339 (2025-01-31T08:00:00Z) or a duration ago (24h).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum)]
    outcome: Option<OutcomeArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutcomeArg {
    Success,
    Failure,
}

/// A point in time given as Unix seconds, an RFC 3339 date and time, or a duration before
/// `now`.
fn parse_time(flag: &str, s: &str, now: u64) -> Result<u64, IdpError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| IdpError::Invalid(format!("{flag} {s:?} is out of range")));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.saturating_sub(d.as_secs()));
    }
    Err(IdpError::Invalid(format!(
        "{flag} {:?} is not Unix seconds, an RFC 3339 time (2025-01-31T08:00:00Z) or a duration (24h)",
        crate::audit::bounded(s, 64)
    )))
}

impl AuditFilters {
    fn query(self, now: u64) -> Result<AuditQuery, IdpError> {
        let time = |flag: &str, v: Option<String>| v.map(|s| parse_time(flag, &s, now)).transpose();
        Ok(AuditQuery {
            since: time("--since", self.since)?,
            until: time("--until", self.until)?,
            event: self.event,
            actor: self.actor,
            subject: self.subject,
            user: self.user,
            client_id: self.client,
            ip: self.ip,
            outcome: self.outcome.map(|o| match o {
                OutcomeArg::Success => Outcome::Success,
                OutcomeArg::Failure => Outcome::Failure,
            }),
        })
    }
}

pub(super) async fn run(
    cmd: AuditCmd,
    admin: &Admin<'_>,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    let now = SystemClock.now();
    match cmd {
        AuditCmd::List {
            filters,
            limit,
            before,
            csv,
        } => list(admin, &filters.query(now)?, limit, before, csv, out).await,
        AuditCmd::Export { filters } => {
            let mut export = admin.audit_csv(filters.query(now)?)?;
            while let Some(chunk) = export.next_chunk().await? {
                out.write_all(chunk.as_bytes())?;
            }
            Ok(())
        }
    }
}

/// `audit list`: `limit` events (0: 1000) read a page at a time; the cursor of the rest, if
/// any, goes to stderr so stdout stays the table.
async fn list(
    admin: &Admin<'_>,
    query: &AuditQuery,
    limit: u32,
    mut before: Option<i64>,
    csv: bool,
    out: &mut impl Write,
) -> Result<(), IdpError> {
    let mut remaining = if limit == 0 { 1000 } else { limit };
    if csv {
        out.write_all(CSV_HEADER.as_bytes())?;
    }
    while remaining > 0 {
        let page = admin
            .audit_page(query, before, remaining.min(MAX_PAGE))
            .await?;
        remaining -= page.events.len() as u32;
        let mut text = String::new();
        if csv {
            push_csv_rows(&mut text, &page.events)?;
        } else {
            for e in &page.events {
                text.push_str(&format!(
                    "{} {} {} actor={} subject={} client={} ip={} {}\n",
                    e.at, e.severity, e.event, e.actor, e.subject, e.client_id, e.ip, e.details
                ));
            }
        }
        out.write_all(text.as_bytes())?;
        match page.next {
            None => return Ok(()),
            Some(next) if remaining == 0 => eprintln!("more events: --before {next}"),
            Some(next) => before = Some(next),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_seconds_rfc3339_or_a_duration_ago() {
        let now = 1_800_000_000;
        assert_eq!(
            parse_time("--since", "1700000000", now).unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("--since", "2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_time("--since", "24h", now).unwrap(), now - 86_400);
        let err = parse_time("--until", "yesterday", now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--until") && err.contains("RFC 3339"), "{err}");
        assert!(parse_time("--since", "99999999999999999999999", now).is_err());
    }
}
