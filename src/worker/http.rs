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
    #[error("binding the HTTP endpoint to {addr} (metrics.addr)")]
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

/// A running endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 picks a free one) and serves the routes on a tokio task until the
/// returned [`HttpServer`] is dropped.
pub async fn serve(addr: SocketAddr, status: StatusBoard) -> Result<HttpServer, HttpError> {
    let metrics = prometheus()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let app = router(status, metrics);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(HttpServer { addr: bound, task })
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
    assignment_received: bool,
    member_state: &'a str,
    restoring: Vec<&'a str>,
}

async fn readyz(State(s): State<AppState>) -> Response {
    let snapshot = s.status.snapshot();
    let body = Readiness {
        ready: snapshot.ready(),
        in_group: snapshot.member.in_group,
        assignment_received: snapshot.member.assignment_received,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{MemberState, TaskId};
    use crate::runtime::status::TaskPhase;

    async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
        let url = format!("http://{addr}{path}");
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
            let body = response
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok((response.status().as_u16(), body))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    #[tokio::test]
    async fn readyz_follows_the_board_and_the_endpoint_stops_when_dropped() {
        let board = StatusBoard::new();
        let server = serve(SocketAddr::from(([127, 0, 0, 1], 0)), board.clone())
            .await
            .unwrap();
        let addr = server.addr();
        assert_eq!(get(addr, "/healthz").await.unwrap(), (200, "ok\n".into()));

        let (code, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(code, 503);
        assert!(body.contains(r#""in_group":false"#), "{body}");

        board.set_member("m", 1, MemberState::Stable);
        let task = TaskId {
            subtopology: "0".into(),
            partition: 4,
        };
        board.set_assignment(&[task.clone()].into(), &Default::default());
        board.set_task(&task, TaskPhase::Restoring);
        let (code, body) = get(addr, "/readyz").await.unwrap();
        assert_eq!(code, 503);
        assert!(body.contains(r#""restoring":["0_4"]"#), "{body}");

        board.set_task(&task, TaskPhase::Running);
        assert_eq!(get(addr, "/readyz").await.unwrap().0, 200);
        let (code, body) = get(addr, "/status").await.unwrap();
        assert_eq!(code, 200);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["tasks"][0]["id"], "0_4");
        let (code, metrics) = get(addr, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(metrics.contains("kstate_restoring_tasks"), "{metrics}");

        drop(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the endpoint still accepts connections after its server was dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
