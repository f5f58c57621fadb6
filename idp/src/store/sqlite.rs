//! The SQLite backend, on rusqlite: one hand-off per store operation, not one per statement.
//!
//! A dedicated writer thread owns the one read-write connection (SQLite has one writer at a
//! time) and runs each write operation as one closure. The operations that queued up while the
//! previous commit ran are committed together (group commit): one `BEGIN IMMEDIATE`, a
//! savepoint around each operation so a failing one undoes only its own changes, one COMMIT, and
//! only then every caller's answer. A few reader threads own read-only connections and run the
//! reads; in WAL mode they never wait for the writer. An async caller sends the closure and
//! awaits its answer: one channel message and one wake-up per operation.
//!
//! Why not sqlx here: its SQLite driver runs every statement (and every transaction's BEGIN and
//! COMMIT) as a separate command on the connection's worker thread, and hands back each result
//! row separately, so a refresh rotation cost six round trips between tokio and that thread
//! (the README's profile: two thirds of the server's time in those hand-offs). It has no way to
//! run a closure on its worker. PostgreSQL stays on sqlx, where a round trip is a network one
//! anyway.
//!
//! Durability: WAL with `synchronous = NORMAL`. A committed transaction survives the process
//! being killed (SIGKILL included: the WAL is written before COMMIT returns); only an OS crash
//! or power loss can lose the last transactions before a checkpoint, never corrupting the file.
//! (`FULL` would add an fsync to every commit.)

use super::rules::{self, AccessChange, RedemptionRule, RevocationPlan, RotationRule, Scope};
use super::*;
use rusqlite::types::Value;
use rusqlite::TransactionBehavior;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// The login throttle's operations (`sqlite/throttle.rs`).
mod throttle;

/// The schema as numbered migrations: version N is reached by applying file N on top of N-1, each
/// in its own transaction with the `user_version` bump. A released file is never edited.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_initial.sql"),
    include_str!("migrations/sqlite/0002_refresh_successor.sql"),
    include_str!("migrations/sqlite/0003_device_request_origin.sql"),
    include_str!("migrations/sqlite/0004_server_secrets.sql"),
    include_str!("migrations/sqlite/0005_activity.sql"),
    include_str!("migrations/sqlite/0006_audit_search.sql"),
    include_str!("migrations/sqlite/0007_clients_version.sql"),
    include_str!("migrations/sqlite/0008_throttle.sql"),
];
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a statement waits for another process's write lock (the CLI next to `serve`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection (the store has fewer distinct statements).
const STATEMENT_CACHE: usize = 128;

/// Write operations committed together at most: what queued while the previous commit ran.
const MAX_BATCH: usize = 64;

/// Committed write operations between two checkpoints by the checkpoint thread (at about four
/// WAL pages per refresh grant, about SQLite's default of 1000 pages).
const CHECKPOINT_EVERY: u64 = 256;

/// The writer checkpoints by itself only when the WAL has grown this many pages (64 MiB at
/// 4 KiB) because the checkpoint thread fell behind: a bound on the file, not the usual path.
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// A store operation, run on the thread that owns a connection. It returns how to answer its
/// caller, which the writer calls only once the operation's transaction has committed.
type Job = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;

/// Hands an operation's answer to its caller; given the commit's failure if there was one.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A finished operation's answer, held back until its outcome is durable.
struct Answer {
    /// The operation returned an error: its changes are rolled back and the error is its answer.
    failed: bool,
    /// Hands the answer to the caller: the operation's own result, or, when the commit that
    /// should have made it durable failed (`Some`), that failure.
    send: Reply,
}

/// What the writer queue carries: most writes join a group commit; a few (private-key changes
/// with secure delete and a WAL checkpoint, which cannot run inside a transaction) run alone.
struct WriteJob {
    alone: bool,
    job: Job,
}

/// SQLite storage.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: flume::Sender<WriteJob>,
    /// The reader threads share this queue; an in-memory database has none and reads on the
    /// writer (a second connection would open another, empty, database).
    readers: Option<flume::Sender<Job>>,
    /// Client writes made through this store, so a cache in this process drops a change at once
    /// (see [`Store::local_client_writes`]).
    client_writes: Arc<AtomicU64>,
    /// Connections (the writer and the readers), and how many are running a job now: the pool
    /// use `/metrics` reports.
    connections: u64,
    busy: Arc<AtomicU64>,
    /// Throttle failures counted through this store: every `THROTTLE_SWEEP_EVERY`-th sweeps.
    throttle_fails: Arc<AtomicU64>,
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

fn stopped() -> StoreError {
    StoreError::Backend("the database thread has stopped".into())
}

/// A uniqueness rule refused the write (a UNIQUE or PRIMARY KEY constraint).
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Where a `sqlite:` URL points.
enum Target {
    File(PathBuf),
    Memory,
}

impl Target {
    /// `sqlite://PATH`, `sqlite:PATH` (query parameters ignored, except `mode=memory`) or
    /// `sqlite::memory:`.
    fn parse(url: &str) -> StoreResult<Target> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::Backend(format!("not a sqlite URL: {url:?}").into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
            return Ok(Target::Memory);
        }
        if path.is_empty() {
            return Err(StoreError::Backend("the sqlite URL names no file".into()));
        }
        Ok(Target::File(PathBuf::from(path)))
    }
}

/// The settings every connection gets.
fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    c.pragma_update(None, "cache_size", -4000)?;
    // Statement journals (the undo log of each savepoint of a group commit) and temporary
    // b-trees stay in memory: in a file they were twice the WAL's writes on the refresh path.
    c.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Opens the writer connection and brings the schema up to date.
fn open_writer(target: &Target) -> StoreResult<Connection> {
    let c = match target {
        Target::File(p) => Connection::open(p)?,
        Target::Memory => Connection::open_in_memory()?,
    };
    configure(&c)?;
    // WAL + NORMAL: see the module comment for what it guarantees.
    let _mode: String = c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints (copying the WAL into the database, with an fsync of each) run on their own
    // thread (`serve_checkpoints`), so the writer does not stall on an fsync with every caller of
    // the batch waiting; it only steps in if that thread falls far behind.
    c.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
    migrate(c)
}

fn migrate(mut c: Connection) -> StoreResult<Connection> {
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Migration(format!(
            "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}; upgrade kubelogin-idp"
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated between our read and the write lock.
        let now_at: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now_at > n as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
    }
    Ok(c)
}

fn open_reader(path: &PathBuf) -> StoreResult<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    configure(&c)?;
    Ok(c)
}

/// The checkpoint thread's connection: read-write (a checkpoint writes the database file), with
/// no automatic checkpoint of its own.
fn open_checkpointer(path: &PathBuf) -> StoreResult<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&c)?;
    c.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(c)
}

/// Runs the reads sent to `jobs` on `conn` until every sender is gone.
fn serve_reads(
    name: String,
    mut conn: Connection,
    jobs: flume::Receiver<Job>,
    busy: Arc<AtomicU64>,
) -> StoreResult<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            while let Ok(job) = jobs.recv() {
                busy.fetch_add(1, Ordering::Relaxed);
                (job(&mut conn).send)(None);
                busy.fetch_sub(1, Ordering::Relaxed);
            }
        })
        .map(|_| ())
        .map_err(StoreError::backend)
}

