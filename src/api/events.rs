//! `POST /v1/events`: the producers' HTTP way in. The event is checked synchronously (a
//! CloudEvent 1.0 in structured JSON mode, under the size limit, a known type, `data` valid for
//! its schema) and published to the broker with a confirm before the answer: a 202 means the
//! event is durably queued for every route that subscribes to its type.

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, Json};
use crate::broker::{BrokerError, Destination, H_TRACEPARENT, Headers};
use crate::config::files::Scope;
use crate::event::CloudEvent;
use crate::pipeline::schema::SchemaError;
use axum::body::Body;
use axum::extract::State;
use http::{HeaderMap, StatusCode};

/// The answer to an accepted event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The event id (the `webhook-id` its deliveries will carry).
    pub id: String,
    /// Whether at least one route subscribes to the type. An event no route wants is accepted
    /// and dropped, as a topic exchange does.
    pub routed: bool,
}

/// Ingest one event.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(content = Object, description = "A CloudEvent 1.0 in structured JSON mode",
        content_type = "application/cloudevents+json"),
    responses(
        (status = 202, description = "Published with a broker confirm", body = Accepted),
        (status = 400, description = "Not JSON", body = super::error::ErrorBody),
        (status = 413, description = "Over [limits] max_event_bytes", body = super::error::ErrorBody),
        (status = 422, description = "Not a CloudEvent, unknown type, or data that breaks its schema (details: the violations with their JSON paths)", body = super::error::ErrorBody),
        (status = 503, description = "The broker is not connected; retry", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn ingest(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.require(Scope::Ingest)?;
    let snapshot = state.router.snapshot();
    let limit = snapshot.limits.max_event_bytes;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the event is over the limit of {limit} bytes ([limits] max_event_bytes)"),
        )
    })?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&raw).is_err() {
        return Err(ApiError::bad_request("the body is not JSON: send a CloudEvent in structured JSON mode"));
    }
    let event = CloudEvent::decode(&raw).map_err(|e| ApiError::unprocessable("malformed", e.to_string()))?;
    let null = serde_json::Value::Null;
    if let Err(e) = snapshot.schemas.validate(&event.ty, event.data_version(), event.data.as_ref().unwrap_or(&null)) {
        return Err(match &e {
            SchemaError::Invalid { violations, .. } => ApiError::unprocessable("schema", e.to_string())
                .details(serde_json::json!({ "violations": violations })),
            _ => ApiError::unprocessable("unknown_type", e.to_string()),
        });
    }
    let broker = state.router.broker().ok_or_else(|| {
        ApiError::unavailable("broker_unavailable", "the router is not connected to its broker right now; retry")
    })?;
    let mut message_headers = Headers::default();
    if let Some(tp) = headers.get(H_TRACEPARENT).and_then(|v| v.to_str().ok()) {
        message_headers.set(H_TRACEPARENT, tp);
    }
    let to = Destination::Events { routing_key: &event.ty };
    let routed = match broker.publish(to, &raw, &message_headers, Some(&event.id)).await {
        Ok(()) => true,
        Err(BrokerError::NotRouted(_)) => false,
        Err(e) => {
            return Err(ApiError::unavailable("broker_unavailable", format!("the broker did not confirm: {e}; retry")));
        }
    };
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: event.id, routed })))
}
