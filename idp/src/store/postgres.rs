//! The PostgreSQL backend (`DATABASE_URL=postgres://…`): several replicas of the IdP may share
//! one database. Where the SQLite backend serialises writers with `BEGIN IMMEDIATE`, this one
//! locks the rows an operation decides on (`SELECT … FOR UPDATE`), so two replicas rotating the
//! same refresh token, redeeming the same code or polling the same device code take turns on
//! that row only; everything else runs side by side.
//!
//! Transactions use PostgreSQL's default READ COMMITTED: a statement that waited on a row lock
//! sees the row as the other transaction committed it, which is what each decision below reads.

use super::rules::{self, AccessChange, RedemptionRule, RevocationPlan, RotationRule, Scope};
use super::*;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use std::str::FromStr;
use std::time::Duration;

// The login throttle's operations (`postgres/throttle.rs`).
mod throttle;

/// The schema as numbered migrations (see `migrations/postgres/`), applied in order at open,
/// each in its own transaction with its row in `schema_migrations`. A released file is never
/// edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_initial.sql"),
    include_str!("migrations/postgres/0002_clients_version.sql"),
    include_str!("migrations/postgres/0003_throttle.sql"),
];
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key held while migrating (an arbitrary constant: "kubelogin" in ASCII,
/// truncated to 63 bits), so replicas starting together migrate one after the other and the
/// later ones find nothing left to do.
const MIGRATION_LOCK: i64 = 0x6b75_6265_6c6f_6769;
/// Serialises key activation across replicas (two rotations at once must leave one active key).
const KEY_LOCK: i64 = MIGRATION_LOCK + 1;

/// The channel on which a replica announces a change the others hold in memory (`NOTIFY`; the
/// payload names what changed, see [`Change`]).
const CHANGES: &str = "kubelogin_changes";

/// What another replica changed, as announced on the changes channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Signing keys: rotated, re-encrypted or deleted.
    Keys,
    /// A client's record.
    Clients,
    /// The listening connection was lost and is being re-established: notifications may have
    /// been missed, so everything should be re-read.
    Lost,
}

impl Change {
    fn payload(self) -> &'static str {
        match self {
            Change::Keys => "keys",
            Change::Clients => "clients",
            Change::Lost => "lost",
        }
    }
}

/// Announces `change` to every replica when the surrounding transaction commits (a `NOTIFY`
/// inside a transaction is delivered at commit, and not at all on rollback).
async fn notify(conn: &mut Conn, change: Change) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES)
        .bind(change.payload())
        .execute(conn)
        .await?;
    Ok(())
}

/// A replica's subscription to the changes the others announce (`LISTEN`).
#[derive(Debug)]
pub struct Changes {
    listener: sqlx::postgres::PgListener,
}

impl Changes {
    /// Subscribes on a connection of its own to the database at `url`.
    pub async fn listen(url: &str) -> StoreResult<Changes> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANGES).await?;
        Ok(Changes { listener })
    }

    /// The next change; an error when the database cannot be reached (the caller waits and
    /// asks again, which reconnects).
    pub async fn next(&mut self) -> StoreResult<Change> {
        match self.listener.try_recv().await? {
            None => Ok(Change::Lost),
            Some(n) => Ok(match n.payload() {
                "keys" => Change::Keys,
                "clients" => Change::Clients,
                _ => Change::Lost,
            }),
        }
    }
}

/// PostgreSQL storage: a connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Client writes made through this store, counted before and after each, so a cache in this
    /// process drops a change at once (see [`Store::local_client_writes`]).
    client_writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Throttle failures counted through this store: every `THROTTLE_SWEEP_EVERY`-th sweeps.
    throttle_fails: std::sync::Arc<std::sync::atomic::AtomicU64>,
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

fn opt_u(v: Option<i64>) -> Option<u64> {
    v.map(u)
}

/// Counts a client write on `client_writes` when it starts and again when it ends (dropped), so
/// a cache lookup overlapping the write on either side of its commit sees the count move.
struct ClientWrite<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> ClientWrite<'a> {
    fn new(n: &'a std::sync::atomic::AtomicU64) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        ClientWrite(n)
    }
}

