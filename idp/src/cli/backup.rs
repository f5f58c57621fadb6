//! `backup --out FILE` and `restore --from FILE` for a SQLite database, with SQLite's online
//! backup API (sqlite3_backup_*, through rusqlite; sqlx does not expose it).
//!
//! - A backup copies every page in one step, inside one read transaction: a consistent snapshot
//!   of a database a server keeps writing to (in WAL mode a reader does not block the writer,
//!   and the writer does not disturb the reader's snapshot). Stepping a few pages at a time
//!   would restart whenever the server writes, which under load may be forever.
//! - The copy is written to a temporary file (mode 0600) beside FILE, checked, synced, then
//!   renamed over FILE: a crash leaves the old FILE or the new one, never half a backup.
//! - A restore needs the server stopped: it takes the database's lock file exclusively
//!   (`serve` holds it shared, `server::lock_database`), checks that FILE is a kubelogin-idp
//!   database of a schema version this binary knows, and copies it in through the same API, so
//!   the target's WAL and shared-memory files stay consistent with it.
//!
//! PostgreSQL has its own tools (`pg_dump`, `pg_restore`); these commands say so.

use crate::server::DataArgs;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long each command waits for a lock SQLite itself holds (a writer mid-transaction).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tables every kubelogin-idp database has, since the first schema version.
const REQUIRED_TABLES: [&str; 5] = [
    "users",
    "clients",
    "token_families",
    "refresh_tokens",
    "signing_keys",
];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Sqlite {
        what: String,
        source: rusqlite::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Idp(#[from] crate::error::IdpError),
}

fn sqlite(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Sqlite { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// The SQLite database file the configuration names; PostgreSQL and in-memory databases are
/// refused with what to use instead.
fn database_file(data: &DataArgs, command: &str) -> Result<PathBuf, BackupError> {
    let url = data.url();
    if url.starts_with("postgres") {
        let tool = if command == "backup" {
            "pg_dump"
        } else {
            "pg_restore (or psql for a plain dump)"
        };
        return Err(BackupError::Refused(format!(
            "{command} works on a SQLite database; for PostgreSQL use {tool} (see the README's Operations section)"
        )));
    }
    match crate::server::sqlite_database_file(&url)? {
        Some(file) => Ok(file),
        None => Err(BackupError::Refused(format!(
            "DATABASE_URL names an in-memory database; there is nothing to {command}"
        ))),
    }
}

/// Copies every page of `src` to `dst` in one step (one read transaction on `src`).
fn copy_all(src: &Connection, dst: &mut Connection, what: &str) -> Result<(), BackupError> {
    let backup = Backup::new(src, dst).map_err(sqlite(what))?;
    match backup.step(-1).map_err(sqlite(what))? {
        StepResult::Done => Ok(()),
        StepResult::Busy | StepResult::Locked => Err(BackupError::Refused(format!(
            "{what}: the database stayed locked for longer than {}s",
            BUSY_TIMEOUT.as_secs()
        ))),
        _ => Err(BackupError::Refused(format!(
            "{what}: SQLite did not finish the copy in one step"
        ))),
    }
}

/// What `check_database` found.
struct Checked {
    schema_version: i64,
}

/// Refuses a file that is not a sound kubelogin-idp database this binary can open.
fn check_database(conn: &Connection, name: &Path) -> Result<Checked, BackupError> {
    let what = format!("reading {}", name.display());
    let not_ours = || {
        BackupError::Refused(format!(
            "{} is not a kubelogin-idp database",
            name.display()
        ))
    };
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_ours()
            }
            e => sqlite(what.clone())(e),
        })?;
    if check != "ok" {
        return Err(BackupError::Refused(format!(
            "{} is damaged (SQLite quick_check: {})",
            name.display(),
            check.chars().take(200).collect::<String>()
        )));
    }
    let mut present = 0;
    for table in REQUIRED_TABLES {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(sqlite(what.clone()))?;
        present += n;
    }
    if present != REQUIRED_TABLES.len() as i64 {
        return Err(not_ours());
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite(what))?;
    let known = crate::store::SQLITE_SCHEMA_VERSION;
    if version < 1 || version > known {
        return Err(BackupError::Refused(format!(
            "{} has schema version {version}; this kubelogin-idp knows versions 1 to {known}",
            name.display()
        )));
    }
    Ok(Checked {
        schema_version: version,
    })
}

