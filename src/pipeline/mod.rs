//! The per-event path, pure and without I/O: decode → tenant → schema → filter (declarative or
//! Rhai) → transform → redact → render. Everything it uses was built at config load: what all routes share (the schema
//! catalogue, the script engine, the size limit: a [`Context`]) and each route's [`Steps`]
//! (its compiled scripts, redaction paths and body format). The types are defined here and
//! assembled by `config`, which this module does not know.

pub mod condition;
pub mod reads;
pub mod redact;
pub mod render;
pub mod schema;
pub mod script;

use crate::delivery::verdict::Reason;
use crate::event::{CloudEvent, DataRef};
use crate::tenant::TenantScope;
use bytes::Bytes;
use redact::RedactPath;
pub use render::{Content, RenderError, render, render_within};
use schema::{SchemaError, SchemaRegistry, Violation};
use script::Script;
use serde_json::Value;
use std::sync::Arc;

/// What every route's pipeline shares: the schema catalogue, the script engine and the largest
/// event accepted.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// Compiled schemas by event type and version.
    pub schemas: &'a SchemaRegistry,
    /// The sandboxed engine scripts run in.
    pub engine: &'a rhai::Engine,
    /// `[limits] max_event_bytes`.
    pub max_event_bytes: usize,
    /// `[scripts] max_body_bytes`: the largest body a transform may produce.
    pub max_body_bytes: usize,
    /// The event's `data` was validated under this config by this process already (the ingest
    /// API's mark, [`schema::is_validated_mark`]): not validated again.
    pub validated: bool,
    /// Called each time an event's `data` is validated (the router counts validations).
    pub on_validate: Option<&'a (dyn Fn() + Sync)>,
}

/// One route's steps, compiled.
#[derive(Debug, Clone, Default)]
pub struct Steps {
    /// Only one tenant's events, when the route has a tenant.
    pub tenant: TenantScope,
    /// The declarative filter (`filter` written as a table), evaluated on the decoded event.
    pub condition: Option<Arc<condition::Condition>>,
    /// `fn filter(event)`.
    pub filter: Option<Arc<Script>>,
    /// `fn transform(event)`.
    pub transform: Option<Arc<Script>>,
    /// Fields removed before sending.
    pub redact: Vec<RedactPath>,
    /// The body's shape.
    pub format: BodyFormat,
}

impl Steps {
    /// Whether the route runs a script that may run long: a transform, or a filter whose body is
    /// not a native condition ([`script::native`]; when Rhai decides one, it runs one bounded
    /// expression, so that it needs neither the inline allowance nor the pool).
    pub fn runs_scripts(&self) -> bool {
        self.filter.as_ref().is_some_and(|f| !f.filter_is_native()) || self.transform.is_some()
    }

    /// Whether the route's scripts start on the async worker ([`script::budget::run_inline`]):
    /// none of them has gone past the allowance there too many times in a row.
    pub fn scripts_inline(&self) -> bool {
        self.scripts().all(|s| s.runs_inline())
    }

    /// The route's scripts ran past the allowance on the async worker; true when that makes
    /// them run only on the script pool from now on.
    pub fn scripts_missed_inline(&self) -> bool {
        self.scripts().fold(false, |pooled, s| s.missed_inline() | pooled)
    }

    /// The route's scripts ran within the allowance on the async worker.
    pub fn scripts_ran_inline(&self) {
        self.scripts().for_each(|s| s.ran_inline());
    }

    fn scripts(&self) -> impl Iterator<Item = &Arc<Script>> {
        self.filter.iter().chain(self.transform.iter())
    }
}

/// The body a route sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `{"type", "timestamp", "data"}`: the Standard Webhooks payload shape.
    #[default]
    Standard,
    /// The whole CloudEvent, structured JSON mode.
    Cloudevents,
    /// Only `data`.
    Data,
}

impl BodyFormat {
    /// The name routes write.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Cloudevents => "cloudevents",
            Self::Data => "data",
        }
    }
}

/// An event refused before delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The dead-letter reason.
    pub reason: Reason,
    /// Human-readable cause.
    pub message: String,
    /// Schema violations with their paths, when the reason is `schema`.
    pub violations: Vec<Violation>,
}

impl Rejection {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), violations: Vec::new() }
    }
}

