//! `GET /v1/deliveries[/{id}]` (the delivery log: one delivery per route and event, with its
//! attempts) and `POST /v1/deliveries/{id}/retry` (deliver the event again: it is republished to
//! its route's queue from the dead letter that keeps it).

use super::ApiState;
use super::auth::Caller;
use super::dead_letters::{ReplayResult, replay_ids};
use super::error::{ApiError, Json, Path, Query};
use super::{page_limit, parse_time, rfc3339};
use crate::config::files::Scope;
use crate::store::{Attempt, DeadLetterFilter, Delivery, DeliveryFilter, Outcome};
use axum::extract::State;

/// Filters of the delivery log.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this route.
    pub route: Option<String>,
    /// `delivered`, `retrying` or `dead` (the latest attempt's outcome).
    pub status: Option<String>,
    /// Only this event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Latest attempt at or after (RFC 3339 or Unix ms).
    pub since: Option<String>,
    /// Latest attempt before (RFC 3339 or Unix ms).
    pub until: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// One route's delivery of one event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Stable id (route + event id).
    pub id: String,
    /// Route.
    pub route: String,
    /// CloudEvent id (`webhook-id`).
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// `delivered`, `retrying` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The latest HTTP status.
    pub last_status: Option<u16>,
    /// The latest error.
    pub last_error: Option<String>,
    /// First attempt (RFC 3339).
    pub first_at: String,
    /// Latest attempt (RFC 3339).
    pub last_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            route: d.route,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status.as_str().into(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            first_at: rfc3339(d.first_at_ms),
            last_at: rfc3339(d.last_at_ms),
        }
    }
}

/// One attempt.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1-based.
    pub attempt: u32,
    /// `delivered`, `retrying` or `dead`.
    pub outcome: String,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Milliseconds from sending to the end of the response.
    pub duration_ms: u64,
    /// The start of the response body.
    pub response_body: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// `version` of the config that made the attempt.
    pub config_version: u64,
    /// Its revision.
    pub config_revision: String,
    /// When (RFC 3339).
    pub at: String,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            outcome: a.outcome.as_str().into(),
            status: a.status,
            duration_ms: a.duration_ms,
            response_body: a.response_body,
            error: a.error,
            config_version: a.config_version,
            config_revision: a.config_revision,
            at: rfc3339(a.at_ms),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A delivery with its attempts.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// Its attempts, oldest first.
    pub attempt_log: Vec<AttemptView>,
}

/// List deliveries, newest first.
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    caller.require(Scope::Read)?;
    let status = match q.status.as_deref() {
        None => None,
        Some("delivered") => Some(Outcome::Delivered),
        Some("retrying") => Some(Outcome::Retrying),
        Some("dead") => Some(Outcome::Dead),
        Some(other) => {
            return Err(ApiError::bad_request(format!("`status` = {other:?}: use delivered, retrying or dead")));
        }
    };
    let filter = DeliveryFilter {
        route: q.route,
        status,
        event_type: q.event_type,
        since_ms: q.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until_ms: q.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        cursor: q.cursor,
        limit: page_limit(q.limit)?,
    };
    let page = state.store.deliveries(&filter).await?;
    Ok(Json(DeliveryPage { items: page.items.into_iter().map(DeliveryView::from).collect(), next: page.next }))
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, body = DeliveryDetail), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    caller.require(Scope::Read)?;
    let d = state.store.delivery(&id).await?.ok_or_else(|| ApiError::not_found(format!("no delivery {id:?}")))?;
    let attempts = state.store.attempts(&id).await?;
    Ok(Json(DeliveryDetail { delivery: d.into(), attempt_log: attempts.into_iter().map(AttemptView::from).collect() }))
}

/// Deliver a delivery's event again, through its route's queue (at the back, like any new
/// event). The event is kept only with its dead letter (payloads are not logged unless a route
/// opts in), so this works for deliveries that ended dead-lettered; a dead letter already
/// replayed is replayed again. A delivery still retrying is left to the router.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Republished with a broker confirm", body = ReplayResult),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Still retrying, or the event is not kept", body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(http::StatusCode, Json<ReplayResult>), ApiError> {
    caller.require(Scope::Admin)?;
    let d = state.store.delivery(&id).await?.ok_or_else(|| ApiError::not_found(format!("no delivery {id:?}")))?;
    if d.status == Outcome::Retrying {
        return Err(ApiError::conflict(format!(
            "delivery {id} is still being retried by the router (attempt {}); it needs no retry from here",
            d.attempts
        )));
    }
    let filter = DeadLetterFilter {
        route: Some(d.route.clone()),
        event_id: Some(d.event_id.clone()),
        include_replayed: true,
        limit: 1,
        ..Default::default()
    };
    let Some(dl) = state.store.dead_letters(&filter).await?.items.into_iter().next() else {
        return Err(ApiError::conflict(format!(
            "the event of delivery {id} is not kept: events are stored only with their dead letters \
             (this delivery ended {}); publish it again from its producer",
            d.status.as_str()
        )));
    };
    if dl.replayed_at_ms.is_some() {
        state.store.release_replayed(std::slice::from_ref(&dl.id)).await?;
    }
    let result = replay_ids(&state, &caller, vec![dl.id]).await?;
    Ok((http::StatusCode::ACCEPTED, Json(result)))
}