/// `kubelogin-idp backup --out FILE [--force]`.
pub fn backup(
    data: &DataArgs,
    out_file: &Path,
    force: bool,
    out: &mut impl Write,
) -> Result<(), BackupError> {
    let db = database_file(data, "backup")?;
    if !db.exists() {
        return Err(BackupError::Refused(format!(
            "there is no database at {}",
            db.display()
        )));
    }
    if out_file.exists() && !force {
        return Err(BackupError::Refused(format!(
            "{} exists; choose another file or pass --force to replace it",
            out_file.display()
        )));
    }
    // Read-write without create: a WAL database's reader needs its shared-memory file, and a
    // missing database must not be created empty.
    let src = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(format!("opening {}", db.display())))?;
    src.busy_timeout(BUSY_TIMEOUT)
        .map_err(sqlite("setting the busy timeout"))?;
    let dir = match out_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // tempfile creates the file with mode 0600.
    let tmp = tempfile::Builder::new()
        .prefix(".kubelogin-idp-backup-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    let checked = {
        let mut dst = Connection::open(tmp.path())
            .map_err(sqlite(format!("opening {}", tmp.path().display())))?;
        copy_all(&src, &mut dst, &format!("copying {}", db.display()))?;
        let checked = check_database(&dst, &db)?;
        dst.close()
            .map_err(|(_, e)| sqlite("closing the copy")(e))?;
        checked
    };
    tmp.as_file()
        .sync_all()
        .map_err(io(format!("syncing {}", tmp.path().display())))?;
    let persisted = if force {
        tmp.persist(out_file).map_err(|e| e.error)
    } else {
        // Not over a file that appeared meanwhile.
        tmp.persist_noclobber(out_file).map_err(|e| e.error)
    };
    persisted.map_err(io(format!("writing {}", out_file.display())))?;
    sync_dir(&dir);
    writeln!(
        out,
        "backup of {} written to {} (schema version {})",
        db.display(),
        out_file.display(),
        checked.schema_version
    )
    .map_err(io("writing to stdout"))?;
    Ok(())
}

/// Makes a rename in `dir` durable; best effort (not every filesystem can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `kubelogin-idp restore --from FILE [--force]`.
pub fn restore(
    data: &DataArgs,
    from: &Path,
    force: bool,
    out: &mut impl Write,
) -> Result<(), BackupError> {
    let db = database_file(data, "restore")?;
    if !from.is_file() {
        return Err(BackupError::Refused(format!(
            "{} is not a file",
            from.display()
        )));
    }
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(format!("opening {}", from.display())))?;
    let checked = check_database(&src, from)?;
    // Held until the restore is done: a server cannot start meanwhile, and none is running.
    let _lock = crate::server::lock_database(data, true)?;
    if db.exists() && !force {
        return Err(BackupError::Refused(format!(
            "a database exists at {}; pass --force to replace it with {}",
            db.display(),
            from.display()
        )));
    }
    // Created 0600 (in a 0700 directory) before SQLite creates it with the umask's mode.
    crate::server::prepare_private_file(&db)?;
    let mut dst = Connection::open(&db).map_err(sqlite(format!("opening {}", db.display())))?;
    dst.busy_timeout(Duration::ZERO)
        .map_err(sqlite("setting the busy timeout"))?;
    copy_all(&src, &mut dst, &format!("restoring into {}", db.display())).map_err(|e| match e {
        BackupError::Sqlite { source, .. }
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            BackupError::Refused(format!(
                "{} is in use by another process; stop it before restoring",
                db.display()
            ))
        }
        e => e,
    })?;
    check_database(&dst, &db)?;
    dst.close()
        .map_err(|(_, e)| sqlite("closing the database")(e))?;
    writeln!(
        out,
        "restored {} from {} (schema version {}); start the server",
        db.display(),
        from.display(),
        checked.schema_version
    )
    .map_err(io("writing to stdout"))?;
    Ok(())
}
