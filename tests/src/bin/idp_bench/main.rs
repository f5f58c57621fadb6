//! `idp-bench`: a reproducible load benchmark of a release `kubelogin-idp` on 127.0.0.1.
//!
//! It measures, against a fresh data directory:
//! 1. start-up: time from spawn to the first successful discovery answer, on an empty data
//!    directory (first boot: schema, admin password hash, signing key generation) and again on
//!    the same directory (warm start);
//! 2. refresh throughput: `--concurrency` workers, each rotating its own refresh token family
//!    with `grant_type=refresh_token` for `--seconds` seconds over a keep-alive connection;
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

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Parser;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    about = "Start-up, refresh-token throughput and memory of kubelogin-idp on 127.0.0.1"
)]
struct Args {
    /// Path to the kubelogin-idp binary (build it with `cargo build --release -p idp`).
    #[arg(long, default_value = "target/release/kubelogin-idp")]
    idp: PathBuf,
    /// Signing algorithm for the server (JWT_SIGNING_ALGORITHM).
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "ES256"])]
    alg: String,
    /// Concurrent refresh workers, each with its own refresh token family and connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Length of the refresh load phase in seconds (at most 15).
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
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stderr_path = log_dir.join(format!("server-{port}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let started = Instant::now();
        let child = Command::new(idp)
            .arg("serve")
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
            .stderr(stderr)
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
    let mut cmd = Command::new(idp);
    cmd.arg("--data-dir")
        .arg(data_dir)
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
    Ok(())
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
    refresh_token: String,
    id_token: String,
}

/// Posts a form to the token endpoint; the new refresh token and ID token on success.
async fn token_request(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
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
    let field = |name: &str| -> Result<String, String> {
        json.get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("HTTP {status} without {name}"))
    };
    Ok(Tokens {
        refresh_token: field("refresh_token")?,
        id_token: field("id_token")?,
    })
}

// ---------------------------------------------------------------------------------------------
// The refresh load

#[derive(Default)]
struct WorkerResult {
    /// Latency of every successful refresh, in microseconds.
    latencies_us: Vec<u32>,
    errors: u64,
    first_errors: Vec<String>,
    gave_up: bool,
}

async fn refresh_worker(
    client: reqwest::Client,
    url: String,
    mut refresh_token: String,
    deadline: Instant,
) -> WorkerResult {
    let mut r = WorkerResult {
        latencies_us: Vec::with_capacity(1 << 14),
        ..Default::default()
    };
    let mut consecutive_errors = 0u32;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let res = token_request(
            &client,
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", &refresh_token),
            ],
        )
        .await;
        let dt = t0.elapsed();
        match res {
            Ok(t) => {
                r.latencies_us
                    .push(u32::try_from(dt.as_micros()).unwrap_or(u32::MAX));
                refresh_token = t.refresh_token;
                consecutive_errors = 0;
            }
            Err(e) => {
                // The same token is retried: a rotation that happened anyway is covered by the
                // server's reuse grace window (5 s by default).
                r.errors += 1;
                if r.first_errors.len() < 3 {
                    r.first_errors.push(e);
                }
                consecutive_errors += 1;
                if consecutive_errors >= 5 {
                    r.gave_up = true;
                    break;
                }
            }
        }
    }
    r
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

struct LoadReport {
    ok: u64,
    errors: u64,
    gave_up: u32,
    first_errors: Vec<String>,
    elapsed: Duration,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_s: f64,
    bench_cpu_s: f64,
    rss_max_during_kib: u64,
}

