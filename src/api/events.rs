//! `POST /v1/events`: the producers' HTTP way in. The event is checked synchronously (a
//! CloudEvent 1.0 in structured JSON mode sent as one of [`MEDIA_TYPES`], or in binary mode with
//! `ce-` headers, turned into the structured form by [`crate::binding`]; under the size
//! limit, attributes that can be carried, a known type, `data` valid for its schema) and
//! published to the broker with a confirm before the answer: a 202 means the event is durably
//! queued for every route that subscribes to its type. A batch ([`BATCH`]) is a JSON array of
//! structured events, each checked and published in order and answered in [`BatchAnswer`]:
//! an event whose result is 202 is durably queued, whatever became of the others.
//!
//! With traces on (or debug lines), each request has an ingest span, child of the caller's
//! `traceparent`; the published message carries the span's context as its `traceparent`
//! header, so the router's event span continues the caller's trace. With traces off, the
//! caller's `traceparent` is passed on as it came, and no span is made
//! ([`telemetry::ingest_span`]).

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorDetail, Json, KeyRefusals};
use crate::binding;
use crate::broker::{BrokerError, Destination, H_TRACEPARENT, Headers};
use crate::config::files::Scope;
use crate::event::CloudEvent;
use crate::pipeline::schema::{H_VALIDATED, SchemaError, validated_mark};
use crate::telemetry;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tracing::Instrument;

/// The `Content-Type`s a CloudEvent body may have (checked by [`super::access`] before any
/// handler): structured mode, or plain JSON. `POST /v1/events` takes [`INGEST_MEDIA_TYPES`].
pub const MEDIA_TYPES: &[&str] = &["application/cloudevents+json", "application/json"];

/// A batch of structured events: a JSON array of them.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// What `POST /v1/events` takes: [`MEDIA_TYPES`] and [`BATCH`]. A binary-mode request (one that
/// carries `ce-specversion`) may have any content type: it is its data's.
pub const INGEST_MEDIA_TYPES: &[&str] = &["application/cloudevents+json", "application/json", BATCH];

/// The most events one batch may hold.
pub const MAX_BATCH_EVENTS: usize = 1_000;

/// The largest batch body: this, or `[limits] max_event_bytes` when that is larger.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The answer to an accepted event.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The event id (the `webhook-id` its deliveries will carry).
    pub id: String,
    /// Whether at least one route subscribes to the type. An event no route wants is accepted
    /// and dropped, as a topic exchange does.
    pub routed: bool,
}

/// The answer to a batch: one result per event, in the order sent. The status is 202 when every
/// event was accepted, 207 otherwise.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// Events accepted (durably queued).
    pub accepted: usize,
    /// Events refused; each says why in its result.
    pub refused: usize,
    /// One per event, in the order of the batch.
    pub results: Vec<BatchResult>,
}

/// What became of one event of a batch.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// What a request of this event alone would have been answered: 202 (durably queued), 413,
    /// 422 (details name the attribute or the schema violations) or 503 (retry it).
    pub status: u16,
    /// The event id, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Accepted: whether at least one route subscribes to the type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<bool>,
    /// Refused: the error, as a request of this event alone would have had it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Ingest one event (structured or binary mode), or a batch.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(content = Object, description = "A CloudEvent 1.0 in structured JSON mode \
        (`application/cloudevents+json` or `application/json`); or in binary mode: the attributes as \
        `ce-<name>` headers (percent-encoded), the data as the body, its `Content-Type` any; or a batch: \
        `application/cloudevents-batch+json`, a JSON array of structured events (docs/publishing.md)",
        content_type = "application/cloudevents+json"),
    responses(
        (status = 202, description = "Published with a broker confirm (a batch: every event; the body is then a `BatchAnswer`)", body = Accepted),
        (status = 207, description = "A batch of which some events were refused: each event's result says what became of it; those with status 202 are durably queued", body = BatchAnswer),
        (status = 400, description = "Not JSON (a batch: not a JSON array, or an empty one)", body = ErrorBody),
        KeyRefusals,
        (status = 413, description = "Over [limits] max_event_bytes (a batch: over 1000 events or 4 MiB)", body = ErrorBody),
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
) -> Result<Response, ApiError> {
    caller.require(Scope::Ingest)?;
    let incoming =
        headers.get(H_TRACEPARENT).and_then(|v| v.to_str().ok()).filter(|tp| telemetry::is_valid_traceparent(tp));
    let span = telemetry::ingest_span(incoming);
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let answer =
        if content_type.is_some_and(|ct| ct.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(BATCH)) {
            accept_batch(&state, incoming, &span, body).await
        } else {
            accept(&state, incoming, &span, &headers, body).await.map(|(status, json)| (status, json).into_response())
        };
    let status = match &answer {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    telemetry::record_ingest(&span, status.as_u16());
    answer
}

/// The body, within `limit` bytes.
async fn read(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{what} is over the limit of {limit} bytes"))
    })
}

