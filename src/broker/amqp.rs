//! RabbitMQ through lapin: the production [`Broker`].
//!
//! Topology (declared idempotently at start and on reload):
//! - the producers' topic exchange (`hookrelay.events` by default), routing key = event type;
//! - per route a quorum queue `hookrelay.route.<name>` bound once per event pattern, with
//!   `x-single-active-consumer` when ordered, `x-delivery-limit`, and at-least-once
//!   dead-lettering to `hookrelay.dead-letters`;
//! - per backoff tier (a delay value of some unordered route), shared by every route: a fanout
//!   exchange and a wait queue, both `hookrelay.retry.<ms>`. A retry is published to the tier's
//!   exchange with its route's queue as routing key; the wait queue has no consumer; the message
//!   expires there (per-message `expiration`) and is dead-lettered through the default exchange
//!   with its original routing key, which puts it back in its route's queue. Sharing the tiers
//!   keeps the queue count near the route count (100 routes with 7 tiers each would otherwise
//!   be 800 quorum queues, which a small broker does not take well);
//! - the dead-letter exchange and quorum queue `hookrelay.dead-letters`, bound with `#`.
//!
//! Every publish is persistent and `mandatory`, on a confirm-mode channel, and waits for its
//! publisher confirm; a `basic.return` counts as a failure (an unroutable mandatory publish is
//! returned, then acked). Each route consumes on a channel of its own, so closing it returns
//! exactly that route's unacked messages, in order. A consumer's acks go in groups, one
//! `basic.ack` for many settled messages (the `acks` module).
//!
//! Events published in CloudEvents binary content mode are put in structured form as they are
//! consumed ([`crate::binding`]), so the rest of hookrelay sees one form.

use super::{Broker, BrokerError, Consumer, DEAD_LETTERS, Destination, Headers, Message, RouteTopology};
use crate::binding;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

mod acks;

use acks::{AckWindow, AmqpAcker};

/// A RabbitMQ connection: one confirm-mode channel for publishing, one channel per consumer.
pub struct AmqpBroker {
    conn: Connection,
    exchange: String,
    publisher: Channel,
    events: Mutex<Option<futures_util::stream::BoxStream<'static, lapin::Event>>>,
}

impl AmqpBroker {
    /// Connects to `url`, naming the connection `name` so operators can find it in the
    /// management UI; `exchange` is the producers' topic exchange.
    pub async fn connect(url: &str, exchange: &str, name: &str) -> Result<Self, BrokerError> {
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name.to_string()));
        let conn = Connection::connect(url, props).await?;
        let events = conn.events_listener().boxed();
        let publisher = conn.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { conn, exchange: exchange.to_string(), publisher, events: Mutex::new(Some(events)) })
    }

    /// The underlying connection (benchmarks and tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// What a passive `queue.declare` reports of a queue: its ready messages and consumers.
    async fn passive_declare(&self, queue: &str) -> Result<lapin::Queue, BrokerError> {
        // A passive declare on a missing queue closes its channel: use one of its own.
        let ch = self.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "passive declare".into()).await;
        Ok(q)
    }
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn mismatch(queue: &str, e: lapin::Error) -> BrokerError {
    let text = e.to_string();
    if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent") {
        let detail = text.split("PRECONDITION_FAILED - ").nth(1).unwrap_or(&text).to_string();
        BrokerError::Mismatch { queue: queue.to_string(), detail }
    } else {
        BrokerError::Amqp(e)
    }
}

/// The exchange and wait queue of a backoff tier, shared by every route.
pub fn retry_queue(tier: Duration) -> String {
    format!("hookrelay.retry.{}", tier.as_millis())
}

