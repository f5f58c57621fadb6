//! `idp-bench`: a reproducible load benchmark of a release `kubelogin-idp` on 127.0.0.1.
//!
//! It measures, against a fresh data directory (or `--database-url`):
//! 1. start-up: time from spawn to the first successful discovery answer, on an empty data
//!    directory (first boot: schema, admin password hash, signing key generation) and again on
//!    the same directory (warm start);
//! 2. grant throughput (`grants.rs`): `--rounds` rounds of `--seconds` seconds, `--concurrency`
//!    keep-alive workers doing `--grant` (refresh with rotation, one family per worker, or
//!    client_credentials) spread over `--replicas` servers; each round's grants/s as a fraction
//!    of the machine's signing bound (`openssl speed`), p50/p99 latency and peak RSS;
//! 3. the server's resident memory (VmRSS/VmHWM) idle, after setup, during and after the load;
//! 4. optionally (`--wrk`), discovery and JWKS requests per second with `wrk -t2 -c64 -d10s`.
//!
//! With `--console` it measures the admin console instead (see `console.rs`): audit search and
//! the CSV export over a seeded log of `--events` events, and the users page with `--users`.
//!
//! All traffic goes to 127.0.0.1; every load phase is bounded to at most 15 s. The load
//! generator runs on the same machine as the server and competes for the same cores: its own
//! CPU time is measured and printed next to the server's.

mod console;
mod grants;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password-1234";
const CLIENT_ID: &str = "bench";
const SCOPE: &str = "openid email groups";
const DISCOVERY: &str = "/.well-known/openid-configuration";
const JWKS: &str = "/.well-known/jwks.json";
/// No load phase may run longer than this (the benchmark shares a machine).
const MAX_PHASE_SECS: u64 = 15;

#[derive(Debug, Parser)]
#[command(
    name = "idp-bench",
    about = "Start-up, grant throughput and memory of kubelogin-idp on 127.0.0.1"
)]
struct Args {
    /// Path to the kubelogin-idp binary (build it with `cargo build --release -p idp`).
    #[arg(long, default_value = "target/release/kubelogin-idp")]
    idp: PathBuf,
    /// Signing algorithm for the server (JWT_SIGNING_ALGORITHM).
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "ES256"])]
    alg: String,
    /// The grant measured: refresh with rotation (a public client, one family per worker) or
    /// client_credentials (one confidential client).
    #[arg(long, default_value = "refresh_token", value_parser = ["refresh_token", "client_credentials"])]
    grant: String,
    /// Timed rounds of the load (each printed, then their median).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    rounds: u32,
    /// Run the server(s) on this database (DATABASE_URL) instead of SQLite in a fresh data
    /// directory; start-up is then not timed.
    #[arg(long)]
    database_url: Option<String>,
    /// Servers started on the same database, workers spread over them (PostgreSQL only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    replicas: u32,
    /// Concurrent workers, each with its own refresh token family and connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Length of each round in seconds (at most 15).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=15))]
    seconds: u64,
    /// How many first/warm start pairs to time (each first start uses a fresh data directory).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    start_samples: u32,
    /// Also run `wrk -t2 -c64 -d<wrk-seconds>s` against discovery and JWKS (needs wrk on PATH).
    #[arg(long)]
    wrk: bool,
    /// Duration of each wrk run in seconds (at most 15).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=15))]
    wrk_seconds: u64,
    /// Keep the temporary data directory (its path is printed) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Benchmark the admin console (audit search and export, users page) instead.
    #[arg(long)]
    console: bool,
    /// `--console`: audit events seeded into the log.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    events: u64,
    /// `--console`: users seeded (the admin included).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    users: u64,
    /// `--console`: timed requests per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    requests: u32,
}