/// Checks and publishes one event, in structured or binary mode. The request's `traceparent`
/// (else the event's own) is the parent of the ingest span, which is only entered for the
/// publish so that the parent can still be set once the event is decoded; the message carries
/// the ingest span's context on.
async fn accept(
    state: &ApiState,
    incoming: Option<&str>,
    span: &tracing::Span,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let snapshot = state.router.snapshot();
    let limit = snapshot.limits.max_event_bytes;
    let raw = read(body, limit, "the event ([limits] max_event_bytes)").await?;
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let binary = headers.contains_key(binding::HTTP_SPECVERSION) && !binding::is_structured(content_type);
    let raw = if binary {
        // Binary mode: the structured form is what is checked, queued and delivered.
        let structured = Bytes::from(binding::from_http(headers, &raw)?);
        if structured.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the event in structured form is {} bytes, over the limit of {limit} ([limits] max_event_bytes)",
                    structured.len()
                ),
            ));
        }
        structured
    } else {
        raw
    };
    // One parse for an event that decodes; a body that does not is parsed again, only to tell
    // one that is not JSON at all (400) from one that is no valid CloudEvent (422).
    let event = check(&snapshot, &raw).map_err(|e| {
        if !binary && serde_json::from_slice::<serde::de::IgnoredAny>(&raw).is_err() {
            ApiError::bad_request(
                "the body is not JSON: send a CloudEvent in structured JSON mode, or in binary mode with ce- headers",
            )
        } else {
            e
        }
    })?;
    if incoming.is_none()
        && let Some(tp) = event.traceparent()
    {
        telemetry::set_parent(span, tp);
    }
    telemetry::record_event(span, &event.id, &event.ty);
    let routed =
        publish(state, &snapshot.revision, &event, &raw, telemetry::forward_traceparent(span, incoming), span).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: event.id, routed })))
}

/// Decodes one structured event and validates its data: the checks every event passes at ingest.
fn check(snapshot: &crate::config::Snapshot, raw: &[u8]) -> Result<CloudEvent, ApiError> {
    let event = CloudEvent::decode(raw)?;
    event.check_schedule(snapshot.limits.max_schedule_ahead.0, std::time::SystemTime::now())?;
    crate::metrics::schema_validated(crate::metrics::ValidatedAt::Ingest);
    if let Err(e) = snapshot.schemas.validate(&event.ty, event.data_version(), event.data_ref()) {
        return Err(match &e {
            SchemaError::Invalid { violations, .. } => ApiError::unprocessable("schema", e.to_string())
                .details(serde_json::json!({ "violations": violations })),
            _ => ApiError::unprocessable("unknown_type", e.to_string()),
        });
    }
    Ok(event)
}

/// Publishes one checked event with a confirm: `Ok(routed)` once the broker holds it durably.
async fn publish(
    state: &ApiState,
    revision: &str,
    event: &CloudEvent,
    raw: &[u8],
    traceparent: Option<String>,
    span: &tracing::Span,
) -> Result<bool, ApiError> {
    let broker = state.router.broker().ok_or_else(|| {
        ApiError::unavailable("broker_unavailable", "the router is not connected to its broker right now; retry")
    })?;
    let mut message_headers = Headers::default();
    // Validated under this revision: the router does not validate it again.
    message_headers.set(H_VALIDATED, validated_mark(revision));
    // With traces off, the caller's traceparent passes through unchanged; without one, none is
    // set and the router uses the event's `traceparent` extension, if any.
    if let Some(tp) = traceparent {
        message_headers.set(H_TRACEPARENT, tp);
    }
    let to = Destination::Events { routing_key: &event.ty };
    match broker.publish(to, raw, &message_headers, Some(&event.id)).instrument(span.clone()).await {
        Ok(()) => Ok(true),
        Err(BrokerError::NotRouted(_)) => Ok(false),
        Err(e) => Err(ApiError::unavailable("broker_unavailable", format!("the broker did not confirm: {e}; retry"))),
    }
}

/// Checks and publishes each event of a batch, in order, one confirm at a time (so that the
/// events of an ordered route keep the batch's order). Each is answered on its own; only a body
/// that is no batch at all is refused as a whole. The message of each carries the request's
/// `traceparent` (the ingest span's when traces are on), else the event's own.
async fn accept_batch(
    state: &ApiState,
    incoming: Option<&str>,
    span: &tracing::Span,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = state.router.snapshot();
    let limit = snapshot.limits.max_event_bytes;
    let raw = read(body, MAX_BATCH_BYTES.max(limit), "the batch").await?;
    let items: Vec<serde_json::Value> = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request(format!("the body is not a JSON array of structured CloudEvents ({BATCH}): {e}"))
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request("the batch is empty: send at least one event"));
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the batch holds {} events, over the limit of {MAX_BATCH_EVENTS}: split it", items.len()),
        ));
    }
    let traceparent = incoming.and_then(|tp| telemetry::forward_traceparent(span, Some(tp)));
    let mut results = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(|v| v.as_str()).map(str::to_string);
        let outcome = async {
            let raw = serde_json::to_vec(item).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if raw.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the event is {} bytes, over the limit of {limit} ([limits] max_event_bytes)", raw.len()),
                ));
            }
            let event = check(&snapshot, &raw)?;
            let routed = publish(state, &snapshot.revision, &event, &raw, traceparent.clone(), span).await?;
            Ok::<_, ApiError>((event.id, routed))
        }
        .await;
        results.push(match outcome {
            Ok((id, routed)) => BatchResult { index, status: 202, id: Some(id), routed: Some(routed), error: None },
            Err(e) => BatchResult {
                index,
                status: e.status.as_u16(),
                id,
                routed: None,
                error: Some(ErrorDetail { code: e.code.to_string(), message: e.message, details: e.details }),
            },
        });
    }
    let accepted = results.iter().filter(|r| r.status == 202).count();
    let refused = results.len() - accepted;
    let status = if refused == 0 { StatusCode::ACCEPTED } else { StatusCode::MULTI_STATUS };
    Ok((status, Json(BatchAnswer { accepted, refused, results })).into_response())
}
