//! Prometheus metrics: what the token endpoint and the login form count, kept in fixed arrays of
//! atomics so that counting on the hot path is one or two `fetch_add`s (no lock, no allocation,
//! no map lookup), and rendered in the OpenMetrics text format by `prometheus-client` at scrape
//! time (`ops::metrics`, on `METRICS_ADDR` only).
//!
//! Label values come from fixed lists (the grant types and error codes of RFC 6749 §4–5 and RFC
//! 8628 §3.5), so no request can add a series: anything else is counted as `other`.
//!
//! A leaf: no other module of the crate.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use shared::token::{error_code, grant_type};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The `grant_type` label values: the grants the token endpoint serves, then `other`.
pub const GRANT_TYPES: [&str; 6] = [
    grant_type::AUTHORIZATION_CODE,
    grant_type::REFRESH_TOKEN,
    grant_type::DEVICE_CODE,
    grant_type::CLIENT_CREDENTIALS,
    grant_type::PASSWORD,
    "other",
];

/// The `outcome` label values of a token request: `ok`, the RFC 6749 §5.2 and RFC 8628 §3.5
/// error codes the endpoint answers with, then `other`.
pub const GRANT_OUTCOMES: [&str; 13] = [
    "ok",
    error_code::INVALID_REQUEST,
    error_code::INVALID_CLIENT,
    error_code::INVALID_GRANT,
    error_code::UNAUTHORIZED_CLIENT,
    error_code::UNSUPPORTED_GRANT_TYPE,
    error_code::INVALID_SCOPE,
    error_code::ACCESS_DENIED,
    error_code::AUTHORIZATION_PENDING,
    error_code::SLOW_DOWN,
    error_code::EXPIRED_TOKEN,
    error_code::SERVER_ERROR,
    "other",
];

/// How a username and password check ended (the login page and the password grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok = 0,
    WrongPassword = 1,
    Disabled = 2,
    Throttled = 3,
}

/// The `outcome` label values of logins, indexed by [`LoginOutcome`].
pub const LOGIN_OUTCOMES: [&str; 4] = ["ok", "wrong_password", "disabled", "throttled"];

/// Upper bounds (seconds) of the token latency buckets; a last `+Inf` bucket follows. From a
/// millisecond (a client_credentials grant) to seconds (a queued argon2 check).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const NG: usize = GRANT_TYPES.len();
const NO: usize = GRANT_OUTCOMES.len();
const NB: usize = LATENCY_BUCKETS.len() + 1;

/// The counters themselves, shared between the request path and the scrape.
#[derive(Debug)]
struct Counts {
    grants: [[AtomicU64; NO]; NG],
    /// Per grant type: requests per latency bucket (not cumulative; the encoder sums them).
    latency: [[AtomicU64; NB]; NG],
    latency_sum_nanos: [AtomicU64; NG],
    logins: [AtomicU64; LOGIN_OUTCOMES.len()],
    /// Set at scrape time from the store; negative when unknown (the store did not answer).
    live_sessions: AtomicI64,
    pool_idle: AtomicI64,
    pool_busy: AtomicI64,
}

/// Every metric of one IdP process (one per `AppState`, so in-process test servers do not mix).
#[derive(Debug)]
pub struct Metrics {
    counts: Arc<Counts>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The index of a `grant_type` value in [`GRANT_TYPES`].
pub fn grant_index(grant: Option<&str>) -> usize {
    grant
        .and_then(|g| GRANT_TYPES[..NG - 1].iter().position(|t| *t == g))
        .unwrap_or(NG - 1)
}

/// The index of an outcome (`None`: success, else the error code) in [`GRANT_OUTCOMES`].
pub fn outcome_index(error: Option<&str>) -> usize {
    match error {
        None => 0,
        Some(code) => GRANT_OUTCOMES[1..NO - 1]
            .iter()
            .position(|c| *c == code)
            .map_or(NO - 1, |i| i + 1),
    }
}

/// What the store said at scrape time: `None` where it did not answer in time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrapeValues {
    pub live_sessions: Option<u64>,
    /// Open connections of the database pool: (idle, busy).
    pub pool: Option<(u64, u64)>,
}

impl Metrics {
    pub fn new() -> Self {
        let counts = Arc::new(Counts {
            grants: Default::default(),
            latency: Default::default(),
            latency_sum_nanos: Default::default(),
            logins: Default::default(),
            live_sessions: AtomicI64::new(-1),
            pool_idle: AtomicI64::new(-1),
            pool_busy: AtomicI64::new(-1),
        });
        let mut registry = Registry::with_prefix("kubelogin_idp");
        registry.register_collector(Box::new(CountsCollector(counts.clone())));
        Metrics { counts, registry }
    }