/// Runs the writes sent to `jobs` on `conn` until every sender is gone, committing together
/// the operations that queued up while the previous commit ran (group commit).
fn serve_writes(
    mut conn: Connection,
    jobs: flume::Receiver<WriteJob>,
    busy: Arc<AtomicU64>,
    checkpoint: Option<flume::Sender<()>>,
) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut next = None;
            let mut since_checkpoint = 0u64;
            while let Some(first) = next.take().or_else(|| jobs.recv().ok()) {
                busy.fetch_add(1, Ordering::Relaxed);
                if first.alone {
                    ((first.job)(&mut conn).send)(None);
                } else {
                    let mut batch = vec![first.job];
                    while batch.len() < MAX_BATCH {
                        match jobs.try_recv() {
                            Ok(j) if j.alone => {
                                next = Some(j);
                                break;
                            }
                            Ok(j) => batch.push(j.job),
                            Err(_) => break,
                        }
                    }
                    since_checkpoint += batch.len() as u64;
                    commit_together(&mut conn, batch);
                }
                if since_checkpoint >= CHECKPOINT_EVERY {
                    if let Some(checkpoint) = &checkpoint {
                        // Full: a checkpoint is already asked for, and it will see these pages.
                        let _ = checkpoint.try_send(());
                    }
                    since_checkpoint = 0;
                }
                busy.fetch_sub(1, Ordering::Relaxed);
            }
        })
        .map(|_| ())
        .map_err(StoreError::backend)
}

/// Runs a PASSIVE checkpoint on `conn` each time the writer asks, until the writer is gone.
/// PASSIVE never blocks the writer or a reader (SQLite, "Checkpointing a database"): it copies
/// what no reader still needs and leaves the rest for the next one.
fn serve_checkpoints(conn: Connection, asks: flume::Receiver<()>) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while asks.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "a WAL checkpoint failed; the next one retries");
                }
            }
        })
        .map(|_| ())
        .map_err(StoreError::backend)
}

/// Runs `batch` in one `BEGIN IMMEDIATE` transaction, each operation inside its own savepoint so
/// a failing one rolls back only its own changes, then commits once and answers every caller.
///
/// One commit for many operations is what makes the writer fast: the pages several operations
/// touch (an index's last leaf, the audit table's tail) are written to the WAL once, and the
/// file lock is taken once. No caller hears back before the commit that makes its change
/// durable, so an acknowledged write survives a SIGKILL exactly as with a commit per operation.
fn commit_together(c: &mut Connection, batch: Vec<Job>) {
    let mut jobs = batch.into_iter().peekable();
    while jobs.peek().is_some() {
        if let Err(e) = c.execute_batch("BEGIN IMMEDIATE") {
            // Another process holds the write lock past the busy timeout: each operation
            // fails or succeeds on its own, as without batching.
            tracing::debug!(error = %e, "group commit could not begin; running the batch one by one");
            for job in jobs.by_ref() {
                (job(c).send)(None);
            }
            return;
        }
        let mut done: Vec<Answer> = Vec::new();
        let mut lost = None;
        for job in jobs.by_ref() {
            let step = c.execute_batch("SAVEPOINT op");
            let answer = job(c);
            if c.is_autocommit() {
                // SQLite rolled the whole transaction back (an I/O error, a full disk): the
                // operations before this one are undone too.
                lost = Some(StoreError::Backend(
                    "the transaction was rolled back by the database".into(),
                ));
                done.push(answer);
                break;
            }
            let end = if answer.failed {
                c.execute_batch("ROLLBACK TO op; RELEASE op")
            } else {
                c.execute_batch("RELEASE op")
            };
            done.push(answer);
            if let Err(e) = step.and(end) {
                lost = Some(StoreError::backend(e));
                break;
            }
        }
        let outcome = match lost {
            Some(e) => {
                if !c.is_autocommit() {
                    let _ = c.execute_batch("ROLLBACK");
                }
                Err(e)
            }
            None => c.execute_batch("COMMIT").map_err(|e| {
                if !c.is_autocommit() {
                    let _ = c.execute_batch("ROLLBACK");
                }
                StoreError::backend(e)
            }),
        };
        for answer in done {
            (answer.send)(outcome.as_ref().err());
        }
    }
}

