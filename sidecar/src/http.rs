//! The operator's HTTP endpoint: `/metrics` (Prometheus text), `/health`
//! (liveness: the process serves) and `/ready` (readiness: recovery is done,
//! the IPC endpoints are bound, and storage answers). It starts before
//! recovery, so a long index rebuild is visible as live-but-not-ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aft::metrics::Metrics;
use aft::storage::Storage;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tracing::{info, warn};

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    storage: Arc<dyn Storage>,
    ready: Arc<AtomicBool>,
}

/// Binds `addr` and serves until the runtime stops. Returns the bound address.
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    storage: Arc<dyn Storage>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot bind the metrics address `{addr}` (--metrics-addr): {e}; \
                 two sidecars on one host need different --node-address values or \
                 --metrics-addr ports (or --metrics-addr off)"
        )
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready_handler))
        .with_state(AppState {
            metrics,
            storage,
            ready,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "metrics server stopped");
        }
    });
    info!(addr = %bound, "metrics and health endpoint listening");
    Ok(bound)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
    }
    match state.storage.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage unavailable: {e}\n"),
        ),
    }
}
