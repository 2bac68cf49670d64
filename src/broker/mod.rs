//! The broker: where events wait between the producer and the router. One [`Broker`] trait
//! (seed 000's pub/sub abstraction layer) with two implementations: RabbitMQ ([`amqp`]), the
//! production one that scales out on a cluster, and the embedded, file-backed broker
//! ([`embedded`]) that runs when `hookrelay.toml` has no `[broker]` section. Transport only: it
//! moves, holds and gives back messages; what a message means and when to ack it is decided by
//! the delivery module, which talks to the trait only, so the at-least-once rules hold for
//! both brokers, and one conformance suite (`tests/it/broker/conformance.rs`) checks them on both.
//!
//! The model is RabbitMQ's, reduced to what hookrelay uses:
//! - a topic exchange of events (routing key = event type), bound per route pattern to
//! - one durable queue per route (`hookrelay.route.<name>`), single-consumer when ordered;
//! - delayed redelivery into a route queue (retries of unordered routes);
//! - the dead-letter queue `hookrelay.dead-letters`, which also receives what the broker itself
//!   gives up on (`x-delivery-limit`);
//! - every publish is confirmed (durably stored, and routed to at least one queue) before it
//!   returns; a message leaves a queue only when acked. A consumer that goes away without
//!   acking gives its messages back, in order.

pub mod amqp;
pub mod embedded;
pub mod topic;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The dead-letter queue (and, on RabbitMQ, its exchange).
pub const DEAD_LETTERS: &str = "hookrelay.dead-letters";

/// Header: the delivery attempt a message carries (set when it is parked for a retry).
pub const H_ATTEMPT: &str = "hookrelay-attempt";
/// Header: attempts the event's delivery on this route made before it was replayed or retried
/// from the API (its attempts are numbered on from there; the retry budget starts afresh).
pub const H_ATTEMPTS_BEFORE: &str = "hookrelay-attempts-before";
/// Header: do not attempt before this Unix time in milliseconds.
pub const H_NOT_BEFORE: &str = "hookrelay-not-before";
/// Dead letter: the route.
pub const H_ROUTE: &str = "hookrelay-route";
/// Dead letter: the reason (`malformed`, `unknown_type`, `schema`, `script_error`, `rejected`, …).
pub const H_REASON: &str = "hookrelay-reason";
/// Dead letter: the cause, human-readable.
pub const H_ERROR: &str = "hookrelay-error";
/// Dead letter: details as JSON (schema violation paths).
pub const H_DETAILS: &str = "hookrelay-details";
/// Dead letter: the last HTTP status, if any.
pub const H_LAST_STATUS: &str = "hookrelay-last-status";
/// Dead letter: the start of the last response body.
pub const H_LAST_RESPONSE: &str = "hookrelay-last-response";
/// Dead letter: when it was written (Unix ms).
pub const H_DEAD_AT: &str = "hookrelay-dead-at";
/// W3C trace context.
pub const H_TRACEPARENT: &str = "traceparent";

/// How far past its tier a delayed message may be due and still wait all its time in the tier's
/// wait queue (RabbitMQ): a wait queue holds a message for at most `tier × (1 + TIER_SPREAD)`.
/// One due later comes back early, before its [`H_NOT_BEFORE`], and is parked again. Retry
/// jitter stays within this spread, so a jittered backoff step waits in one pass.
pub const TIER_SPREAD: f64 = 0.2;

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connecting or a channel operation failed.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// A queue exists with arguments the broker cannot change in place.
    #[error(
        "queue {queue} exists with different arguments: {detail}. RabbitMQ cannot change this in place: \
         let the queue drain, delete it (rabbitmqctl delete_queue {queue}) and restart, or give the route a new name"
    )]
    Mismatch {
        /// The queue.
        queue: String,
        /// The broker's words, naming the argument and both values.
        detail: String,
    },
    /// The router's ingest API refused the event (`hookrelay publish` through the API).
    #[error("the router's API refused the event: {0}")]
    Refused(String),
    /// A publish was returned (no queue bound) or refused.
    #[error("the broker did not take the message ({0})")]
    NotRouted(String),
    /// The connection is gone.
    #[error("the broker connection is closed: {0}")]
    Closed(String),
    /// A queue that was never declared.
    #[error("queue {0} does not exist (route queues are declared when their route starts)")]
    NoQueue(String),
    /// The embedded broker's file cannot be opened, read or written.
    #[error("embedded broker {path}: {detail}")]
    Embedded {
        /// The queue file.
        path: String,
        /// What went wrong, and what to do.
        detail: String,
    },
}

