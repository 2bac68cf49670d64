//! `hookrelay publish`: CloudEvents (structured JSON) to the events exchange of a broker
//! (routing key = type, confirmed), or through a running router's ingest API. Events go one
//! after another, each once the previous one is confirmed, so that they are queued in the order
//! they were published (an ordered route then receives them in that order). A publish that
//! reaches no queue means no route subscribes to the type, and is reported as an error.
//!
//! Straight to a broker, [`check`] first makes the ingest API's checks, so that an event the
//! API would refuse is refused with the same message.

use crate::broker::{Broker, BrokerError, Destination, Headers};
use crate::event::{CloudEvent, DecodeError};
use crate::pipeline::schema::SchemaError;
use serde_json::{Value, json};

/// Why the ingest API (`POST /v1/events`) refuses an event; the message is the API's.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// 413 `too_large`.
    #[error("the event is over the limit of {0} bytes ([limits] max_event_bytes)")]
    TooLarge(usize),
    /// 422 `malformed`.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// 422 `unknown_type` or `schema`.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// The ingest API's checks of one event: size, envelope, type and schema.
pub fn check(ctx: &crate::pipeline::Context<'_>, event: &Value) -> Result<(), Refusal> {
    let raw = serde_json::to_vec(event).unwrap_or_default();
    if raw.len() > ctx.max_event_bytes {
        return Err(Refusal::TooLarge(ctx.max_event_bytes));
    }
    let event = CloudEvent::decode(&raw)?;
    ctx.schemas.validate(&event.ty, event.data_version(), event.data_ref())?;
    Ok(())
}

/// The attributes of the events to publish.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// `type`.
    pub ty: String,
    /// `data`.
    pub data: Value,
    /// `id` (default: a UUID).
    pub id: Option<String>,
    /// `source`.
    pub source: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `dataversion`.
    pub dataversion: Option<String>,
    /// First `sequence`.
    pub sequence: Option<u64>,
}

impl EventSpec {
    /// The `i`-th event (0-based) of a batch of `count`.
    pub fn event(&self, i: u64, count: u64) -> Value {
        let id = match (&self.id, count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{}", i + 1),
            (None, _) => uuid::Uuid::new_v4().to_string(),
        };
        let mut ev = json!({
            "specversion": "1.0",
            "id": id,
            "source": self.source,
            "type": self.ty,
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "datacontenttype": "application/json",
            "data": self.data,
        });
        if let Some(s) = &self.subject {
            ev["subject"] = json!(s);
        }
        if let Some(v) = &self.dataversion {
            ev["dataversion"] = json!(v);
        }
        if let Some(s) = self.sequence {
            ev["sequence"] = json!((s + i).to_string());
        }
        ev
    }
}

/// Publishes `count` events in order, each once the previous one is confirmed, and prints each
/// event id on stdout once confirmed. A return (no queue bound to the type) stops with an error.
pub async fn publish_events(broker: &dyn Broker, spec: &EventSpec, count: u64) -> Result<(), BrokerError> {
    for i in 0..count {
        let ev = spec.event(i, count);
        let id = ev["id"].as_str().unwrap_or_default().to_string();
        let body = serde_json::to_vec(&ev).unwrap_or_default();
        let to = Destination::Events { routing_key: &spec.ty };
        match broker.publish(to, &body, &Headers::default(), Some(&id)).await {
            Ok(()) => println!("{id}"),
            Err(BrokerError::NotRouted(why)) => {
                return Err(BrokerError::NotRouted(format!(
                    "no route subscribes to {:?} ({why}); is the router running with a route for it?",
                    spec.ty
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Publishes `count` events through a router's ingest API (`POST {base}/v1/events`) in order,
/// each once the previous one is accepted, and prints each event id once the router has
/// accepted it (its broker confirmed). An answer other than 202 stops with the API's error
/// message.
pub async fn post_events(base: &str, api_key: Option<&str>, spec: &EventSpec, count: u64) -> Result<(), BrokerError> {
    use crate::delivery::http::client::WebhookClient;
    use crate::delivery::http::guard::Policy;
    // The caller chose this address: the SSRF guard is for webhook targets, not for this.
    let client = WebhookClient::new(Policy { allow_http: true, allow_private_networks: true }, &[]);
    let url: http::Uri = format!("{}/v1/events", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| BrokerError::NotRouted(format!("--api {base:?} is not a URL: {e}")))?;
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/cloudevents+json"));
    if let Some(k) = api_key {
        let v = http::HeaderValue::from_str(&format!("Bearer {k}"))
            .map_err(|_| BrokerError::NotRouted("the API key is not a valid header value".into()))?;
        headers.insert(http::header::AUTHORIZATION, v);
    }
    for i in 0..count {
        let ev = spec.event(i, count);
        let body = bytes::Bytes::from(serde_json::to_vec(&ev).unwrap_or_default());
        let r = client
            .post(&url, headers.clone(), body, std::time::Duration::from_secs(30), 64 * 1024)
            .await
            .map_err(|e| BrokerError::Closed(format!("POST {url}: {e}")))?;
        if r.status != 202 {
            return Err(BrokerError::Refused(refused(&url, r.status, &r.body)));
        }
        let answer: Value = serde_json::from_str(&r.body).unwrap_or_default();
        if answer["routed"] == Value::Bool(false) {
            return Err(BrokerError::NotRouted(format!(
                "no route subscribes to {:?}: the event was accepted and dropped",
                spec.ty
            )));
        }
        println!("{}", ev["id"].as_str().unwrap_or_default());
    }
    Ok(())
}

/// An API's refusal: its `error.message` (the whole body when it is not the API's error shape),
/// with every violation's path when it lists them.
fn refused(url: &http::Uri, status: u16, body: &str) -> String {
    let answer: Value = serde_json::from_str(body).unwrap_or_default();
    match answer["error"]["message"].as_str() {
        Some(message) => format!("{message} (POST {url} answered {status})"),
        None => format!("POST {url} answered {status}: {body}"),
    }
}