/// What to send for one event on one route.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The CloudEvent `id`: the `webhook-id`.
    pub event_id: String,
    /// The CloudEvent `type`.
    pub event_type: String,
    /// The rendered body.
    pub body: Bytes,
    /// `content-type` of the body.
    pub content_type: &'static str,
    /// The producer's `sequence`, if any.
    pub sequence: Option<String>,
    /// W3C trace context carried by the event, if any.
    pub traceparent: Option<String>,
    /// The event's `time` attribute, when it has one that parses (for the lag metric).
    pub time: Option<std::time::SystemTime>,
}

/// The outcome of the pipeline for one event on one route.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// The route's filter dropped the event: ack, send nothing.
    Filtered,
    /// Send this.
    Deliver(Payload),
}

/// Runs the whole pipeline for `raw` through a route's `steps`.
pub fn prepare(cx: &Context<'_>, steps: &Steps, raw: &[u8]) -> Result<Prepared, Rejection> {
    if raw.len() > cx.max_event_bytes {
        return Err(Rejection::new(
            Reason::TooLarge,
            format!("event is {} bytes, over the limit of {}", raw.len(), cx.max_event_bytes),
        ));
    }
    let event = CloudEvent::decode(raw).map_err(|e| Rejection::new(Reason::Malformed, e.to_string()))?;
    prepare_event(cx, steps, event)
}

/// The pipeline from a decoded event on.
pub fn prepare_event(cx: &Context<'_>, steps: &Steps, event: CloudEvent) -> Result<Prepared, Rejection> {
    // A tenant's route takes only that tenant's events (before the schema: another tenant's
    // event is none of this route's business, not a dead letter).
    if !steps.tenant.admits(&event) {
        return Ok(Prepared::Filtered);
    }
    if !cx.validated {
        if let Some(counted) = cx.on_validate {
            counted();
        }
        cx.schemas.validate(&event.ty, event.data_version(), event.data_ref()).map_err(|e| match e {
            SchemaError::Invalid { ref violations, .. } => {
                let violations = violations.clone();
                Rejection { reason: Reason::Schema, message: e.to_string(), violations }
            }
            other => Rejection::new(Reason::UnknownType, other.to_string()),
        })?;
    }
    if let Some(c) = &steps.condition
        && !c.matches(&event)
    {
        return Ok(Prepared::Filtered);
    }

    let sequence = event.sequence_text();
    let traceparent = event.traceparent().map(str::to_string);
    let event_time = event.time.as_deref().and_then(crate::event::parse_time);
    let script_err = |e: script::ScriptError| Rejection::new(Reason::ScriptError, e.to_string());
    // The event as one JSON map only when a step needs it whole: a transform, the
    // `cloudevents` body, a redaction outside `data`, a filter that reads the whole event.
    // Otherwise the filter reads the decoded event and redaction works on `data` alone.
    let needs_map = steps.transform.is_some()
        || steps.format == BodyFormat::Cloudevents
        || steps.redact.iter().any(|p| !p.in_data())
        || steps.filter.as_ref().is_some_and(|f| f.filter_reads_whole());
    if !needs_map {
        if let Some(f) = &steps.filter
            && !f.filter_event(cx.engine, &event).map_err(script_err)?
        {
            return Ok(Prepared::Filtered);
        }
        let CloudEvent { id, ty, time, mut data, .. } = event;
        for path in &steps.redact {
            path.apply_to_data(&mut data);
        }
        let data = DataRef::of(data.as_ref());
        return deliver(cx, steps, id, ty, time.as_deref(), Content::Data(data), sequence, traceparent, event_time);
    }

    let (id, ty, time) = (event.id.clone(), event.ty.clone(), event.time.clone());
    // What the body is made of: the whole event for `cloudevents`, `data` for the others.
    let mut value = event.into_value();
    if let Some(f) = &steps.filter
        && !f.filter(cx.engine, &value).map_err(script_err)?
    {
        return Ok(Prepared::Filtered);
    }
    if let Some(t) = &steps.transform {
        let mut out = t.transform(cx.engine, &value).map_err(script_err)?;
        value["data"] = take(&mut out, "data");
    }
    for path in &steps.redact {
        path.apply(&mut value);
    }
    let content = match steps.format {
        BodyFormat::Cloudevents => value,
        BodyFormat::Standard | BodyFormat::Data => take(&mut value, "data"),
    };
    deliver(cx, steps, id, ty, time.as_deref(), Content::Json(&content), sequence, traceparent, event_time)
}