/// Message headers: what producers set (trace context and the like) and what hookrelay adds
/// (attempt counts, dead-letter reasons). Values are JSON scalars (and, for RabbitMQ's own
/// `x-death`, arrays and tables).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub BTreeMap<String, Value>);

impl Headers {
    /// A text header.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.as_str()
    }

    /// An integer header (also accepted as decimal text).
    pub fn u64(&self, name: &str) -> Option<u64> {
        match self.0.get(name)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Sets a header.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.0.insert(name.to_string(), value.into());
    }

    /// Removes a header.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// The reason RabbitMQ gave when it dead-lettered the message itself (`x-death`), e.g.
    /// `delivery_limit`, as opposed to a wait queue's expiry.
    pub fn death_reason(&self) -> Option<&str> {
        self.0.get("x-death")?.as_array()?.first()?.get("reason")?.as_str()
    }
}

/// One message taken from a queue. It stays the consumer's until [`Message::ack`]; a consumer
/// that goes away without acking gives it back to the queue.
pub struct Message {
    /// The body, as published.
    pub body: Bytes,
    /// Its headers.
    pub headers: Headers,
    /// The routing key it was published with (the event type, or the route of a dead letter).
    pub routing_key: String,
    /// The publisher's message id, if it set one.
    pub message_id: Option<String>,
    /// Delivered before (and not acked): after a crash, a lost connection or a shutdown.
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("redelivered", &self.redelivered)
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Message {
    /// A message as an implementation hands it out.
    pub fn new(
        body: Bytes,
        headers: Headers,
        routing_key: String,
        message_id: Option<String>,
        redelivered: bool,
        acker: Box<dyn Acker>,
    ) -> Self {
        Self { body, headers, routing_key, message_id, redelivered, acker }
    }

    /// Removes the message from its queue for good.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        self.acker.ack().await
    }

    /// Starts the ack and returns at once, the ack under way (see [`Acker::start_ack`]); the
    /// future tells how it ended. What an ordered route uses to take its next message without
    /// waiting for the previous one's ack.
    pub fn start_ack(&self) -> AckFuture {
        self.acker.start_ack()
    }
}

/// The end of an ack started by [`Message::start_ack`].
pub type AckFuture = Pin<Box<dyn Future<Output = Result<(), BrokerError>> + Send>>;

/// How an implementation acks one message.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acks, and returns once the ack is done: committed by the embedded broker; on RabbitMQ
    /// taken by the consumer's window, which sends it with others within 20 ms, and before the
    /// consumer closes (`amqp::acks`). Either way the message is not given back by a close
    /// after this returns; a crash before the broker took the ack delivers it again.
    async fn ack(&self) -> Result<(), BrokerError>;

    /// Starts the ack now and returns without waiting for it: when this returns, the ack is
    /// already on its way, behind every ack started before it on the same consumer. The future
    /// resolves as [`Acker::ack`] would have; dropping it does not undo the ack. An ack may then
    /// be done later than with [`Acker::ack`] (the embedded broker commits such acks in
    /// groups): a crash in between delivers the message again, never loses it.
    fn start_ack(&self) -> AckFuture;
}

/// A stream of messages from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// The next message; `None` when the broker ended the consumer.
    async fn next(&mut self) -> Option<Result<Message, BrokerError>>;
    /// Stops consuming and gives every unacked message back to the queue, in order. Never
    /// cancel-then-requeue: on a single-active-consumer queue that lets the next consumer
    /// overtake the returned messages.
    async fn close(self: Box<Self>);
}