    /// One token request: its grant type ([`grant_index`]), its outcome ([`outcome_index`]) and
    /// how long the endpoint took.
    pub fn token_request(&self, grant: usize, outcome: usize, took: Duration) {
        let (g, o) = (grant.min(NG - 1), outcome.min(NO - 1));
        self.counts.grants[g][o].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(NB - 1);
        self.counts.latency[g][bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.counts.latency_sum_nanos[g].fetch_add(nanos, Ordering::Relaxed);
    }

    /// One username/password check.
    pub fn login(&self, outcome: LoginOutcome) {
        self.counts.logins[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Token requests counted so far for a grant type and outcome (label values).
    pub fn grants(&self, grant: &str, outcome: &str) -> u64 {
        let o = GRANT_OUTCOMES.iter().position(|x| *x == outcome);
        match o {
            Some(o) => self.counts.grants[grant_index(Some(grant))][o].load(Ordering::Relaxed),
            None => 0,
        }
    }

    /// The exposition text, with the values read from the store at this scrape.
    pub fn render(&self, scrape: ScrapeValues) -> Result<String, std::fmt::Error> {
        let known = |v: Option<u64>| v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let c = &self.counts;
        c.live_sessions
            .store(known(scrape.live_sessions), Ordering::Relaxed);
        c.pool_idle
            .store(known(scrape.pool.map(|p| p.0)), Ordering::Relaxed);
        c.pool_busy
            .store(known(scrape.pool.map(|p| p.1)), Ordering::Relaxed);
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Encodes [`Counts`] at scrape time.
#[derive(Debug)]
struct CountsCollector(Arc<Counts>);

impl Collector for CountsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        let mut m = encoder.encode_descriptor(
            "grants",
            "Token endpoint requests by grant type and outcome (ok or the OAuth error code).",
            None,
            MetricType::Counter,
        )?;
        for (g, grant) in GRANT_TYPES.iter().enumerate() {
            for (o, outcome) in GRANT_OUTCOMES.iter().enumerate() {
                let n = load(&c.grants[g][o]);
                // Series appear once they count something (13 x 6 zeros would be noise).
                if n == 0 && o != 0 {
                    continue;
                }
                let labels = [("grant_type", *grant), ("outcome", *outcome)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }

        let mut m = encoder.encode_descriptor(
            "token_request_duration_seconds",
            "Time the token endpoint took to answer, by grant type.",
            None,
            MetricType::Histogram,
        )?;
        for (g, grant) in GRANT_TYPES.iter().enumerate() {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .zip(c.latency[g].iter().map(load))
                .collect();
            let count = buckets.iter().map(|b| b.1).sum();
            let sum = load(&c.latency_sum_nanos[g]) as f64 / 1e9;
            let labels = [("grant_type", *grant)];
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut m = encoder.encode_descriptor(
            "logins",
            "Username and password checks (login page and password grant) by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (i, outcome) in LOGIN_OUTCOMES.iter().enumerate() {
            let labels = [("outcome", *outcome)];
            ConstCounter::new(load(&c.logins[i])).encode(m.encode_family(&labels)?)?;
        }

        let sessions = c.live_sessions.load(Ordering::Relaxed);
        if sessions >= 0 {
            let m = encoder.encode_descriptor(
                "live_sessions",
                "Unexpired browser sessions, read from the store at scrape time.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(sessions).encode(m)?;
        }
        let (idle, busy) = (
            c.pool_idle.load(Ordering::Relaxed),
            c.pool_busy.load(Ordering::Relaxed),
        );
        if idle >= 0 && busy >= 0 {
            let mut m = encoder.encode_descriptor(
                "db_pool_connections",
                "Open connections of the database pool, idle or busy.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [("idle", idle), ("busy", busy)] {
                ConstGauge::new(n).encode(m.encode_family(&[("state", state)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_indices_are_bounded() {
        assert_eq!(
            GRANT_TYPES[grant_index(Some("refresh_token"))],
            "refresh_token"
        );
        assert_eq!(
            GRANT_TYPES[grant_index(Some("x".repeat(10_000).as_str()))],
            "other"
        );
        assert_eq!(GRANT_TYPES[grant_index(None)], "other");
        assert_eq!(GRANT_OUTCOMES[outcome_index(None)], "ok");
        assert_eq!(
            GRANT_OUTCOMES[outcome_index(Some("invalid_grant"))],
            "invalid_grant"
        );
        assert_eq!(GRANT_OUTCOMES[outcome_index(Some("made_up"))], "other");
        assert_eq!(GRANT_OUTCOMES[outcome_index(Some("other"))], "other");
    }

    #[test]
    fn renders_counts_buckets_and_scrape_values() {
        let m = Metrics::new();
        m.token_request(
            grant_index(Some("refresh_token")),
            0,
            Duration::from_millis(3),
        );
        m.token_request(
            grant_index(Some("refresh_token")),
            0,
            Duration::from_secs(9),
        );
        m.login(LoginOutcome::Throttled);
        let text = m
            .render(ScrapeValues {
                live_sessions: Some(7),
                pool: Some((2, 1)),
            })
            .unwrap();
        for line in [
            "kubelogin_idp_grants_total{grant_type=\"refresh_token\",outcome=\"ok\"} 2",
            "kubelogin_idp_token_request_duration_seconds_bucket{le=\"0.005\",grant_type=\"refresh_token\"} 1",
            "kubelogin_idp_token_request_duration_seconds_bucket{le=\"5.0\",grant_type=\"refresh_token\"} 1",
            "kubelogin_idp_token_request_duration_seconds_bucket{le=\"+Inf\",grant_type=\"refresh_token\"} 2",
            "kubelogin_idp_token_request_duration_seconds_count{grant_type=\"refresh_token\"} 2",
            "kubelogin_idp_logins_total{outcome=\"throttled\"} 1",
            "kubelogin_idp_live_sessions 7",
            "kubelogin_idp_db_pool_connections{state=\"busy\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        let unknown = m.render(ScrapeValues::default()).unwrap();
        assert!(!unknown.contains("live_sessions"), "{unknown}");
    }
}
