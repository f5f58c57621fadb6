//! `idp-bench --console`: the admin console against a large log, over HTTP, on the real binary.
//!
//! 1. A first start of the server creates the schema on a fresh data directory; the server is
//!    stopped, the admin is added with the CLI, and `--users` users and `--events` audit events
//!    are written straight into the SQLite file in one transaction with the `sqlite3` shell
//!    (events spread over a year: event types weighted like a busy IdP, actors and subjects
//!    from the users, 20 clients, ~64,000 IPs, 40 user agents).
//! 2. The server starts again; the bench signs in through the login form like a browser (the
//!    pre-login cookie and its CSRF token, then the session cookie).
//! 3. Latency of `/admin/audit` by user, by event type (a common and a rare one), by IP and by
//!    a one-week time range, and of `/admin/users` (first page, a search): p50/p95/max over
//!    `--requests` sequential requests each, after two warm-up requests.
//! 4. The unfiltered `/admin/audit.csv`: rows per second, and the server's VmRSS sampled every
//!    5 ms while it streams.
//!
//! Everything goes to 127.0.0.1; each measured phase is bounded by the request count and a
//! 60 s client timeout.

use super::{admin, mem, mib, ms, percentile, Server};
use anyhow::{anyhow, bail, Context, Result};
use idp::clock::{Clock, SystemClock};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "benchadmin";
const ADMIN_PASSWORD: &str = "bench-admin-password-1234";
const YEAR: u64 = 365 * 86_400;

/// What to seed and how many requests to time per page.
pub struct ConsoleArgs<'a> {
    pub idp: &'a Path,
    pub alg: &'a str,
    pub events: u64,
    pub users: u64,
    pub requests: u32,
    pub keep: bool,
}

/// Runs `sql` in the `sqlite3` shell on `db` (stdin, so the text has no length limit).
fn sqlite(db: &Path, sql: &str) -> Result<String> {
    let mut child = Command::new("sqlite3")
        .arg("-bail")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sqlite3 (apt-get install sqlite3)")?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(sql.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "sqlite3 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The seed: users `user00001`…, and the events, ids and times rising together as in a log
/// that is only appended to. `r` is one random number per row; each column takes its own
/// digits of it so the columns are independent.
fn seed_sql(users: u64, events: u64, t0: u64) -> String {
    format!(
        "PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {users})
INSERT INTO users (id, username, email, name, created_at, updated_at)
SELECT printf('seed-%06d', i), printf('user%05d', i), printf('user%05d@example.com', i),
       printf('Person %05d', i), {t0}, {t0} FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {events}),
r(i, r) AS (SELECT i, abs(random()) FROM n),
e(i, r, ev, who) AS (
  SELECT i, r,
    CASE
      WHEN r % 100 < 62 THEN 'token_refreshed'
      WHEN r % 100 < 77 THEN 'token_issued'
      WHEN r % 100 < 87 THEN 'login_succeeded'
      WHEN r % 100 < 91 THEN 'logout'
      WHEN r % 100 < 94 THEN 'login_failed'
      WHEN r % 100 < 96 THEN 'device_code_issued'
      WHEN r % 100 < 97 THEN 'consent_granted'
      WHEN r % 100 < 98 THEN 'session_revoked'
      WHEN r % 1000 < 985 THEN 'login_throttled'
      WHEN r % 1000 < 992 THEN 'user_updated'
      WHEN r % 1000 < 997 THEN 'refresh_token_reused'
      ELSE 'client_tokens_revoked'
    END,
    printf('user%05d', 1 + (r / 100) % {users})
  FROM r)
INSERT INTO audit_events (at, event, severity, actor, subject, client_id, ip, user_agent, details)
SELECT {t0} + i * {YEAR} / {events}, ev,
  CASE WHEN ev IN ('login_failed', 'login_throttled', 'refresh_token_reused')
       THEN 'warning' ELSE 'info' END,
  CASE WHEN ev IN ('user_updated', 'client_tokens_revoked') THEN '{ADMIN}' ELSE who END,
  who,
  printf('client-%02d', (r / 1000000) % 20),
  printf('10.%d.%d.%d', (r / 100000000) % 8, (r / 1000000000) % 32, (r / 10000000) % 250),
  CASE WHEN (r / 10000) % 2 = 0
       THEN printf('kubectl-oidc_login/0.%d (linux)', (r / 100000) % 20)
       ELSE printf('Mozilla/5.0 (X11; Linux x86_64) Chrome/1%02d.0', (r / 100000) % 20) END,
  ''
FROM e;
COMMIT;
"
    )
}

