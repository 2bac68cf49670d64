//! Test helpers: a RabbitMQ vhost per test (created and deleted through the management API),
//! the broker a suite runs on ([`TestBroker`]), a recording webhook receiver on loopback, config
//! directories written with the typed builders of `tests/support/config/`, the router as a
//! real process, a publisher, waiting ([`eventually`]), and a Standard Webhooks verifier written
//! from the specification (not from hookrelay's signer).
//!
//! One module per part, all re-exported here (tests write `use crate::common::*;`): `rabbit`
//! (vhosts, publishing), `brokers` (both brokers), `receiver` (the webhook receiver, the test CA,
//! the signature check), `config_dir` (config directories, dead letters), `router` (the router
//! process), `postgres` (a database per test), `api_client` (the admin API over HTTP), `otlp`
//! (an OTLP receiver), `wait` (waiting).

#![allow(dead_code, unreachable_pub)] // each test module uses a different subset

mod api_client;
mod brokers;
#[path = "../../support/config/mod.rs"]
mod config;
mod config_dir;
pub mod otlp;
mod postgres;
mod rabbit;
mod receiver;
mod router;
mod wait;

pub use api_client::*;
pub use brokers::*;
pub use config::*;
pub use config_dir::*;
pub use postgres::*;
pub use rabbit::*;
pub use receiver::*;
pub use router::*;
pub use wait::*;

use serde_json::{Value, json};

/// The secret every test route signs with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The environment variable routes name for it.
pub const SECRET_ENV: &str = "TEST_WEBHOOK_SECRET";
/// `HOOKRELAY_SECRET_KEY` of every router the tests start (seals subscription secrets).
pub const SEALING_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// A CloudEvent.
pub fn event(ty: &str, id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "test", "type": ty, "data": data})
}

/// `n` order.paid events with `data.n` = 0..n and ids `<prefix>-<i>`.
pub fn numbered(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| event("order.paid", &format!("{prefix}-{i}"), json!({"n": i}))).collect()
}
