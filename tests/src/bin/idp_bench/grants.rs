//! The grant load of `idp-bench`: `--rounds` timed rounds of one grant (`refresh_token` with
//! rotation, or `client_credentials`) by `--concurrency` keep-alive workers spread over the
//! replicas, each round with its rate, p50/p99 latency and every replica's peak RSS; and the
//! machine's signing bound from `openssl speed`, which each rate is printed against.

use super::{mem, mib, percentile, token_request, MAX_PHASE_SECS};
use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Single-core signature rates of this machine, from `openssl speed -seconds 1`.
#[derive(Debug, Clone, Copy)]
pub struct SignRates {
    pub rsa2048: f64,
    pub ecdsap256: f64,
}

impl SignRates {
    /// Runs `openssl speed -seconds 1 rsa2048` and `... ecdsap256` (one core each).
    pub fn measure() -> Result<SignRates> {
        Ok(SignRates {
            rsa2048: openssl_sign_rate("rsa2048", "2048 bits")?,
            ecdsap256: openssl_sign_rate("ecdsap256", "nistp256")?,
        })
    }

    fn per_core(&self, alg: &str) -> f64 {
        if alg == "ES256" {
            self.ecdsap256
        } else {
            self.rsa2048
        }
    }
}

/// The `sign/s` column of `openssl speed`'s result line for `algorithm`. The column is found
/// from the header, counted from the right: OpenSSL 3.x prints `sign verify sign/s verify/s`
/// for RSA in some releases and adds encrypt/decrypt columns in others.
fn openssl_sign_rate(algorithm: &str, line_marker: &str) -> Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "1", algorithm])
        .output()
        .context("running `openssl speed` (install it with `apt-get install openssl`)")?;
    if !out.status.success() {
        bail!("openssl speed {algorithm} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_sign_rate(&text, line_marker)
        .ok_or_else(|| anyhow!("no sign/s figure for {algorithm} in `openssl speed`:\n{text}"))
}

fn parse_sign_rate(text: &str, line_marker: &str) -> Option<f64> {
    let mut from_right = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "sign/s") {
            from_right = Some(words.len() - i);
        } else if let (Some(k), true) = (from_right, line.contains(line_marker)) {
            return words.get(words.len().checked_sub(k)?)?.parse().ok();
        }
    }
    None
}

/// Signatures one grant makes: refresh with `openid` signs an ID token and an access token;
/// client_credentials signs only an access token (no user, so no ID token: RFC 6749 §4.4.3).
pub fn signatures_per_grant(grant: &str) -> u32 {
    if grant == "client_credentials" {
        1
    } else {
        2
    }
}

/// The most grants per second `cores` cores could sign, if they did nothing else.
pub fn signing_bound(rates: &SignRates, alg: &str, grant: &str, cores: usize) -> f64 {
    cores as f64 * rates.per_core(alg) / f64::from(signatures_per_grant(grant))
}

/// What a worker repeats.
#[derive(Clone)]
pub enum Work {
    /// Rotate this refresh token family (the worker keeps the newest token).
    Refresh { client_id: String, token: String },
    /// Ask for an access token with the client's own credentials (`client_secret_post`).
    ClientCredentials { client_id: String, secret: String },
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_errors: Vec<String>,
    gave_up: bool,
}

