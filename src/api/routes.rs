//! `GET /v1/routes[/{name}]` (file and API routes side by side, with their origin, and the
//! state of their endpoint policies on this replica) and `POST /v1/routes/{name}/test` (send a
//! signed test event to the route's receiver now, past its circuit breaker and rate limit).

use super::ApiState;
use super::auth::{Access, Caller};
use super::error::{ApiError, ErrorBody, Json, KeyRefusals, Path, RawBody};
use crate::config::files::Scope;
use crate::config::{Origin, Route};
use crate::delivery::attempt::Attempt;
use crate::delivery::gate::Gate;
use crate::delivery::http::sign::Signer;
use crate::delivery::policy;
use crate::delivery::verdict::Class;
use crate::event::CloudEvent;
use crate::pipeline::{self, Payload, Prepared};
use crate::telemetry::{checked_traceparent, new_traceparent};
use axum::extract::State;
use bytes::Bytes;
use std::sync::Arc;

/// A route as the API shows it. Secrets are never shown.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RouteView {
    /// Name (and queue `hookrelay.route.<name>`).
    pub name: String,
    /// `file` or `api`.
    pub origin: String,
    /// The route file, for file routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The subscription id, for API routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Event types and patterns.
    pub events: Vec<String>,
    /// The receiver.
    pub url: String,
    /// Strict FIFO.
    pub ordered: bool,
    /// FIFO per this key (an attribute or `data.<path>`), keys in parallel; ordered routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
    /// `[batch] max_events`, when the route sends batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_events: Option<usize>,
    /// `[batch] max_wait` in milliseconds, when the route sends batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_wait_ms: Option<u64>,
    /// `standard`, `cloudevents` or `data`.
    pub format: String,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: u64,
    /// Deliveries at once (unordered routes).
    pub concurrency: usize,
    /// Whether a filter script runs.
    pub filter: bool,
    /// Whether a transform script runs.
    pub transform: bool,
    /// Redacted paths.
    pub redact: Vec<String>,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Waits between attempts, in milliseconds.
    pub backoff_ms: Vec<u64>,
    /// `standard-webhooks` or `hmac-sha256-hex`.
    pub signing: String,
    /// Secrets in use (2 during a rotation's overlap).
    pub signing_keys: usize,
    /// The route's queue.
    pub queue: String,
    /// The tenant whose events alone it takes, if it has one.
    pub tenant: Option<String>,
    /// `[circuit_breaker]` and the state of the circuit on this replica, when the route has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerView>,
    /// `[rate_limit]` and this replica's share of it, when the route has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitView>,
}

/// A route's circuit breaker: its settings and, on this replica (each replica has its own), its
/// state.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CircuitBreakerView {
    /// Consecutive retryable failures that open the circuit.
    pub failures: u32,
    /// How long it stays open before a probe, in milliseconds.
    pub open_for_ms: u64,
    /// Subscriptions: failing continuously for this long disables it, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_after_ms: Option<u64>,
    /// `closed` (attempts go out), `open` (none does; events wait) or `half_open` (one probe).
    #[schema(example = "closed")]
    pub state: String,
    /// When the circuit entered its state (RFC 3339); `null` while the route is not running.
    pub since: Option<String>,
    /// Retryable failures in a row (0 after a success).
    pub consecutive_failures: u32,
}

