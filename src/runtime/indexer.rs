//! The dead-letter indexer: dead letters on their way to the store. The delivery module
//! publishes each one (with a confirm) to the dead-letter queue before it acks the original
//! message, which makes it durable; the indexer consumes that queue into the store, acking each
//! dead letter (on its own queue: it never acks a route message) only once the store has
//! committed it. Inserts are idempotent by id, so a redelivery after a crash indexes nothing
//! twice. The same code serves every [`Broker`].

use crate::broker::{
    Broker, DEAD_LETTERS, H_ATTEMPT, H_DEAD_AT, H_DETAILS, H_ERROR, H_LAST_RESPONSE, H_LAST_STATUS, H_REASON, H_ROUTE,
    Headers, Message, now_ms,
};
use crate::delivery::verdict::Reason;
use crate::store::{self, Store};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

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