impl Drop for ClientWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl PgStore {
    /// Connects to the database at a `postgres://` URL and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_with(url, 16).await
    }

    /// As [`PgStore::open`], with at most `max_connections` connections.
    pub async fn open_with(url: &str, max_connections: u32) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        migrate(&pool).await?;
        Ok(PgStore {
            pool,
            client_writes: Default::default(),
            throttle_fails: Default::default(),
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool (for the replica notifications and the tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Applies the migrations this database lacks, under a session advisory lock: a replica that
/// starts while another migrates waits for it, then finds the versions applied.
async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = migrate_locked(&mut conn).await;
    // Unlock on every path; a lost connection releases the lock by itself.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    result?;
    unlocked?;
    Ok(())
}

async fn migrate_locked(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    // Checked first rather than `CREATE TABLE IF NOT EXISTS`, whose notice on every start
    // would land in the log.
    let known: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !known {
        sqlx::raw_sql("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *conn)
            .await?;
    }
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Migration(format!(
            "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}; upgrade kubelogin-idp"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(n as i64 + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn user_from(row: &PgRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: row.try_get("email_verified")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get("is_admin")?,
        disabled: row.try_get("disabled")?,
        created_at: u(row.try_get("created_at")?),
    })
}

fn client_from(row: &PgRow) -> Result<Client, sqlx::Error> {
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

fn code_from(row: &PgRow) -> Result<AuthCode, sqlx::Error> {
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

fn family_from(row: &PgRow) -> Result<Family, sqlx::Error> {
    Ok(Family {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        scope: row.try_get("scope")?,
        auth_time: u(row.try_get("auth_time")?),
        created_at: u(row.try_get("f_created_at")?),
        revoked_at: opt_u(row.try_get("revoked_at")?),
    })
}

fn refresh_from(row: &PgRow) -> Result<RefreshToken, sqlx::Error> {
    Ok(RefreshToken {
        token_hash: row.try_get("token_hash")?,
        family_id: row.try_get("family_id")?,
        created_at: u(row.try_get("created_at")?),
        expires_at: u(row.try_get("expires_at")?),
        rotated_at: opt_u(row.try_get("rotated_at")?),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
    })
}

fn device_from(row: &PgRow) -> Result<DeviceCode, sqlx::Error> {
    Ok(DeviceCode {
        device_code_hash: row.try_get("device_code_hash")?,
        user_code: row.try_get("user_code")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        code_challenge: row.try_get("code_challenge")?,
        created_at: u(row.try_get("created_at")?),
        expires_at: u(row.try_get("expires_at")?),
        interval: u(row.try_get("interval_secs")?),
        last_polled_at: opt_u(row.try_get("last_polled_at")?),
        status: DeviceStatus::parse(row.try_get("status")?),
        user_id: row.try_get("user_id")?,
        auth_time: opt_u(row.try_get("auth_time")?),
        request_ip: row.try_get("request_ip")?,
        request_user_agent: row.try_get("request_user_agent")?,
    })
}

fn session_from(r: &PgRow) -> Result<Session, sqlx::Error> {
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

fn audit_from(r: &PgRow) -> Result<AuditEvent, sqlx::Error> {
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: u(r.try_get("at")?),
        event: r.try_get("event")?,
        severity: r.try_get("severity")?,
        actor: r.try_get("actor")?,
        subject: r.try_get("subject")?,
        client_id: r.try_get("client_id")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        details: r.try_get("details")?,
    })
}

type Conn = sqlx::PgConnection;

async fn insert_audit(conn: &mut Conn, e: &AuditEvent) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (at, event, severity, actor, subject, client_id, ip, user_agent, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

async fn revoke_in(conn: &mut Conn, family_id: &str, now: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(i(now))
        .bind(family_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The rows a [`Scope`] selects, as a condition on `user_id`/`client_id` columns whose
/// parameters are numbered from `$first`, and the values to bind in order; `None` for
/// [`Scope::Nothing`].
fn scope_condition<'a>(
    scope: Scope,
    user_id: &'a str,
    client_id: &'a str,
    first: usize,
) -> Option<(String, Vec<&'a str>)> {
    let (n, m) = (first, first + 1);
    match scope {
        Scope::Nothing => None,
        Scope::User => Some((format!("user_id = ${n}"), vec![user_id])),
        Scope::Client => Some((format!("client_id = ${n}"), vec![client_id])),
        Scope::UserAtClient => Some((
            format!("user_id = ${n} AND client_id = ${m}"),
            vec![user_id, client_id],
        )),
        Scope::UsersOfClient => Some((
            format!(
                "user_id IN (SELECT user_id FROM token_families WHERE client_id = ${n}
                             UNION SELECT user_id FROM consents WHERE client_id = ${n})"
            ),
            vec![client_id],
        )),
    }
}

/// Applies a [`RevocationPlan`] (decided by `rules::revocation_plan`) inside the caller's
/// transaction. Returns how many live families it revoked.
async fn apply_plan(
    conn: &mut Conn,
    plan: RevocationPlan,
    user_id: &str,
    client_id: &str,
    now: u64,
) -> Result<u64, sqlx::Error> {
    if plan.invalidate_client_tokens {
        sqlx::query("UPDATE clients SET tokens_valid_after = $1 WHERE client_id = $2")
            .bind(i(now))
            .bind(client_id)
            .execute(&mut *conn)
            .await?;
    }
    let mut revoked = 0;
    if let Some((cond, args)) = scope_condition(plan.revoke_families, user_id, client_id, 2) {
        let sql = format!(
            "UPDATE token_families SET revoked_at = $1 WHERE {cond} AND revoked_at IS NULL"
        );
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
        if let Some((cond, args)) = scope_condition(scope, user_id, client_id, 1) {
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

/// A family can still refresh: not revoked, and its current token has not expired at `$1`.
const LIVE_FAMILY: &str = "f.revoked_at IS NULL AND EXISTS (SELECT 1 FROM refresh_tokens t
     WHERE t.family_id = f.id AND t.rotated_at IS NULL AND t.expires_at > $1)";

const FAMILY_COLS: &str =
    "f.id, f.client_id, f.user_id, f.scope, f.auth_time, f.created_at AS f_created_at, f.revoked_at";

fn conflict_on_unique<T>(
    r: Result<T, sqlx::Error>,
    message: impl FnOnce() -> String,
) -> StoreResult<T> {
    match r {
        Ok(v) => Ok(v),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(message()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The audit query for `f`, with only the conditions it sets, so the planner can use the index
/// that fits.
fn audit_query(f: AuditFilter) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(
        "SELECT id, at, event, severity, actor, subject, client_id, ip, user_agent, details \
         FROM audit_events WHERE TRUE",
    );
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
        q.push(" AND event = ANY(").push_bind(f.event_in).push(")");
    }
    if !f.event_not_in.is_empty() {
        q.push(" AND event <> ALL(")
            .push_bind(f.event_not_in)
            .push(")");
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
        .push_bind(i64::from(limit));
    q
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: NewUser, now: u64) -> StoreResult<User> {
        let id = crate::crypto::random_token(16);
        let res = sqlx::query(
            "INSERT INTO users (id, username, email, email_verified, name, password_hash, is_admin, disabled, created_at, updated_at)
             VALUES ($1, $2, $3, TRUE, $4, $5, $6, FALSE, $7, $7)",
        )
        .bind(&id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(i(now))
        .execute(&self.pool)
        .await;
        conflict_on_unique(res, || format!("user {:?} already exists", user.username))?;
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
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn user_with_groups(&self, id: &str) -> StoreResult<Option<(User, Vec<String>)>> {
        let row = sqlx::query(
            "SELECT u.*, ARRAY(SELECT group_name FROM group_members WHERE user_id = u.id
                              ORDER BY group_name) AS grps
             FROM users u WHERE u.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let groups: Vec<String> = row.try_get("grps")?;
        Ok(Some((user_from(&row)?, groups)))
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    async fn set_password(&self, user_id: &str, hash: &str, now: u64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
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
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
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
        let mut tx = self.pool.begin().await?;
        let plan = rules::revocation_plan(AccessChange::DeleteUser);
        apply_plan(&mut tx, plan, user_id, "", 0).await?;
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
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
            .fetch_one(&self.pool)
            .await?;
        Ok(u(n))
    }

    async fn users_page(&self, q: UserQuery) -> StoreResult<Vec<User>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        // ILIKE: letters compared without case, as SQLite's LIKE does for ASCII.
        let rows = sqlx::query(
            "SELECT * FROM users
             WHERE ($1::text IS NULL OR username > $1)
               AND ($2::text IS NULL OR username ILIKE $2 ESCAPE '\\' OR email ILIKE $2 ESCAPE '\\'
                    OR name ILIKE $2 ESCAPE '\\')
             ORDER BY username LIMIT $3",
        )
        .bind(q.after)
        .bind(q.search.as_deref().map(contains_pattern))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let r =
            sqlx::query("UPDATE users SET email = $1, name = $2, updated_at = $3 WHERE id = $4")
                .bind(email)
                .bind(name)
                .bind(i(now))
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        Ok(())
    }

    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The user's row lock orders two concurrent replacements of the same user's groups.
        let user: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        if user.is_none() {
            return Err(StoreError::NotFound("no such user".into()));
        }
        for g in groups {
            // FOR SHARE: the group cannot be deleted before this transaction commits.
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM groups WHERE name = $1 FOR SHARE")
                    .bind(g)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("no group {g:?}")));
            }
        }
        sqlx::query("DELETE FROM group_members WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO group_members (group_name, user_id)
             SELECT DISTINCT g, $2 FROM UNNEST($1::text[]) AS g ON CONFLICT DO NOTHING",
        )
        .bind(groups)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_group(&self, name: &str, now: u64) -> StoreResult<()> {
        let r = sqlx::query("INSERT INTO groups (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(i(now))
            .execute(&self.pool)
            .await;
        conflict_on_unique(r, || format!("group {name:?} already exists"))?;
        Ok(())
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT g.name AS name, u.username AS username FROM groups g
             LEFT JOIN group_members m ON m.group_name = g.name
             LEFT JOIN users u ON u.id = m.user_id
             ORDER BY g.name, u.username",
        )
        .fetch_all(&self.pool)
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
        let r = sqlx::query("DELETE FROM groups WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no group {name:?}")));
        }
        Ok(())
    }

    async fn add_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM groups WHERE name = $1 FOR SHARE")
                .bind(group)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("no group {group:?}")));
        }
        sqlx::query(
            "INSERT INTO group_members (group_name, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(group)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let r = sqlx::query("DELETE FROM group_members WHERE group_name = $1 AND user_id = $2")
            .bind(group)
            .bind(user_id)
            .execute(&self.pool)
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
            "SELECT group_name FROM group_members WHERE user_id = $1 ORDER BY group_name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn create_client(&self, c: Client) -> StoreResult<()> {
        let _counted = ClientWrite::new(&self.client_writes);
        let r = sqlx::query(
            "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, tokens_valid_after, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&self.pool)
        .await;
        conflict_on_unique(r, || format!("client {:?} already exists", c.client_id))?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(client_from).transpose()?)
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY client_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(client_from).collect::<Result<_, _>>()?)
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<()> {
        let _counted = ClientWrite::new(&self.client_writes);
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM token_families WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no client {client_id:?}")));
        }
        notify(&mut tx, Change::Clients).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_client_secret_hash(&self, client_id: &str, hash: &str) -> StoreResult<()> {
        let _counted = ClientWrite::new(&self.client_writes);
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE clients SET secret_hash = $1 WHERE client_id = $2 AND secret_hash IS NOT NULL",
        )
        .bind(hash)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no confidential client {client_id:?}"
            )));
        }
        notify(&mut tx, Change::Clients).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_all_for_client(&self, client_id: &str, now: u64) -> StoreResult<u64> {
        let _counted = ClientWrite::new(&self.client_writes);
        let mut tx = self.pool.begin().await?;
        // The client's row lock orders this against a concurrent change of the client.
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM clients WHERE client_id = $1 FOR UPDATE")
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("no client {client_id:?}")));
        }
        let plan = rules::revocation_plan(AccessChange::ClientRevokeAll);
        let n = apply_plan(&mut tx, plan, "", client_id, now).await?;
        notify(&mut tx, Change::Clients).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn clients_version(&self) -> StoreResult<u64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM store_versions WHERE name = 'clients'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(u(v.unwrap_or(0)))
    }

    fn local_client_writes(&self) -> u64 {
        self.client_writes
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn pool_usage(&self) -> Option<(u64, u64)> {
        let idle = self.pool.num_idle() as u64;
        let open = u64::from(self.pool.size());
        Some((idle, open.saturating_sub(idle)))
    }

    async fn count_live_families(&self, client_id: Option<&str>, now: u64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM token_families f WHERE ($2::text IS NULL OR f.client_id = $2) AND {LIVE_FAMILY}"
        ))
        .bind(i(now))
        .bind(client_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u(n))
    }

    async fn consents_of_user(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        let rows = sqlx::query(
            "SELECT client_id, scopes, granted_at FROM consents WHERE user_id = $1 ORDER BY client_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let plan = rules::revocation_plan(AccessChange::RevokeAuthorization);
        let n = apply_plan(&mut tx, plan, user_id, client_id, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn consented_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Vec<String>> {
        let s: Option<String> =
            sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
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
            "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(json_list(scopes))
        .bind(i(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_auth_code(&self, c: AuthCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn redeem_auth_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeRedemption> {
        let mut tx = self.pool.begin().await?;
        // The row lock makes two redemptions of one code take turns: the second sees `used_at`.
        let row = sqlx::query("SELECT * FROM auth_codes WHERE code_hash = $1 FOR UPDATE")
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let stored = match row {
            Some(r) => Some(rules::StoredCode {
                code: code_from(&r)?,
                used_at: opt_u(r.try_get("used_at")?),
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
                sqlx::query("UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2")
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
        sqlx::query("UPDATE auth_codes SET family_id = $1 WHERE code_hash = $2")
            .bind(family_id)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_family(&self, f: Family, first: RefreshToken) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO token_families (id, client_id, user_id, scope, auth_time, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&f.id)
        .bind(&f.client_id)
        .bind(&f.user_id)
        .bind(&f.scope)
        .bind(i(f.auth_time))
        .bind(i(f.created_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6)")
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
            "SELECT {FAMILY_COLS} FROM token_families f WHERE f.id = $1"
        ))
        .bind(family_id)
        .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        // Lock the presented token and its family: concurrent presentations of one token (on
        // any replica) take turns, and the later ones see it rotated (RFC 9700 §4.14.2).
        let row = sqlx::query(&format!(
            "SELECT t.token_hash, t.family_id, t.created_at, t.expires_at, t.rotated_at, t.ip, t.user_agent, t.successor_enc,
                    {FAMILY_COLS}, u.username AS username, u.disabled AS user_disabled
             FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
             JOIN users u ON u.id = f.user_id WHERE t.token_hash = $1
             FOR UPDATE OF t, f"
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
        let disabled: bool = row.try_get("user_disabled")?;
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
            RotationRule::Invalid => return Ok(Rotation::Refused(family)),
            RotationRule::RevokeAndRefuse => {
                revoke_in(&mut tx, &family.id, now).await?;
                tx.commit().await?;
                return Ok(Rotation::Refused(family));
            }
            RotationRule::WithinGrace(kept) => return Ok(Rotation::WithinGrace(family, kept)),
            RotationRule::Reused => {
                revoke_in(&mut tx, &family.id, now).await?;
                tx.commit().await?;
                return Ok(Rotation::Reused(family));
            }
        }
        sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = $1, successor_enc = $2 WHERE token_hash = $3",
        )
        .bind(i(now))
        .bind(successor_enc)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6)")
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
             FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((refresh_from(&r)?, family_from(&r)?))),
            None => Ok(None),
        }
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        revoke_in(&mut conn, family_id, now).await?;
        Ok(())
    }

    async fn families_of_user(&self, user_id: &str) -> StoreResult<Vec<Family>> {
        let rows = sqlx::query(&format!(
            "SELECT {FAMILY_COLS} FROM token_families f WHERE f.user_id = $1 ORDER BY f.created_at DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(family_from).collect::<Result<_, _>>()?)
    }

    async fn live_families(&self, q: FamilyQuery, now: u64) -> StoreResult<Vec<Family>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let rows = sqlx::query(&format!(
            "SELECT {FAMILY_COLS} FROM token_families f
             WHERE ($2::text IS NULL OR f.user_id = $2) AND ($3::text IS NULL OR f.client_id = $3)
               AND {LIVE_FAMILY}
             ORDER BY f.created_at DESC, f.id LIMIT $4"
        ))
        .bind(i(now))
        .bind(q.user_id)
        .bind(q.client_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(family_from).collect::<Result<_, _>>()?)
    }

    async fn family_activity(&self, user_id: &str, now: u64) -> StoreResult<Vec<FamilyActivity>> {
        let rows = sqlx::query(&format!(
            "SELECT f.id, t.created_at, t.ip, t.user_agent FROM token_families f
             JOIN refresh_tokens t ON t.token_hash = (SELECT c.token_hash FROM refresh_tokens c
                  WHERE c.family_id = f.id AND c.rotated_at IS NULL ORDER BY c.created_at DESC LIMIT 1)
             WHERE f.user_id = $2 AND {LIVE_FAMILY}
             ORDER BY f.created_at DESC, f.id LIMIT 1000"
        ))
        .bind(i(now))
        .bind(user_id)
        .fetch_all(&self.pool)
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
        sqlx::query(
            "INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(i(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM revoked_jtis WHERE jti = $1)")
                .bind(jti)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn insert_device_code(&self, d: DeviceCode) -> StoreResult<()> {
        let r = sqlx::query(
            "INSERT INTO device_codes (device_code_hash, user_code, client_id, scope, code_challenge, created_at, expires_at, interval_secs, last_polled_at, status, user_id, auth_time, request_ip, request_user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, 'pending', NULL, NULL, $9, $10)",
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
        .execute(&self.pool)
        .await;
        conflict_on_unique(r, || "user code collision".into())?;
        Ok(())
    }

    async fn device_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceCode>> {
        let row = sqlx::query("SELECT * FROM device_codes WHERE user_code = $1")
            .bind(user_code)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(device_from).transpose()?)
    }

    async fn device_by_hash_client(&self, hash: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT client_id FROM device_codes WHERE device_code_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
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
            "UPDATE device_codes SET status = $1, user_id = $2, auth_time = $3
             WHERE user_code = $4 AND status = 'pending' AND expires_at > $5",
        )
        .bind(if approve { "approved" } else { "denied" })
        .bind(user_id)
        .bind(i(auth_time))
        .bind(user_code)
        .bind(i(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn poll_device(&self, hash: &str, now: u64) -> StoreResult<DevicePoll> {
        let mut tx = self.pool.begin().await?;
        // Two pollers of one code take turns, so an approval is consumed once.
        let row = sqlx::query("SELECT * FROM device_codes WHERE device_code_hash = $1 FOR UPDATE")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        let code = row.as_ref().map(device_from).transpose()?;
        let (outcome, update) = rules::device_poll(code.as_ref(), now);
        if let Some(w) = update {
            sqlx::query("UPDATE device_codes SET last_polled_at = $1, interval_secs = $2, status = $3 WHERE device_code_hash = $4")
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
            "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, ip, user_agent, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(i(s.auth_time))
        .bind(i(s.created_at))
        .bind(i(s.expires_at))
        .bind(&s.ip)
        .bind(&s.user_agent)
        .bind(i(s.last_used_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: u64) -> StoreResult<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(i(now))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from).transpose()?)
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn sessions_of_user(&self, user_id: &str, now: u64) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(
            "SELECT * FROM sessions WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC, id_hash",
        )
        .bind(user_id)
        .bind(i(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_from).collect::<Result<_, _>>()?)
    }

    async fn count_live_sessions(&self, now: u64) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
            .bind(i(now))
            .fetch_one(&self.pool)
            .await?;
        Ok(u(n))
    }

    async fn reauthenticate_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_used_at = $1, auth_time = $1 WHERE id_hash = $2")
            .bind(i(now))
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_user_session(&self, user_id: &str, id_hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE id_hash = $1 AND user_id = $2")
            .bind(id_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET last_used_at = $2 WHERE id_hash = $1 AND last_used_at + $3 <= $2",
        )
        .bind(id_hash)
        .bind(i(now))
        .bind(i(SESSION_TOUCH_SECS))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    private_pem: r.try_get("private_pem")?,
                    created_at: u(r.try_get("created_at")?),
                    retired_at: opt_u(r.try_get("retired_at")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    async fn activate_key(&self, key: StoredKey, now: u64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Two replicas rotating at once take turns, so one key is left active.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(i(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_pem, created_at, retired_at) VALUES ($1, $2, $3, $4, NULL)
                     ON CONFLICT (kid) DO UPDATE SET retired_at = NULL, created_at = excluded.created_at")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_pem)
            .bind(i(key.created_at))
            .execute(&mut *tx)
            .await?;
        notify(&mut tx, Change::Keys).await?;
        tx.commit().await?;
        Ok(())
    }

    // PostgreSQL has no secure delete: a replaced or deleted row stays in its page until VACUUM
    // reuses the space (README, PostgreSQL: encrypt keys at rest with a key encryption key).
    async fn replace_key_material(&self, kid: &str, old: &str, new: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE signing_keys SET private_pem = $1 WHERE kid = $2 AND private_pem = $3",
        )
        .bind(new)
        .bind(kid)
        .bind(old)
        .execute(&mut *tx)
        .await?;
        let done = r.rows_affected() == 1;
        if done {
            notify(&mut tx, Change::Keys).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn delete_retired_keys(&self, retired_at_or_before: u64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at <= $1",
        )
        .bind(i(retired_at_or_before))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            notify(&mut tx, Change::Keys).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut conn, &e).await?;
        Ok(())
    }

    async fn record_audit_aggregated(&self, e: AuditEvent, since: u64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // One writer per event name and subject at a time (on every replica), so two refusals at
        // once do not both insert a row.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("audit\n{}\n{}", e.event, e.subject))
            .execute(&mut *tx)
            .await?;
        let updated = sqlx::query(
            "UPDATE audit_events SET details = $1 WHERE id = (
                 SELECT id FROM audit_events WHERE event = $2 AND subject = $3
                 ORDER BY id DESC LIMIT 1) AND at >= $4",
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
        let rows = audit_query(f).build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(audit_from).collect::<Result<_, _>>()?)
    }

    async fn server_secret(&self, name: &str, candidate: &str, now: u64) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(i(now))
        .execute(&self.pool)
        .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    async fn throttle_check(&self, key: &str, now: u64) -> StoreResult<Option<rules::Blocked>> {
        self.throttle_check_op(key, now).await
    }

    async fn throttle_fail(&self, key: &str, max: u32, now: u64) -> StoreResult<()> {
        self.throttle_fail_op(key, max, now).await
    }

    async fn throttle_reset(&self, key: &str) -> StoreResult<()> {
        self.throttle_reset_op(key).await
    }

    async fn throttle_has_history(&self, key: &str, now: u64) -> StoreResult<bool> {
        self.throttle_has_history_op(key, now).await
    }

    async fn throttle_sweep(&self, now: u64, capacity: u64) -> StoreResult<u64> {
        self.throttle_sweep_op(now, capacity).await
    }

    async fn throttle_keys(&self) -> StoreResult<Vec<String>> {
        self.throttle_keys_op().await
    }

    async fn purge_expired(&self, now: u64, audit_before: u64) -> StoreResult<u64> {
        let mut n = 0;
        // Used codes are kept until they expire so a replay can still be detected.
        for sql in [
            "DELETE FROM auth_codes WHERE expires_at <= $1",
            "DELETE FROM device_codes WHERE expires_at <= $1",
            "DELETE FROM sessions WHERE expires_at <= $1",
            "DELETE FROM revoked_jtis WHERE expires_at <= $1",
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
        ] {
            n += sqlx::query(sql)
                .bind(i(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        n += sqlx::query(
            "UPDATE refresh_tokens SET successor_enc = NULL WHERE successor_enc IS NOT NULL AND rotated_at <= $1",
        )
        .bind(i(now.saturating_sub(MAX_REUSE_GRACE_SECS)))
        .execute(&self.pool)
        .await?
        .rows_affected();
        n += sqlx::query("DELETE FROM token_families f WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)")
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(i(audit_before))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }
}
