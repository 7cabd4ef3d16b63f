//! The worker's HTTP endpoint on `metrics.addr` (docs/DESIGN.md §9): `/metrics` (Prometheus
//! text), `/healthz` (200 while the process runs), `/readyz` (200 when the member is in the
//! group and no active task restores, else 503 naming the tasks still restoring) and
//! `/status` (the status board as JSON). Owns the routes and the Prometheus recorder of the
//! process; reads the runtime's [`StatusBoard`] and never writes it.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tracing::warn;

use crate::runtime::StatusBoard;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("binding the HTTP endpoint to {addr} (metrics.addr): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another metrics recorder is installed in this process.
    #[error("installing the Prometheus recorder: {reason}")]
    Recorder {
        /// What the exporter said.
        reason: String,
    },
}

/// How often the recorder's histograms are drained outside scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use; every metric is described and
/// its worker-level series registered at that moment (so they are exported from the start).
pub fn prometheus() -> Result<PrometheusHandle, HttpError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| e.to_string())?;
            crate::runtime::metrics::describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("kstate-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                })
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
        .map_err(|reason| HttpError::Recorder { reason })
}

#[derive(Clone)]
struct AppState {
    status: StatusBoard,
    metrics: PrometheusHandle,
}

/// The routes, for [`serve`] and for tests.
pub fn router(status: StatusBoard, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .with_state(AppState { status, metrics })
}

/// Binds `addr` (port 0 picks a free one) and serves the routes on a tokio task until the
/// process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, status: StatusBoard) -> Result<SocketAddr, HttpError> {
    let metrics = prometheus()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let app = router(status, metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(bound)
}

async fn render_metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The body of `/readyz`.
#[derive(Debug, Serialize)]
struct Readiness<'a> {
    ready: bool,
    in_group: bool,
    member_state: &'a str,
    restoring: Vec<&'a str>,
}

async fn readyz(State(s): State<AppState>) -> Response {
    let snapshot = s.status.snapshot();
    let body = Readiness {
        ready: snapshot.ready(),
        in_group: snapshot.member.in_group,
        member_state: &snapshot.member.state,
        restoring: snapshot.restoring(),
    };
    let code = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status_json(State(s): State<AppState>) -> Response {
    Json(s.status.snapshot()).into_response()
}