/// A blocking HTTP client that keeps the IdP's cookies by hand (no redirects followed).
struct Browser {
    http: reqwest::blocking::Client,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new() -> Result<Browser> {
        Ok(Browser {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            cookies: Vec::new(),
        })
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, resp: &reqwest::blocking::Response) {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let Some(pair) = v.to_str().ok().and_then(|s| s.split(';').next()) else {
                continue;
            };
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != k);
                self.cookies
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }

    fn get(&mut self, url: &str) -> Result<reqwest::blocking::Response> {
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .with_context(|| format!("GET {url}"))?;
        self.keep_cookies(&resp);
        Ok(resp)
    }

    /// Signs in through the login form as a browser would.
    fn sign_in(&mut self, server: &Server, username: &str, password: &str) -> Result<()> {
        let page = self.get(&server.url("/login"))?.text()?;
        let csrf = page
            .split("name=\"csrf_token\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| anyhow!("no csrf_token on the login page"))?
            .to_string();
        let resp = self
            .http
            .post(server.url("/login"))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("return_to", "/admin"),
                ("username", username),
                ("password", password),
            ])
            .send()?;
        self.keep_cookies(&resp);
        if !resp.status().is_redirection() {
            bail!("sign-in refused: {}", resp.status());
        }
        let status = self.get(&server.url("/admin"))?.status();
        if status != reqwest::StatusCode::OK {
            bail!("/admin after sign-in: {status}");
        }
        Ok(())
    }
}