#[async_trait]
impl Broker for AmqpBroker {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    async fn declare_base(&self) -> Result<(), BrokerError> {
        let ch = self.conn.create_channel().await?;
        let opts = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        ch.exchange_declare(self.exchange.as_str().into(), ExchangeKind::Topic, opts, FieldTable::default()).await?;
        ch.exchange_declare(DEAD_LETTERS.into(), ExchangeKind::Topic, opts, FieldTable::default()).await?;
        ch.queue_declare(DEAD_LETTERS.into(), durable(), quorum_args()).await.map_err(|e| mismatch(DEAD_LETTERS, e))?;
        ch.queue_bind(
            DEAD_LETTERS.into(),
            DEAD_LETTERS.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn declare_route(&self, t: &RouteTopology<'_>) -> Result<(), BrokerError> {
        // A channel of its own: a refused declaration closes it, and nothing else.
        let ch = self.conn.create_channel().await?;
        let mut args = quorum_args();
        // Single active consumer: one consumer of the queue receives at a time across all
        // replicas; on its loss the next takes over with the unacked messages first, in order.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(t.ordered));
        // Poison messages cannot loop forever: after this many deliveries (crashes included) the
        // broker dead-letters the message with x-death reason `delivery_limit`.
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(t.delivery_limit as i32));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(DEAD_LETTERS.into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(t.name.into()));
        // At-least-once dead-lettering needs reject-publish overflow (RabbitMQ quorum queue docs).
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        ch.queue_declare(t.queue.into(), durable(), args).await.map_err(|e| mismatch(t.queue, e))?;
        for tier in &t.tiers {
            let name = retry_queue(*tier);
            let opts = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            ch.exchange_declare(name.as_str().into(), ExchangeKind::Fanout, opts, FieldTable::default()).await?;
            let mut args = quorum_args();
            // Expired messages are dead-lettered through the default exchange with their own
            // routing key (no x-dead-letter-routing-key): the queue of the route they came from.
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
            ch.queue_declare(name.as_str().into(), durable(), args).await.map_err(|e| mismatch(&name, e))?;
            ch.queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        // Bindings last: a queue or wait queue the broker refuses leaves no binding behind.
        for p in t.patterns {
            ch.queue_bind(
                t.queue.into(),
                self.exchange.as_str().into(),
                p.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    async fn unbind(&self, queue: &str, patterns: &[String]) -> Result<(), BrokerError> {
        if patterns.is_empty() {
            return Ok(());
        }
        let ch = self.conn.create_channel().await?;
        for p in patterns {
            ch.queue_unbind(queue.into(), self.exchange.as_str().into(), p.as_str().into(), FieldTable::default())
                .await?;
        }
        let _ = ch.close(200, "unbound".into()).await;
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let tag = format!("hookrelay-{queue}-{}", std::process::id());
        let inner =
            ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        let (acks, acking) = AckWindow::start(prefetch);
        Ok(Box::new(AmqpConsumer { ch, inner, acks, acking: Some(acking) }))
    }

    async fn publish(
        &self,
        to: Destination<'_>,
        body: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let (exchange, key) = match to {
            Destination::Events { routing_key } => (self.exchange.as_str(), routing_key),
            Destination::Queue(q) => ("", q),
            Destination::DeadLetters { route } => (DEAD_LETTERS, route),
        };
        let mut props =
            BasicProperties::default().with_headers(to_table(headers)).with_content_type(CLOUDEVENTS_JSON.into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        publish_confirmed(&self.publisher, exchange, key, body, props).await
    }

    async fn publish_delayed(
        &self,
        queue: &str,
        tier: Duration,
        body: &[u8],
        headers: &Headers,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        // Messages expire only at the head of a quorum queue, so each wait queue holds one
        // tier; the per-message expiration is capped by the tier (plus its jitter), and a
        // message that comes back early (`hookrelay-not-before`) is parked again by the router.
        let wait = delay.min(tier.mul_f64(1.0 + super::TIER_SPREAD));
        let props = BasicProperties::default()
            .with_headers(to_table(headers))
            .with_content_type(CLOUDEVENTS_JSON.into())
            .with_expiration(wait.as_millis().max(1).to_string().into());
        publish_confirmed(&self.publisher, &retry_queue(tier), queue, body, props).await
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, BrokerError> {
        Ok(u64::from(self.passive_declare(queue).await?.message_count()))
    }

    async fn consumer_count(&self, queue: &str) -> Result<u32, BrokerError> {
        Ok(self.passive_declare(queue).await?.consumer_count())
    }

    async fn lost(&self) -> String {
        let Some(mut events) = self.events.lock().await.take() else {
            return std::future::pending().await;
        };
        while let Some(ev) = events.next().await {
            // A soft error closes one channel, not the connection (lapin reports both here):
            // e.g. a route queue declared with other arguments, which the route reports itself.
            if let lapin::Event::Error(e) = ev
                && !e.is_amqp_soft_error()
            {
                return e.to_string();
            }
        }
        "connection closed".to_string()
    }

    async fn close(&self) {
        let _ = self.conn.close(200, "hookrelay stopping".into()).await;
    }
}

/// Every message hookrelay publishes is a CloudEvent in structured JSON mode.
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// A route's (or the dead-letter indexer's) consumer, on a channel of its own; its acks go in
/// groups ([`acks`]).
struct AmqpConsumer {
    ch: Channel,
    inner: lapin::Consumer,
    acks: Arc<AckWindow>,
    /// The window's task, until the consumer closes.
    acking: Option<JoinHandle<()>>,
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Dropped without `close` (a failed session): the acks settled go out, best effort, and
        // the window's task ends.
        if self.acking.is_some() {
            self.acks.closing();
        }
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Message, BrokerError>> {
        let d = match self.inner.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e.into())),
        };
        let mut headers = d.properties.headers().as_ref().map(from_table).unwrap_or_default();
        let message_id = d.properties.message_id().as_ref().map(|m| m.as_str().to_string());
        let content_type = d.properties.content_type().as_ref().map(|c| c.as_str());
        let body = match binding::is_amqp_binary(headers.0.keys().map(String::as_str), content_type) {
            true => from_binary(&mut headers, content_type, d.data, message_id.as_deref()),
            false => Bytes::from(d.data),
        };
        self.acks.handed_out(d.delivery_tag, d.acker);
        Some(Ok(Message::new(
            body,
            headers,
            d.routing_key.as_str().to_string(),
            message_id,
            d.redelivered,
            Box::new(AmqpAcker { window: self.acks.clone(), tag: d.delivery_tag }),
        )))
    }

    async fn close(mut self: Box<Self>) {
        // Every settled message's ack goes first, so that closing gives back only the others.
        if let Some(acking) = self.acking.take() {
            self.acks.close(acking).await;
        }
        // Closing the channel (never cancelling first) returns the unacked messages in order.
        let _ = self.ch.close(200, "route stopped".into()).await;
    }
}

/// A binary-mode message (CloudEvents AMQP binding: attributes as `cloudEvents:` or
/// `cloudEvents_` application properties, `content-type` for the data, the body the data) in
/// the structured form, which is what the pipeline decodes and what a retry or a dead letter
/// keeps; the attribute properties leave the headers. A body that is not what its content type
/// says stays as it came, so that decoding it dead-letters it `malformed`; the cause is logged.
fn from_binary(headers: &mut Headers, content_type: Option<&str>, data: Vec<u8>, message_id: Option<&str>) -> Bytes {
    let attributes: Vec<(String, Value)> =
        headers.0.iter().filter_map(|(k, v)| Some((binding::amqp_attribute(k)?.to_string(), v.clone()))).collect();
    match binding::to_structured(attributes, content_type, &data) {
        Ok(structured) => {
            headers.0.retain(|k, _| binding::amqp_attribute(k).is_none());
            Bytes::from(structured)
        }
        Err(e) => {
            tracing::warn!(message_id, error = %e, "a binary-mode CloudEvent cannot be put in structured form");
            Bytes::from(data)
        }
    }
}

/// Publishes `mandatory` and persistent, and waits for the confirm; a return or nack is an error.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
    let props = props.with_delivery_mode(2);
    let opts = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = ch.basic_publish(exchange.into(), key.into(), opts, body, props).await?.await?;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => Err(BrokerError::NotRouted(format!(
            "{} {}: no queue is bound to routing key {key:?} on exchange {exchange:?}",
            r.reply_code, r.reply_text
        ))),
        Confirmation::Nack(None) => Err(BrokerError::NotRouted("nacked by the broker".into())),
    }
}

/// AMQP headers as [`Headers`].
pub fn from_table(t: &FieldTable) -> Headers {
    Headers(t.inner().iter().filter_map(|(k, v)| Some((k.as_str().to_string(), from_amqp(v)?))).collect())
}

fn from_amqp(v: &AMQPValue) -> Option<Value> {
    Some(match v {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().filter_map(from_amqp).collect()),
        AMQPValue::FieldTable(t) => {
            Value::Object(t.inner().iter().filter_map(|(k, v)| Some((k.as_str().to_string(), from_amqp(v)?))).collect())
        }
        AMQPValue::DecimalValue(_) | AMQPValue::ByteArray(_) | AMQPValue::Void => return None,
    })
}

/// [`Headers`] as an AMQP table.
pub fn to_table(h: &Headers) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in &h.0 {
        if let Some(v) = to_amqp(v) {
            t.insert(ShortString::from(k.clone()), v);
        }
    }
    t
}

fn to_amqp(v: &Value) -> Option<AMQPValue> {
    Some(match v {
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64()?),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(a.iter().filter_map(to_amqp).collect::<Vec<_>>())),
        Value::Object(o) => {
            let mut t = FieldTable::default();
            for (k, v) in o {
                if let Some(v) = to_amqp(v) {
                    t.insert(ShortString::from(k.clone()), v);
                }
            }
            AMQPValue::FieldTable(t)
        }
        Value::Null => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_amqp_tables() {
        let mut h = Headers::default();
        h.set("traceparent", "00-abc-def-01");
        h.set("hookrelay-attempt", 3);
        h.set("flag", true);
        h.set("x-death", serde_json::json!([{"reason": "delivery_limit", "count": 4}]));
        let back = from_table(&to_table(&h));
        assert_eq!(back, h);
        assert_eq!(back.u64("hookrelay-attempt"), Some(3));
        assert_eq!(back.death_reason(), Some("delivery_limit"));
    }
}