/// The payload of a delivery: the body rendered, with what the attempts need.
#[allow(clippy::too_many_arguments)] // the parts of one payload, each moved in once
fn deliver(
    cx: &Context<'_>,
    steps: &Steps,
    id: String,
    ty: String,
    time: Option<&str>,
    content: Content<'_>,
    sequence: Option<String>,
    traceparent: Option<String>,
    event_time: Option<std::time::SystemTime>,
) -> Result<Prepared, Rejection> {
    // A transform may grow a tiny event into a huge body: rendering stops at the cap.
    let cap = if steps.transform.is_some() { cx.max_body_bytes } else { usize::MAX };
    let (body, content_type) = render_within(steps.format, &ty, time, content, cap).map_err(|e| match e {
        RenderError::TooLarge => Rejection::new(
            Reason::ScriptError,
            format!(
                "{}: the transform's body is over its budget: more than {} bytes ([scripts] max_body_bytes)",
                steps.transform.as_ref().map_or_else(String::new, |t| t.path.display().to_string()),
                cx.max_body_bytes
            ),
        ),
        RenderError::Json(e) => Rejection::new(Reason::Malformed, e.to_string()),
    })?;
    Ok(Prepared::Deliver(Payload {
        event_id: id,
        event_type: ty,
        body: Bytes::from(body),
        content_type,
        sequence,
        traceparent,
        time: event_time,
    }))
}

/// Moves a member out of a JSON object (`null` when absent), without copying it.
fn take(v: &mut Value, key: &str) -> Value {
    v.as_object_mut().and_then(|m| m.shift_remove(key)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_as_one_map_or_not_the_same_body() {
        let engine = script::sandboxed_engine(script::Budgets::default());
        let schemas = SchemaRegistry::default();
        let cx = Context {
            schemas: &schemas,
            engine: &engine,
            max_event_bytes: 1 << 20,
            max_body_bytes: 1 << 20,
            validated: true,
            on_validate: None,
        };
        let filter = |text: &str| Some(Arc::new(Script::compile(&engine, "f.rhai".as_ref(), text).unwrap()));
        let paths = ["data.customer.email", "data.items.*.card", "data.nothing.here"];
        let steps = |f, format| Steps {
            filter: f,
            redact: paths.iter().map(|p| RedactPath::parse(p).unwrap()).collect(),
            format,
            ..Steps::default()
        };
        let raw = br#"{"specversion":"1.0","id":"e-1","source":"s","type":"order.paid","time":"2026-01-01T00:00:00Z",
            "subject":"t-1","data":{"total":150,"customer":{"name":"A","email":"a@b"},"items":[{"card":"1","q":2}]}}"#;
        let body = |steps: &Steps| match prepare(&cx, steps, raw).unwrap() {
            Prepared::Deliver(p) => Some(String::from_utf8(p.body.to_vec()).unwrap()),
            Prepared::Filtered => None,
        };
        for format in [BodyFormat::Standard, BodyFormat::Data] {
            let partial = steps(filter("fn filter(e) { e.data.total > 100 && e.subject == \"t-1\" }"), format);
            let whole = steps(filter("fn filter(e) { e.keys().len() > 0 && e.data.total > 100 }"), format);
            let none = steps(None, format);
            assert!(!partial.filter.as_ref().unwrap().filter_reads_whole());
            assert!(whole.filter.as_ref().unwrap().filter_reads_whole());
            let expected = body(&whole).expect("delivered");
            assert!(!expected.contains("a@b") && !expected.contains("card") && expected.contains("\"q\":2"));
            assert_eq!(body(&partial).as_deref(), Some(expected.as_str()), "{format:?}");
            assert_eq!(body(&none).as_deref(), Some(expected.as_str()), "{format:?}");
            let drops = steps(filter("fn filter(e) { e.data.total > 1000 }"), format);
            assert_eq!(body(&drops), None);
        }
        // `redact = ["data"]` empties the body's data either way.
        let gone = |f| Steps { filter: f, redact: vec![RedactPath::parse("data").unwrap()], ..Steps::default() };
        let expected = body(&gone(filter("fn filter(e) { type_of(e) == \"map\" }"))).unwrap();
        assert!(expected.ends_with(r#""data":null}"#), "{expected}");
        assert_eq!(body(&gone(None)).unwrap(), expected);
    }
}