/// A route's rate limit, and the share of it this replica uses.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RateLimitView {
    /// Attempts started per second to the endpoint, for the route as a whole.
    pub per_second: f64,
    /// Token bucket size, for the route as a whole.
    pub burst: u32,
    /// Consumers of the route's queue (replicas running the route) sharing it, as last read.
    pub consumers: u32,
    /// This replica's rate: `per_second / consumers`.
    pub replica_per_second: f64,
    /// This replica's bucket: `burst / consumers`, rounded up.
    pub replica_burst: u32,
    /// No attempt before then: the receiver's `Retry-After` (RFC 3339), while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl RouteView {
    /// As `caller` may see it: the URL's credentials masked without the admin scope.
    pub fn seen_by(mut self, caller: &Caller) -> Self {
        self.url = super::masking::url_for(caller, self.url);
        self
    }

    /// `r` as shown, with the state of its gate (`None` before its worker started).
    pub fn of(r: &Route, gate: Option<&Gate>) -> Self {
        let (origin, file, subscription) = match &r.origin {
            Origin::File { file } => ("file", Some(file.clone()), None),
            Origin::Api { subscription } => ("api", None, Some(subscription.clone())),
        };
        let (signing, signing_keys) = match &r.signer {
            Signer::Standard(keys) => ("standard-webhooks", keys.len()),
            Signer::Hex { .. } => ("hmac-sha256-hex", 1),
        };
        Self {
            name: r.name.clone(),
            origin: origin.into(),
            file,
            subscription,
            events: r.events.clone(),
            url: r.url.to_string(),
            ordered: r.ordered,
            order_key: r.order_key.as_ref().map(|k| k.as_str().to_string()),
            batch_max_events: r.batch.map(|b| b.max_events),
            batch_max_wait_ms: r.batch.map(|b| b.max_wait.as_millis() as u64),
            format: r.steps.format.as_str().into(),
            timeout_ms: r.timeout.as_millis() as u64,
            concurrency: r.concurrency,
            filter: r.steps.filter.is_some(),
            transform: r.steps.transform.is_some(),
            redact: r.steps.redact.iter().map(|p| p.as_str().to_string()).collect(),
            max_attempts: r.retry.max_attempts,
            backoff_ms: r.retry.backoff.iter().map(|d| d.as_millis() as u64).collect(),
            signing: signing.into(),
            signing_keys,
            queue: r.queue(),
            tenant: r.tenant().map(str::to_string),
            circuit_breaker: r.circuit_breaker.map(|cb| {
                let circuit = gate.and_then(|g| g.circuit(r));
                CircuitBreakerView {
                    failures: cb.failures,
                    open_for_ms: cb.open_for.as_millis() as u64,
                    disable_after_ms: cb.disable_after.map(|d| d.as_millis() as u64),
                    state: circuit.map_or(policy::State::Closed, |c| c.state).as_str().into(),
                    since: circuit.map(|c| rfc3339(c.since)),
                    consecutive_failures: circuit.map_or(0, |c| c.consecutive_failures),
                }
            }),
            rate_limit: r.rate_limit.map(|rl| {
                let rate = gate.and_then(|g| g.rate(r));
                RateLimitView {
                    per_second: rl.per_second,
                    burst: rl.burst,
                    consumers: rate.map_or(1, |v| v.consumers),
                    replica_per_second: rate.map_or(rl.per_second, |v| v.per_second),
                    replica_burst: rate.map_or(rl.burst, |v| v.burst),
                    paused_until: rate.and_then(|v| v.paused_until).map(rfc3339),
                }
            }),
        }
    }
}

/// Every route.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Routes {
    /// Sorted by name.
    pub items: Vec<RouteView>,
}

/// List the routes, file-defined and API-defined.
#[utoipa::path(get, path = "/v1/routes", tag = "catalogue",
    responses((status = 200, body = Routes), KeyRefusals),
    security(("bearer" = [])))]
pub async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Json<Routes>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let s = state.router.snapshot();
    let view = |r: &Arc<Route>| RouteView::of(r, state.router.gate(&r.name).as_deref()).seen_by(&caller);
    Ok(Json(Routes { items: s.routes.iter().filter(|r| sees(access, r)).map(view).collect() }))
}