/// Times `requests` GETs of `path` (after two untimed ones); each must answer 200 with a body
/// containing `expect`. Returns p50, p95 and max in ms.
fn time_page(
    b: &mut Browser,
    server: &Server,
    path: &str,
    expect: &str,
    requests: u32,
) -> Result<(f64, f64, f64)> {
    let url = server.url(path);
    let mut micros = Vec::with_capacity(requests as usize);
    for n in 0..requests + 2 {
        let started = Instant::now();
        let resp = b.get(&url)?;
        let status = resp.status();
        let body = resp.text()?;
        let took = started.elapsed();
        if status != reqwest::StatusCode::OK || !body.contains(expect) {
            bail!("GET {path}: {status}, no {expect:?} in the page");
        }
        if n >= 2 {
            micros.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
    micros.sort_unstable();
    Ok((
        percentile(&micros, 50.0),
        percentile(&micros, 95.0),
        percentile(&micros, 100.0),
    ))
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

pub fn run(a: &ConsoleArgs) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("idp-bench-console-")
        .tempdir()?;
    let data_dir = tmp.path().join("data");
    let db = data_dir.join("kubelogin-idp.db");
    eprintln!("idp-bench: console benchmark in {}", tmp.path().display());

    // 1. Schema (first start), the admin, then the bulk seed with the server stopped.
    let (mut s, _) = Server::start(a.idp, &data_dir, a.alg, tmp.path())?;
    s.stop();
    drop(s);
    admin(
        a.idp,
        &data_dir,
        &[
            "user",
            "add",
            ADMIN,
            "--email",
            "admin@example.com",
            "--admin",
            "--password-stdin",
        ],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    )?;
    let now = SystemClock.now();
    // The year ends a day ago, so every event is inside the default AUDIT_RETENTION (365d).
    let t0 = now - YEAR - 86_400 + 3_600;
    let users = a.users.saturating_sub(1).max(1);
    let started = Instant::now();
    sqlite(&db, &seed_sql(users, a.events, t0))?;
    eprintln!(
        "idp-bench: seeded {users} users and {} events in {:.1} s; {}",
        a.events,
        started.elapsed().as_secs_f64(),
        sqlite(
            &db,
            "SELECT (SELECT count(*) FROM users) || ' users, ' || \
             (SELECT count(*) FROM audit_events) || ' events, ' || \
             (page_count * page_size / 1048576) || ' MiB' FROM pragma_page_count, pragma_page_size;"
        )?
    );
    // Filter values taken from the data: a user, an address from the middle of the log.
    let ip = sqlite(
        &db,
        &format!("SELECT ip FROM audit_events WHERE id = {};", a.events / 2),
    )?;
    let user = format!("user{:05}", 1 + users / 3);

    // 2. The server on the seeded directory, and an admin session.
    let (server, t) = Server::start(a.idp, &data_dir, a.alg, tmp.path())?;
    eprintln!("idp-bench: warm start {:.1} ms", ms(t));
    let mut b = Browser::new()?;
    b.sign_in(&server, ADMIN, ADMIN_PASSWORD)?;

    // 3. Page latencies.
    let week_from = (t0 + YEAR / 2).to_string();
    let week_to = (t0 + YEAR / 2 + 7 * 86_400).to_string();
    let pages: Vec<(String, String, String)> = vec![
        (
            "audit, no filter".into(),
            "/admin/audit".into(),
            "token_".into(),
        ),
        (
            format!("audit by user ({user})"),
            format!("/admin/audit?{}", query(&[("user", &user)])),
            user.clone(),
        ),
        (
            "audit by event (token_refreshed, 62 %)".into(),
            "/admin/audit?event=token_refreshed".into(),
            "token_refreshed".into(),
        ),
        (
            "audit by event (refresh_token_reused, 0.05 %)".into(),
            "/admin/audit?event=refresh_token_reused".into(),
            "refresh_token_reused".into(),
        ),
        (
            format!("audit by IP ({ip})"),
            format!("/admin/audit?{}", query(&[("ip", &ip)])),
            ip.clone(),
        ),
        (
            "audit by time range (one week)".into(),
            format!(
                "/admin/audit?{}",
                query(&[("since", &week_from), ("until", &week_to)])
            ),
            "token_".into(),
        ),
        (
            "audit by outcome (failure)".into(),
            "/admin/audit?outcome=failure".into(),
            "login_failed".into(),
        ),
        (
            format!("users, first page ({} users)", users + 1),
            "/admin/users".into(),
            "user00001".into(),
        ),
        (
            "users, search (\"user0424\")".into(),
            "/admin/users?q=user0424".into(),
            "user04242".into(),
        ),
        (
            "users, page after user05000".into(),
            "/admin/users?after=user05000".into(),
            "user05001".into(),
        ),
    ];
    println!(
        "\n{} requests per page, sequential, one keep-alive connection:",
        a.requests
    );
    println!("| page | p50 | p95 | max |\n|---|---|---|---|");
    for (name, path, expect) in &pages {
        let (p50, p95, max) = time_page(&mut b, &server, path, expect, a.requests)?;
        println!("| {name} | {p50:.1} ms | {p95:.1} ms | {max:.1} ms |");
    }

    // 4. The full CSV export, with the server's RSS sampled while it streams.
    let pid = server.pid();
    let before = mem(pid)?;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before.rss_kib));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(m) = mem(pid) {
                    peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let mut resp = b.get(&server.url("/admin/audit.csv"))?;
    if resp.status() != reqwest::StatusCode::OK {
        bail!("/admin/audit.csv: {}", resp.status());
    }
    let mut buf = vec![0u8; 1 << 16];
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        let n = resp.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buf[..n].iter().filter(|&&c| c == b'\n').count() as u64;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = mem(pid)?;
    let rows = lines.saturating_sub(1);
    if rows < a.events {
        bail!(
            "the export has {rows} rows, fewer than the {} seeded",
            a.events
        );
    }
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "\nCSV export, no filter: {rows} rows, {:.1} MiB in {:.2} s = {:.0} rows/s; \
         server VmRSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB), {:.1} MiB after",
        bytes as f64 / 1_048_576.0,
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        mib(before.rss_kib),
        mib(peak),
        mib(peak.saturating_sub(before.rss_kib)),
        mib(after.rss_kib),
    );
    drop(server);
    if a.keep {
        let kept = tmp.keep();
        eprintln!("idp-bench: kept {}", kept.display());
    }
    Ok(())
}
