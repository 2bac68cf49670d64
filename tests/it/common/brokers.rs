//! The broker a router-level suite runs on, and how its tests reach it: RabbitMQ (a vhost of the
//! test's own) or the embedded broker (a queue file in a temp dir of the test's own). A suite
//! writes each test once as `async fn name(on: TestBroker)` and lists it in
//! [`on_both_brokers!`](crate::common::on_both_brokers), which makes `on_rabbitmq::name` and
//! `on_embedded::name`.
//!
//! Producers reach the two differently, as users do: on RabbitMQ they publish to the events
//! exchange whether a router runs or not; the embedded broker's file belongs to one process, so
//! while the router runs they POST to its ingest API (which checks each event, as a producer
//! would meet it), and while no router runs they write to the file directly (as `hookrelay
//! publish` does then, unchecked).

use super::{ConfigDir, MainConfig, RouterProc, Vhost, rabbitmq_main};
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, Destination, Headers};
use hookrelay::config::files::EmbeddedSync;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// Makes `mod on_rabbitmq` and `mod on_embedded`, each with one test per name that runs
/// `super::name(<the broker>)`: `on_both_brokers!(rabbitmq_expr, embedded_expr; name, …)`, the
/// expressions evaluated inside the test (so `super::` paths name the suite's module).
macro_rules! on_both_brokers {
    ($rabbitmq:expr, $embedded:expr; $($name:ident),* $(,)?) => {
        mod on_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($rabbitmq).await;
                }
            )*
        }
        mod on_embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($embedded).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_brokers;

/// The broker under a router process.
pub enum TestBroker {
    /// A vhost of the test's own, deleted at the end.
    Rabbitmq(Vhost),
    /// A temp dir holding the queue file (`queue.db`).
    Embedded(tempfile::TempDir),
}

impl TestBroker {
    pub fn rabbitmq() -> Self {
        Self::Rabbitmq(Vhost::new())
    }

    pub fn embedded() -> Self {
        Self::Embedded(tempfile::tempdir().unwrap())
    }

    /// The vhost, on RabbitMQ: for what only RabbitMQ has (queue arguments, bindings).
    pub fn vhost(&self) -> Option<&Vhost> {
        match self {
            Self::Rabbitmq(vh) => Some(vh),
            Self::Embedded(_) => None,
        }
    }

    fn queue_file(&self) -> Option<PathBuf> {
        match self {
            Self::Rabbitmq(_) => None,
            Self::Embedded(dir) => Some(dir.path().join("queue.db")),
        }
    }

    /// The `hookrelay.toml` of the suite's tests on this broker: [`rabbitmq_main`] on the vhost,
    /// or the same without `[broker]` and with `[embedded] path` in the test's temp dir (the
    /// embedded broker has no prefetch setting: its default, 64, is below RabbitMQ's 100).
    pub fn main(&self) -> MainConfig {
        match self {
            Self::Rabbitmq(vh) => rabbitmq_main(&vh.url),
            Self::Embedded(_) => MainConfig::new()
                .version(1)
                .embedded(self.queue_file().unwrap())
                .loopback_targets()
                .shutdown_grace(Duration::from_secs(10)),
        }
    }

    /// A config directory with [`TestBroker::main`].
    pub fn config(&self) -> ConfigDir {
        ConfigDir::with(self.main())
    }

    /// Publishes `events` (structured JSON, routing key = type) in order while `router` runs:
    /// to RabbitMQ with confirms, or one at a time to the router's `POST /v1/events` (202 each,
    /// and routed).
    pub async fn publish(&self, router: &RouterProc, events: &[Value]) {
        match self {
            Self::Rabbitmq(vh) => vh.publish(events).await,
            Self::Embedded(_) => {
                let api = super::Api::new(&router.api().await, None);
                for e in events {
                    let answer = api.post("/v1/events", e.clone()).await;
                    assert_eq!(answer.status, 202, "POST /v1/events {}: {}", e["id"], answer.text);
                    assert_eq!(answer.json, json!({"id": e["id"], "routed": true}), "POST /v1/events");
                }
            }
        }
    }

    /// Publishes raw bodies with their routing keys while no router runs (its routes declared by
    /// an earlier run): to RabbitMQ, or straight into the embedded broker's file, unchecked.
    pub async fn publish_stopped(&self, messages: &[(String, Vec<u8>)]) {
        match self {
            Self::Rabbitmq(vh) => vh.publish_raw(messages).await,
            Self::Embedded(_) => {
                let path = self.queue_file().unwrap();
                let b = EmbeddedBroker::open(&path, EmbeddedSync::Normal)
                    .await
                    .unwrap_or_else(|e| panic!("no router may run while publishing to the file: {e}"));
                for (key, body) in messages {
                    let to = Destination::Events { routing_key: key };
                    b.publish(to, body, &Headers::default(), None)
                        .await
                        .unwrap_or_else(|e| panic!("publish {key} to {}: {e}", path.display()));
                }
                b.shutdown().await;
            }
        }
    }

    /// [`TestBroker::publish_stopped`] for events.
    pub async fn publish_events_stopped(&self, events: &[Value]) {
        self.publish_stopped(&raw(events)).await;
    }
}

/// Events as `(routing key = type, structured JSON body)`.
pub fn raw(events: &[Value]) -> Vec<(String, Vec<u8>)> {
    events.iter().map(|e| (e["type"].as_str().unwrap_or("").to_string(), serde_json::to_vec(e).unwrap())).collect()
}
