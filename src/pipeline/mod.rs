//! The per-event path, pure and without I/O: decode → tenant → schema → filter (declarative or
//! Rhai) → transform → redact → render. Everything it uses was built at config load: what all routes share (the schema
//! catalogue, the script engine, the size limit: a [`Context`]) and each route's [`Steps`]
//! (its compiled scripts, redaction paths and body format). The types are defined here and
//! assembled by `config`, which this module does not know.

pub mod condition;
pub mod reads;
pub mod redact;
pub mod schema;
pub mod script;

use crate::delivery::verdict::Reason;
use crate::event::CloudEvent;
use crate::tenant::TenantScope;
use bytes::Bytes;
use redact::RedactPath;
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
    /// Whether the route runs a script.
    pub fn runs_scripts(&self) -> bool {
        self.filter.is_some() || self.transform.is_some()
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
        let null = Value::Null;
        cx.schemas.validate(&event.ty, event.data_version(), event.data.as_ref().unwrap_or(&null)).map_err(
            |e| match e {
                SchemaError::Invalid { ref violations, .. } => {
                    let violations = violations.clone();
                    Rejection { reason: Reason::Schema, message: e.to_string(), violations }
                }
                other => Rejection::new(Reason::UnknownType, other.to_string()),
            },
        )?;
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
        let CloudEvent { id, ty, time, data, .. } = event;
        let mut data = data.unwrap_or(Value::Null);
        for path in &steps.redact {
            path.apply_to_data(&mut data);
        }
        return deliver(cx, steps, id, ty, time.as_deref(), &data, sequence, traceparent, event_time);
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
    deliver(cx, steps, id, ty, time.as_deref(), &content, sequence, traceparent, event_time)
}

/// The payload of a delivery: the body rendered, with what the attempts need.
#[allow(clippy::too_many_arguments)] // the parts of one payload, each moved in once
fn deliver(
    cx: &Context<'_>,
    steps: &Steps,
    id: String,
    ty: String,
    time: Option<&str>,
    content: &Value,
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

/// The `standard` body: the Standard Webhooks payload shape, serialized from borrowed parts.
#[derive(serde::Serialize)]
struct StandardBody<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    timestamp: &'a str,
    data: &'a Value,
}

/// Renders the body of a delivery in `format`, with its `content-type`: for `standard`,
/// `{"type", "timestamp", "data"}` with `content` as `data` and the event's `time` as the
/// timestamp (now, when the event has none); for `cloudevents`, `content` is the whole event;
/// for `data`, `content` alone. The last step of [`prepare_event`].
pub fn render(
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: &Value,
) -> Result<(Vec<u8>, &'static str), serde_json::Error> {
    render_within(format, ty, time, content, usize::MAX).map_err(|e| match e {
        RenderError::Json(e) => e,
        RenderError::TooLarge => unreachable!("no cap"),
    })
}

/// Why [`render_within`] gave no body.
#[derive(Debug)]
pub enum RenderError {
    /// The body would be over the cap (rendering stopped there).
    TooLarge,
    /// Not serializable.
    Json(serde_json::Error),
}

/// A body under construction that refuses to grow past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other(CapReached));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    // serde_json writes each piece with `write_all`: one check and one copy, without the
    // default's retry loop around `write`.
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.write(b).map(drop)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct CapReached;
impl std::fmt::Display for CapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body cap reached")
    }
}
impl std::error::Error for CapReached {}

/// [`render`], stopping as soon as the body would be over `cap` bytes.
pub fn render_within(
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: &Value,
    cap: usize,
) -> Result<(Vec<u8>, &'static str), RenderError> {
    let mut out = Capped { buf: Vec::with_capacity(128), cap };
    let ct = render_to(&mut out, format, ty, time, content)
        .map_err(|e| if e.io_error_kind().is_some() { RenderError::TooLarge } else { RenderError::Json(e) })?;
    Ok((out.buf, ct))
}

fn render_to(
    out: &mut Capped,
    format: BodyFormat,
    ty: &str,
    time: Option<&str>,
    content: &Value,
) -> Result<&'static str, serde_json::Error> {
    match format {
        BodyFormat::Standard => {
            let now;
            let timestamp = match time {
                Some(t) => t,
                None => {
                    now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                    &now
                }
            };
            serde_json::to_writer(out, &StandardBody { ty, timestamp, data: content })?;
            Ok("application/json")
        }
        BodyFormat::Cloudevents => serde_json::to_writer(out, content).map(|()| "application/cloudevents+json"),
        BodyFormat::Data => serde_json::to_writer(out, content).map(|()| "application/json"),
    }
}

/// Moves a member out of a JSON object (`null` when absent), without copying it.
fn take(v: &mut Value, key: &str) -> Value {
    v.as_object_mut().and_then(|m| m.shift_remove(key)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_format_renders_its_body_and_content_type() {
        let data = json!({"order_id": "o-1", "total": 12.5, "customer": {"name": "Ana \"A\" Souza"}, "items": [1, 2]});
        let (body, ct) = render(BodyFormat::Standard, "order.paid", Some("2026-11-22T10:00:00Z"), &data).unwrap();
        let expected = json!({"type": "order.paid", "timestamp": "2026-11-22T10:00:00Z", "data": data});
        assert_eq!(body, serde_json::to_vec(&expected).unwrap());
        assert_eq!(ct, "application/json");

        let event = json!({"specversion": "1.0", "id": "e-1", "type": "order.paid", "data": data});
        let (body, ct) = render(BodyFormat::Cloudevents, "order.paid", None, &event).unwrap();
        assert_eq!(body, serde_json::to_vec(&event).unwrap());
        assert_eq!(ct, "application/cloudevents+json");

        let (body, ct) = render(BodyFormat::Data, "order.paid", None, &data).unwrap();
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert_eq!(ct, "application/json");
    }

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

    #[test]
    fn a_standard_body_without_event_time_is_stamped_now() {
        let before = std::time::SystemTime::now();
        let (body, _) = render(BodyFormat::Standard, "order.paid", None, &json!({"n": 1})).unwrap();
        let after = std::time::SystemTime::now();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["type", "timestamp", "data"]);
        let stamped = humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
        // The timestamp has milliseconds: `before` truncated to them is not after it.
        let ms = std::time::Duration::from_millis(1);
        assert!(stamped + ms > before && stamped <= after, "timestamp {} is not the time of rendering", v["timestamp"]);
    }

    #[test]
    fn rendering_stops_at_the_cap() {
        let data = json!({"blob": "x".repeat(10_000)});
        let (body, _) = render_within(BodyFormat::Data, "t", None, &data, 20_000).unwrap();
        assert_eq!(body, serde_json::to_vec(&data).unwrap());
        assert!(matches!(render_within(BodyFormat::Standard, "t", None, &data, 9_999), Err(RenderError::TooLarge)));
    }
}
