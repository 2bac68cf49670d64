//! Dead letters on their way to the store. The router publishes each one (with a confirm) to the
//! dead-letter queue before it acks the original message, which makes it durable; this module
//! builds that message, and the indexer consumes the queue into the store, acking each dead
//! letter only once the store has committed it. Inserts are idempotent by id, so a redelivery
//! after a crash indexes nothing twice. The same code serves every [`Broker`].

use super::{
    Broker, DEAD_LETTERS, Destination, H_ATTEMPT, H_DEAD_AT, H_DETAILS, H_ERROR, H_LAST_RESPONSE, H_LAST_STATUS,
    H_NOT_BEFORE, H_REASON, H_ROUTE, Headers, Message, now_ms,
};
use crate::delivery::verdict::Reason;
use crate::store::{self, Store};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A dead letter to store.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// The route.
    pub route: &'a str,
    /// Why.
    pub reason: Reason,
    /// The cause, human-readable.
    pub error: &'a str,
    /// Schema violations and the like.
    pub details: Option<serde_json::Value>,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Start of the last response body.
    pub last_response: Option<&'a str>,
    /// Attempts made.
    pub attempts: u32,
    /// The original message.
    pub message: &'a Message,
}

/// Stores a dead letter durably (published with a confirm): the original body untouched, the
/// producer's headers kept, the why added as `hookrelay-*` headers.
pub async fn publish(broker: &dyn Broker, dl: &DeadLetter<'_>) -> Result<(), super::BrokerError> {
    let mut h = dl.message.headers.clone();
    for internal in [H_ATTEMPT, H_NOT_BEFORE, "x-death"] {
        h.remove(internal);
    }
    h.set(H_ROUTE, dl.route);
    h.set(H_REASON, dl.reason.as_str());
    h.set(H_ERROR, truncate(dl.error, 2048));
    if let Some(d) = &dl.details {
        h.set(H_DETAILS, truncate(&d.to_string(), 8192));
    }
    if let Some(s) = dl.last_status {
        h.set(H_LAST_STATUS, s);
    }
    if let Some(b) = dl.last_response {
        h.set(H_LAST_RESPONSE, b);
    }
    h.set(H_ATTEMPT, dl.attempts);
    h.set(H_DEAD_AT, now_ms());
    let id = uuid::Uuid::new_v4().to_string();
    broker.publish(Destination::DeadLetters { route: dl.route }, &dl.message.body, &h, Some(&id)).await
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The store's view of a message from the dead-letter queue.
pub fn from_message(m: &Message) -> store::DeadLetter {
    let h = &m.headers;
    let event: Option<serde_json::Value> = serde_json::from_slice(&m.body).ok();
    let attr = |k: &str| event.as_ref().and_then(|e| e.get(k)).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    // Messages the broker dead-lettered itself (x-delivery-limit) carry only `x-death`.
    let broker_reason = h.death_reason();
    let reason = h.str(H_REASON).or(broker_reason).unwrap_or("unknown").to_string();
    let error = h.str(H_ERROR).map_or_else(
        || match broker_reason {
            Some(r) => format!(
                "dead-lettered by the broker ({r}): the message was delivered too many times, e.g. repeated crashes"
            ),
            None => "dead-lettered".into(),
        },
        str::to_string,
    );
    let id = m.message_id.clone().unwrap_or_else(|| {
        let mut d = Sha256::new();
        d.update(m.routing_key.as_bytes());
        d.update(&m.body);
        d.update(format!("{:?}", h.0).as_bytes());
        hex::encode(&d.finalize()[..16])
    });
    store::DeadLetter {
        id,
        route: h.str(H_ROUTE).unwrap_or(&m.routing_key).to_string(),
        event_id: attr("id"),
        event_type: attr("type"),
        reason,
        error,
        details: h.str(H_DETAILS).map(str::to_string),
        last_status: h.u64(H_LAST_STATUS).and_then(|s| u16::try_from(s).ok()),
        last_response: h.str(H_LAST_RESPONSE).map(str::to_string),
        attempts: h.u64(H_ATTEMPT).unwrap_or(0) as u32,
        body: m.body.to_vec(),
        headers: producer_headers(h).to_string(),
        dead_at_ms: h.u64(H_DEAD_AT).map_or_else(|| now_ms() as i64, |t| t as i64),
        replayed_at_ms: None,
    }
}

/// The producer's headers (trace context and the like), without hookrelay's and the broker's.
pub fn producer_headers(h: &Headers) -> serde_json::Value {
    let kept = h.0.iter().filter(|(k, _)| !k.starts_with("hookrelay-") && !k.starts_with("x-"));
    serde_json::Value::Object(kept.map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Consumes the dead-letter queue into `store` until `stop` or the consumer fails.
pub async fn index(broker: Arc<dyn Broker>, store: Arc<dyn Store>, stop: CancellationToken) -> Result<(), String> {
    let mut consumer = broker.consume(DEAD_LETTERS, 100).await.map_err(|e| e.to_string())?;
    let result = loop {
        let m = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            m = consumer.next() => match m {
                Some(Ok(m)) => m,
                Some(Err(e)) => break Err(format!("dead-letter consumer failed: {e}")),
                None => break Err("dead-letter consumer closed by the broker".into()),
            },
        };
        let dl = from_message(&m);
        let mut wait = Duration::from_millis(200);
        let stored = loop {
            match store.add_dead_letter(&dl).await {
                Ok(new) => {
                    // The router counts the dead letters it makes; those the broker made
                    // (`x-delivery-limit`) are counted here, once, when first indexed.
                    if new && dl.reason == Reason::DeliveryLimit.as_str() {
                        crate::metrics::dead_lettered(&dl.route, Reason::DeliveryLimit);
                    }
                    break true;
                }
                Err(e) => {
                    warn!(error = %e, id = %dl.id, "indexing a dead letter failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        };
        if !stored {
            break Ok(());
        }
        if let Err(e) = m.ack().await {
            break Err(e.to_string());
        }
    };
    consumer.close().await;
    result
}