/// One route.
#[utoipa::path(get, path = "/v1/routes/{name}", tag = "catalogue",
    params(("name" = String, Path, description = "Route name")),
    responses(
        (status = 200, body = RouteView),
        (status = 400, description = "The name is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such route", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RouteView>, ApiError> {
    let access = caller.access(Scope::Read)?;
    let s = state.router.snapshot();
    let r = s
        .route(&name)
        .filter(|r| sees(access, r))
        .ok_or_else(|| ApiError::not_found(format!("no route named {name:?}")))?;
    Ok(Json(RouteView::of(r, state.router.gate(&name).as_deref()).seen_by(&caller)))
}

/// Whether the caller may see a running route: operators all, a tenant its own.
pub(crate) fn sees(access: Access<'_>, route: &Route) -> bool {
    match access {
        Access::All => true,
        Access::Tenant(t) => route.tenant() == Some(t),
    }
}

/// An example event queued to a route.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExampleQueued {
    /// The route.
    pub route: String,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// Its type: the first type with a schema that the route subscribes to.
    pub event_type: String,
    /// The delivery to follow at `GET /v1/deliveries/{id}`.
    pub delivery: String,
    /// The event queued.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// Queue an example event to a route: the first event type with a schema that the route
/// subscribes to, with data made from its schema (its `examples` where it has them), and the
/// route's tenant as the tenant attribute. Unlike `/test`, it goes through the route's queue:
/// delivered, retried, logged and dead-lettered like any event (only this route gets it).
#[utoipa::path(post, path = "/v1/routes/{name}/example", tag = "catalogue",
    params(("name" = String, Path, description = "Route name")),
    responses(
        (status = 202, description = "Queued with a broker confirm", body = ExampleQueued),
        (status = 400, description = "The name is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such route (or another tenant's)", body = ErrorBody),
        (status = 422, description = "No event type with a schema matches the route, or its schema has no example that validates (`no_example`)", body = ErrorBody),
        (status = 503, description = "The broker is not connected or did not confirm", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn example(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(http::StatusCode, Json<ExampleQueued>), ApiError> {
    let access = caller.access(Scope::Admin)?;
    let snapshot = state.router.snapshot();
    let route = snapshot
        .route(&name)
        .filter(|r| sees(access, r))
        .ok_or_else(|| ApiError::not_found(format!("no route named {name:?}")))?;
    let types = snapshot.schemas.types();
    let ty =
        types.iter().find(|t| route.events.iter().any(|p| crate::broker::topic::matches(p, t))).ok_or_else(|| {
            ApiError::unprocessable(
                "no_example",
                format!(
                    "route {name} subscribes to {} and no event type with a schema matches",
                    route.events.join(", ")
                ),
            )
        })?;
    let schema = snapshot.schemas.get(ty).and_then(|s| s.documents.values().next_back().cloned());
    let data = schema.map(|s| crate::example::example(&s)).unwrap_or(serde_json::Value::Null);
    snapshot.schemas.validate(ty, None, crate::event::Data::from_value(&data).root()).map_err(|e| {
        ApiError::unprocessable(
            "no_example",
            format!("the example made from the schema of {ty} does not satisfy it ({e}): add `examples` to the schema"),
        )
    })?;
    let id = format!("example_{}", uuid::Uuid::new_v4().simple());
    let mut event = serde_json::Map::new();
    event.insert("specversion".into(), "1.0".into());
    event.insert("id".into(), id.clone().into());
    event.insert("source".into(), "hookrelay/example".into());
    event.insert("type".into(), (*ty).into());
    event.insert("time".into(), humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string().into());
    route.steps.tenant.stamp(&mut event);
    event.insert("data".into(), data);
    let event = serde_json::Value::Object(event);
    let broker = state.router.broker().ok_or_else(|| {
        ApiError::unavailable("broker_unavailable", "the router is not connected to its broker right now; retry")
    })?;
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let mut headers = crate::broker::Headers::default();
    headers.set("hookrelay-example", "true");
    broker
        .publish(crate::broker::Destination::Queue(&route.queue()), &body, &headers, Some(&id))
        .await
        .map_err(|e| ApiError::unavailable("broker_unavailable", format!("the broker did not confirm: {e}; retry")))?;
    Ok((
        http::StatusCode::ACCEPTED,
        Json(ExampleQueued {
            delivery: crate::store::delivery_id(&name, &id),
            route: name,
            event_id: id,
            event_type: ty.to_string(),
            event,
        }),
    ))
}

/// What a test send did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TestResult {
    /// The receiver answered 2xx.
    pub ok: bool,
    /// Whether a request was sent (false when the route's filter dropped the event).
    pub sent: bool,
    /// The `webhook-id` sent.
    pub webhook_id: String,
    /// The receiver's status.
    pub status: Option<u16>,
    /// From sending to the end of the response, in milliseconds.
    pub latency_ms: Option<u64>,
    /// The start of the response body.
    pub response_body: Option<String>,
    /// Why no response came (connect error, timeout, TLS, the SSRF guard).
    pub error: Option<String>,
    /// The body sent.
    #[schema(value_type = Object)]
    pub body: Option<serde_json::Value>,
}

/// Sends `payload` to `route` now, as one signed attempt (the same as a delivery's first one),
/// and reports what came back.
pub(crate) async fn send_now(state: &ApiState, route: &Route, payload: Payload) -> TestResult {
    let (snapshot, client) = (state.router.snapshot(), state.router.client());
    let sequence = state.router.sequencer().of(&payload);
    let traceparent =
        payload.traceparent.as_deref().and_then(checked_traceparent).map_or_else(new_traceparent, str::to_string);
    let attempt =
        Attempt { route, payload: &payload, sequence: &sequence, number: 1, traceparent: &traceparent, extra: &[] };
    let result = attempt.send(&client, snapshot.limits.response_body_bytes).await;
    let body = serde_json::from_slice(&payload.body).ok();
    TestResult {
        ok: result.class() == Class::Success,
        sent: true,
        status: result.status(),
        latency_ms: result.response().map(|r| r.duration.as_millis() as u64),
        error: result.0.as_ref().err().map(ToString::to_string),
        response_body: result.0.ok().map(|r| r.body),
        webhook_id: payload.event_id,
        body,
    }
}

/// A ping in the Standard Webhooks payload shape.
pub(crate) fn ping(message: &str) -> Payload {
    let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let body = serde_json::json!({"type": "hookrelay.test", "timestamp": timestamp, "data": {"message": message}});
    Payload {
        event_id: format!("test_{}", uuid::Uuid::new_v4().simple()),
        event_type: "hookrelay.test".into(),
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        content_type: "application/json",
        sequence: None,
        traceparent: None,
        time: None,
    }
}

/// Send a signed test event to a route's receiver now. Without a body, a `hookrelay.test` ping
/// (no schema, no scripts); with a CloudEvent as body, that event through the route's whole
/// pipeline (schema, filter, transform, redaction). Nothing is queued or retried.
#[utoipa::path(post, path = "/v1/routes/{name}/test", tag = "catalogue",
    params(("name" = String, Path, description = "Route name")),
    request_body(content = Option<Object>, description = "Optional CloudEvent to send through the route's pipeline",
        content_type = "application/json"),
    responses(
        (status = 200, description = "Sent (or filtered out); see `ok` for the receiver's answer", body = TestResult),
        (status = 400, description = "The name is not valid UTF-8", body = ErrorBody),
        KeyRefusals,
        (status = 404, description = "No such route", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB", body = ErrorBody),
        (status = 422, description = "The event is not a CloudEvent or would be dead-lettered", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<TestResult>, ApiError> {
    let access = caller.access(Scope::Admin)?;
    let snapshot = state.router.snapshot();
    let route = snapshot
        .route(&name)
        .filter(|r| sees(access, r))
        .ok_or_else(|| ApiError::not_found(format!("no route named {name:?}")))?;
    let empty = body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null";
    let payload = if empty {
        ping(&format!("test event for route {name}"))
    } else {
        let ev = CloudEvent::decode(&body)?;
        // On the script pool, as the route's deliveries run: never on the API's threads.
        let (snap, r) = (snapshot.clone(), route.clone());
        match snapshot.script_pool.run(move || pipeline::prepare_event(&snap.pipeline(), &r.steps, ev)).await {
            Ok(Prepared::Deliver(p)) => p,
            Ok(Prepared::Filtered) => {
                return Ok(Json(TestResult {
                    ok: true,
                    sent: false,
                    webhook_id: String::new(),
                    status: None,
                    latency_ms: None,
                    response_body: None,
                    error: Some(format!("route {name}'s filter dropped the event: nothing was sent")),
                    body: None,
                }));
            }
            Err(rej) => {
                return Err(ApiError::unprocessable(rej.reason.as_str(), rej.message)
                    .details(serde_json::json!({"violations": rej.violations})));
            }
        }
    };
    Ok(Json(send_now(&state, route, payload).await))
}
