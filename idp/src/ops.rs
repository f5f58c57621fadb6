//! What an operator's tooling asks of a running IdP: liveness (`/healthz`), readiness
//! (`/readyz`) and Prometheus metrics (`/metrics`, on its own listener at `METRICS_ADDR` so it is
//! never exposed with the public endpoints).
//!
//! All three are unauthenticated and cheap: liveness touches nothing, readiness runs one trivial
//! query with a time bound, a scrape runs one bounded count.
//!
//! May depend on: `state`, `store`, `metrics`.

use crate::metrics::ScrapeValues;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// How long readiness waits for the database before answering 503.
pub const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the store's counts before leaving them out.
pub const SCRAPE_STORE_TIMEOUT: Duration = Duration::from_secs(2);

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// GET /healthz: the process is up and serving HTTP. Touches no database, so a slow database
/// makes the instance unready, not restarted.
pub async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// GET /readyz: 200 when the database answers a trivial query within [`READY_DB_TIMEOUT`] and
/// a signing key is loaded (a first boot generates one in the background); else 503 with the
/// reason. Errors are logged, not echoed.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if !state.keys_loaded() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no signing key loaded yet\n",
        );
    }
    match tokio::time::timeout(READY_DB_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database query failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_DB_TIMEOUT, "readiness: the database did not answer in time");
            text(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

/// GET /metrics: the OpenMetrics text exposition, with live sessions and the pool read now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let sessions = state.store.count_live_sessions(state.now());
    let live_sessions = match tokio::time::timeout(SCRAPE_STORE_TIMEOUT, sessions).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: counting live sessions failed");
            None
        }
        Err(_) => None,
    };
    let scrape = ScrapeValues {
        live_sessions,
        pool: state.store.pool_usage(),
    };
    match state.metrics.render(scrape) {
        Ok(body) => {
            let mut r = body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    }
}

/// The metrics listener's router: `/metrics` only (and the probes, so the port can be checked).
pub fn metrics_app(state: AppState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}
