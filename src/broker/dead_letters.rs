//! Indexing the dead-letter queue into the store, so the API can list and replay dead letters.
//! The queue `hookrelay.dead-letters` is the durable record written (with a publisher confirm)
//! before the original message is acked; this consumer copies each dead letter into the store
//! and acks it only once the store has committed it. Inserts are idempotent by id, so a
//! redelivery after a crash indexes nothing twice.

use super::amqp::{
    DEAD_LETTERS, H_ATTEMPT, H_DEAD_AT, H_DETAILS, H_ERROR, H_LAST_RESPONSE, H_LAST_STATUS, H_REASON, H_ROUTE,
    death_reason, header_str, header_u64, now_ms,
};
use crate::store::{DeadLetter, Store};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The store's view of a dead-letter message.
pub fn from_message(props: &BasicProperties, routing_key: &str, body: &[u8]) -> DeadLetter {
    let event: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let attr = |k: &str| event.as_ref().and_then(|e| e.get(k)).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    // Messages the broker dead-lettered itself (x-delivery-limit) carry only `x-death`.
    let broker_reason = death_reason(props);
    let reason = header_str(props, H_REASON).or_else(|| broker_reason.clone()).unwrap_or_else(|| "unknown".into());
    let error = header_str(props, H_ERROR).unwrap_or_else(|| match &broker_reason {
        Some(r) => {
            format!("dead-lettered by RabbitMQ ({r}): the message was delivered too many times, e.g. repeated crashes")
        }
        None => "dead-lettered".into(),
    });
    let id = props.message_id().as_ref().map(|m| m.as_str().to_string()).unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(routing_key.as_bytes());
        h.update(body);
        h.update(format!("{:?}", props.headers()).as_bytes());
        hex::encode(&h.finalize()[..16])
    });
    DeadLetter {
        id,
        route: header_str(props, H_ROUTE).unwrap_or_else(|| routing_key.to_string()),
        event_id: attr("id"),
        event_type: attr("type"),
        reason,
        error,
        details: header_str(props, H_DETAILS),
        last_status: header_u64(props, H_LAST_STATUS).and_then(|s| u16::try_from(s).ok()),
        last_response: header_str(props, H_LAST_RESPONSE),
        attempts: header_u64(props, H_ATTEMPT).unwrap_or(0) as u32,
        body: body.to_vec(),
        headers: original_headers(props).to_string(),
        dead_at_ms: header_u64(props, H_DEAD_AT).map_or_else(|| now_ms() as i64, |t| t as i64),
        replayed_at_ms: None,
    }
}

/// The producer's headers (trace context and the like), without hookrelay's and the broker's.
fn original_headers(props: &BasicProperties) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(h) = props.headers() {
        for (k, v) in h.inner() {
            let k = k.as_str();
            if k.starts_with("hookrelay-") || k.starts_with("x-") {
                continue;
            }
            let v = match v {
                AMQPValue::LongString(s) => serde_json::Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                AMQPValue::ShortString(s) => serde_json::Value::from(s.as_str()),
                AMQPValue::LongInt(i) => serde_json::Value::from(*i),
                AMQPValue::LongLongInt(i) => serde_json::Value::from(*i),
                AMQPValue::Boolean(b) => serde_json::Value::from(*b),
                _ => continue,
            };
            out.insert(k.to_string(), v);
        }
    }
    serde_json::Value::Object(out)
}

/// Consumes the dead-letter queue into `store` until `stop` or the channel fails.
pub async fn index(ch: Channel, store: Arc<dyn Store>, stop: CancellationToken) -> Result<(), String> {
    ch.basic_qos(100, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
    let tag = format!("hookrelay-dead-letters-{}", std::process::id());
    let mut consumer = ch
        .basic_consume(DEAD_LETTERS.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let d = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            d = consumer.next() => match d {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(format!("dead-letter consumer failed: {e}")),
                None => return Err("dead-letter consumer closed by the broker".into()),
            },
        };
        let dl = from_message(&d.properties, d.routing_key.as_str(), &d.data);
        let mut wait = Duration::from_millis(200);
        loop {
            match store.add_dead_letter(&dl).await {
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, id = %dl.id, "indexing a dead letter failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        d.acker.ack(BasicAckOptions::default()).await.map_err(|e| e.to_string())?;
    }
}
