//! `/healthz` (the process answers), `/readyz` (broker connected, store reachable, config
//! loaded) and `/metrics` (Prometheus text format). No key is needed for these.

use super::ApiState;
use super::error::{ApiError, ErrorBody, Json};
use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;

/// Liveness.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Readiness, check by check.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// All checks pass.
    pub ready: bool,
    /// Connected to the broker.
    pub broker: bool,
    /// The store answers.
    pub store: bool,
    /// A config is loaded (always true once serving).
    pub config: bool,
    /// What fails, when something does.
    pub problems: Vec<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Ready to take and deliver events.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, description = "Not ready", body = Ready)))]
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Ready>) {
    let mut problems = Vec::new();
    let broker = state.router.broker().is_some();
    if !broker {
        problems.push("not connected to the broker".to_string());
    }
    let store = match state.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            problems.push(format!("store: {e}"));
            false
        }
    };
    let ready = broker && store;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready, broker, store, config: true, problems }))
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are off", body = ErrorBody)))]
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let render = state.metrics.as_ref().ok_or_else(|| ApiError::not_found("metrics are not enabled"))?;
    Ok(([(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], render()))
}
