//! `GET /v1/event-types[/{type}]`: the schema catalogue of the live config, and which routes
//! take each type.

use super::ApiState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path};
use crate::broker::topic;
use crate::config::Snapshot;
use crate::config::files::Scope;
use axum::extract::State;

/// One event type.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventType {
    /// The CloudEvent `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Schema versions, ascending.
    pub versions: Vec<u32>,
    /// The version used when an event gives no `dataversion`.
    pub latest: u32,
    /// Routes whose patterns match the type (for a tenant token: its own).
    pub routes: Vec<String>,
}

/// One event type with its schemas.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventTypeDetail {
    /// The type.
    #[serde(flatten)]
    pub summary: EventType,
    /// Version → the JSON Schema of `data`, as written in `schemas/<type>/v<N>.json`.
    #[schema(value_type = Object)]
    pub schemas: serde_json::Map<String, serde_json::Value>,
}

/// The catalogue.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventTypes {
    /// Every type, sorted.
    pub items: Vec<EventType>,
}

fn summary(s: &Snapshot, access: Access<'_>, ty: &str) -> Option<EventType> {
    let schemas = s.schemas.get(ty)?;
    let versions: Vec<u32> = schemas.versions.keys().copied().collect();
    Some(EventType {
        ty: ty.to_string(),
        latest: versions.last().copied().unwrap_or_default(),
        versions,
        routes: s
            .routes
            .iter()
            .filter(|r| super::routes::sees(access, r) && r.events.iter().any(|p| topic::matches(p, ty)))
            .map(|r| r.name.clone())
            .collect(),
    })
}

/// List the event types.
#[utoipa::path(get, path = "/v1/event-types", tag = "catalogue",
    responses((status = 200, body = EventTypes), KeyRefusals),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Json<EventTypes>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let s = state.router.snapshot();
    Ok(Json(EventTypes { items: s.schemas.types().into_iter().filter_map(|t| summary(&s, access, t)).collect() }))
}

/// One event type and its schemas.
#[utoipa::path(get, path = "/v1/event-types/{type}", tag = "catalogue",
    params(("type" = String, Path, description = "The CloudEvent type")),
    responses(
        (status = 200, body = EventTypeDetail),
        (status = 400, description = "The type is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No schema for this type", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(ty): Path<String>,
) -> Result<Json<EventTypeDetail>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let s = state.router.snapshot();
    let summary =
        summary(&s, access, &ty).ok_or_else(|| ApiError::not_found(format!("no schema for event type {ty:?}")))?;
    let schemas = s
        .schemas
        .get(&ty)
        .map(|t| t.documents.iter().map(|(v, d)| (v.to_string(), d.as_ref().clone())).collect())
        .unwrap_or_default();
    Ok(Json(EventTypeDetail { summary, schemas }))
}
