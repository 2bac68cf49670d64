//! RabbitMQ through lapin: the topology hookrelay owns, publishing with confirms, and the
//! message headers it reads and writes.
//!
//! Topology (declared idempotently at start):
//! - the producers' topic exchange (`hookrelay.events` by default), routing key = event type;
//! - per route a quorum queue `hookrelay.route.<name>` bound once per event pattern, with
//!   `x-single-active-consumer` when ordered, `x-delivery-limit`, and at-least-once
//!   dead-lettering to `hookrelay.dead-letters`;
//! - per unordered route and backoff tier a wait queue `hookrelay.route.<name>.retry.<ms>`:
//!   no consumer; messages expire (per-message `expiration`) and are dead-lettered back to the
//!   route queue through the default exchange;
//! - the dead-letter exchange and quorum queue `hookrelay.dead-letters`, bound with `#`.
//!
//! Every publish is `mandatory` and waits for its publisher confirm; a `basic.return` counts as a
//! failure (an unroutable mandatory publish is returned, then acked).

use crate::pipeline::Reason;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;

/// The dead-letter exchange and its queue.
pub const DEAD_LETTERS: &str = "hookrelay.dead-letters";

/// Header: the delivery attempt a message carries (set on republish to a wait queue).
pub const H_ATTEMPT: &str = "hookrelay-attempt";
/// Header: do not attempt before this Unix time in milliseconds.
pub const H_NOT_BEFORE: &str = "hookrelay-not-before";
/// Dead-letter headers.
pub const H_ROUTE: &str = "hookrelay-route";
/// Dead-letter reason (`malformed`, `unknown_type`, `schema`, `script_error`, `rejected`, …).
pub const H_REASON: &str = "hookrelay-reason";
/// Dead-letter cause, human-readable.
pub const H_ERROR: &str = "hookrelay-error";
/// Dead-letter details as JSON (schema violation paths).
pub const H_DETAILS: &str = "hookrelay-details";
/// Dead letter: the last HTTP status, if any.
pub const H_LAST_STATUS: &str = "hookrelay-last-status";
/// Dead letter: the start of the last response body.
pub const H_LAST_RESPONSE: &str = "hookrelay-last-response";
/// Dead letter: when it was written (Unix ms).
pub const H_DEAD_AT: &str = "hookrelay-dead-at";

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting or a channel operation failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// A queue exists with arguments RabbitMQ cannot change in place.
    #[error(
        "queue {queue} exists with different arguments: {detail}. RabbitMQ cannot change this in place: \
         let the queue drain, delete it (rabbitmqctl delete_queue {queue}) and restart, or give the route a new name"
    )]
    Mismatch {
        /// The queue.
        queue: String,
        /// RabbitMQ's words, naming the argument and both values.
        detail: String,
    },
    /// A publish was returned (no queue bound) or nacked.
    #[error("the broker did not take the message ({0})")]
    NotRouted(String),
}

/// Connects, naming the connection so operators can find it in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name.to_string()));
    Ok(Connection::connect(url, props).await?)
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

/// Declares the events exchange and the dead-letter exchange and queue.
pub async fn declare_base(ch: &Channel, exchange: &str) -> Result<(), BrokerError> {
    let opts = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    ch.exchange_declare(exchange.into(), ExchangeKind::Topic, opts, FieldTable::default()).await?;
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
    Ok(())
}

/// What a route's queues need.
#[derive(Debug, Clone)]
pub struct RouteTopology<'a> {
    /// Route name.
    pub name: &'a str,
    /// Its queue.
    pub queue: &'a str,
    /// Event patterns to bind.
    pub patterns: &'a [String],
    /// Single active consumer.
    pub ordered: bool,
    /// `x-delivery-limit`.
    pub delivery_limit: u32,
    /// Backoff tiers that need wait queues (empty for ordered routes, which retry in place).
    pub tiers: Vec<Duration>,
}

/// The wait queue of a route's backoff tier.
pub fn retry_queue(route_queue: &str, tier: Duration) -> String {
    format!("{route_queue}.retry.{}", tier.as_millis())
}

/// Declares a route's queue, bindings and wait queues. A queue that exists with other
/// arguments gives [`BrokerError::Mismatch`] (and closes `ch`).
pub async fn declare_route(ch: &Channel, exchange: &str, t: &RouteTopology<'_>) -> Result<(), BrokerError> {
    let mut args = quorum_args();
    // Single active consumer: one consumer of the queue receives at a time across all replicas;
    // on its loss the next takes over with the unacked messages first, in order.
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
    for p in t.patterns {
        ch.queue_bind(
            t.queue.into(),
            exchange.into(),
            p.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for tier in &t.tiers {
        let name = retry_queue(t.queue, *tier);
        let mut args = quorum_args();
        // Expired messages go back to the route queue through the default exchange.
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(t.queue.into()));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        ch.queue_declare(name.as_str().into(), durable(), args).await.map_err(|e| mismatch(&name, e))?;
    }
    Ok(())
}

/// A channel in confirm mode for republishing retries and dead letters.
#[derive(Clone)]
pub struct Publisher {
    ch: Channel,
}

impl Publisher {
    /// Opens a confirm-mode channel on `conn`.
    pub async fn open(conn: &Connection) -> Result<Self, BrokerError> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { ch })
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// Publishes persistently and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        publish_confirmed(&self.ch, exchange, key, body, props).await
    }

    /// Stores a dead letter durably: the original body untouched, the why in headers.
    pub async fn dead_letter(&self, dl: &DeadLetter<'_>) -> Result<(), BrokerError> {
        let mut h = dl.original_headers.clone();
        put_str(&mut h, H_ROUTE, dl.route);
        put_str(&mut h, H_REASON, dl.reason.as_str());
        put_str(&mut h, H_ERROR, &truncate(dl.error, 2048));
        if let Some(d) = &dl.details {
            put_str(&mut h, H_DETAILS, &truncate(&d.to_string(), 8192));
        }
        if let Some(s) = dl.last_status {
            h.insert(H_LAST_STATUS.into(), AMQPValue::LongInt(i32::from(s)));
        }
        if let Some(b) = dl.last_response {
            put_str(&mut h, H_LAST_RESPONSE, b);
        }
        h.insert(H_ATTEMPT.into(), AMQPValue::LongInt(dl.attempts as i32));
        h.insert(H_DEAD_AT.into(), AMQPValue::LongLongInt(now_ms() as i64));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(h)
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(uuid::Uuid::new_v4().to_string().into());
        self.publish(DEAD_LETTERS, dl.route, dl.body, props).await
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
            "{} {} for routing key {key:?} on exchange {exchange:?}",
            r.reply_code, r.reply_text
        ))),
        Confirmation::Nack(None) => Err(BrokerError::NotRouted("nacked".into())),
    }
}

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
    /// The original message body.
    pub body: &'a [u8],
    /// The original message headers (trace context and the like).
    pub original_headers: FieldTable,
}

fn put_str(h: &mut FieldTable, k: &str, v: &str) {
    h.insert(ShortString::from(k.to_string()), AMQPValue::LongString(v.into()));
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

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An integer header.
pub fn header_u64(props: &BasicProperties, name: &str) -> Option<u64> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::Timestamp(v) => Some(*v),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// A text header.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Whether the broker dead-lettered this message because of `x-delivery-limit` (`x-death`
/// reason `delivery_limit`) — as opposed to a wait queue's expiry.
pub fn death_reason(props: &BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = props.headers().as_ref()?.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else { return None };
    match first.inner().get("reason")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}