fn refresh_load(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    tokens: Vec<String>,
    seconds: u64,
    ticks: f64,
) -> Result<LoadReport> {
    let url = server.url("/oauth/token");
    let pid = server.pid();
    let server_pid = pid.to_string();
    // Sample the server's RSS every 100 ms while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let stop = stop.clone();
        let rss_max = rss_max.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = mem(pid) {
                    rss_max.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let server_cpu0 = cpu_secs(&server_pid, ticks)?;
    let bench_cpu0 = cpu_secs("self", ticks)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds.min(MAX_PHASE_SECS));
    let results: Vec<WorkerResult> = rt.block_on(async {
        let mut handles = Vec::new();
        for token in tokens {
            // One client (and so one keep-alive connection) per worker.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(10))
                .build();
            let client = match client {
                Ok(c) => c,
                Err(e) => return Err(anyhow!("building an HTTP client: {e}")),
            };
            handles.push(tokio::spawn(refresh_worker(
                client,
                url.clone(),
                token,
                deadline,
            )));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(
                h.await
                    .map_err(|e| anyhow!("a refresh worker failed: {e}"))?,
            );
        }
        Ok(out)
    })?;
    let elapsed = started.elapsed();
    let server_cpu_s = cpu_secs(&server_pid, ticks)? - server_cpu0;
    let bench_cpu_s = cpu_secs("self", ticks)? - bench_cpu0;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut gave_up = 0;
    let mut first_errors = Vec::new();
    for r in results {
        all.extend_from_slice(&r.latencies_us);
        errors += r.errors;
        gave_up += u32::from(r.gave_up);
        for e in r.first_errors {
            if first_errors.len() < 5 {
                first_errors.push(e);
            }
        }
    }
    all.sort_unstable();
    Ok(LoadReport {
        ok: all.len() as u64,
        errors,
        gave_up,
        first_errors,
        elapsed,
        p50_ms: percentile(&all, 50.0),
        p95_ms: percentile(&all, 95.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: percentile(&all, 100.0),
        server_cpu_s,
        bench_cpu_s,
        rss_max_during_kib: rss_max.load(Ordering::Relaxed),
    })
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

fn run(args: &Args) -> Result<()> {
    let idp = std::fs::canonicalize(&args.idp)
        .with_context(|| format!("no kubelogin-idp binary at {}", args.idp.display()))?;
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = loadavg();
    let tmp = tempfile::Builder::new().prefix("idp-bench-").tempdir()?;
    eprintln!(
        "idp-bench: {} {} in {}",
        idp.display(),
        args.alg,
        tmp.path().display()
    );

    // 1. Start-up: a first boot on an empty directory, then a warm start on the same one.
    let mut first = Vec::new();
    let mut warm = Vec::new();
    let mut kept = None;
    for i in 0..args.start_samples {
        let data_dir = tmp.path().join(format!("data{i}"));
        let (mut s, t) = Server::start(&idp, &data_dir, &args.alg, tmp.path())?;
        first.push(ms(t));
        s.stop();
        drop(s);
        let (s, t) = Server::start(&idp, &data_dir, &args.alg, tmp.path())?;
        warm.push(ms(t));
        eprintln!(
            "idp-bench: start sample {}: first {:.1} ms, warm {:.1} ms",
            i + 1,
            first[first.len() - 1],
            warm[warm.len() - 1]
        );
        if i + 1 == args.start_samples {
            kept = Some((s, data_dir));
        }
    }
    let (server, data_dir) = kept.ok_or_else(|| anyhow!("no server started"))?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = mem(server.pid())?;

    // 2. A user and a public client with the password and refresh grants, via the admin CLI on
    //    the same data directory the server is running on.
    admin(
        &idp,
        &data_dir,
        &[
            "user",
            "add",
            "bench",
            "--email",
            "b@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    )?;
    admin(
        &idp,
        &data_dir,
        &[
            "client",
            "add",
            CLIENT_ID,
            "--public",
            "--grant-type",
            "password",
            "--grant-type",
            "refresh_token",
        ],
        None,
    )?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token_url = server.url("/oauth/token");
    let setup_started = Instant::now();
    let tokens: Vec<String> = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut tokens = Vec::new();
        // One at a time: each password grant runs argon2 on the server.
        for _ in 0..args.concurrency {
            let t = token_request(
                &client,
                &token_url,
                &[
                    ("grant_type", "password"),
                    ("client_id", CLIENT_ID),
                    ("username", "bench"),
                    ("password", PASSWORD),
                    ("scope", SCOPE),
                ],
            )
            .await
            .map_err(|e| anyhow!("password grant failed: {e}"))?;
            let alg = jwt_alg(&t.id_token)?;
            if alg != args.alg {
                bail!("the ID token is signed with {alg}, not {}", args.alg);
            }
            tokens.push(t.refresh_token);
        }
        Ok::<_, anyhow::Error>(tokens)
    })?;
    let setup_time = setup_started.elapsed();
    let after_setup = mem(server.pid())?;

    // 3. The refresh load, on a restarted server: the password grants above ran argon2 (19 MiB
    //    per hash), whose freed memory the allocator keeps; a restart measures the refresh path
    //    alone. The refresh tokens are in the database, so they survive the restart.
    drop(server);
    let (server, restart) = Server::start(&idp, &data_dir, &args.alg, tmp.path())?;
    warm.push(ms(restart));
    std::thread::sleep(Duration::from_millis(300));
    let idle_restarted = mem(server.pid())?;
    let load_during = loadavg();
    eprintln!(
        "idp-bench: refresh load for {} s on server pid {}",
        args.seconds,
        server.pid()
    );
    let report = refresh_load(&rt, &server, tokens, args.seconds, ticks)?;
    let after_load = mem(server.pid())?;
    let load_after = loadavg();

    // 4. Optional wrk runs against the same server.
    let mut wrk = Vec::new();
    if args.wrk {
        for path in [DISCOVERY, JWKS] {
            wrk.push(run_wrk(&server, path, args.wrk_seconds)?);
        }
    }
    let after_wrk = mem(server.pid())?;
    let load_end = loadavg();
    drop(server);

    // 5. The summary.
    let rate = report.ok as f64 / report.elapsed.as_secs_f64();
    let target = if args.alg == "ES256" { 4000.0 } else { 1000.0 };
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    let first_median = {
        let mut s = first.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut o = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(o, "================ idp-bench summary ================");
    let _ = writeln!(o, "binary            {}", idp.display());
    let _ = writeln!(
        o,
        "algorithm         {}   concurrency {}   load phase {} s",
        args.alg, args.concurrency, args.seconds
    );
    let _ = writeln!(
        o,
        "machine           {cores} cores; load average (1/5/15 min) before {load_before} | at load start {load_during} | after load {load_after} | end {load_end}"
    );
    let _ = writeln!(
        o,
        "note              the load generator runs on the same cores as the server (see CPU split below)"
    );
    let _ = writeln!(o, "-- start-up: spawn -> first 200 from discovery");
    let _ = writeln!(o, "first boot        {}", summary(&first));
    let _ = writeln!(
        o,
        "warm start        {}   (last: the restart before the load)",
        summary(&warm)
    );
    let _ = writeln!(
        o,
        "target            first answer <= 100 ms: first boot {} / warm {}",
        mark(first_median <= 100.0),
        mark(warm.iter().all(|w| *w <= 100.0))
    );
    let _ = writeln!(
        o,
        "-- setup          {} password grants (argon2, sequential) in {:.2} s, then a server restart",
        args.concurrency,
        setup_time.as_secs_f64()
    );
    let _ = writeln!(o, "-- refresh load (grant_type=refresh_token, rotation)");
    let _ = writeln!(
        o,
        "refreshes         {} ok, {} errors, {} workers gave up, in {:.2} s",
        report.ok,
        report.errors,
        report.gave_up,
        report.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "throughput        {rate:.0} refreshes/s   (target >= {target:.0}/s: {})",
        mark(rate >= target)
    );
    let _ = writeln!(
        o,
        "latency           p50 {:.2} ms   p95 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        report.p50_ms, report.p95_ms, report.p99_ms, report.max_ms
    );
    let per_refresh_us = if report.ok > 0 {
        report.server_cpu_s / report.ok as f64 * 1e6
    } else {
        f64::NAN
    };
    let _ = writeln!(
        o,
        "CPU during load   server {:.2} s ({:.0} us per refresh, {:.0}% of one core), load generator {:.2} s ({:.0}% of one core)",
        report.server_cpu_s,
        per_refresh_us,
        report.server_cpu_s / report.elapsed.as_secs_f64() * 100.0,
        report.bench_cpu_s,
        report.bench_cpu_s / report.elapsed.as_secs_f64() * 100.0
    );
    for e in &report.first_errors {
        let _ = writeln!(o, "error sample      {e}");
    }
    let _ = writeln!(o, "-- server memory (VmRSS / VmHWM peak since start)");
    let _ = writeln!(
        o,
        "idle after start  {:.1} MiB / {:.1} MiB",
        mib(idle.rss_kib),
        mib(idle.hwm_kib)
    );
    let _ = writeln!(
        o,
        "after setup       {:.1} MiB / {:.1} MiB   (password grants: argon2 uses 19 MiB each)",
        mib(after_setup.rss_kib),
        mib(after_setup.hwm_kib)
    );
    let _ = writeln!(
        o,
        "restarted, idle   {:.1} MiB / {:.1} MiB   (the refresh load runs on this fresh process)",
        mib(idle_restarted.rss_kib),
        mib(idle_restarted.hwm_kib)
    );
    let _ = writeln!(
        o,
        "during load       max sampled RSS {:.1} MiB   (target <= 30 MB: {})",
        mib(report.rss_max_during_kib),
        mark(report.rss_max_during_kib * 1024 <= 30_000_000)
    );
    let _ = writeln!(
        o,
        "after load        {:.1} MiB / {:.1} MiB",
        mib(after_load.rss_kib),
        mib(after_load.hwm_kib)
    );
    if args.wrk {
        let _ = writeln!(
            o,
            "-- wrk -t2 -c64 -d{}s (same server, after the refresh load)",
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
