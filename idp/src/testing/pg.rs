//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `pg_ctl start`
//! listening on a Unix socket in that directory only (no TCP port, so nothing to collide with),
//! trust authentication, and no fsync (a test database need not survive a power cut). Each test
//! gets its own database on it ([`PgCluster::database`]).
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then the server runs as
//! `nobody` (through `runuser`), with the temporary directory handed to it.
//!
//! A missing PostgreSQL is an error naming the Debian package that provides it: a test that
//! needs it fails loudly, it never skips.
//!
//! The server stops when the [`PgCluster`] is dropped, and also when the process that started
//! it exits without dropping it (the shared cluster lives in a `static`, which is never
//! dropped): a small reaper shell started next to the server waits for end of file on a pipe
//! only this process holds, then stops the server and removes the directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The command that installs what this module needs, quoted in its errors.
pub const INSTALL: &str = "apt-get install -y postgresql";

/// A running throwaway PostgreSQL server (see the module documentation).
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Holds the reaper's stdin open; closing it stops the server.
    reaper: Option<Child>,
    next_db: AtomicU64,
}

/// Where Debian's PostgreSQL programs are: not on PATH, but in /usr/lib/postgresql/<version>/bin
/// (the newest version wins); PATH is tried first, and `PG_BIN` overrides both.
pub fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
        return Err(format!(
            "PG_BIN={} holds no initdb and pg_ctl",
            dir.display()
        ));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
    }
    Err(format!(
        "PostgreSQL's initdb and pg_ctl were not found (in /usr/lib/postgresql/*/bin or on PATH); install them with: {INSTALL}"
    ))
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// A command running a PostgreSQL program as the user that owns the cluster.
fn pg_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl PgCluster {
    /// Creates and starts a new cluster; stopped and removed on drop.
    pub fn start() -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("kubelogin-pg-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        if is_root() {
            // `nobody` must own the directory: the data directory, the socket and the log go in.
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("nobody:").arg(dir.path());
                    c
                },
                "chown of the cluster directory",
            )?;
        }
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .env("LC_ALL", "C");
        run(initdb, "initdb")?;
        let options = format!(
            "-c listen_addresses= -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            dir.path().display()
        );
        let mut start = pg_command(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "-o", &options, "start"]);
        run(start, "pg_ctl start")
            .map_err(|e| format!("{e}\nserver log:\n{}", log_of(dir.path())))?;
        // The reaper: waits for this process to close (or drop) the pipe, then stops the server
        // at once and removes the directory.
        let stop = if is_root() {
            "runuser -u nobody -- \"$1/pg_ctl\" -D \"$2/data\" -m immediate -w stop"
        } else {
            "\"$1/pg_ctl\" -D \"$2/data\" -m immediate -w stop"
        };
        let script = format!("cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf \"$2\"");
        let reaper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("pg-reaper")
            .arg(&bin)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster's reaper: {e}"))?;
        Ok(PgCluster {
            dir,
            bin,
            reaper: Some(reaper),
            next_db: AtomicU64::new(0),
        })
    }

    /// One cluster for the whole process, started on first use; stopped when the process exits.
    /// Panics (this is test support) with the install command when PostgreSQL is missing.
    #[allow(clippy::panic)]
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(PgCluster::start) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a throwaway PostgreSQL: {e}"),
        }
    }

    /// The cluster's data directory (its `postmaster.pid` names the server process).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}",
            self.socket_dir().display()
        )
    }

    /// Creates a new empty database and returns its URL.
    pub async fn database(&self) -> Result<String, String> {
        use sqlx::Connection as _;
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(|e| format!("connecting to the throwaway PostgreSQL: {e}"))?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = admin.close().await;
        Ok(self.url(&name))
    }

    /// The server's log so far (for a failing test's report).
    pub fn log(&self) -> String {
        log_of(self.dir.path())
    }

    /// The directory of the PostgreSQL programs this cluster runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            // Closing the pipe is the signal; wait so the server is gone before the directory.
            if let Some(mut stdin) = reaper.stdin.take() {
                let _ = stdin.flush();
            }
            let _ = reaper.wait();
        }
    }
}
