//! hookrelay: a sidecar event router that turns CloudEvents from RabbitMQ into signed,
//! at-least-once webhooks.
//!
//! The path of one event, and the module that owns each step:
//!
//! ```text
//! broker (amqp)  ─▶ event (decode CloudEvent) ─▶ pipeline (schema, filter, transform,
//! redact, render) ─▶ deliver (sign, SSRF-guarded hyper client, classify, backoff)
//! ─▶ router (ack after 2xx · retry · dead letter, then ack)
//! ```
//!
//! - [`config`] loads a config directory (`hookrelay.toml`, `routes/`, `schemas/`, `plugins/`)
//!   into a [`config::Snapshot`]: everything per-event work needs, compiled once.
//! - [`event`] is the CloudEvents 1.0 envelope (structured JSON mode).
//! - [`pipeline`] is the pure, I/O-free per-event path.
//! - [`deliver`] is outbound HTTP: signing, the guarded client, retry timing.
//! - [`broker`] is RabbitMQ: topology, consuming, publishing with confirms, dead letters.
//! - [`router`] runs one consumer per route and is the only place that acks.
//! - [`reload`] reloads the config on SIGHUP or file changes, through [`router::Router::reload`].
//! - [`listen`] is the local receiver behind `hookrelay listen`.
//! - [`metrics`] is the Prometheus recorder and what the router reports to it; [`telemetry`] is
//!   logs and OTLP traces.

pub mod api;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod event;
pub mod listen;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod router;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