fn main() {
    let args = Args::parse();
    let result = if args.console {
        std::fs::canonicalize(&args.idp)
            .with_context(|| format!("no kubelogin-idp binary at {}", args.idp.display()))
            .and_then(|idp| {
                console::run(&console::ConsoleArgs {
                    idp: &idp,
                    alg: &args.alg,
                    events: args.events,
                    users: args.users,
                    requests: args.requests,
                    keep: args.keep,
                })
            })
    } else {
        run(&args)
    };
    if let Err(e) = result {
        eprintln!("idp-bench: error: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The server process

/// Where a server keeps its state: a data directory (first-boot credentials, and the SQLite
/// database unless `database_url` names another).
struct Target {
    data_dir: PathBuf,
    database_url: Option<String>,
}

impl Target {
    fn dir(data_dir: &Path) -> Target {
        Target {
            data_dir: data_dir.to_path_buf(),
            database_url: None,
        }
    }
}

/// A running `kubelogin-idp serve`, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Server {
    /// Spawns the server on a free port and waits for its first discovery answer; returns the
    /// server and the time from spawn to that answer.
    fn start(idp: &Path, data_dir: &Path, alg: &str, log_dir: &Path) -> Result<(Server, Duration)> {
        Self::start_on(idp, &Target::dir(data_dir), alg, log_dir)
    }

    /// The same on a target that may name its database (`DATABASE_URL`).
    fn start_on(
        idp: &Path,
        target: &Target,
        alg: &str,
        log_dir: &Path,
    ) -> Result<(Server, Duration)> {
        let data_dir = &target.data_dir;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stderr_path = log_dir.join(format!("server-{port}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let started = Instant::now();
        let mut cmd = Command::new(idp);
        cmd.arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .env("DATA_DIR", data_dir)
            .env("JWT_SIGNING_ALGORITHM", alg)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("BASE_URL")
            .env_remove("SERVER_ADDR")
            .env_remove("JWT_PRIVATE_KEY_PATH")
            .current_dir(log_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(url) = &target.database_url {
            cmd.env("DATABASE_URL", url);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", idp.display()))?;
        let mut server = Server {
            child,
            addr,
            stderr_path,
        };
        let deadline = started + Duration::from_secs(30);
        loop {
            if discovery_ok(addr) {
                return Ok((server, started.elapsed()));
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited during start-up ({status}); its stderr:\n{}",
                    server.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no discovery answer within 30 s; server stderr:\n{}",
                    server.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM and a short wait for a graceful exit; SIGKILL after that.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// One discovery request over a fresh connection with short timeouts: true on HTTP 200.
fn discovery_ok(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(20))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.set_nodelay(true)?;
        write!(
            s,
            "GET {DISCOVERY} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// /proc readings

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

fn mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok(Mem {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// User + system CPU seconds consumed so far by a process (`/proc/<pid>/stat`).
fn cpu_secs(pid: &str, ticks_per_sec: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let num = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))
    };
    Ok((num(11)? + num(12)?) / ticks_per_sec)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Admin CLI set-up and tokens

fn admin(idp: &Path, data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    admin_on(idp, &Target::dir(data_dir), args, stdin).map(|_| ())
}

/// An admin command on the target's database; its stdout.
fn admin_on(idp: &Path, target: &Target, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(idp);
    cmd.arg("--data-dir")
        .arg(&target.data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = &target.database_url {
        cmd.env("DATABASE_URL", url);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running kubelogin-idp {}", args.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubelogin-idp {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `alg` of a compact JWS, from its header.
fn jwt_alg(jwt: &str) -> Result<String> {
    let header = jwt
        .split('.')
        .next()
        .ok_or_else(|| anyhow!("the ID token is not a JWT"))?;
    let json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    json.get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the ID token header has no alg"))
}

struct Tokens {
    refresh_token: Option<String>,
    /// The ID token when there is one, otherwise the access token (for the `alg` check).
    jwt: String,
}

/// Posts a form to the token endpoint; every field named in `required` must be in a 2xx answer.
async fn token_request(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    required: &[&str],
) -> Result<Tokens, String> {
    let resp = client
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("reading body: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
    let field = |name: &str| -> Option<String> {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if let Some(missing) = required.iter().find(|f| field(f).is_none()) {
        return Err(format!("HTTP {status} without {missing}"));
    }
    Ok(Tokens {
        refresh_token: field("refresh_token"),
        jwt: field("id_token")
            .or_else(|| field("access_token"))
            .unwrap_or_default(),
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// wrk

struct WrkReport {
    path: &'static str,
    requests_per_sec: f64,
    latency_avg: String,
    non_2xx: u64,
    socket_errors: String,
}

fn run_wrk(server: &Server, path: &'static str, seconds: u64) -> Result<WrkReport> {
    let url = server.url(path);
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{}s", seconds.min(MAX_PHASE_SECS)),
        ])
        .arg(&url)
        .output()
        .context("running wrk (install it with `apt-get install wrk`)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{text}"))?;
    let latency_avg = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "none".into());
    Ok(WrkReport {
        path,
        requests_per_sec,
        latency_avg,
        non_2xx,
        socket_errors,
    })
}

// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let all: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    format!(
        "min {:.1}  median {:.1}  max {:.1} ms   (all: {})",
        s.first().copied().unwrap_or(f64::NAN),
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        all.join(", ")
    )
}

/// Creates what the grant needs through the admin CLI (and, for refresh, one password grant per
/// worker to start its family); checks the first token's `alg`.
fn setup(
    idp: &Path,
    target: &Target,
    server: &Server,
    args: &Args,
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<grants::Work>> {
    // Names unique to this run, so a reused --database-url does not collide.
    let client_id = format!("{CLIENT_ID}-{}", std::process::id());
    let token_url = server.url("/oauth/token");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    if args.grant == "client_credentials" {
        let out = admin_on(
            idp,
            target,
            &[
                "client",
                "add",
                &client_id,
                "--confidential",
                "--grant-type",
                "client_credentials",
            ],
            None,
        )?;
        let secret = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("client_secret:"))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| anyhow!("`client add` printed no client_secret"))?;
        let t = rt
            .block_on(token_request(
                &client,
                &token_url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("client_secret", &secret),
                ],
                &["access_token"],
            ))
            .map_err(|e| anyhow!("client_credentials grant failed: {e}"))?;
        check_alg(&t.jwt, &args.alg)?;
        let work = grants::Work::ClientCredentials { client_id, secret };
        return Ok(vec![work; args.concurrency as usize]);
    }
    let user = format!("bench-{}", std::process::id());
    admin_on(
        idp,
        target,
        &[
            "user",
            "add",
            &user,
            "--email",
            "b@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    )?;
    admin_on(
        idp,
        target,
        &[
            "client",
            "add",
            &client_id,
            "--public",
            "--grant-type",
            "password",
            "--grant-type",
            "refresh_token",
        ],
        None,
    )?;
    rt.block_on(async {
        let mut work = Vec::new();
        // One at a time: each password grant runs argon2 on the server.
        for _ in 0..args.concurrency {
            let t = token_request(
                &client,
                &token_url,
                &[
                    ("grant_type", "password"),
                    ("client_id", &client_id),
                    ("username", &user),
                    ("password", PASSWORD),
                    ("scope", SCOPE),
                ],
                &["refresh_token", "id_token"],
            )
            .await
            .map_err(|e| anyhow!("password grant failed: {e}"))?;
            check_alg(&t.jwt, &args.alg)?;
            work.push(grants::Work::Refresh {
                client_id: client_id.clone(),
                token: t.refresh_token.unwrap_or_default(),
            });
        }
        Ok(work)
    })
}

fn check_alg(jwt: &str, want: &str) -> Result<()> {
    let alg = jwt_alg(jwt)?;
    if alg != want {
        bail!("the token is signed with {alg}, not {want}");
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let idp = std::fs::canonicalize(&args.idp)
        .with_context(|| format!("no kubelogin-idp binary at {}", args.idp.display()))?;
    let postgres = args
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"));
    if args.replicas > 1 && !postgres {
        bail!(
            "--replicas {} needs a PostgreSQL --database-url: a SQLite database belongs to one server process",
            args.replicas
        );
    }
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Measured first, before any server runs.
    let rates = grants::SignRates::measure()?;
    let sigs = grants::signatures_per_grant(&args.grant);
    let bound = grants::signing_bound(&rates, &args.alg, &args.grant, cores);
    let signing = format!(
        "openssl speed, one core: rsa2048 {:.0} sign/s, ecdsap256 {:.0} sign/s; {} {} makes {sigs} signature{} per grant, so {cores} cores sign at most {bound:.0} grants/s",
        rates.rsa2048,
        rates.ecdsap256,
        args.alg,
        args.grant,
        if sigs == 1 { "" } else { "s" }
    );
    eprintln!("idp-bench: {signing}");
    let load_before = loadavg();
    let tmp = tempfile::Builder::new().prefix("idp-bench-").tempdir()?;
    eprintln!(
        "idp-bench: {} {} {} in {}",
        idp.display(),
        args.alg,
        args.grant,
        tmp.path().display()
    );

    // 1. Start-up, on SQLite only (a first boot needs an empty database; --database-url names
    //    the caller's): a first boot on an empty directory, then a warm start on the same one.
    let mut first = Vec::new();
    let mut warm = Vec::new();
    let mut target = Target {
        data_dir: tmp.path().join("data"),
        database_url: args.database_url.clone(),
    };
    if args.database_url.is_none() {
        for i in 0..args.start_samples {
            let data_dir = tmp.path().join(format!("data{i}"));
            let (mut s, t) = Server::start(&idp, &data_dir, &args.alg, tmp.path())?;
            first.push(ms(t));
            s.stop();
            drop(s);
            let (mut s, t) = Server::start(&idp, &data_dir, &args.alg, tmp.path())?;
            warm.push(ms(t));
            s.stop();
            eprintln!(
                "idp-bench: start sample {}: first {:.1} ms, warm {:.1} ms",
                i + 1,
                first[first.len() - 1],
                warm[warm.len() - 1]
            );
            target = Target::dir(&data_dir);
        }
    }

    // 2. Set-up on one server: the admin CLI on the same database, then the password grants.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (server, t) = Server::start_on(&idp, &target, &args.alg, tmp.path())?;
    warm.push(ms(t));
    std::thread::sleep(Duration::from_millis(300));
    let idle = mem(server.pid())?;
    let setup_started = Instant::now();
    let mut work = setup(&idp, &target, &server, args, &rt)?;
    let setup_time = setup_started.elapsed();
    let after_setup = mem(server.pid())?;

    // 3. The load, on restarted servers: the password grants above ran argon2 (19 MiB per
    //    hash), whose freed memory the allocator keeps; a restart measures the grant path
    //    alone. The refresh tokens are in the database, so they survive the restart.
    drop(server);
    let mut servers = Vec::new();
    for _ in 0..args.replicas {
        let (s, t) = Server::start_on(&idp, &target, &args.alg, tmp.path())?;
        warm.push(ms(t));
        servers.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url("/oauth/token")).collect();
    let idle_restarted = pids.iter().map(|p| mem(*p)).collect::<Result<Vec<_>>>()?;
    let load_during = loadavg();
    eprintln!(
        "idp-bench: {} rounds of {} s, {} workers, on server pid(s) {pids:?}",
        args.rounds, args.seconds, args.concurrency
    );
    let server_cpu0 = pids
        .iter()
        .map(|p| cpu_secs(&p.to_string(), ticks))
        .sum::<Result<f64>>()?;
    let bench_cpu0 = cpu_secs("self", ticks)?;
    let mut rounds = Vec::new();
    for n in 1..=args.rounds {
        let (r, next) = grants::round(&rt, &urls, &pids, work, args.seconds)?;
        eprintln!("idp-bench: {}", grants::round_line(n as usize, &r, bound));
        rounds.push(r);
        work = next;
    }
    let load_secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let server_cpu_s = pids
        .iter()
        .map(|p| cpu_secs(&p.to_string(), ticks))
        .sum::<Result<f64>>()?
        - server_cpu0;
    let bench_cpu_s = cpu_secs("self", ticks)? - bench_cpu0;
    let total_ok: u64 = rounds.iter().map(|r| r.ok).sum();
    let after_load = pids.iter().map(|p| mem(*p)).collect::<Result<Vec<_>>>()?;
    let load_after = loadavg();

    // 4. Optional wrk runs against the first server.
    let mut wrk = Vec::new();
    if args.wrk {
        for path in [DISCOVERY, JWKS] {
            wrk.push(run_wrk(&servers[0], path, args.wrk_seconds)?);
        }
    }
    let after_wrk = mem(servers[0].pid())?;
    let load_end = loadavg();
    drop(servers);

    // 5. The summary.
    let rate = grants::median(&rounds.iter().map(grants::Round::rate).collect::<Vec<_>>());
    let p50 = grants::median(&rounds.iter().map(|r| r.p50_ms).collect::<Vec<_>>());
    let p99 = grants::median(&rounds.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let rss_peak = rounds
        .iter()
        .flat_map(|r| r.rss_peak_kib.iter().copied())
        .max()
        .unwrap_or(0);
    // Issue 10's targets.
    let (target_rate, target_text) = match (args.grant.as_str(), args.alg.as_str()) {
        ("client_credentials", _) => (15_000.0, "15000/s".to_string()),
        (_, "ES256") => (6_000.0, "6000/s".to_string()),
        _ => (
            bound * 0.5,
            format!("50% of the bound, {:.0}/s", bound * 0.5),
        ),
    };
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    let first_median = grants::median(&first);
    let mut o = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(o, "================ idp-bench summary ================");
    let _ = writeln!(o, "binary            {}", idp.display());
    let _ = writeln!(
        o,
        "grant             {} {}   concurrency {}   {} rounds of {} s   replicas {}   database {}",
        args.alg,
        args.grant,
        args.concurrency,
        args.rounds,
        args.seconds,
        args.replicas,
        if postgres {
            "PostgreSQL (--database-url)"
        } else if args.database_url.is_some() {
            "SQLite (--database-url)"
        } else {
            "SQLite in a fresh data directory"
        }
    );
    let _ = writeln!(
        o,
        "machine           {cores} cores; load average (1/5/15 min) before {load_before} | at load start {load_during} | after load {load_after} | end {load_end}"
    );
    let _ = writeln!(o, "signing bound     {signing}");
    let _ = writeln!(
        o,
        "note              the load generator runs on the same cores as the server (see CPU split below)"
    );
    if !first.is_empty() {
        let _ = writeln!(o, "-- start-up: spawn -> first 200 from discovery");
        let _ = writeln!(o, "first boot        {}", summary(&first));
        let _ = writeln!(
            o,
            "warm start        {}   (last: the restarts before the load)",
            summary(&warm)
        );
        let _ = writeln!(
            o,
            "target            first answer <= 100 ms: first boot {} / warm {}",
            mark(first_median <= 100.0),
            mark(warm.iter().all(|w| *w <= 100.0))
        );
    }
    let _ = writeln!(
        o,
        "-- setup          in {:.2} s ({}), then a server restart",
        setup_time.as_secs_f64(),
        if args.grant == "client_credentials" {
            "one confidential client".to_string()
        } else {
            format!("{} password grants, argon2, sequential", args.concurrency)
        }
    );
    let _ = writeln!(o, "-- load ({})", args.grant);
    for (n, r) in rounds.iter().enumerate() {
        let _ = writeln!(o, "{}", grants::round_line(n + 1, r, bound));
        for e in &r.first_errors {
            let _ = writeln!(o, "  error sample    {e}");
        }
    }
    let _ = writeln!(
        o,
        "median            {rate:.0} grants/s = {:.2} of the {cores}-core signing bound {bound:.0}/s   (target >= {target_text}: {})",
        rate / bound,
        mark(rate >= target_rate)
    );
    let _ = writeln!(
        o,
        "latency (median)  p50 {p50:.2} ms   p99 {p99:.2} ms   (target p99 <= 50 ms: {})",
        mark(p99 <= 50.0)
    );
    let per_grant_us = if total_ok > 0 {
        server_cpu_s / total_ok as f64 * 1e6
    } else {
        f64::NAN
    };
    let _ = writeln!(
        o,
        "CPU during load   server {server_cpu_s:.2} s ({per_grant_us:.0} us per grant, {:.0}% of one core), load generator {bench_cpu_s:.2} s ({:.0}% of one core)",
        server_cpu_s / load_secs * 100.0,
        bench_cpu_s / load_secs * 100.0
    );
    let _ = writeln!(o, "-- server memory (VmRSS / VmHWM peak since start)");
    let _ = writeln!(
        o,
        "idle after start  {:.1} MiB / {:.1} MiB",
        mib(idle.rss_kib),
        mib(idle.hwm_kib)
    );
    let _ = writeln!(
        o,
        "after setup       {:.1} MiB / {:.1} MiB",
        mib(after_setup.rss_kib),
        mib(after_setup.hwm_kib)
    );
    for (i, (m, a)) in idle_restarted.iter().zip(&after_load).enumerate() {
        let _ = writeln!(
            o,
            "replica {}         restarted idle {:.1} MiB / {:.1} MiB; after the load {:.1} MiB / {:.1} MiB",
            i + 1,
            mib(m.rss_kib),
            mib(m.hwm_kib),
            mib(a.rss_kib),
            mib(a.hwm_kib)
        );
    }
    let _ = writeln!(
        o,
        "under load        max sampled RSS {:.1} MiB   (target <= 30 MB per replica: {})",
        mib(rss_peak),
        mark(rss_peak * 1024 <= 30_000_000)
    );
    if args.wrk {
        let _ = writeln!(
            o,
            "-- wrk -t2 -c64 -d{}s (first server, after the load)",
            args.wrk_seconds
        );
        for w in &wrk {
            let _ = writeln!(
                o,
                "{:<36} {:>9.0} req/s   avg latency {}   non-2xx {}   socket errors {}{}",
                w.path,
                w.requests_per_sec,
                w.latency_avg,
                w.non_2xx,
                w.socket_errors,
                if w.path == DISCOVERY {
                    format!(
                        "   (target >= 20000/s: {})",
                        mark(w.requests_per_sec >= 20_000.0)
                    )
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            o,
            "after wrk         {:.1} MiB / {:.1} MiB",
            mib(after_wrk.rss_kib),
            mib(after_wrk.hwm_kib)
        );
    }
    let _ = writeln!(o, "===================================================");
    print!("{o}");
    if args.keep {
        let p = tmp.keep();
        eprintln!("idp-bench: kept {}", p.display());
    }
    Ok(())
}
