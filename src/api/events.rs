//! `POST /v1/events`: the producers' HTTP way in. The event is checked synchronously (a
//! CloudEvent 1.0 in structured JSON mode sent as one of [`MEDIA_TYPES`], under the size limit,
//! attributes that can be carried, a known type, `data` valid for its schema) and published to
//! the broker with a confirm before the answer: a 202 means the event is durably queued for
//! every route that subscribes to its type.
//!
//! Each accepted request has an ingest span (exported when traces are on), child of the
//! caller's `traceparent`; the published message carries the span's context as its
//! `traceparent` header, so the router's event span continues the caller's trace.

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, Json, KeyRefusals};
use crate::broker::{BrokerError, Destination, H_TRACEPARENT, Headers};
use crate::config::files::Scope;
use crate::event::CloudEvent;
use crate::pipeline::schema::{H_VALIDATED, SchemaError, validated_mark};
use crate::telemetry;
use axum::body::Body;
use axum::extract::State;
use http::{HeaderMap, StatusCode};
use tracing::Instrument;

/// The `Content-Type`s a CloudEvent body may have (checked by [`super::access`] before any
/// handler): structured mode, or plain JSON. Batches (`application/cloudevents-batch+json`) and
/// binary mode are not accepted yet; they will need their own entries here when they are.
pub const MEDIA_TYPES: &[&str] = &["application/cloudevents+json", "application/json"];

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
        (status = 400, description = "Not JSON", body = ErrorBody),
        KeyRefusals,
        (status = 413, description = "Over [limits] max_event_bytes", body = ErrorBody),
        (status = 422, description = "Not a CloudEvent or an attribute that cannot be carried (`malformed`, details: the attribute), unknown type, or data that breaks its schema (details: the violations with their JSON paths)", body = ErrorBody),
        (status = 503, description = "The broker is not connected or did not confirm; retry", body = ErrorBody),
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
    let incoming = headers
        .get(H_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|tp| telemetry::parse_traceparent(tp).is_some());
    let span = telemetry::ingest_span(incoming);
    let answer = accept(&state, incoming, &span, body).await;
    let status = match &answer {
        Ok((status, _)) => *status,
        Err(e) => e.status,
    };
    telemetry::record_ingest(&span, status.as_u16());
    answer
}

/// Checks and publishes one event. The request's `traceparent` (else the event's own) is the
/// parent of the ingest span, which is only entered for the publish so that the parent can
/// still be set once the event is decoded; the message carries the ingest span's context on.
async fn accept(
    state: &ApiState,
    incoming: Option<&str>,
    span: &tracing::Span,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
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
    let event = CloudEvent::decode(&raw)?;
    if incoming.is_none()
        && let Some(tp) = event.traceparent()
    {
        telemetry::set_parent(span, tp);
    }
    telemetry::record_event(span, &event.id, &event.ty);
    let null = serde_json::Value::Null;
    crate::metrics::schema_validated(crate::metrics::ValidatedAt::Ingest);
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
    // Validated under this revision: the router does not validate it again.
    message_headers.set(H_VALIDATED, validated_mark(&snapshot.revision));
    // With traces off, the caller's traceparent passes through unchanged; without one, none is
    // set and the router uses the event's `traceparent` extension, if any.
    if let Some(tp) = telemetry::forward_traceparent(span, incoming) {
        message_headers.set(H_TRACEPARENT, tp);
    }
    let to = Destination::Events { routing_key: &event.ty };
    let published = broker.publish(to, &raw, &message_headers, Some(&event.id)).instrument(span.clone()).await;
    let routed = match published {
        Ok(()) => true,
        Err(BrokerError::NotRouted(_)) => false,
        Err(e) => {
            return Err(ApiError::unavailable("broker_unavailable", format!("the broker did not confirm: {e}; retry")));
        }
    };
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: event.id, routed })))
}