/// Wraps `f` as a job whose answer goes to the returned receiver.
fn job<T, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
{
    let (done, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |c: &mut Connection| {
        let out = f(c);
        Answer {
            failed: out.is_err(),
            send: Box::new(move |lost: Option<&StoreError>| {
                let out = match lost {
                    Some(e) if out.is_ok() => Err(StoreError::Backend(
                        format!("the change was not committed: {e}").into(),
                    )),
                    _ => out,
                };
                // The caller may have gone (a dropped request): the work is done either way.
                let _ = done.send(out);
            }),
        }
    });
    (job, answer)
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction: committed when it returns `Ok`, rolled back
/// otherwise. IMMEDIATE takes the write lock at BEGIN, so another process's writer cannot slip
/// in between the load and the write. Inside the writer's group commit the transaction is
/// already open with the lock held, and the writer's savepoint around the operation rolls it
/// back on an error.
fn immediate<T>(
    c: &mut Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    if !c.is_autocommit() {
        return f(c);
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite:` URL and brings its schema up to
    /// date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let target = Target::parse(url)?;
        let (writer, writer_jobs) = flume::unbounded::<WriteJob>();
        // Opening and migrating block: done on a blocking thread, not on an async worker.
        let path = match &target {
            Target::File(p) => Some(p.clone()),
            Target::Memory => None,
        };
        let conn = tokio::task::spawn_blocking(move || open_writer(&target))
            .await
            .map_err(StoreError::backend)??;
        let busy = Arc::new(AtomicU64::new(0));
        let checkpoint = match &path {
            None => None,
            Some(path) => {
                let path = path.clone();
                let conn = tokio::task::spawn_blocking(move || open_checkpointer(&path))
                    .await
                    .map_err(StoreError::backend)??;
                let (asks, asked) = flume::bounded(1);
                serve_checkpoints(conn, asked)?;
                Some(asks)
            }
        };
        serve_writes(conn, writer_jobs, busy.clone(), checkpoint)?;
        let mut connections = 1;
        let readers = match path {
            None => None,
            Some(path) => {
                let (readers, reader_jobs) = flume::unbounded::<Job>();
                // One reader per core (two at least, four at most): reads are short, and more
                // threads than cores only add switches.
                let n = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .clamp(2, 4);
                let conns = tokio::task::spawn_blocking(move || {
                    (0..n)
                        .map(|_| open_reader(&path))
                        .collect::<StoreResult<Vec<_>>>()
                })
                .await
                .map_err(StoreError::backend)??;
                for (k, c) in conns.into_iter().enumerate() {
                    serve_reads(
                        format!("sqlite-reader-{k}"),
                        c,
                        reader_jobs.clone(),
                        busy.clone(),
                    )?;
                    connections += 1;
                }
                Some(readers)
            }
        };
        Ok(SqliteStore {
            writer,
            readers,
            client_writes: Arc::new(AtomicU64::new(0)),
            connections,
            busy,
            throttle_fails: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The connections close when the last clone of the store is dropped (their threads end
    /// with their queues); kept for callers that close explicitly.
    pub async fn close(&self) {}

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (job, answer) = job(move |c| f(c));
        match &self.readers {
            Some(readers) => readers.send(job).map_err(|_| stopped())?,
            None => self.send_write(false, job)?,
        }
        answer.await.map_err(|_| stopped())?
    }

    fn send_write(&self, alone: bool, job: Job) -> StoreResult<()> {
        self.writer
            .send(WriteJob { alone, job })
            .map_err(|_| stopped())
    }

    /// A write, committed together with the others queued beside it.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (job, answer) = job(f);
        self.send_write(false, job)?;
        answer.await.map_err(|_| stopped())?
    }

    /// A write run on its own, outside any transaction (it manages its own, or runs a pragma
    /// or a checkpoint that cannot run inside one).
    async fn write_alone<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (job, answer) = job(f);
        self.send_write(true, job)?;
        answer.await.map_err(|_| stopped())?
    }

    /// A write that changes clients: counted for this process's cache (the database's counter
    /// is bumped by triggers, migration 7).
    async fn write_client<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        // Counted before and after: a cache lookup that overlaps the write, on either side of
        // its commit, sees the count move and keeps nothing it read meanwhile.
        self.client_writes.fetch_add(1, Ordering::AcqRel);
        let out = self.write(f).await;
        self.client_writes.fetch_add(1, Ordering::AcqRel);
        out
    }
}

/// Turns SQLite's secure delete on or off for the writer: with it on, what a statement replaces
/// or deletes is overwritten with zeros instead of staying in the file's free space. Used around
/// private key changes only, since it costs extra writes.
fn secure_delete(c: &Connection, on: bool) -> rusqlite::Result<()> {
    c.pragma_update(None, "secure_delete", if on { "ON" } else { "OFF" })
}

/// Copies the WAL into the database and truncates it, so no old frame keeps a replaced private
/// key on disk. Best effort: a reader in the middle of a transaction keeps the WAL, and the next
/// key change tries again.
fn truncate_wal(c: &Connection) {
    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "could not truncate the WAL after a key change");
    }
}

/// Runs a key-material change with secure delete on, then truncates the WAL if it changed
/// anything.
fn with_secure_delete(
    c: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<usize>,
) -> StoreResult<usize> {
    secure_delete(c, true)?;
    let n = f(c);
    secure_delete(c, false)?;
    let n = n?;
    if n > 0 {
        truncate_wal(c);
    }
    Ok(n)
}

fn user_from(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get("id")?,
        username: r.get("username")?,
        email: r.get("email")?,
        email_verified: r.get::<_, i64>("email_verified")? != 0,
        name: r.get("name")?,
        password_hash: r.get("password_hash")?,
        is_admin: r.get::<_, i64>("is_admin")? != 0,
        disabled: r.get::<_, i64>("disabled")? != 0,
        created_at: u(r.get("created_at")?),
    })
}

fn client_from(r: &Row) -> rusqlite::Result<Client> {
    Ok(Client {
        client_id: r.get("client_id")?,
        name: r.get("name")?,
        secret_hash: r.get("secret_hash")?,
        redirect_uris: parse_list(&r.get::<_, String>("redirect_uris")?),
        post_logout_redirect_uris: parse_list(&r.get::<_, String>("post_logout_redirect_uris")?),
        grant_types: parse_list(&r.get::<_, String>("grant_types")?),
        scopes: parse_list(&r.get::<_, String>("scopes")?),
        tokens_valid_after: u(r.get("tokens_valid_after")?),
        created_at: u(r.get("created_at")?),
    })
}

fn code_from(r: &Row) -> rusqlite::Result<AuthCode> {
    Ok(AuthCode {
        code_hash: r.get("code_hash")?,
        client_id: r.get("client_id")?,
        user_id: r.get("user_id")?,
        redirect_uri: r.get("redirect_uri")?,
        scope: r.get("scope")?,
        nonce: r.get("nonce")?,
        code_challenge: r.get("code_challenge")?,
        auth_time: u(r.get("auth_time")?),
        created_at: u(r.get("created_at")?),
        expires_at: u(r.get("expires_at")?),
    })
}

fn family_from(r: &Row) -> rusqlite::Result<Family> {
    Ok(Family {
        id: r.get("id")?,
        client_id: r.get("client_id")?,
        user_id: r.get("user_id")?,
        scope: r.get("scope")?,
        auth_time: u(r.get("auth_time")?),
        created_at: u(r.get("f_created_at")?),
        revoked_at: r.get::<_, Option<i64>>("revoked_at")?.map(u),
    })
}

fn refresh_from(r: &Row) -> rusqlite::Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: r.get("token_hash")?,
        family_id: r.get("family_id")?,
        created_at: u(r.get("created_at")?),
        expires_at: u(r.get("expires_at")?),
        rotated_at: r.get::<_, Option<i64>>("rotated_at")?.map(u),
        ip: r.get("ip")?,
        user_agent: r.get("user_agent")?,
    })
}

fn device_from(r: &Row) -> rusqlite::Result<DeviceCode> {
    Ok(DeviceCode {
        device_code_hash: r.get("device_code_hash")?,
        user_code: r.get("user_code")?,
        client_id: r.get("client_id")?,
        scope: r.get("scope")?,
        code_challenge: r.get("code_challenge")?,
        created_at: u(r.get("created_at")?),
        expires_at: u(r.get("expires_at")?),
        interval: u(r.get("interval_secs")?),
        last_polled_at: r.get::<_, Option<i64>>("last_polled_at")?.map(u),
        status: DeviceStatus::parse(&r.get::<_, String>("status")?),
        user_id: r.get("user_id")?,
        auth_time: r.get::<_, Option<i64>>("auth_time")?.map(u),
        request_ip: r.get("request_ip")?,
        request_user_agent: r.get("request_user_agent")?,
    })
}

fn session_from(r: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id_hash: r.get("id_hash")?,
        user_id: r.get("user_id")?,
        auth_time: u(r.get("auth_time")?),
        created_at: u(r.get("created_at")?),
        expires_at: u(r.get("expires_at")?),
        ip: r.get("ip")?,
        user_agent: r.get("user_agent")?,
        last_used_at: u(r.get("last_used_at")?),
    })
}

/// Every row `sql` returns for `params`, read with `from`.
fn all<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    from: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut st = c.prepare_cached(sql)?;
    let rows = st.query_map(params, from)?;
    Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
}

/// The first row `sql` returns for `params`, if any.
fn one<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    from: impl FnOnce(&Row) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    let mut st = c.prepare_cached(sql)?;
    Ok(st.query_row(params, from).optional()?)
}

/// Runs one statement; returns how many rows it changed.
fn exec<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> StoreResult<usize> {
    let mut st = c.prepare_cached(sql)?;
    Ok(st.execute(params)?)
}

fn insert_audit(c: &Connection, e: &AuditEvent) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO audit_events (at, event, severity, actor, subject, client_id, ip, user_agent, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            i(e.at),
            e.event,
            e.severity,
            e.actor,
            e.subject,
            e.client_id,
            e.ip,
            e.user_agent,
            e.details
        ],
    )?;
    Ok(())
}

fn revoke_in(c: &Connection, family_id: &str, now: u64) -> StoreResult<()> {
    exec(
        c,
        "UPDATE token_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        params![i(now), family_id],
    )?;
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
/// transaction, in the plan's order. Returns how many live families it revoked.
fn apply_plan(
    c: &Connection,
    plan: RevocationPlan,
    user_id: &str,
    client_id: &str,
    now: u64,
) -> StoreResult<u64> {
    if plan.invalidate_client_tokens {
        exec(
            c,
            "UPDATE clients SET tokens_valid_after = ? WHERE client_id = ?",
            params![i(now), client_id],
        )?;
    }
    let mut revoked = 0;
    if let Some((cond, args)) = scope_condition(plan.revoke_families, user_id, client_id) {
        let sql =
            format!("UPDATE token_families SET revoked_at = ? WHERE {cond} AND revoked_at IS NULL");
        let mut values: Vec<Value> = vec![Value::Integer(i(now))];
        values.extend(args.into_iter().map(|a| Value::Text(a.to_string())));
        revoked = exec(c, &sql, params_from_iter(values))? as u64;
    }
    let deletes = [
        ("token_families", plan.delete_families),
        ("sessions", plan.end_sessions),
        ("consents", plan.forget_consents),
    ];
    for (table, scope) in deletes {
        if let Some((cond, args)) = scope_condition(scope, user_id, client_id) {
            exec(
                c,
                &format!("DELETE FROM {table} WHERE {cond}"),
                params_from_iter(args),
            )?;
        }
    }
    Ok(revoked)
}

/// The audit query for `f`, with only the conditions it sets, so SQLite can use the index that
/// fits (a condition written as `?1 IS NULL OR event = ?1` would hide every index from it), and
/// the values to bind.
///
/// The rows are read directly, newest first: the outer `ORDER BY id DESC` walks the sorted id
/// list backwards, no sort of its own. The filter picks ids only, so an index that holds the filtered column answers it alone (a time range: the `(at)`
/// index gives the ids of the range, which are sorted, and only the page's rows are read from
/// the table). `head` goes before the query (`EXPLAIN QUERY PLAN ` in the index test).
fn audit_query(head: &str, f: AuditFilter) -> (String, Vec<Value>) {
    let mut q = format!(
        "{head}SELECT {AUDIT_COLUMNS} \
         FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE 1 = 1"
    );
    let mut args: Vec<Value> = Vec::new();
    let equal = [
        ("event", f.event),
        ("actor", f.actor),
        ("subject", f.subject),
        ("client_id", f.client_id),
        ("ip", f.ip),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            q.push_str(&format!(" AND {column} = ?"));
            args.push(Value::Text(v));
        }
    }
    if let Some(u) = f.user {
        q.push_str(" AND (actor = ? OR subject = ?)");
        args.push(Value::Text(u.clone()));
        args.push(Value::Text(u));
    }
    if !f.event_in.is_empty() {
        q.push_str(" AND event IN (SELECT value FROM json_each(?))");
        args.push(Value::Text(json_list(&f.event_in)));
    }
    if !f.event_not_in.is_empty() {
        q.push_str(" AND event NOT IN (SELECT value FROM json_each(?))");
        args.push(Value::Text(json_list(&f.event_not_in)));
    }
    if let Some(t) = f.since {
        q.push_str(" AND at >= ?");
        args.push(Value::Integer(i(t)));
    }
    if let Some(t) = f.until {
        q.push_str(" AND at <= ?");
        args.push(Value::Integer(i(t)));
    }
    if let Some(id) = f.before_id {
        q.push_str(" AND id < ?");
        args.push(Value::Integer(id));
    }
    let limit = if f.limit == 0 { 1000 } else { f.limit };
    q.push_str(" ORDER BY id DESC LIMIT ?) ORDER BY id DESC");
    args.push(Value::Integer(i64::from(limit)));
    (q, args)
}

/// The columns of an audit event, in the order [`audit_from`] reads them.
const AUDIT_COLUMNS: &str =
    "id, at, event, severity, actor, subject, client_id, ip, user_agent, details";

fn audit_from(r: &Row) -> rusqlite::Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.get(0)?,
        at: u(r.get(1)?),
        event: r.get(2)?,
        severity: r.get(3)?,
        actor: r.get(4)?,
        subject: r.get(5)?,
        client_id: r.get(6)?,
        ip: r.get(7)?,
        user_agent: r.get(8)?,
        details: r.get(9)?,
    })
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

const FAMILY_COLS: &str =
    "f.id, f.client_id, f.user_id, f.scope, f.auth_time, f.created_at AS f_created_at, f.revoked_at";

/// The row a rotation loads: the presented token, its family and the family's user.
const ROTATION_ROW: &str = "SELECT t.token_hash, t.family_id, t.created_at, t.expires_at, t.rotated_at, t.ip, t.user_agent, t.successor_enc,
        f.id, f.client_id, f.user_id, f.scope, f.auth_time, f.created_at AS f_created_at, f.revoked_at,
        u.username AS username, u.disabled AS user_disabled
     FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id
     JOIN users u ON u.id = f.user_id WHERE t.token_hash = ?";

/// A presented refresh token as a rotation sees it.
struct Presented {
    token: RefreshToken,
    family: Family,
    successor: Option<String>,
    username: String,
    user_disabled: bool,
}

/// One rotation, inside the caller's transaction: load, ask the rule, write.
#[allow(clippy::too_many_arguments)]
fn rotate_in(
    tx: &Connection,
    old_hash: &str,
    client_id: &str,
    new_token: &RefreshToken,
    successor_enc: &str,
    now: u64,
    grace_secs: u64,
    audit: Option<AuditEvent>,
) -> StoreResult<Rotation> {
    let loaded = one(tx, ROTATION_ROW, [old_hash], |r| {
        Ok(Presented {
            token: refresh_from(r)?,
            family: family_from(r)?,
            successor: r.get("successor_enc")?,
            username: r.get("username")?,
            user_disabled: r.get::<_, i64>("user_disabled")? != 0,
        })
    })?;
    let Some(p) = loaded else {
        return Ok(Rotation::Invalid);
    };
    let rule = rules::rotation(
        &p.token,
        &p.family,
        p.successor.as_deref(),
        client_id,
        p.user_disabled,
        now,
        grace_secs,
    );
    match rule {
        RotationRule::WrongClient => Ok(Rotation::WrongClient),
        RotationRule::Invalid => Ok(Rotation::Refused(p.family)),
        RotationRule::RevokeAndRefuse => {
            revoke_in(tx, &p.family.id, now)?;
            Ok(Rotation::Refused(p.family))
        }
        RotationRule::WithinGrace(kept) => Ok(Rotation::WithinGrace(p.family, kept)),
        RotationRule::Reused => {
            revoke_in(tx, &p.family.id, now)?;
            Ok(Rotation::Reused(p.family))
        }
        RotationRule::Rotate => {
            exec(
                tx,
                "UPDATE refresh_tokens SET rotated_at = ?, successor_enc = ? WHERE token_hash = ?",
                params![i(now), successor_enc, old_hash],
            )?;
            // The new row also records this request's address and user agent: the family's last
            // use (`family_activity`) without a second write on the refresh path.
            exec(
                tx,
                "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    new_token.token_hash,
                    p.family.id,
                    i(new_token.created_at),
                    i(new_token.expires_at),
                    new_token.ip,
                    new_token.user_agent
                ],
            )?;
            if let Some(mut e) = audit {
                if e.actor.is_empty() {
                    e.actor = p.username;
                }
                insert_audit(tx, &e)?;
            }
            Ok(Rotation::Rotated(p.family))
        }
    }
}

fn set_user_access(
    c: &mut Connection,
    sql: &str,
    value: Value,
    user_id: &str,
    change: AccessChange,
    now: u64,
) -> StoreResult<()> {
    immediate(c, |tx| {
        let n = exec(tx, sql, params![value, i(now), user_id])?;
        if n == 0 {
            return Err(StoreError::NotFound("no such user".into()));
        }
        apply_plan(tx, rules::revocation_plan(change), user_id, "", now)?;
        Ok(())
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: NewUser, now: u64) -> StoreResult<User> {
        let id = crate::crypto::random_token(16);
        let out = User {
            id: id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            email_verified: true,
            name: user.name.clone(),
            password_hash: user.password_hash.clone(),
            is_admin: user.is_admin,
            disabled: false,
            created_at: now,
        };
        self.write(move |c| {
            let r = exec(
                c,
                "INSERT INTO users (id, username, email, email_verified, name, password_hash, is_admin, disabled, created_at, updated_at)
                 VALUES (?, ?, ?, 1, ?, ?, ?, 0, ?, ?)",
                params![
                    id,
                    user.username,
                    user.email,
                    user.name,
                    user.password_hash,
                    user.is_admin as i64,
                    i(now),
                    i(now)
                ],
            );
            match r {
                Err(StoreError::Backend(e))
                    if e.downcast_ref::<rusqlite::Error>().is_some_and(is_unique_violation) =>
                {
                    Err(StoreError::Conflict(format!(
                        "user {:?} already exists",
                        user.username
                    )))
                }
                other => other.map(|_| ()),
            }
        })
        .await?;
        Ok(out)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let username = username.to_string();
        self.read(move |c| {
            one(
                c,
                "SELECT * FROM users WHERE username = ?",
                [username],
                user_from,
            )
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.read(move |c| one(c, "SELECT * FROM users WHERE id = ?", [id], user_from))
            .await
    }

    async fn user_with_groups(&self, id: &str) -> StoreResult<Option<(User, Vec<String>)>> {
        let id = id.to_string();
        self.read(move |c| {
            // group_concat's separator cannot occur in a group name (names are [A-Za-z0-9._@-]).
            one(
                c,
                "SELECT u.*, (SELECT group_concat(group_name, char(10)) FROM
                     (SELECT group_name FROM group_members WHERE user_id = u.id ORDER BY group_name)) AS grps
                 FROM users u WHERE u.id = ?",
                [id],
                |r| {
                    let groups: Option<String> = r.get("grps")?;
                    let groups = groups
                        .map(|g| g.split('\n').map(str::to_string).collect())
                        .unwrap_or_default();
                    Ok((user_from(r)?, groups))
                },
            )
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read(|c| all(c, "SELECT * FROM users ORDER BY username", [], user_from))
            .await
    }

    async fn set_password(&self, user_id: &str, hash: &str, now: u64) -> StoreResult<()> {
        let (user_id, hash) = (user_id.to_string(), hash.to_string());
        self.write(move |c| {
            set_user_access(
                c,
                "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
                Value::Text(hash),
                &user_id,
                AccessChange::PasswordReset,
                now,
            )
        })
        .await
    }

    async fn set_user_disabled(&self, user_id: &str, disabled: bool, now: u64) -> StoreResult<()> {
        let user_id = user_id.to_string();
        let change = if disabled {
            AccessChange::DisableUser
        } else {
            AccessChange::EnableUser
        };
        self.write(move |c| {
            set_user_access(
                c,
                "UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?",
                Value::Integer(disabled as i64),
                &user_id,
                change,
                now,
            )
        })
        .await
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<()> {
        let user_id = user_id.to_string();
        self.write(move |c| {
            immediate(c, |tx| {
                let plan = rules::revocation_plan(AccessChange::DeleteUser);
                apply_plan(tx, plan, &user_id, "", 0)?;
                if exec(tx, "DELETE FROM users WHERE id = ?", [&user_id])? == 0 {
                    return Err(StoreError::NotFound("no such user".into()));
                }
                Ok(())
            })
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.read(|c| {
            let n: Option<i64> = one(c, "SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
            Ok(u(n.unwrap_or(0)))
        })
        .await
    }

    async fn users_page(&self, q: UserQuery) -> StoreResult<Vec<User>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        self.read(move |c| {
            all(
                c,
                "SELECT * FROM users
                 WHERE (?1 IS NULL OR username > ?1)
                   AND (?2 IS NULL OR username LIKE ?2 ESCAPE '\\' OR email LIKE ?2 ESCAPE '\\'
                        OR name LIKE ?2 ESCAPE '\\')
                 ORDER BY username LIMIT ?3",
                params![
                    q.after,
                    q.search.as_deref().map(contains_pattern),
                    i64::from(limit)
                ],
                user_from,
            )
        })
        .await
    }

    async fn update_user(
        &self,
        user_id: &str,
        email: &str,
        name: &str,
        now: u64,
    ) -> StoreResult<()> {
        let (user_id, email, name) = (user_id.to_string(), email.to_string(), name.to_string());
        self.write(move |c| {
            let n = exec(
                c,
                "UPDATE users SET email = ?, name = ?, updated_at = ? WHERE id = ?",
                params![email, name, i(now), user_id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("no such user".into()));
            }
            Ok(())
        })
        .await
    }

    async fn set_user_groups(&self, user_id: &str, groups: &[String]) -> StoreResult<()> {
        let (user_id, groups) = (user_id.to_string(), groups.to_vec());
        self.write(move |c| {
            immediate(c, |tx| {
                if one(tx, "SELECT 1 FROM users WHERE id = ?", [&user_id], |_| {
                    Ok(())
                })?
                .is_none()
                {
                    return Err(StoreError::NotFound("no such user".into()));
                }
                for g in &groups {
                    if one(tx, "SELECT 1 FROM groups WHERE name = ?", [g], |_| Ok(()))?.is_none() {
                        return Err(StoreError::NotFound(format!("no group {g:?}")));
                    }
                }
                exec(
                    tx,
                    "DELETE FROM group_members WHERE user_id = ?",
                    [&user_id],
                )?;
                for g in &groups {
                    exec(
                        tx,
                        "INSERT OR IGNORE INTO group_members (group_name, user_id) VALUES (?, ?)",
                        [g, &user_id],
                    )?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn create_group(&self, name: &str, now: u64) -> StoreResult<()> {
        let name = name.to_string();
        self.write(move |c| {
            match exec(
                c,
                "INSERT INTO groups (name, created_at) VALUES (?, ?)",
                params![name, i(now)],
            ) {
                Err(StoreError::Backend(e))
                    if e.downcast_ref::<rusqlite::Error>()
                        .is_some_and(is_unique_violation) =>
                {
                    Err(StoreError::Conflict(format!(
                        "group {name:?} already exists"
                    )))
                }
                other => other.map(|_| ()),
            }
        })
        .await
    }

    async fn list_groups(&self) -> StoreResult<Vec<Group>> {
        let rows: Vec<(String, Option<String>)> = self
            .read(|c| {
                all(
                    c,
                    "SELECT g.name AS name, u.username AS username FROM groups g
                     LEFT JOIN group_members m ON m.group_name = g.name
                     LEFT JOIN users u ON u.id = m.user_id
                     ORDER BY g.name, u.username",
                    [],
                    |r| Ok((r.get("name")?, r.get("username")?)),
                )
            })
            .await?;
        let mut out: Vec<Group> = Vec::new();
        for (name, member) in rows {
            if out.last().map(|g| g.name != name).unwrap_or(true) {
                out.push(Group {
                    name,
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
        let name = name.to_string();
        self.write(move |c| {
            if exec(c, "DELETE FROM groups WHERE name = ?", [&name])? == 0 {
                return Err(StoreError::NotFound(format!("no group {name:?}")));
            }
            Ok(())
        })
        .await
    }

    async fn add_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let (group, user_id) = (group.to_string(), user_id.to_string());
        self.write(move |c| {
            immediate(c, |tx| {
                if one(tx, "SELECT 1 FROM groups WHERE name = ?", [&group], |_| {
                    Ok(())
                })?
                .is_none()
                {
                    return Err(StoreError::NotFound(format!("no group {group:?}")));
                }
                exec(
                    tx,
                    "INSERT OR IGNORE INTO group_members (group_name, user_id) VALUES (?, ?)",
                    [&group, &user_id],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn remove_group_member(&self, group: &str, user_id: &str) -> StoreResult<()> {
        let (group, user_id) = (group.to_string(), user_id.to_string());
        self.write(move |c| {
            let n = exec(
                c,
                "DELETE FROM group_members WHERE group_name = ? AND user_id = ?",
                [&group, &user_id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(
                    "the user is not a member of that group".into(),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn groups_of_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            all(
                c,
                "SELECT group_name FROM group_members WHERE user_id = ? ORDER BY group_name",
                [user_id],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn create_client(&self, cl: Client) -> StoreResult<()> {
        self.write_client(move |c| {
            match exec(
                c,
                "INSERT INTO clients (client_id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, tokens_valid_after, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    cl.client_id,
                    cl.name,
                    cl.secret_hash,
                    json_list(&cl.redirect_uris),
                    json_list(&cl.post_logout_redirect_uris),
                    json_list(&cl.grant_types),
                    json_list(&cl.scopes),
                    i(cl.tokens_valid_after),
                    i(cl.created_at)
                ],
            ) {
                Err(StoreError::Backend(e))
                    if e.downcast_ref::<rusqlite::Error>().is_some_and(is_unique_violation) =>
                {
                    Err(StoreError::Conflict(format!(
                        "client {:?} already exists",
                        cl.client_id
                    )))
                }
                other => other.map(|_| ()),
            }
        })
        .await
    }

    async fn client(&self, client_id: &str) -> StoreResult<Option<Client>> {
        let client_id = client_id.to_string();
        self.read(move |c| {
            one(
                c,
                "SELECT * FROM clients WHERE client_id = ?",
                [client_id],
                client_from,
            )
        })
        .await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read(|c| {
            all(
                c,
                "SELECT * FROM clients ORDER BY client_id",
                [],
                client_from,
            )
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<()> {
        let client_id = client_id.to_string();
        self.write_client(move |c| {
            immediate(c, |tx| {
                exec(
                    tx,
                    "DELETE FROM token_families WHERE client_id = ?",
                    [&client_id],
                )?;
                if exec(tx, "DELETE FROM clients WHERE client_id = ?", [&client_id])? == 0 {
                    return Err(StoreError::NotFound(format!("no client {client_id:?}")));
                }
                Ok(())
            })
        })
        .await
    }

    async fn set_client_secret_hash(&self, client_id: &str, hash: &str) -> StoreResult<()> {
        let (client_id, hash) = (client_id.to_string(), hash.to_string());
        self.write_client(move |c| {
            let n = exec(
                c,
                "UPDATE clients SET secret_hash = ? WHERE client_id = ? AND secret_hash IS NOT NULL",
                [&hash, &client_id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "no confidential client {client_id:?}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn revoke_all_for_client(&self, client_id: &str, now: u64) -> StoreResult<u64> {
        let client_id = client_id.to_string();
        self.write_client(move |c| {
            immediate(c, |tx| {
                let known = one(
                    tx,
                    "SELECT 1 FROM clients WHERE client_id = ?",
                    [&client_id],
                    |_| Ok(()),
                )?;
                if known.is_none() {
                    return Err(StoreError::NotFound(format!("no client {client_id:?}")));
                }
                let plan = rules::revocation_plan(AccessChange::ClientRevokeAll);
                apply_plan(tx, plan, "", &client_id, now)
            })
        })
        .await
    }

    async fn count_live_families(&self, client_id: Option<&str>, now: u64) -> StoreResult<u64> {
        let client_id = client_id.map(str::to_string);
        self.read(move |c| {
            let n: Option<i64> = one(
                c,
                &format!(
                    "SELECT COUNT(*) FROM token_families f WHERE (?2 IS NULL OR f.client_id = ?2) AND {LIVE_FAMILY}"
                ),
                params![i(now), client_id],
                |r| r.get(0),
            )?;
            Ok(u(n.unwrap_or(0)))
        })
        .await
    }

    async fn clients_version(&self) -> StoreResult<u64> {
        self.read(|c| {
            let v: Option<i64> = one(
                c,
                "SELECT version FROM store_versions WHERE name = 'clients'",
                [],
                |r| r.get(0),
            )?;
            Ok(u(v.unwrap_or(0)))
        })
        .await
    }

    fn local_client_writes(&self) -> u64 {
        self.client_writes.load(Ordering::Acquire)
    }

    async fn consents_of_user(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            all(
                c,
                "SELECT client_id, scopes, granted_at FROM consents WHERE user_id = ? ORDER BY client_id",
                [user_id],
                |r| {
                    Ok(Consent {
                        client_id: r.get("client_id")?,
                        scopes: parse_list(&r.get::<_, String>("scopes")?),
                        granted_at: u(r.get("granted_at")?),
                    })
                },
            )
        })
        .await
    }

    async fn revoke_authorization(
        &self,
        user_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<u64> {
        let (user_id, client_id) = (user_id.to_string(), client_id.to_string());
        self.write(move |c| {
            immediate(c, |tx| {
                let plan = rules::revocation_plan(AccessChange::RevokeAuthorization);
                apply_plan(tx, plan, &user_id, &client_id, now)
            })
        })
        .await
    }

    async fn consented_scopes(&self, user_id: &str, client_id: &str) -> StoreResult<Vec<String>> {
        let (user_id, client_id) = (user_id.to_string(), client_id.to_string());
        self.read(move |c| {
            let s: Option<String> = one(
                c,
                "SELECT scopes FROM consents WHERE user_id = ? AND client_id = ?",
                [user_id, client_id],
                |r| r.get(0),
            )?;
            Ok(s.map(|s| parse_list(&s)).unwrap_or_default())
        })
        .await
    }

    async fn save_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scopes: &[String],
        now: u64,
    ) -> StoreResult<()> {
        let (user_id, client_id, scopes) = (
            user_id.to_string(),
            client_id.to_string(),
            json_list(scopes),
        );
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO consents (user_id, client_id, scopes, granted_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
                params![user_id, client_id, scopes, i(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_auth_code(&self, code: AuthCode) -> StoreResult<()> {
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    code.code_hash,
                    code.client_id,
                    code.user_id,
                    code.redirect_uri,
                    code.scope,
                    code.nonce,
                    code.code_challenge,
                    i(code.auth_time),
                    i(code.created_at),
                    i(code.expires_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn redeem_auth_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeRedemption> {
        let code_hash = code_hash.to_string();
        self.write(move |c| {
            immediate(c, |tx| {
                let stored = one(
                    tx,
                    "SELECT * FROM auth_codes WHERE code_hash = ?",
                    [&code_hash],
                    |r| {
                        Ok(rules::StoredCode {
                            code: code_from(r)?,
                            used_at: r.get::<_, Option<i64>>("used_at")?.map(u),
                            family_id: r.get("family_id")?,
                        })
                    },
                )?;
                match rules::redemption(stored.as_ref(), now) {
                    RedemptionRule::NotFound | RedemptionRule::Expired => {
                        Ok(CodeRedemption::NotFound)
                    }
                    RedemptionRule::Replayed { revoke_family } => {
                        if let Some(f) = revoke_family {
                            revoke_in(tx, &f, now)?;
                        }
                        Ok(CodeRedemption::Replayed)
                    }
                    RedemptionRule::Redeem => {
                        exec(
                            tx,
                            "UPDATE auth_codes SET used_at = ? WHERE code_hash = ?",
                            params![i(now), code_hash],
                        )?;
                        Ok(stored
                            .map(|s| CodeRedemption::Fresh(s.code))
                            .unwrap_or(CodeRedemption::NotFound))
                    }
                }
            })
        })
        .await
    }

    async fn link_code_family(&self, code_hash: &str, family_id: &str) -> StoreResult<()> {
        let (code_hash, family_id) = (code_hash.to_string(), family_id.to_string());
        self.write(move |c| {
            exec(
                c,
                "UPDATE auth_codes SET family_id = ? WHERE code_hash = ?",
                [family_id, code_hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_family(&self, f: Family, first: RefreshToken) -> StoreResult<()> {
        self.write(move |c| {
            immediate(c, |tx| {
                exec(
                    tx,
                    "INSERT INTO token_families (id, client_id, user_id, scope, auth_time, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    params![f.id, f.client_id, f.user_id, f.scope, i(f.auth_time), i(f.created_at)],
                )?;
                exec(
                    tx,
                    "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?)",
                    params![
                        first.token_hash,
                        f.id,
                        i(first.created_at),
                        i(first.expires_at),
                        first.ip,
                        first.user_agent
                    ],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn family(&self, family_id: &str) -> StoreResult<Option<Family>> {
        let family_id = family_id.to_string();
        self.read(move |c| {
            one(
                c,
                &format!("SELECT {FAMILY_COLS} FROM token_families f WHERE f.id = ?"),
                [family_id],
                family_from,
            )
        })
        .await
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
        let (old_hash, client_id, successor_enc) = (
            old_hash.to_string(),
            client_id.to_string(),
            successor_enc.to_string(),
        );
        self.write(move |c| {
            immediate(c, |tx| {
                rotate_in(
                    tx,
                    &old_hash,
                    &client_id,
                    &new_token,
                    &successor_enc,
                    now,
                    grace_secs,
                    audit,
                )
            })
        })
        .await
    }

    async fn refresh_token(&self, token_hash: &str) -> StoreResult<Option<(RefreshToken, Family)>> {
        let token_hash = token_hash.to_string();
        self.read(move |c| {
            one(
                c,
                &format!(
                    "SELECT t.token_hash, t.family_id, t.created_at, t.expires_at, t.rotated_at, t.ip, t.user_agent, {FAMILY_COLS}
                     FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = ?"
                ),
                [token_hash],
                |r| Ok((refresh_from(r)?, family_from(r)?)),
            )
        })
        .await
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> StoreResult<()> {
        let family_id = family_id.to_string();
        self.write(move |c| revoke_in(c, &family_id, now)).await
    }

    async fn families_of_user(&self, user_id: &str) -> StoreResult<Vec<Family>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {FAMILY_COLS} FROM token_families f WHERE f.user_id = ? ORDER BY f.created_at DESC"
                ),
                [user_id],
                family_from,
            )
        })
        .await
    }

    async fn live_families(&self, q: FamilyQuery, now: u64) -> StoreResult<Vec<Family>> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {FAMILY_COLS} FROM token_families f
                     WHERE (?2 IS NULL OR f.user_id = ?2) AND (?3 IS NULL OR f.client_id = ?3)
                       AND {LIVE_FAMILY}
                     ORDER BY f.created_at DESC, f.id LIMIT ?4"
                ),
                params![i(now), q.user_id, q.client_id, i64::from(limit)],
                family_from,
            )
        })
        .await
    }

    async fn family_activity(&self, user_id: &str, now: u64) -> StoreResult<Vec<FamilyActivity>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            // A live family has one current token (rotation marks the old one before inserting
            // the next); the newest is taken should there ever be more.
            all(
                c,
                &format!(
                    "SELECT f.id, t.created_at, t.ip, t.user_agent FROM token_families f
                     JOIN refresh_tokens t ON t.token_hash = (SELECT c.token_hash FROM refresh_tokens c
                          WHERE c.family_id = f.id AND c.rotated_at IS NULL ORDER BY c.created_at DESC LIMIT 1)
                     WHERE f.user_id = ?2 AND {LIVE_FAMILY}
                     ORDER BY f.created_at DESC, f.id LIMIT 1000"
                ),
                params![i(now), user_id],
                |r| {
                    Ok(FamilyActivity {
                        family_id: r.get("id")?,
                        last_used_at: u(r.get("created_at")?),
                        ip: r.get("ip")?,
                        user_agent: r.get("user_agent")?,
                    })
                },
            )
        })
        .await
    }

    async fn revoke_jti(&self, jti: &str, expires_at: u64) -> StoreResult<()> {
        let jti = jti.to_string();
        self.write(move |c| {
            exec(
                c,
                "INSERT OR IGNORE INTO revoked_jtis (jti, expires_at) VALUES (?, ?)",
                params![jti, i(expires_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        let jti = jti.to_string();
        self.read(move |c| {
            Ok(
                one(c, "SELECT 1 FROM revoked_jtis WHERE jti = ?", [jti], |_| {
                    Ok(())
                })?
                .is_some(),
            )
        })
        .await
    }

    async fn insert_device_code(&self, d: DeviceCode) -> StoreResult<()> {
        self.write(move |c| {
            match exec(
                c,
                "INSERT INTO device_codes (device_code_hash, user_code, client_id, scope, code_challenge, created_at, expires_at, interval_secs, last_polled_at, status, user_id, auth_time, request_ip, request_user_agent)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'pending', NULL, NULL, ?, ?)",
                params![
                    d.device_code_hash,
                    d.user_code,
                    d.client_id,
                    d.scope,
                    d.code_challenge,
                    i(d.created_at),
                    i(d.expires_at),
                    i(d.interval),
                    d.request_ip,
                    d.request_user_agent
                ],
            ) {
                Err(StoreError::Backend(e))
                    if e.downcast_ref::<rusqlite::Error>().is_some_and(is_unique_violation) =>
                {
                    Err(StoreError::Conflict("user code collision".into()))
                }
                other => other.map(|_| ()),
            }
        })
        .await
    }

    async fn device_by_user_code(&self, user_code: &str) -> StoreResult<Option<DeviceCode>> {
        let user_code = user_code.to_string();
        self.read(move |c| {
            one(
                c,
                "SELECT * FROM device_codes WHERE user_code = ?",
                [user_code],
                device_from,
            )
        })
        .await
    }

    async fn device_by_hash_client(&self, hash: &str) -> StoreResult<Option<String>> {
        let hash = hash.to_string();
        self.read(move |c| {
            one(
                c,
                "SELECT client_id FROM device_codes WHERE device_code_hash = ?",
                [hash],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn decide_device(
        &self,
        user_code: &str,
        approve: bool,
        user_id: &str,
        auth_time: u64,
        now: u64,
    ) -> StoreResult<bool> {
        let (user_code, user_id) = (user_code.to_string(), user_id.to_string());
        let status = if approve {
            DeviceStatus::Approved
        } else {
            DeviceStatus::Denied
        };
        self.write(move |c| {
            let n = exec(
                c,
                "UPDATE device_codes SET status = ?, user_id = ?, auth_time = ?
                 WHERE user_code = ? AND status = 'pending' AND expires_at > ?",
                params![status.as_str(), user_id, i(auth_time), user_code, i(now)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn poll_device(&self, hash: &str, now: u64) -> StoreResult<DevicePoll> {
        let hash = hash.to_string();
        self.write(move |c| {
            immediate(c, |tx| {
                let code = one(
                    tx,
                    "SELECT * FROM device_codes WHERE device_code_hash = ?",
                    [&hash],
                    device_from,
                )?;
                let (outcome, update) = rules::device_poll(code.as_ref(), now);
                if let Some(w) = update {
                    exec(
                        tx,
                        "UPDATE device_codes SET last_polled_at = ?, interval_secs = ?, status = ? WHERE device_code_hash = ?",
                        params![i(w.last_polled_at), i(w.interval), w.status.as_str(), hash],
                    )?;
                }
                Ok(outcome)
            })
        })
        .await
    }

    async fn create_session(&self, s: Session) -> StoreResult<()> {
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO sessions (id_hash, user_id, auth_time, created_at, expires_at, ip, user_agent, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    s.id_hash,
                    s.user_id,
                    i(s.auth_time),
                    i(s.created_at),
                    i(s.expires_at),
                    s.ip,
                    s.user_agent,
                    i(s.last_used_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: u64) -> StoreResult<Option<Session>> {
        let id_hash = id_hash.to_string();
        self.read(move |c| {
            one(
                c,
                "SELECT * FROM sessions WHERE id_hash = ? AND expires_at > ?",
                params![id_hash, i(now)],
                session_from,
            )
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            exec(c, "DELETE FROM sessions WHERE id_hash = ?", [id_hash])?;
            Ok(())
        })
        .await
    }

    async fn sessions_of_user(&self, user_id: &str, now: u64) -> StoreResult<Vec<Session>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            all(
                c,
                "SELECT * FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at DESC, id_hash",
                params![user_id, i(now)],
                session_from,
            )
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        // Reads the schema page, so an unreadable file fails; `SELECT 1` alone reads nothing.
        self.read(|c| {
            let _: Option<i64> = one(c, "SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
            Ok(())
        })
        .await
    }

    fn pool_usage(&self) -> Option<(u64, u64)> {
        let busy = self.busy.load(Ordering::Relaxed).min(self.connections);
        Some((self.connections - busy, busy))
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

    async fn count_live_sessions(&self, now: u64) -> StoreResult<u64> {
        self.read(move |c| {
            let n: Option<i64> = one(
                c,
                "SELECT COUNT(*) FROM sessions WHERE expires_at > ?",
                [i(now)],
                |r| r.get(0),
            )?;
            Ok(u(n.unwrap_or(0)))
        })
        .await
    }

    async fn reauthenticate_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            exec(
                c,
                "UPDATE sessions SET last_used_at = ?1, auth_time = ?1 WHERE id_hash = ?2",
                params![i(now), id_hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_user_session(&self, user_id: &str, id_hash: &str) -> StoreResult<bool> {
        let (user_id, id_hash) = (user_id.to_string(), id_hash.to_string());
        self.write(move |c| {
            let n = exec(
                c,
                "DELETE FROM sessions WHERE id_hash = ? AND user_id = ?",
                [id_hash, user_id],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn touch_session(&self, id_hash: &str, now: u64) -> StoreResult<()> {
        let id_hash = id_hash.to_string();
        self.write(move |c| {
            exec(
                c,
                "UPDATE sessions SET last_used_at = ?2 WHERE id_hash = ?1 AND last_used_at + ?3 <= ?2",
                params![id_hash, i(now), i(SESSION_TOUCH_SECS)],
            )?;
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read(|c| {
            all(
                c,
                "SELECT * FROM signing_keys ORDER BY created_at DESC, kid",
                [],
                |r| {
                    Ok(StoredKey {
                        kid: r.get("kid")?,
                        alg: r.get("alg")?,
                        private_pem: r.get("private_pem")?,
                        created_at: u(r.get("created_at")?),
                        retired_at: r.get::<_, Option<i64>>("retired_at")?.map(u),
                    })
                },
            )
        })
        .await
    }

    async fn activate_key(&self, key: StoredKey, now: u64) -> StoreResult<()> {
        self.write(move |c| {
            immediate(c, |tx| {
                exec(
                    tx,
                    "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL",
                    [i(now)],
                )?;
                exec(
                    tx,
                    "INSERT INTO signing_keys (kid, alg, private_pem, created_at, retired_at) VALUES (?, ?, ?, ?, NULL)
                     ON CONFLICT (kid) DO UPDATE SET retired_at = NULL, created_at = excluded.created_at",
                    params![key.kid, key.alg, key.private_pem, i(key.created_at)],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn replace_key_material(&self, kid: &str, old: &str, new: &str) -> StoreResult<bool> {
        let (kid, old, new) = (kid.to_string(), old.to_string(), new.to_string());
        self.write_alone(move |c| {
            let n = with_secure_delete(c, |c| {
                exec(
                    c,
                    "UPDATE signing_keys SET private_pem = ? WHERE kid = ? AND private_pem = ?",
                    [&new, &kid, &old],
                )
            })?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_retired_keys(&self, retired_at_or_before: u64) -> StoreResult<u64> {
        self.write_alone(move |c| {
            let n = with_secure_delete(c, |c| {
                exec(
                    c,
                    "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at <= ?",
                    [i(retired_at_or_before)],
                )
            })?;
            Ok(n as u64)
        })
        .await
    }

    async fn record_audit(&self, e: AuditEvent) -> StoreResult<()> {
        self.write(move |c| insert_audit(c, &e)).await
    }

    async fn record_audit_aggregated(&self, e: AuditEvent, since: u64) -> StoreResult<()> {
        self.write(move |c| {
            immediate(c, |tx| {
                let updated = exec(
                    tx,
                    "UPDATE audit_events SET details = ?1 WHERE id = (
                         SELECT id FROM audit_events WHERE event = ?2 AND subject = ?3
                         ORDER BY id DESC LIMIT 1) AND at >= ?4",
                    params![e.details, e.event, e.subject, i(since)],
                )?;
                if updated == 0 {
                    insert_audit(tx, &e)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn audit_events(&self, f: AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let (sql, args) = audit_query("", f);
        self.read(move |c| all(c, &sql, params_from_iter(args), audit_from))
            .await
    }

    async fn server_secret(&self, name: &str, candidate: &str, now: u64) -> StoreResult<String> {
        let (name, candidate) = (name.to_string(), candidate.to_string());
        // Both statements on the writer, so the read sees the row whoever inserted it.
        self.write(move |c| {
            exec(
                c,
                "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                params![name, candidate, i(now)],
            )?;
            one(
                c,
                "SELECT value FROM server_secrets WHERE name = ?",
                [&name],
                |r| r.get(0),
            )?
            .ok_or_else(|| StoreError::NotFound(format!("no server secret {name:?}")))
        })
        .await
    }

    async fn purge_expired(&self, now: u64, audit_before: u64) -> StoreResult<u64> {
        // One statement per hand-off, each its own transaction, so a large purge does not hold
        // the writer for all of its work at once.
        let mut n = 0;
        // Used codes are kept until they expire so a replay can still be detected.
        for sql in [
            "DELETE FROM auth_codes WHERE expires_at <= ?",
            "DELETE FROM device_codes WHERE expires_at <= ?",
            "DELETE FROM sessions WHERE expires_at <= ?",
            "DELETE FROM revoked_jtis WHERE expires_at <= ?",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
        ] {
            n += self.write(move |c| exec(c, sql, [i(now)])).await? as u64;
        }
        let kept_until = i(now.saturating_sub(MAX_REUSE_GRACE_SECS));
        n += self
            .write(move |c| {
                exec(
                    c,
                    "UPDATE refresh_tokens SET successor_enc = NULL WHERE successor_enc IS NOT NULL AND rotated_at <= ?",
                    [kept_until],
                )
            })
            .await? as u64;
        n += self
            .write(|c| {
                exec(
                    c,
                    "DELETE FROM token_families WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = token_families.id)",
                    [],
                )
            })
            .await? as u64;
        n += self
            .write(move |c| {
                exec(
                    c,
                    "DELETE FROM audit_events WHERE at < ?",
                    [i(audit_before)],
                )
            })
            .await? as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection with one table `t(v TEXT UNIQUE)`, and a job inserting `v` then `w`.
    fn table() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v TEXT UNIQUE)").unwrap();
        c
    }

    fn insert(
        v: &'static str,
        w: Option<&'static str>,
    ) -> (Job, tokio::sync::oneshot::Receiver<StoreResult<()>>) {
        job(move |c| {
            exec(c, "INSERT INTO t (v) VALUES (?)", [v])?;
            if let Some(w) = w {
                exec(c, "INSERT INTO t (v) VALUES (?)", [w])?;
            }
            Ok(())
        })
    }

    fn rows(c: &Connection) -> Vec<String> {
        all(c, "SELECT v FROM t ORDER BY v", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_failing_operation_in_a_group_commit_undoes_only_its_own_changes() {
        let mut c = table();
        let (a, a_answer) = insert("a", None);
        // Inserts "b", then fails on the duplicate "a": "b" must go too.
        let (b, b_answer) = insert("b", Some("a"));
        let (d, d_answer) = insert("d", None);
        commit_together(&mut c, vec![a, b, d]);
        assert!(a_answer.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            b_answer.blocking_recv().unwrap(),
            Err(StoreError::Backend(_))
        ));
        assert!(d_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(rows(&c), ["a", "d"]);
        assert!(c.is_autocommit(), "the batch's transaction is closed");
    }

    #[test]
    fn a_group_commit_answers_nobody_before_its_commit() {
        let mut c = table();
        let (a, mut a_answer) = insert("a", None);
        // The second operation looks at the first one's answer while the batch is open.
        let (seen, seen_answer) = job(move |_c| Ok(a_answer.try_recv().is_err()));
        commit_together(&mut c, vec![a, seen]);
        assert!(
            seen_answer.blocking_recv().unwrap().unwrap(),
            "the first answer was held back until the commit"
        );
        assert_eq!(rows(&c), ["a"]);
    }

    #[test]
    fn a_failed_commit_is_every_operations_answer() {
        let mut c = table();
        // A deferred foreign key fails at COMMIT, after every operation succeeded.
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE k (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        let (a, a_answer) = insert("a", None);
        let (dangling, dangling_answer) =
            job(|c| exec(c, "INSERT INTO k (p) VALUES (42)", []).map(|_| ()));
        commit_together(&mut c, vec![a, dangling]);
        assert!(a_answer.blocking_recv().unwrap().is_err());
        assert!(dangling_answer.blocking_recv().unwrap().is_err());
        assert!(rows(&c).is_empty(), "nothing of the batch was kept");
        assert!(c.is_autocommit());
    }

    /// The plan SQLite picks for the audit query of `f`, one line per step.
    async fn plan(store: &SqliteStore, f: AuditFilter) -> String {
        let (sql, args) = audit_query("EXPLAIN QUERY PLAN ", f);
        let rows: Vec<String> = store
            .read(move |c| all(c, &sql, params_from_iter(args), |r| r.get("detail")))
            .await
            .unwrap();
        rows.join("\n")
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

    /// An in-memory database works (its reads go to the writer: another connection would open
    /// another database).
    #[tokio::test]
    async fn an_in_memory_database_reads_its_own_writes() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.create_group("ops", 1).await.unwrap();
        assert_eq!(store.list_groups().await.unwrap()[0].name, "ops");
    }
}
