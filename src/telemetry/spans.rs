//! The spans hookrelay exports (target [`TRACE_TARGET`]): one per event on a route, one per HTTP
//! attempt inside it, one per ingest request; with what they record, and their parents taken
//! from an incoming `traceparent`.

use super::traceparent::{is_valid_traceparent, parse_traceparent};
use super::{TRACE_TARGET, TRACES_ON};
use crate::delivery::verdict::AttemptFailure;
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;
use std::sync::atomic::Ordering;
use tracing::Span;
use tracing::field::Empty;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span of one event on one route, from consume to ack. Its parent is the producer's
/// `traceparent` (the AMQP message's header) when valid; without one it starts a new trace.
/// Create it before anything runs inside it, and record the event's id and type with
/// [`record_event`] once decoded.
///
/// In the log's span tree the event span is a root: it names the route itself, so log lines
/// inside it do not repeat the route span's `route=`.
pub fn event_span(route: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        parent: None,
        "event",
        otel.kind = "consumer",
        route = %route,
        cloudevents.event_id = Empty,
        cloudevents.event_type = Empty,
    );
    adopt(&span, traceparent);
    span
}

/// [`event_span`] for an event already decoded: its id and type are set when the span is made
/// (cheaper than recording them afterwards, which makes the log layer format the span again),
/// and its parent is the first valid of `traceparents` (the message header, then the event's
/// extension).
pub fn decoded_event_span(route: &str, traceparents: [Option<&str>; 2], id: &str, ty: &str) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        parent: None,
        "event",
        otel.kind = "consumer",
        route = %route,
        cloudevents.event_id = id,
        cloudevents.event_type = ty,
    );
    adopt(&span, traceparents.into_iter().flatten().find(|tp| is_valid_traceparent(tp)));
    span
}

/// Whether an event's span is to be made before its delivery starts: when traces are exported,
/// or when debug lines may be logged (`delivered`, other crates' lines inside it). Otherwise a
/// worker makes it only when it has something to log about the event (a failed attempt): the
/// same lines, with the same route and event, without making, entering and dropping a span for
/// every event delivered (about 10,000 instructions each, mostly the log layer formatting it).
pub fn event_span_up_front() -> bool {
    TRACES_ON.load(Ordering::Relaxed) || LevelFilter::current() >= LevelFilter::DEBUG
}

/// The span of one `POST /v1/events` on the ingest API, child of the caller's `traceparent`.
/// Publish the event with `traceparent` = [`traceparent`](fn@super::traceparent) of this span in its AMQP headers.
///
/// Made only when traces are exported or debug lines may be logged ([`event_span_up_front`]):
/// otherwise nothing would show it (no line at info or above is logged inside it), and making
/// it and recording the event's id, type and status cost the log layer about 60,000
/// instructions per request, a third of the request (callgrind), to format fields no line used.
pub fn ingest_span(traceparent: Option<&str>) -> Span {
    if !event_span_up_front() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "ingest",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/events",
        http.response.status_code = Empty,
        otel.status_code = Empty,
        cloudevents.event_id = Empty,
        cloudevents.event_type = Empty,
    );
    adopt(&span, traceparent);
    span
}

/// Records the status an [`ingest_span`]'s request was answered with (an error from 500 up).
pub fn record_ingest(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records the CloudEvent's `id` and `type` on an [`event_span`] or [`ingest_span`].
pub fn record_event(span: &Span, id: &str, ty: &str) {
    span.record("cloudevents.event_id", id);
    span.record("cloudevents.event_type", ty);
}

/// Sets the parent of a span made by this module that has not been entered yet (e.g. from the
/// event's `traceparent` extension when the message had no header). `false` if it did not
/// parse or the span had already started.
pub fn set_parent(span: &Span, traceparent: &str) -> bool {
    match parse_traceparent(traceparent) {
        Some(sc) => span.set_parent(Context::new().with_remote_span_context(sc)).is_ok(),
        None => false,
    }
}

fn adopt(span: &Span, traceparent: Option<&str>) {
    if !TRACES_ON.load(Ordering::Relaxed) {
        return;
    }
    let parent = traceparent.and_then(parse_traceparent).map(|sc| Context::new().with_remote_span_context(sc));
    // Without a parent, an explicit empty context: a new trace, never a child of whatever
    // span happens to be current (the route's, say).
    let _ = span.set_parent(parent.unwrap_or_default());
}

/// The span of one HTTP attempt, a child of the current span (the [`event_span`]): create it
/// inside the event span, send [`traceparent`](fn@super::traceparent) of it on the request, and close it with
/// [`record_attempt`].
pub fn attempt_span(attempt: u32, url: &http::Uri) -> Span {
    // Without traces the attempt span only feeds the log, whose failure lines carry the
    // attempt themselves: not making it saves the log layer formatting one span per attempt.
    if !TRACES_ON.load(Ordering::Relaxed) {
        return Span::none();
    }
    tracing::info_span!(
        target: TRACE_TARGET,
        "attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        attempt,
        http.request.method = "POST",
        server.address = url.host().unwrap_or_default(),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records how an attempt ended: the status when there was a response, and the failure (the
/// same bounded label as the metrics) when it was not a 2xx.
pub fn record_attempt(span: &Span, status: Option<u16>, failure: Option<AttemptFailure>) {
    if let Some(s) = status {
        span.record("http.response.status_code", s);
    }
    if let Some(f) = failure {
        span.record("error.type", f.as_str());
        span.record("otel.status_code", "ERROR");
    }
}
