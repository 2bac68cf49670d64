//! `GET /v1/deliveries[/{id}]` (the delivery log: one delivery per route and event, with its
//! attempts) and `POST /v1/deliveries/{id}/retry` (deliver the event again: it is republished,
//! with a broker confirm, to its route's queue only, from the dead letter that keeps it or from
//! the delivery log where the route logs payloads).

use super::ApiState;
use super::auth::{Access, Caller};
use super::dead_letters::replay_ids;
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path, Query};
use super::{page_limit, parse_time, rfc3339};
use crate::broker::{Destination, Headers};
use crate::config::files::Scope;
use crate::config::route_queue;
use crate::store::{Attempt, AuditEntry, DeadLetterFilter, Delivery, DeliveryFilter, Outcome};
use axum::extract::State;
use base64::Engine as _;

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
    /// The request headers sent, in order, when the route logs payloads (`log_payload`); the
    /// value of a static header that carries a credential (`authorization`, `cookie`,
    /// `x-api-key`, …) is `<masked>`.
    pub request_headers: Option<Vec<RequestHeader>>,
    /// Why it failed.
    pub error: Option<String>,
    /// The body sent, when the route logs payloads (`log_payload`) and it is JSON.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// The body sent, base64, when the route logs payloads and it is not JSON.
    pub payload_base64: Option<String>,
    /// `version` of the config that made the attempt.
    pub config_version: u64,
    /// Its revision.
    pub config_revision: String,
    /// When (RFC 3339).
    pub at: String,
}

/// One request header of an attempt.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RequestHeader {
    /// Lowercase, as sent.
    pub name: String,
    /// As sent, or `<masked>`.
    pub value: String,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        let payload: Option<serde_json::Value> = a.payload.as_deref().and_then(|p| serde_json::from_slice(p).ok());
        let payload_base64 = match (&a.payload, &payload) {
            (Some(p), None) => Some(base64::engine::general_purpose::STANDARD.encode(p)),
            _ => None,
        };
        Self {
            payload,
            payload_base64,
            attempt: a.attempt,
            outcome: a.outcome.as_str().into(),
            status: a.status,
            duration_ms: a.duration_ms,
            response_body: a.response_body,
            // One `name: value` line each (`delivery::attempt::logged_headers`); a name holds
            // neither `:` nor a space, so the first `: ` ends it.
            request_headers: a.request_headers.map(|text| {
                text.lines()
                    .filter_map(|l| l.split_once(": "))
                    .map(|(name, value)| RequestHeader { name: name.into(), value: value.into() })
                    .collect()
            }),
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
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "A bad filter, cursor or limit", body = ErrorBody),
        KeyRefusals,
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let routes = super::tenants::visible_routes(&state, access).await?;
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
        routes,
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
    responses(
        (status = 200, body = DeliveryDetail),
        (status = 400, description = "The id is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 503, description = "The store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let d = visible(&state, access, &id).await?;
    let attempts = state.store.attempts(&id).await?;
    Ok(Json(DeliveryDetail { delivery: d.into(), attempt_log: attempts.into_iter().map(AttemptView::from).collect() }))
}

/// The delivery `id`, if the caller may see it (404 otherwise, also for another tenant's).
async fn visible(state: &ApiState, access: Access<'_>, id: &str) -> Result<Delivery, ApiError> {
    match state.store.delivery(id).await? {
        Some(d) if super::tenants::owns_route(state, access, &d.route).await? => Ok(d),
        _ => Err(ApiError::not_found(format!("no delivery {id:?}"))),
    }
}

/// What a retry republished.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Retried {
    /// The delivery.
    pub id: String,
    /// Its route: the only one that gets the event again.
    pub route: String,
    /// The event (`webhook-id`).
    pub event_id: String,
    /// Where the event came from: `dead_letter` (its dead letter, now marked replayed, or
    /// replayed before) or `delivery_log` (kept because the route logs payloads).
    pub source: String,
    /// The dead letter the event came from, when it came from one.
    pub dead_letter: Option<String>,
}

