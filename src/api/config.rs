//! `GET /v1/config` (the live config's version, revision, routes, and the last reloads),
//! `POST /v1/config/reload` (the same as SIGHUP: load, validate, and swap or keep the old one;
//! audited either way, as `config.reload`, with its outcome, as SIGHUP's are), and
//! `POST /v1/config/plan` (what a reload to the config whose files the caller sends would change,
//! against the live config; see [`crate::runtime::plan`]: the router never sends its own files,
//! which may hold passwords). A plan changes nothing, so it is not audited.

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, Json, KeyRefusals};
use crate::config::Origin;
use crate::config::files::Scope;
use crate::runtime::ReloadOutcome;
use crate::runtime::plan::Plan;
use axum::extract::State;

/// The live config.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    /// `version` from `hookrelay.toml`.
    pub version: u64,
    /// Hash over every config file loaded.
    pub revision: String,
    /// The files loaded, relative to the config directory.
    pub files: Vec<String>,
    /// Routes from files.
    pub file_routes: usize,
    /// Routes from subscriptions.
    pub api_routes: usize,
    /// `rabbitmq` or `embedded`; absent while disconnected.
    pub broker: Option<String>,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// The data directory: where the SQLite store and the embedded broker's queue file are
    /// (when they are given as relative paths).
    pub data_dir: String,
    /// Where the data directory's name came from.
    pub data_dir_from: crate::config::data::DataDirFrom,
    /// Reloads applied since start.
    pub reloads_applied: u64,
    /// Reloads rejected since start.
    pub reloads_rejected: u64,
    /// The errors of the last rejected reload, kept until one is applied.
    pub last_reload_errors: Option<Vec<String>>,
    /// Warnings of the live config (patterns that match no known type).
    pub warnings: Vec<String>,
}

/// The live config and the reload history.
#[utoipa::path(get, path = "/v1/config", tag = "operations",
    responses((status = 200, body = ConfigView), KeyRefusals),
    security(("bearer" = [])))]
pub async fn get(State(state): State<ApiState>, caller: Caller) -> Result<Json<ConfigView>, ApiError> {
    caller.require(Scope::Read)?;
    let s = state.router.snapshot();
    let status = state.router.reload_status();
    let api_routes = s.routes.iter().filter(|r| matches!(r.origin, Origin::Api { .. })).count();
    Ok(Json(ConfigView {
        version: s.version,
        revision: s.revision.clone(),
        files: s.files.clone(),
        file_routes: s.routes.len() - api_routes,
        api_routes,
        broker: state.router.broker().map(|b| b.kind().to_string()),
        store: state.store.backend().to_string(),
        data_dir: s.data_dir.path.display().to_string(),
        data_dir_from: s.data_dir.from,
        reloads_applied: status.applied,
        reloads_rejected: status.rejected,
        last_reload_errors: status.last_error,
        warnings: s.warnings.iter().map(ToString::to_string).collect(),
    }))
}

/// A reload that was applied.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// The new `version`.
    pub version: u64,
    /// The new revision.
    pub revision: String,
    /// Routes that started.
    pub added: Vec<String>,
    /// Routes that stop after their in-flight deliveries.
    pub removed: Vec<String>,
    /// Routes whose new config applies to deliveries that start now.
    pub changed: Vec<String>,
}

/// Reload the config from disk, as SIGHUP does. A config that does not load is rejected with
/// every `file:line:col` error, and the old one keeps running. Both outcomes are audited.
#[utoipa::path(post, path = "/v1/config/reload", tag = "operations",
    responses(
        (status = 200, description = "Applied", body = Reloaded),
        KeyRefusals,
        (status = 422, description = "Rejected; the previous config keeps running (details: the errors)", body = ErrorBody),
        (status = 503, description = "The store does not answer (the reload's outcome is not audited)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reload(State(state): State<ApiState>, caller: Caller) -> Result<Json<Reloaded>, ApiError> {
    caller.require(Scope::Admin)?;
    let (outcome, audited) = crate::runtime::reload::reload_audited(
        &state.router,
        &state.config_dir,
        "POST /v1/config/reload",
        &caller.name,
    )
    .await;
    audited?;
    match outcome {
        ReloadOutcome::Applied { version, revision, added, removed, changed } => {
            Ok(Json(Reloaded { version, revision, added, removed, changed }))
        }
        ReloadOutcome::Rejected { errors } => Err(ApiError::unprocessable(
            "reload_rejected",
            format!("the new config was rejected ({} error(s)); the previous config keeps running", errors.len()),
        )
        .details(serde_json::json!({ "errors": errors }))),
    }
}

/// A config to plan: its files.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The new config's files, each path (relative to the config directory: `hookrelay.toml`,
    /// `routes/<name>.toml`, `schemas/<type>/v<N>.json`, `plugins/<name>.rhai`, a `ca_file`'s
    /// `<name>.pem`) to its text; at most 4096 files, and 1.5 MiB together. A route's
    /// `secret_file` is not sent: the router reads it where a reload would.
    pub files: std::collections::BTreeMap<String, String>,
}

/// What a reload to the config whose files are sent would change, computed by the router
/// against the config in force, as a reload computes it (secrets from the router's environment,
/// its data directory, the subscriptions merged in). Nothing is changed. A config that does not
/// load is a plan too: `loads` false, with every `file:line:col` error.
#[utoipa::path(post, path = "/v1/config/plan", tag = "operations", request_body = PlanRequest,
    responses(
        (status = 200, description = "The plan (see `loads` and `applies`)", body = Plan),
        (status = 400, description = "Not JSON, or unknown keys", body = ErrorBody),
        KeyRefusals,
        (status = 413, description = "The files hold more than 1.5 MiB together, or the body is over 2 MB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 422, description = "A path outside the config layout (`details.path`), or more than 4096 files", body = ErrorBody),
        (status = 503, description = "The router cannot write its scratch directory", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn plan(
    State(state): State<ApiState>,
    caller: Caller,
    Json(req): Json<PlanRequest>,
) -> Result<Json<Plan>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(state.router.plan(req.files).await?))
}
