//! hookrelay: a sidecar event router that turns CloudEvents from a broker (RabbitMQ, or the
//! embedded one) into signed, at-least-once webhooks.
//!
//! The path of one event, and the module that owns each step:
//!
//! ```text
//! producer ─▶ api (POST /v1/events) or AMQP ─▶ broker (a queue per route)
//!   ─▶ delivery::worker (consume) ─▶ pipeline (decode, tenant, schema, filter, transform, redact, render)
//!   ─▶ delivery::attempt (sign, POST through delivery::http) ─▶ delivery::verdict (decide)
//!   ─▶ delivery::settle (ack · park for a retry · dead letter, then ack)
//!   ─▶ runtime::indexer (dead letters into the store)
//! ```
//!
//! - [`config`] loads a config directory (`hookrelay.toml`, `routes/`, `schemas/`, `plugins/`)
//!   into a [`config::Snapshot`]: everything per-event work needs, compiled once, from types
//!   that the modules using them define. One route compiler serves route files and API
//!   subscriptions ([`subscriptions`]).
//! - [`event`] is the CloudEvents 1.0 envelope (structured JSON mode); [`binding`] turns binary
//!   content mode (HTTP `ce-` headers, AMQP `cloudEvents:` properties) into it at both entries.
//! - [`pipeline`] is the pure, I/O-free per-event path.
//! - [`delivery`] is one message, at least once: the worker, the attempt, the verdict, the
//!   settlement, outbound HTTP ([`delivery::http`]: client, SSRF guard, signing, retry
//!   timing), and each route's endpoint policies ([`delivery::gate`] over
//!   [`delivery::policy`]: circuit breaker, rate limit). `delivery::settle` is the only code
//!   that acks a route message.
//! - [`broker`] is transport only: the `Broker` trait, RabbitMQ ([`broker::amqp`]) and the
//!   embedded, file-backed broker ([`broker::embedded`]) that runs without a `[broker]` section.
//! - [`runtime`] is the process around the workers: connecting, a session per connection
//!   (declare, start and retire workers, wind down), reloads as one diff, the dead-letter
//!   indexer (which acks only its own queue) and the queue-depth poller.
//! - [`store`] keeps the delivery log, dead letters, subscriptions and the audit trail
//!   (SQLite or PostgreSQL); [`api`] is the admin and ingest API over all of it.
//! - [`publish`] and [`listen`] are the `hookrelay publish` client and the local receiver
//!   behind `hookrelay listen`.
//! - [`metrics`] is the Prometheus recorder and what is reported to it; [`telemetry`] is logs
//!   and OTLP traces.
//! - [`tenant`] matches events to tenants; [`tokens`] signs and verifies tenant tokens.
//! - [`ui`] is the operators' console (`/ui/`) and the tenants' portal (`/portal/`), served with
//!   the API; [`example`] makes example payloads from schemas.

pub mod api;
pub mod binding;
pub mod broker;
pub mod config;
pub mod delivery;
pub mod event;
pub mod example;
pub mod listen;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod runtime;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod tenant;
pub mod tokens;
pub mod ui;

#[cfg(test)]
mod layering;

/// The unit tests run metered, as the router does, so that the scripts' memory budget applies.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_meter::Metered<std::alloc::System> = alloc_meter::Metered(std::alloc::System);