/// Where a publish goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// The events exchange, routed by pattern: every route bound to the key gets a copy.
    Events {
        /// The event type.
        routing_key: &'a str,
    },
    /// One queue only (a replay to the route that dead-lettered the event).
    Queue(&'a str),
    /// The dead-letter queue; the route is the routing key.
    DeadLetters {
        /// The route that gave up on the message.
        route: &'a str,
    },
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
    /// Deliveries after which the broker dead-letters a message itself.
    pub delivery_limit: u32,
    /// Backoff tiers that need wait queues on RabbitMQ (empty for ordered routes, which retry
    /// in place).
    pub tiers: Vec<Duration>,
}

/// One connection to a broker, as the router uses it. An implementation that loses its
/// connection resolves [`Broker::lost`]; the router then connects again.
#[async_trait]
pub trait Broker: Send + Sync {
    /// `rabbitmq` or `embedded`.
    fn kind(&self) -> &'static str;
    /// Declares the events exchange and the dead-letter queue. Idempotent.
    async fn declare_base(&self) -> Result<(), BrokerError>;
    /// Declares a route's queue, wait queues and bindings, the bindings last. Idempotent; a queue
    /// that exists with other arguments gives [`BrokerError::Mismatch`], and no binding is added.
    async fn declare_route(&self, t: &RouteTopology<'_>) -> Result<(), BrokerError>;
    /// Removes bindings of a route's queue (the queue and its messages stay).
    async fn unbind(&self, queue: &str, patterns: &[String]) -> Result<(), BrokerError>;
    /// Consumes a queue, with up to `prefetch` unacked messages at once.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError>;
    /// Publishes durably and returns once the broker has confirmed it. A message that reaches
    /// no queue is an error ([`BrokerError::NotRouted`]), never silently dropped.
    async fn publish(
        &self,
        to: Destination<'_>,
        body: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<(), BrokerError>;
    /// Publishes into `queue`, to be delivered after `delay` (confirmed, like [`Broker::publish`]).
    /// `tier` is the route's backoff step the delay belongs to (RabbitMQ's wait queue).
    async fn publish_delayed(
        &self,
        queue: &str,
        tier: Duration,
        body: &[u8],
        headers: &Headers,
        delay: Duration,
    ) -> Result<(), BrokerError>;
    /// Messages ready in a queue (not counting those delivered and unacked).
    async fn queue_depth(&self, queue: &str) -> Result<u64, BrokerError>;
    /// Consumers of a queue now, over every connection (on RabbitMQ: every replica's; on a
    /// single-active-consumer queue, the waiting ones too).
    async fn consumer_count(&self, queue: &str) -> Result<u32, BrokerError>;
    /// Resolves, with the reason, when the connection is lost.
    async fn lost(&self) -> String;
    /// Closes the connection: every unacked message goes back to its queue.
    async fn close(&self);
}

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Which broker to connect to, and where.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    /// RabbitMQ.
    Rabbitmq {
        /// The AMQP URL (`%2f` is the vhost `/`).
        url: &'a str,
        /// The topic exchange of events.
        exchange: &'a str,
    },
    /// The embedded broker's file.
    Embedded {
        /// The queue file.
        path: &'a std::path::Path,
        /// What a commit survives.
        sync: embedded::EmbeddedSync,
    },
}

/// Connects to `endpoint`: RabbitMQ (`name` identifies this process to operators), or the
/// embedded broker's file, which is opened once per process: every call hands out a new
/// connection to the same instance (a failed instance is reopened).
pub async fn connect(endpoint: Endpoint<'_>, name: &str) -> Result<Arc<dyn Broker>, BrokerError> {
    match endpoint {
        Endpoint::Rabbitmq { url, exchange } => Ok(Arc::new(amqp::AmqpBroker::connect(url, exchange, name).await?)),
        Endpoint::Embedded { path, sync } => Ok(Arc::new(embedded::EmbeddedBroker::shared(path, sync).await?)),
    }
}