async fn worker(
    client: reqwest::Client,
    url: String,
    mut work: Work,
    deadline: Instant,
) -> (WorkerResult, Work) {
    let mut r = WorkerResult {
        latencies_us: Vec::with_capacity(1 << 14),
        ..Default::default()
    };
    let mut consecutive_errors = 0u32;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let res = match &work {
            Work::Refresh { client_id, token } => token_request(
                &client,
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("refresh_token", token),
                ],
                &["refresh_token", "id_token", "access_token"],
            )
            .await
            .map(|t| t.refresh_token),
            Work::ClientCredentials { client_id, secret } => token_request(
                &client,
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret),
                ],
                &["access_token"],
            )
            .await
            .map(|_| None),
        };
        let dt = t0.elapsed();
        match res {
            Ok(next) => {
                r.latencies_us
                    .push(u32::try_from(dt.as_micros()).unwrap_or(u32::MAX));
                if let (Work::Refresh { token, .. }, Some(next)) = (&mut work, next) {
                    *token = next;
                }
                consecutive_errors = 0;
            }
            Err(e) => {
                // A refresh retried with the same token is covered by the reuse grace window.
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
    (r, work)
}

/// One timed round.
pub struct Round {
    pub ok: u64,
    pub errors: u64,
    pub gave_up: u32,
    pub first_errors: Vec<String>,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Per replica: the largest VmRSS sampled during the round, and VmHWM after it (KiB).
    pub rss_peak_kib: Vec<u64>,
    pub hwm_kib: Vec<u64>,
}

impl Round {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs one round: each worker on its own keep-alive connection to replica `i % replicas`.
/// Returns the round and the workers' state for the next one (the newest refresh tokens).
pub fn round(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
    pids: &[u32],
    work: Vec<Work>,
    seconds: u64,
) -> Result<(Round, Vec<Work>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
    let sampler = {
        let (stop, peaks, pids) = (stop.clone(), peaks.clone(), pids.to_vec());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter().zip(&pids) {
                    if let Ok(m) = mem(*pid) {
                        peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds.min(MAX_PHASE_SECS));
    let results = rt.block_on(async {
        let mut handles = Vec::new();
        for (i, w) in work.into_iter().enumerate() {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| anyhow!("building an HTTP client: {e}"))?;
            let url = urls[i % urls.len()].clone();
            handles.push(tokio::spawn(worker(client, url, w, deadline)));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.map_err(|e| anyhow!("a worker failed: {e}"))?);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let mut all = Vec::new();
    let mut round = Round {
        ok: 0,
        errors: 0,
        gave_up: 0,
        first_errors: Vec::new(),
        elapsed,
        p50_ms: 0.0,
        p99_ms: 0.0,
        rss_peak_kib: peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect(),
        hwm_kib: pids
            .iter()
            .map(|p| mem(*p).map(|m| m.hwm_kib))
            .collect::<Result<_>>()?,
    };
    let mut next = Vec::new();
    for (r, w) in results {
        all.extend_from_slice(&r.latencies_us);
        round.errors += r.errors;
        round.gave_up += u32::from(r.gave_up);
        for e in r.first_errors {
            if round.first_errors.len() < 5 {
                round.first_errors.push(e);
            }
        }
        next.push(w);
    }
    all.sort_unstable();
    round.ok = all.len() as u64;
    round.p50_ms = percentile(&all, 50.0);
    round.p99_ms = percentile(&all, 99.0);
    Ok((round, next))
}

/// One line per round, as printed while the benchmark runs and again in the summary.
pub fn round_line(n: usize, r: &Round, bound: f64) -> String {
    let rss: Vec<String> = r
        .rss_peak_kib
        .iter()
        .zip(&r.hwm_kib)
        .map(|(p, h)| format!("{:.1} MiB (VmHWM {:.1})", mib(*p), mib(*h)))
        .collect();
    let mut s = format!(
        "round {n}: {:>6.0} grants/s = {:.2} of the signing bound   p50 {:.2} ms   p99 {:.2} ms   peak RSS {}   {} errors",
        r.rate(),
        r.rate() / bound,
        r.p50_ms,
        r.p99_ms,
        rss.join(", "),
        r.errors
    );
    if r.gave_up > 0 {
        let _ = write!(s, ", {} workers gave up", r.gave_up);
    }
    s
}

/// The median of a few figures (the upper one of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_rate_is_read_from_the_sign_per_second_column() {
        let rsa = "CPUINFO: x\n                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.000746s 0.000023s   1341.2  43650.0\n";
        assert_eq!(parse_sign_rate(rsa, "2048 bits"), Some(1341.2));
        let rsa_enc = "                   sign    verify    encrypt   decrypt   sign/s verify/s  encr./s  decr./s\nrsa  2048 bits 0.000700s 0.000020s 0.000021s 0.000690s   1428.6  50000.0  47619.0   1449.3\n";
        assert_eq!(parse_sign_rate(rsa_enc, "2048 bits"), Some(1428.6));
        let ec = "                              sign    verify    sign/s verify/s\n 256 bits ecdsa (nistp256)   0.0000s   0.0001s  26965.0   9771.1\n";
        assert_eq!(parse_sign_rate(ec, "nistp256"), Some(26965.0));
        assert_eq!(parse_sign_rate("nothing here", "nistp256"), None);
    }

    #[test]
    fn bound_counts_the_signatures_of_each_grant() {
        let rates = SignRates {
            rsa2048: 3400.0,
            ecdsap256: 27000.0,
        };
        // The example: 2 cores, 3,400 RSA signatures/s each, two per refresh.
        assert_eq!(signing_bound(&rates, "RS256", "refresh_token", 2), 3400.0);
        assert_eq!(
            signing_bound(&rates, "ES256", "client_credentials", 2),
            54000.0
        );
    }
}