/// Deliver a delivery's event again, through its route's queue only (at the back, like any new
/// event), with a broker confirm; whatever its outcome, as long as the event is kept: by its dead
/// letter, or by the delivery log when the route logs payloads (`log_payload`). A delivery
/// still retrying is left to the router.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Republished with a broker confirm", body = Retried),
        (status = 400, description = "The id is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Still retrying, its dead letter is being replayed, its route is gone, or the event is not kept (the route does not log payloads and there is no dead letter)", body = ErrorBody),
        (status = 503, description = "The broker is not connected or did not confirm, or the store does not answer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(http::StatusCode, Json<Retried>), ApiError> {
    let access = caller.access(Scope::Admin)?;
    let d = visible(&state, access, &id).await?;
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
    let dead_letter = state.store.dead_letters(&filter).await?.items.into_iter().next();
    let audit = |source: &str, dead_letter: Option<&str>| {
        AuditEntry::new(
            crate::broker::now_ms() as i64,
            &caller.name,
            "delivery.retry",
            &id,
            serde_json::json!({"route": d.route, "event_id": d.event_id, "source": source, "dead_letter": dead_letter}),
        )
    };
    let retried = |source: &str, dead_letter: Option<String>| Retried {
        id: id.clone(),
        route: d.route.clone(),
        event_id: d.event_id.clone(),
        source: source.into(),
        dead_letter,
    };
    // A dead letter not replayed yet is replayed, so that it shows as replayed.
    if let Some(dl) = dead_letter.as_ref().filter(|dl| dl.replayed_at_ms.is_none()) {
        let result = replay_ids(&state, vec![dl.id.clone()]).await?;
        if !result.replayed.is_empty() {
            state.store.append_audit(&audit("dead_letter", Some(&dl.id))).await?;
            return Ok((http::StatusCode::ACCEPTED, Json(retried("dead_letter", Some(dl.id.clone())))));
        }
        if let Some(f) = result.failed.first() {
            return Err(ApiError::unavailable(
                "broker_unavailable",
                format!("the event was not republished: {}", f.error),
            ));
        }
        if !result.in_progress.is_empty() {
            return Err(ApiError::conflict(format!(
                "dead letter {} of delivery {id} is being replayed right now; see GET /v1/dead-letters/{}",
                dl.id, dl.id
            )));
        }
        // Replayed meanwhile by another call: republished from what it keeps, below.
    }
    let (body, headers, source) = match state.store.delivery_event(&id).await? {
        Some(event) => (event, Headers::default(), "delivery_log"),
        None => match &dead_letter {
            Some(dl) => {
                let mut headers = Headers::default();
                if let Ok(serde_json::Value::Object(h)) = serde_json::from_str(&dl.headers) {
                    headers.0.extend(h);
                }
                (dl.body.clone(), headers, "dead_letter")
            }
            None => {
                return Err(ApiError::conflict(format!(
                    "the event of delivery {id} is not kept: route {} does not log payloads and the delivery \
                     (ended {}) has no dead letter; set `log_payload = true` on the route to keep events for \
                     retry, or publish it again from its producer",
                    d.route,
                    d.status.as_str()
                )));
            }
        },
    };
    if state.router.snapshot().route(&d.route).is_none() {
        return Err(ApiError::conflict(format!(
            "route {:?} no longer exists: there is no queue to retry into",
            d.route
        )));
    }
    let broker = state.router.broker().ok_or_else(|| {
        ApiError::unavailable("broker_unavailable", "the router is not connected to its broker right now; retry")
    })?;
    let mut headers = headers;
    headers.set("hookrelay-retry-of", id.as_str());
    // Attempts are numbered on from the delivery's.
    headers.set(crate::broker::H_ATTEMPTS_BEFORE, d.attempts);
    let queue = route_queue(&d.route);
    broker
        .publish(Destination::Queue(&queue), &body, &headers, Some(&d.event_id))
        .await
        .map_err(|e| ApiError::unavailable("broker_unavailable", format!("the broker did not confirm: {e}; retry")))?;
    let from_dead_letter = (source == "dead_letter").then(|| dead_letter.as_ref().map(|dl| dl.id.clone())).flatten();
    state.store.append_audit(&audit(source, from_dead_letter.as_deref())).await?;
    Ok((http::StatusCode::ACCEPTED, Json(retried(source, from_dead_letter))))
}
