//! The SQLite backend: one writer connection (SQLite has one writer at a time; queueing in the
//! pool is far cheaper than SQLite's sleeping busy handler) and a few readers, in WAL mode.

use super::rules::{self, AccessChange, RedemptionRule, RevocationPlan, RotationRule, Scope};
use super::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The schema as numbered migrations: version N is reached by applying file N on top of N-1, each
/// in its own transaction with the `user_version` bump. A released file is never edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_initial.sql"),
    include_str!("migrations/sqlite/0002_refresh_successor.sql"),
    include_str!("migrations/sqlite/0003_device_request_origin.sql"),
    include_str!("migrations/sqlite/0004_server_secrets.sql"),
    include_str!("migrations/sqlite/0005_activity.sql"),
    include_str!("migrations/sqlite/0006_audit_search.sql"),
];
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// SQLite storage.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    read: SqlitePool,
    /// The one writer, held directly rather than in a pool: a pool's release pings the
    /// connection's worker thread before the next writer may have it, and that hop sat inside
    /// every write's critical section.
    write: Arc<Mutex<SqliteConnection>>,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite:` URL and brings its schema up to
    /// date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a crash can lose the last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-4000");
        // A local SQLite file never goes stale: skip sqlx's ping before every acquire, which
        // costs a round trip to the connection's worker thread per query.
        let mut write = opts.connect().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut write)
            .await?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Migration(format!(
                "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}; upgrade kubelogin-idp"
            )));
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
            // Another process may have migrated between our read and the write lock.
            let now_at: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?;
            if now_at > n as i64 {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", n + 1))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore {
            read,
            write: Arc::new(Mutex::new(write)),
        })
    }

    /// Closes the readers; the writer closes when the last clone is dropped.
    pub async fn close(&self) {
        self.read.close().await;
    }
}

/// Turns SQLite's secure delete on or off for the writer: with it on, what a statement replaces
/// or deletes is overwritten with zeros instead of staying in the file's free space. Used around
/// private key changes only, since it costs extra writes.
async fn secure_delete(w: &mut SqliteConnection, on: bool) -> Result<(), sqlx::Error> {
    let sql = if on {
        "PRAGMA secure_delete = ON"
    } else {
        "PRAGMA secure_delete = OFF"
    };
    sqlx::query(sql).execute(&mut *w).await.map(|_| ())
}

/// Copies the WAL into the database and truncates it, so no old frame keeps a replaced private
/// key on disk. Best effort: a reader in the middle of a transaction keeps the WAL, and the next
/// key change tries again.
async fn truncate_wal(w: &mut SqliteConnection) {
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_all(&mut *w)
        .await
    {
        tracing::debug!(error = %e, "could not truncate the WAL after a key change");
    }
}

fn user_from(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: u(row.try_get("created_at")?),
    })
}

fn client_from(row: &SqliteRow) -> Result<Client, sqlx::Error> {
    Ok(Client {
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        redirect_uris: parse_list(row.try_get("redirect_uris")?),
        post_logout_redirect_uris: parse_list(row.try_get("post_logout_redirect_uris")?),
        grant_types: parse_list(row.try_get("grant_types")?),
        scopes: parse_list(row.try_get("scopes")?),
        tokens_valid_after: u(row.try_get("tokens_valid_after")?),
        created_at: u(row.try_get("created_at")?),
    })
}

fn code_from(row: &SqliteRow) -> Result<AuthCode, sqlx::Error> {
    Ok(AuthCode {
        code_hash: row.try_get("code_hash")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scope: row.try_get("scope")?,
        nonce: row.try_get("nonce")?,
        code_challenge: row.try_get("code_challenge")?,
        auth_time: u(row.try_get("auth_time")?),
        created_at: u(row.try_get("created_at")?),
        expires_at: u(row.try_get("expires_at")?),
    })
}

fn family_from(row: &SqliteRow) -> Result<Family, sqlx::Error> {
    Ok(Family {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: row.try_get("scope")?,
        auth_time: u(row.try_get("auth_time")?),
        created_at: u(row.try_get("f_created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(u),
    })
}

fn refresh_from(row: &SqliteRow) -> Result<RefreshToken, sqlx::Error> {
    Ok(RefreshToken {
        token_hash: row.try_get("token_hash")?,
        family_id: row.try_get("family_id")?,
        created_at: u(row.try_get("created_at")?),
        expires_at: u(row.try_get("expires_at")?),
        rotated_at: row.try_get::<Option<i64>, _>("rotated_at")?.map(u),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
    })
}

fn device_from(row: &SqliteRow) -> Result<DeviceCode, sqlx::Error> {
    Ok(DeviceCode {
        device_code_hash: row.try_get("device_code_hash")?,
        user_code: row.try_get("user_code")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        code_challenge: row.try_get("code_challenge")?,
        created_at: u(row.try_get("created_at")?),
        expires_at: u(row.try_get("expires_at")?),
        interval: u(row.try_get("interval_secs")?),
        last_polled_at: row.try_get::<Option<i64>, _>("last_polled_at")?.map(u),
        status: DeviceStatus::parse(row.try_get("status")?),
        user_id: row.try_get("user_id")?,
        auth_time: row.try_get::<Option<i64>, _>("auth_time")?.map(u),
        request_ip: row.try_get("request_ip")?,
        request_user_agent: row.try_get("request_user_agent")?,
    })
}

async fn insert_audit(
    conn: &mut sqlx::SqliteConnection,
    e: &AuditEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, event, severity, actor, subject, client_id, ip, user_agent, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(i(e.at))
    .bind(&e.event)
    .bind(&e.severity)
    .bind(&e.actor)
    .bind(&e.subject)
    .bind(&e.client_id)
    .bind(&e.ip)
    .bind(&e.user_agent)
    .bind(&e.details)
    .execute(conn)
    .await?;
    Ok(())
}

async fn revoke_in(
    conn: &mut sqlx::SqliteConnection,
    family_id: &str,
    now: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE token_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(i(now))
        .bind(family_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The rows a [`Scope`] selects, as a condition on `user_id`/`client_id` columns and the values
/// to bind in order; `None` for [`Scope::Nothing`].
fn scope_condition<'a>(
    scope: Scope,
    user_id: &'a str,
    client_id: &'a str,
) -> Option<(&'static str, Vec<&'a str>)> {
    match scope {
        Scope::Nothing => None,
        Scope::User => Some(("user_id = ?", vec![user_id])),
        Scope::Client => Some(("client_id = ?", vec![client_id])),
        Scope::UserAtClient => Some(("user_id = ? AND client_id = ?", vec![user_id, client_id])),
        Scope::UsersOfClient => Some((
            "user_id IN (SELECT user_id FROM token_families WHERE client_id = ?
                         UNION SELECT user_id FROM consents WHERE client_id = ?)",
            vec![client_id, client_id],
        )),
    }
}

/// Applies a [`RevocationPlan`] (decided by `rules::revocation_plan`) inside the caller's
/// transaction. Returns how many live families it revoked.
async fn apply_plan(
    conn: &mut sqlx::SqliteConnection,
    plan: RevocationPlan,
    user_id: &str,
    client_id: &str,
    now: u64,
) -> Result<u64, sqlx::Error> {
    if plan.invalidate_client_tokens {
        sqlx::query("UPDATE clients SET tokens_valid_after = ? WHERE client_id = ?")
            .bind(i(now))
            .bind(client_id)
            .execute(&mut *conn)
            .await?;
    }
    let mut revoked = 0;
    if let Some((cond, args)) = scope_condition(plan.revoke_families, user_id, client_id) {
        let sql =
            format!("UPDATE token_families SET revoked_at = ? WHERE {cond} AND revoked_at IS NULL");
        let mut q = sqlx::query(&sql).bind(i(now));
        for a in args {
            q = q.bind(a);
        }
        revoked = q.execute(&mut *conn).await?.rows_affected();
    }
    let deletes = [
        ("token_families", plan.delete_families),
        ("sessions", plan.end_sessions),
        ("consents", plan.forget_consents),
    ];
    for (table, scope) in deletes {
        if let Some((cond, args)) = scope_condition(scope, user_id, client_id) {
            let sql = format!("DELETE FROM {table} WHERE {cond}");
            let mut q = sqlx::query(&sql);
            for a in args {
                q = q.bind(a);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(revoked)
}

/// The audit query for `f`, with only the conditions it sets, so SQLite can use the index that
/// fits (a condition written as `?1 IS NULL OR event = ?1` would hide every index from it).
///
/// The matching rows come back as one JSON array of arrays in one result row: sqlx's SQLite
/// driver hands each result row from its worker thread to the caller separately (a channel
/// message, a wake-up and an allocation per column), which held the CSV export to ~80,000
/// rows/s; one row per query lifts that cost off every event. The filter picks ids only, so
/// an index that holds the filtered column answers it alone (a time range: the `(at)` index
/// gives the ids of the range, which are sorted, and only the page's rows are read from the
/// table). `head` goes before the query (`EXPLAIN QUERY PLAN ` in the index test).
fn audit_query(head: &str, f: AuditFilter) -> QueryBuilder<'static, Sqlite> {
    let mut q = QueryBuilder::new(format!(
        "{head}SELECT json_group_array(json_array({AUDIT_COLUMNS}) ORDER BY id DESC) \
         FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE 1 = 1"
    ));
    let equal = [
        ("event", f.event),
        ("actor", f.actor),
        ("subject", f.subject),
        ("client_id", f.client_id),
        ("ip", f.ip),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            q.push(format_args!(" AND {column} = ")).push_bind(v);
        }
    }
    if let Some(u) = f.user {
        q.push(" AND (actor = ")
            .push_bind(u.clone())
            .push(" OR subject = ")
            .push_bind(u)
            .push(")");
    }
    if !f.event_in.is_empty() {
        q.push(" AND event IN (SELECT value FROM json_each(")
            .push_bind(json_list(&f.event_in))
            .push("))");
    }
    if !f.event_not_in.is_empty() {
        q.push(" AND event NOT IN (SELECT value FROM json_each(")
            .push_bind(json_list(&f.event_not_in))
            .push("))");
    }
    if let Some(t) = f.since {
        q.push(" AND at >= ").push_bind(i(t));
    }
    if let Some(t) = f.until {
        q.push(" AND at <= ").push_bind(i(t));
    }
    if let Some(id) = f.before_id {
        q.push(" AND id < ").push_bind(id);
    }
    let limit = if f.limit == 0 { 1000 } else { f.limit };
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit))
        .push(")");
    q
}

/// The columns of an audit event in the order of [`AuditRow`].
const AUDIT_COLUMNS: &str =
    "id, at, event, severity, actor, subject, client_id, ip, user_agent, details";

/// One element of [`audit_query`]'s JSON array.
type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn audit_from_json(r: AuditRow) -> AuditEvent {
    let (id, at, event, severity, actor, subject, client_id, ip, user_agent, details) = r;
    AuditEvent {
        id,
        at: u(at),
        event,
        severity,
        actor,
        subject,
        client_id,
        ip,
        user_agent,
        details,
    }
}

/// A `LIKE` pattern matching any text that contains `s` literally (`\` escapes `%`, `_` and
/// itself).
fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A family can still refresh: not revoked, and its current token has not expired at `?1`.
const LIVE_FAMILY: &str = "f.revoked_at IS NULL AND EXISTS (SELECT 1 FROM refresh_tokens t
     WHERE t.family_id = f.id AND t.rotated_at IS NULL AND t.expires_at > ?1)";

fn session_from(r: &SqliteRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id_hash: r.try_get("id_hash")?,
        user_id: r.try_get("user_id")?,
        auth_time: u(r.try_get("auth_time")?),
        created_at: u(r.try_get("created_at")?),
        expires_at: u(r.try_get("expires_at")?),
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        last_used_at: u(r.try_get("last_used_at")?),
    })
}

const FAMILY_COLS: &str =
    "f.id, f.client_id, f.user_id, f.scope, f.auth_time, f.created_at AS f_created_at, f.revoked_at";

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser, now: u64) -> StoreResult<User> {
        let id = crate::crypto::random_token(16);
        let res = sqlx::query(
            "INSERT INTO users (id, username, email, email_verified, name, password_hash, is_admin, disabled, created_at, updated_at)
             VALUES (?, ?, ?, 1, ?, ?, ?, 0, ?, ?)",
        )
        .bind(&id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_admin as i64)
        .bind(i(now))
        .bind(i(now))
        .execute(&mut *self.write.lock().await)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "user {:?} already exists",
                    user.username
                )))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(User {
            id,
            username: user.username,
            email: user.email,
            email_verified: true,
            name: user.name,
            password_hash: user.password_hash,
            is_admin: user.is_admin,
            disabled: false,
            created_at: now,
        })
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn user_with_groups(&self, id: &str) -> StoreResult<Option<(User, Vec<String>)>> {
        // group_concat's separator cannot occur in a group name (names are [A-Za-z0-9._@-]).
        let row = sqlx::query(
            "SELECT u.*, (SELECT group_concat(group_name, char(10)) FROM
                 (SELECT group_name FROM group_members WHERE user_id = u.id ORDER BY group_name)) AS grps
             FROM users u WHERE u.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let groups: Option<String> = row.try_get("grps")?;
        let groups = groups
            .map(|g| g.split('\n').map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Some((user_from(&row)?, groups)))
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    async fn set_password(&self, user_id: &str, hash: &str, now: u64) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let r = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash)
            .bind(i(now))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        let plan = rules::revocation_plan(AccessChange::PasswordReset);
        apply_plan(&mut tx, plan, user_id, "", now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_user_disabled(&self, user_id: &str, disabled: bool, now: u64) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let r = sqlx::query("UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?")
            .bind(disabled as i64)
            .bind(i(now))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        let change = if disabled {
            AccessChange::DisableUser
        } else {
            AccessChange::EnableUser
        };
        apply_plan(&mut tx, rules::revocation_plan(change), user_id, "", now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let plan = rules::revocation_plan(AccessChange::DeleteUser);
        apply_plan(&mut tx, plan, user_id, "", 0).await?;
        let r = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?;
        Ok(u(n))
    }

    async fn users_page(&self, q: UserQuery) -> StoreResult<Vec<User>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let rows = sqlx::query(
            "SELECT * FROM users
             WHERE (?1 IS NULL OR username > ?1)
               AND (?2 IS NULL OR username LIKE ?2 ESCAPE '\\' OR email LIKE ?2 ESCAPE '\\'
                    OR name LIKE ?2 ESCAPE '\\')
             ORDER BY username LIMIT ?3",
        )
        .bind(q.after)
        .bind(q.search.as_deref().map(contains_pattern))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    async fn update_user(
        &self,
        user_id: &str,
        email: &str,
        name: &str,
        now: u64,
    ) -> StoreResult<()> {
        let r = sqlx::query("UPDATE users SET email = ?, name = ?, updated_at = ? WHERE id = ?")
            .bind(email)
            .bind(name)
            .bind(i(now))
            .bind(user_id)
            .execute(&mut *self.write.lock().await)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        Ok(())
    }

    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let user: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        if user.is_none() {
            return Err(StoreError::NotFound("no such user".into()));
        }
        for g in groups {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM groups WHERE name = ?")
                    .bind(g)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("no group {g:?}")));
            }
        }
        sqlx::query("DELETE FROM group_members WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for g in groups {
            sqlx::query("INSERT OR IGNORE INTO group_members (group_name, user_id) VALUES (?, ?)")
                .bind(g)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_group(&self, name: &str, now: u64) -> StoreResult<()> {
        match sqlx::query("INSERT INTO groups (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(i(now))
            .execute(&mut *self.write.lock().await)
            .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("group {name:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT g.name AS name, u.username AS username FROM groups g
             LEFT JOIN group_members m ON m.group_name = g.name
             LEFT JOIN users u ON u.id = m.user_id
             ORDER BY g.name, u.username",
        )
        .fetch_all(&self.read)
        .await?;
        let mut out: Vec<Group> = Vec::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            let member: Option<String> = row.try_get("username")?;
            if out.last().map(|g| g.name != name).unwrap_or(true) {
                out.push(Group {
                    name: name.clone(),
                    members: Vec::new(),
                });
            }
            if let (Some(m), Some(g)) = (member, out.last_mut()) {
                g.members.push(m);
            }
        }
        Ok(out)
    }

    async fn delete_group(&self, name: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM groups WHERE name = ?")
            .bind(name)
            .execute(&mut *self.write.lock().await)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no group {name:?}")));
        }
        Ok(())
    }

    async fn add_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let exists: Option<String> = sqlx::query_scalar("SELECT name FROM groups WHERE name = ?")
            .bind(group)
            .fetch_optional(&mut *self.write.lock().await)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("no group {group:?}")));
        }
        sqlx::query("INSERT OR IGNORE INTO group_members (group_name, user_id) VALUES (?, ?)")
            .bind(group)
            .bind(user_id)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn remove_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM group_members WHERE group_name = ? AND user_id = ?")
            .bind(group)
            .bind(user_id)
            .execute(&mut *self.write.lock().await)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(
                "the user is not a member of that group".into(),
            ));
        }
        Ok(())
    }

    async fn groups_of_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT group_name FROM group_members WHERE user_id = ? ORDER BY group_name",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?)
    }

    async fn create_client(&self, c: Client) -> StoreResult<()> {
        match sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, tokens_valid_after, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.client_id)
        .bind(&c.name)
        .bind(&c.secret_hash)
        .bind(json_list(&c.redirect_uris))
        .bind(json_list(&c.post_logout_redirect_uris))
        .bind(json_list(&c.grant_types))
        .bind(json_list(&c.scopes))
        .bind(i(c.tokens_valid_after))
        .bind(i(c.created_at))
        .execute(&mut *self.write.lock().await)
        .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("client {:?} already exists", c.client_id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(client_from).transpose()?)
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY client_id")
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(client_from).collect::<Result<_, _>>()?)
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM token_families WHERE client_id = ?")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM clients WHERE client_id = ?")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no client {client_id:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_client_secret_hash(&self, client_id: &str, hash: &str) -> StoreResult<()> {
        let r = sqlx::query(
            "UPDATE clients SET secret_hash = ? WHERE client_id = ? AND secret_hash IS NOT NULL",
        )
        .bind(hash)
        .bind(client_id)
        .execute(&mut *self.write.lock().await)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no confidential client {client_id:?}"
            )));
        }
        Ok(())
    }

    async fn revoke_all_for_client(&self, client_id: &str, now: u64) -> StoreResult<u64> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = ?")
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("no client {client_id:?}")));
        }
        let plan = rules::revocation_plan(AccessChange::ClientRevokeAll);
        let n = apply_plan(&mut tx, plan, "", client_id, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn count_live_families(&self, client_id: Option<&str>, now: u64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM token_families f WHERE (?2 IS NULL OR f.client_id = ?2) AND {LIVE_FAMILY}"
        ))
        .bind(i(now))
        .bind(client_id)
        .fetch_one(&self.read)
        .await?;
        Ok(u(n))
    }

    async fn consents_of_user(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        let rows = sqlx::query(
            "SELECT client_id, scopes, granted_at FROM consents WHERE user_id = ? ORDER BY client_id",
        )
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Consent {
                    client_id: r.try_get("client_id")?,
                    scopes: parse_list(r.try_get("scopes")?),
                    granted_at: u(r.try_get("granted_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn revoke_authorization(
        &self,
        user_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<u64> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let plan = rules::revocation_plan(AccessChange::RevokeAuthorization);
        let n = apply_plan(&mut tx, plan, user_id, client_id, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn consented_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Vec<String>> {
        let s: Option<String> =
            sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = ? AND client_id = ?")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(s.map(|s| parse_list(&s)).unwrap_or_default())
    }

    async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: u64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(json_list(scopes))
        .bind(i(now))
        .execute(&mut *self.write.lock().await)
        .await?;
        Ok(())
    }

    async fn insert_auth_code(&self, c: AuthCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.user_id)
        .bind(&c.redirect_uri)
        .bind(&c.scope)
        .bind(&c.nonce)
        .bind(&c.code_challenge)
        .bind(i(c.auth_time))
        .bind(i(c.created_at))
        .bind(i(c.expires_at))
        .execute(&mut *self.write.lock().await)
        .await?;
        Ok(())
    }

    async fn redeem_auth_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeRedemption> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT *, used_at, family_id FROM auth_codes WHERE code_hash = ?")
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let stored = match row {
            Some(r) => Some(rules::StoredCode {
                code: code_from(&r)?,
                used_at: r.try_get::<Option<i64>, _>("used_at")?.map(u),
                family_id: r.try_get("family_id")?,
            }),
            None => None,
        };
        match rules::redemption(stored.as_ref(), now) {
            RedemptionRule::NotFound | RedemptionRule::Expired => Ok(CodeRedemption::NotFound),
            RedemptionRule::Replayed { revoke_family } => {
                if let Some(f) = revoke_family {
                    revoke_in(&mut tx, &f, now).await?;
                    tx.commit().await?;
                }
                Ok(CodeRedemption::Replayed)
            }
            RedemptionRule::Redeem => {
                sqlx::query("UPDATE auth_codes SET used_at = ? WHERE code_hash = ?")
                    .bind(i(now))
                    .bind(code_hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                match stored {
                    Some(s) => Ok(CodeRedemption::Fresh(s.code)),
                    None => Ok(CodeRedemption::NotFound),
                }
            }
        }
    }

    async fn link_code_family(&self, code_hash: &str, family_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE auth_codes SET family_id = ? WHERE code_hash = ?")
            .bind(family_id)
            .bind(code_hash)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn create_family(&self, f: Family, first: RefreshToken) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO token_families (id, client_id, user_id, scope, auth_time, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
        )
        .bind(&f.id)
        .bind(&f.client_id)
        .bind(&f.user_id)
        .bind(&f.scope)
        .bind(i(f.auth_time))
        .bind(i(f.created_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&first.token_hash)
            .bind(&f.id)
            .bind(i(first.created_at))
            .bind(i(first.expires_at))
            .bind(&first.ip)
            .bind(&first.user_agent)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn family(&self, family_id: &str) -> StoreResult<Option<Family>> {
        let row = sqlx::query(&format!(
            "SELECT {FAMILY_COLS} FROM token_families f WHERE f.id = ?"
        ))
        .bind(family_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(family_from).transpose()?)
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        client_id: &str,
        new_token: RefreshToken,
        successor_enc: &str,
        now: u64,
        grace_secs: u64,
        audit: Option<AuditEvent>,
    ) -> StoreResult<Rotation> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(&format!(
            "SELECT t.token_hash, t.family_id, t.created_at, t.expires_at, t.rotated_at, t.ip, t.user_agent, t.successor_enc,
                    {FAMILY_COLS}, u.username AS username, u.disabled AS user_disabled
             FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
             JOIN users u ON u.id = f.user_id WHERE t.token_hash = ?"
        ))
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let token = refresh_from(&row)?;
        let family = family_from(&row)?;
        let kept: Option<String> = row.try_get("successor_enc")?;
        let disabled = row.try_get::<i64, _>("user_disabled")? != 0;
        match rules::rotation(
            &token,
            &family,
            kept.as_deref(),
            client_id,
            disabled,
            now,
            grace_secs,
        ) {
            RotationRule::Rotate => {}
            RotationRule::WrongClient => return Ok(Rotation::WrongClient),
            RotationRule::Invalid => return Ok(Rotation::Invalid),
            RotationRule::RevokeAndRefuse => {
                revoke_in(&mut tx, &family.id, now).await?;
                tx.commit().await?;
                return Ok(Rotation::Invalid);
            }
            RotationRule::WithinGrace(kept) => return Ok(Rotation::WithinGrace(family, kept)),
            RotationRule::Reused => {
                revoke_in(&mut tx, &family.id, now).await?;
                tx.commit().await?;
                return Ok(Rotation::Reused(family));
            }
        }
        sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = ?, successor_enc = ? WHERE token_hash = ?",
        )
        .bind(i(now))
        .bind(successor_enc)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        // The new row also records this request's address and user agent: the family's last use
        // (`family_activity`) without a second write on the refresh path.
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&new_token.token_hash)
            .bind(&family.id)
            .bind(i(new_token.created_at))
            .bind(i(new_token.expires_at))
            .bind(&new_token.ip)
            .bind(&new_token.user_agent)
            .execute(&mut *tx)
            .await?;
        if let Some(mut e) = audit {
            if e.actor.is_empty() {
                e.actor = row.try_get("username")?;
            }
            insert_audit(&mut tx, &e).await?;
        }
        tx.commit().await?;
        Ok(Rotation::Rotated(family))
    }

    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<(RefreshToken, Family)>> {
        let row = sqlx::query(&format!(
            "SELECT t.token_hash, t.family_id, t.created_at, t.expires_at, t.rotated_at, t.ip, t.user_agent, {FAMILY_COLS}
             FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await?;
        match row {
            Some(r) => Ok(Some((refresh_from(&r)?, family_from(&r)?))),
            None => Ok(None),
        }
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> StoreResult<()> {
        sqlx::query("UPDATE token_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(i(now))
            .bind(family_id)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn families_of_user(&self, user_id: &str) -> StoreResult<Vec<Family>> {
        let rows = sqlx::query(&format!(
            "SELECT {FAMILY_COLS} FROM token_families f WHERE f.user_id = ? ORDER BY f.created_at DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(family_from).collect::<Result<_, _>>()?)
    }

    async fn live_families(&self, q: FamilyQuery, now: u64) -> StoreResult<Vec<Family>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let rows = sqlx::query(&format!(
            "SELECT {FAMILY_COLS} FROM token_families f
             WHERE (?2 IS NULL OR f.user_id = ?2) AND (?3 IS NULL OR f.client_id = ?3)
               AND {LIVE_FAMILY}
             ORDER BY f.created_at DESC, f.id LIMIT ?4"
        ))
        .bind(i(now))
        .bind(q.user_id)
        .bind(q.client_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(family_from).collect::<Result<_, _>>()?)
    }

    async fn family_activity(&self, user_id: &str, now: u64) -> StoreResult<Vec<FamilyActivity>> {
        // A live family has one current token (rotation marks the old one before inserting the
        // next); the newest is taken should there ever be more.
        let rows = sqlx::query(&format!(
            "SELECT f.id, t.created_at, t.ip, t.user_agent FROM token_families f
             JOIN refresh_tokens t ON t.token_hash = (SELECT c.token_hash FROM refresh_tokens c
                  WHERE c.family_id = f.id AND c.rotated_at IS NULL ORDER BY c.created_at DESC LIMIT 1)
             WHERE f.user_id = ?2 AND {LIVE_FAMILY}
             ORDER BY f.created_at DESC, f.id LIMIT 1000"
        ))
        .bind(i(now))
        .bind(user_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FamilyActivity {
                    family_id: r.try_get("id")?,
                    last_used_at: u(r.try_get("created_at")?),
                    ip: r.try_get("ip")?,
                    user_agent: r.try_get("user_agent")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn revoke_jti(&self, jti: &str, expires_at: u64) -> StoreResult<()> {
        sqlx::query("INSERT OR IGNORE INTO revoked_jtis (jti, expires_at) VALUES (?, ?)")
            .bind(jti)
            .bind(i(expires_at))
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_jtis WHERE jti = ?")
            .bind(jti)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    async fn insert_device_code(&self, d: DeviceCode) -> StoreResult<()> {
        match sqlx::query(
            "INSERT INTO device_codes (device_code_hash, user_code, client_id, scope, code_challenge, created_at, expires_at, interval_secs, last_polled_at, status, user_id, auth_time, request_ip, request_user_agent)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'pending', NULL, NULL, ?, ?)",
        )
        .bind(&d.device_code_hash)
        .bind(&d.user_code)
        .bind(&d.client_id)
        .bind(&d.scope)
        .bind(&d.code_challenge)
        .bind(i(d.created_at))
        .bind(i(d.expires_at))
        .bind(i(d.interval))
        .bind(&d.request_ip)
        .bind(&d.request_user_agent)
        .execute(&mut *self.write.lock().await)
        .await
        {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict("user code collision".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn device_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceCode>> {
        let row = sqlx::query("SELECT * FROM device_codes WHERE user_code = ?")
            .bind(user_code)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(device_from).transpose()?)
    }

    async fn device_by_hash_client(&self, hash: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT client_id FROM device_codes WHERE device_code_hash = ?")
                .bind(hash)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn decide_device(
        &self,
        user_code: &str,
        approve: bool,
        user_id: &str,
        auth_time: u64,
        now: u64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE device_codes SET status = ?, user_id = ?, auth_time = ?
             WHERE user_code = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(if approve { "approved" } else { "denied" })
        .bind(user_id)
        .bind(i(auth_time))
        .bind(user_code)
        .bind(i(now))
        .execute(&mut *self.write.lock().await)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn poll_device(&self, hash: &str, now: u64) -> StoreResult<DevicePoll> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT * FROM device_codes WHERE device_code_hash = ?")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        let code = row.as_ref().map(device_from).transpose()?;
        let (outcome, update) = rules::device_poll(code.as_ref(), now);
        if let Some(w) = update {
            sqlx::query("UPDATE device_codes SET last_polled_at = ?, interval_secs = ?, status = ? WHERE device_code_hash = ?")
                .bind(i(w.last_polled_at))
                .bind(i(w.interval))
                .bind(w.status.as_str())
                .bind(hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn create_session(&self, s: Session) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, ip, user_agent, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(i(s.auth_time))
        .bind(i(s.created_at))
        .bind(i(s.expires_at))
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(i(s.last_used_at))
        .execute(&mut *self.write.lock().await)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: u64) -> StoreResult<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = ? AND expires_at > ?")
            .bind(id_hash)
            .bind(i(now))
            .fetch_optional(&self.read)
            .await?;
        Ok(row.as_ref().map(session_from).transpose()?)
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn sessions_of_user(&self, user_id: &str, now: u64) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(
            "SELECT * FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at DESC, id_hash",
        )
        .bind(user_id)
        .bind(i(now))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(session_from).collect::<Result<_, _>>()?)
    }

    async fn count_live_sessions(&self, now: u64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > ?")
            .bind(i(now))
            .fetch_one(&self.read)
            .await?;
        Ok(u(n))
    }

    async fn reauthenticate_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_used_at = ?1, auth_time = ?1 WHERE id_hash = ?2")
            .bind(i(now))
            .bind(id_hash)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(())
    }

    async fn delete_user_session(&self, user_id: &str, id_hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE id_hash = ? AND user_id = ?")
            .bind(id_hash)
            .bind(user_id)
            .execute(&mut *self.write.lock().await)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET last_used_at = ?2 WHERE id_hash = ?1 AND last_used_at + ?3 <= ?2",
        )
        .bind(id_hash)
        .bind(i(now))
        .bind(i(SESSION_TOUCH_SECS))
        .execute(&mut *self.write.lock().await)
        .await?;
        Ok(())
    }

    async fn keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    private_pem: r.try_get("private_pem")?,
                    created_at: u(r.try_get("created_at")?),
                    retired_at: r.try_get::<Option<i64>, _>("retired_at")?.map(u),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn activate_key(&self, key: StoredKey, now: u64) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(i(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_pem, created_at, retired_at) VALUES (?, ?, ?, ?, NULL)
                     ON CONFLICT (kid) DO UPDATE SET retired_at = NULL, created_at = excluded.created_at")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_pem)
            .bind(i(key.created_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replace_key_material(&self, kid: &str, old: &str, new: &str) -> StoreResult<bool> {
        let mut w = self.write.lock().await;
        secure_delete(&mut w, true).await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET private_pem = ? WHERE kid = ? AND private_pem = ?",
        )
        .bind(new)
        .bind(kid)
        .bind(old)
        .execute(&mut *w)
        .await;
        secure_delete(&mut w, false).await?;
        let done = done?.rows_affected() == 1;
        if done {
            truncate_wal(&mut w).await;
        }
        Ok(done)
    }

    async fn delete_retired_keys(&self, retired_at_or_before: u64) -> StoreResult<u64> {
        let mut w = self.write.lock().await;
        secure_delete(&mut w, true).await?;
        let n = sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at <= ?",
        )
        .bind(i(retired_at_or_before))
        .execute(&mut *w)
        .await;
        secure_delete(&mut w, false).await?;
        let n = n?.rows_affected();
        if n > 0 {
            truncate_wal(&mut w).await;
        }
        Ok(n)
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        insert_audit(&mut *self.write.lock().await, &e).await?;
        Ok(())
    }

    async fn record_audit_aggregated(&self, e: AuditEvent, since: u64) -> StoreResult<()> {
        let mut writer = self.write.lock().await;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE audit_events SET details = ?1 WHERE id = (
                 SELECT id FROM audit_events WHERE event = ?2 AND subject = ?3
                 ORDER BY id DESC LIMIT 1) AND at >= ?4",
        )
        .bind(&e.details)
        .bind(&e.event)
        .bind(&e.subject)
        .bind(i(since))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            insert_audit(&mut tx, &e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_events(&self, f: AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let json: String = audit_query("", f)
            .build_query_scalar()
            .fetch_one(&self.read)
            .await?;
        let rows: Vec<AuditRow> = serde_json::from_str(&json).map_err(|e| {
            // The position only: the message of a type error would quote the stored text.
            StoreError::Backend(
                format!(
                    "reading audit events: malformed JSON at column {}",
                    e.column()
                )
                .into(),
            )
        })?;
        Ok(rows.into_iter().map(audit_from_json).collect())
    }

    async fn server_secret(&self, name: &str, candidate: &str, now: u64) -> StoreResult<String> {
        // Both statements on the writer, so the read sees the row whoever inserted it.
        let mut w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(i(now))
        .execute(&mut *w)
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *w)
            .await?;
        Ok(v)
    }

    async fn purge_expired(&self, now: u64, audit_before: u64) -> StoreResult<u64> {
        let mut n = 0;
        // Used codes are kept until they expire so a replay can still be detected.
        for sql in [
            "DELETE FROM auth_codes WHERE expires_at <= ?",
            "DELETE FROM device_codes WHERE expires_at <= ?",
            "DELETE FROM sessions WHERE expires_at <= ?",
            "DELETE FROM revoked_jtis WHERE expires_at <= ?",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
        ] {
            n += sqlx::query(sql)
                .bind(i(now))
                .execute(&mut *self.write.lock().await)
                .await?
                .rows_affected();
        }
        n += sqlx::query(
            "UPDATE refresh_tokens SET successor_enc = NULL WHERE successor_enc IS NOT NULL AND rotated_at <= ?",
        )
        .bind(i(now.saturating_sub(MAX_REUSE_GRACE_SECS)))
        .execute(&mut *self.write.lock().await)
        .await?
        .rows_affected();
        n += sqlx::query("DELETE FROM token_families WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = token_families.id)")
            .execute(&mut *self.write.lock().await)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM audit_events WHERE at < ?")
            .bind(i(audit_before))
            .execute(&mut *self.write.lock().await)
            .await?
            .rows_affected();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for the audit query of `f`, one line per step.
    async fn plan(store: &SqliteStore, f: AuditFilter) -> String {
        let rows = audit_query("EXPLAIN QUERY PLAN ", f)
            .build()
            .fetch_all(&store.read)
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The console's audit filters read an index, never the whole log (migration 6): by event
    /// and by IP the index hands out rows in id order, so a page stops after its last row; by
    /// user (actor or subject) both sides use an index; a time range reads ids from `(at)`.
    #[tokio::test]
    async fn audit_filters_read_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        let some = || Some("x".to_string());
        let page = |f: AuditFilter| AuditFilter {
            before_id: Some(1000),
            limit: 101,
            ..f
        };
        let in_order = [
            (
                "event",
                page(AuditFilter {
                    event: some(),
                    ..Default::default()
                }),
            ),
            (
                "ip",
                page(AuditFilter {
                    ip: some(),
                    ..Default::default()
                }),
            ),
            (
                "actor",
                page(AuditFilter {
                    actor: some(),
                    ..Default::default()
                }),
            ),
            (
                "subject",
                page(AuditFilter {
                    subject: some(),
                    ..Default::default()
                }),
            ),
        ];
        for (what, f) in in_order {
            let p = plan(&store, f).await;
            assert!(p.contains("INDEX audit_events_"), "{what}: {p}");
            assert!(!p.contains("SCAN audit_events"), "{what}: {p}");
            assert!(!p.contains("TEMP B-TREE FOR ORDER BY"), "{what}: {p}");
        }
        // A time range: the ids come from the `(at)` index alone, never from the table.
        let range = page(AuditFilter {
            since: Some(1),
            until: Some(2),
            ..Default::default()
        });
        let p = plan(&store, range).await;
        assert!(p.contains("COVERING INDEX audit_events_at"), "time: {p}");
        assert!(!p.contains("SCAN audit_events"), "time: {p}");
        let p = plan(
            &store,
            page(AuditFilter {
                user: some(),
                ..Default::default()
            }),
        )
        .await;
        assert!(p.contains("audit_events_actor"), "user: {p}");
        assert!(p.contains("audit_events_subject"), "user: {p}");
        assert!(!p.contains("SCAN audit_events"), "user: {p}");
    }
}
