//! One broker conformance suite, run on both implementations: RabbitMQ (a vhost per test) and
//! the embedded broker (a temp dir per test) (`conformance`). Then what only the embedded broker
//! has (`embedded`): a real child process killed with SIGKILL in the middle of a burst, the file
//! lock, the config switch, and the router end to end on it.
//!
//! This module holds what both parts share: the broker under test ([`Subject`]) and the steps
//! they take on it.

mod conformance;
mod embedded;

use crate::common::*;
use hookrelay::broker::amqp::AmqpBroker;
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, Consumer, Destination, Headers, Message, RouteTopology};
use hookrelay::config::files::EmbeddedSync;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
/// Long enough for a wrongly delivered message to show up.
const QUIET: Duration = Duration::from_millis(700);

/// A broker under test, and how to "crash" it.
enum Subject {
    Rabbitmq(Vhost),
    Embedded { dir: tempfile::TempDir, root: tokio::sync::Mutex<Option<EmbeddedBroker>> },
}

impl Subject {
    fn rabbitmq() -> Self {
        Self::Rabbitmq(Vhost::new())
    }

    fn embedded() -> Self {
        Self::Embedded { dir: tempfile::tempdir().unwrap(), root: tokio::sync::Mutex::new(None) }
    }

    /// A new connection.
    async fn connect(&self) -> Arc<dyn Broker> {
        match self {
            Self::Rabbitmq(vh) => {
                Arc::new(AmqpBroker::connect(&vh.url, "hookrelay.events", "conformance").await.unwrap())
            }
            Self::Embedded { dir, root } => {
                let mut root = root.lock().await;
                if root.is_none() {
                    let path = dir.path().join("queue.db");
                    *root = Some(EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap());
                }
                Arc::new(root.as_ref().unwrap().connection())
            }
        }
    }

    /// The process dies, or its connection does: RabbitMQ closes every connection from the
    /// broker's side; the embedded broker's engine goes (the caller has dropped its connections,
    /// consumers and messages) and the next [`Subject::connect`] reopens the file.
    async fn crash(&self) {
        match self {
            Self::Rabbitmq(vh) => {
                // The management API lists a connection once its stats are in.
                eventually(
                    "a connection to close (connections closed)",
                    T,
                    async || vh.close_connections(),
                    |n| *n > 0,
                )
                .await;
            }
            Self::Embedded { root, .. } => {
                root.lock().await.take();
            }
        }
    }
}

fn queue(route: &str) -> String {
    format!("hookrelay.route.{route}")
}

async fn declare(b: &dyn Broker, route: &str, patterns: &[&str], ordered: bool, limit: u32) {
    let q = queue(route);
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let tiers = if ordered { vec![] } else { vec![Duration::from_secs(1)] };
    let t = RouteTopology { name: route, queue: &q, patterns: &patterns, ordered, delivery_limit: limit, tiers };
    b.declare_route(&t).await.unwrap();
}

async fn publish(b: &dyn Broker, key: &str, id: &str) {
    let body = serde_json::to_vec(&json!({"id": id, "type": key})).unwrap();
    b.publish(Destination::Events { routing_key: key }, &body, &Headers::default(), Some(id)).await.unwrap();
}

async fn publish_n(b: &dyn Broker, key: &str, prefix: &str, n: usize) {
    for i in 0..n {
        publish(b, key, &format!("{prefix}-{i}")).await;
    }
}

/// The next `n` messages (panics after [`T`]).
async fn take(c: &mut Box<dyn Consumer>, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(T, c.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            other => panic!("expected {n} messages, got {}, then {other:?}", out.len()),
        }
    }
    out
}

/// Asserts nothing arrives for a while.
async fn quiet(c: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(m) = tokio::time::timeout(QUIET, c.next()).await {
        panic!("{what}: expected nothing, got {m:?}");
    }
}

fn ids(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| m.message_id.clone().unwrap_or_default()).collect()
}

fn numbered_ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

async fn ack_all(ms: &[Message]) {
    for m in ms {
        m.ack().await.unwrap();
    }
}

/// Waits until `route`'s queue holds `n` ready messages. RabbitMQ applies acks and returns
/// asynchronously (an ack has no reply), so its count catches up a moment later.
async fn wait_depth(b: &dyn Broker, route: &str, n: u64, what: &str) {
    let depth = async || b.queue_depth(&queue(route)).await.unwrap();
    eventually(format!("{what}: {n} ready messages in {route}, not"), T, depth, |d| *d == n).await;
}
