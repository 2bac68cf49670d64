//! What the benchmarks share: the events they publish (about 1 KiB or 64 KiB, valid against the
//! bench schema), the realistic route (JSON Schema, a Rhai filter, redaction, Standard Webhooks
//! signing) and the one function that writes a config directory for it.
//!
//! Every `hookrelay.toml` a benchmark writes comes from [`write_config`], so a change to the
//! main file's shape (a new section, a new default) is one edit here. The files are written with
//! the typed builders the integration tests use too (`tests/support/config/`).

#![allow(dead_code)] // each bench binary uses its own part of this module

// The builders are `pub` for the test crate, whose helpers are public; here they serve this
// crate only, and each bench binary uses its own part of them.
#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/support/config/mod.rs"]
mod config;

pub(crate) use config::RouteConfig;
use config::{MainConfig, Signing};
use serde_json::json;
use std::path::Path;

/// The secret of the Standard Webhooks specification's example: never for anything real.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The JSON Schema of `order.paid` data the bench events satisfy.
pub(crate) const SCHEMA: &str = r#"{"type":"object","required":["order_id","total","currency","customer"],"properties":{"order_id":{"type":"string"},"total":{"type":"number","minimum":0},"currency":{"type":"string","pattern":"^[A-Z]{3}$"},"customer":{"type":"object","required":["name"]},"items":{"type":"array","items":{"type":"object","required":["sku","qty"]}}}}"#;

/// The realistic route's filter: keeps every bench event, but reads `data` to decide.
pub(crate) const FILTER: &str = "fn filter(event) { event.data.total >= 0 && event.data.currency != \"XXX\" }\n";

/// A transform of the kind the README's example uses (micro-benchmarks only).
pub(crate) const TRANSFORM: &str = "fn transform(event) {\n  let n = event.data.customer.name;\n  event.data.customer.name = n.sub_string(0, 1) + \".\";\n  event.data.size = if event.data.total > 500 { \"large\" } else { \"small\" };\n  event\n}\n";

/// The fields the realistic route redacts.
pub(crate) const REDACT: [&str; 2] = ["data.customer.email", "data.customer.phone"];

/// Payload sizes the benchmarks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    /// About 1 KiB.
    Kib1,
    /// About 64 KiB.
    Kib64,
}

impl Size {
    /// As shown in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Size::Kib1 => "1 KiB",
            Size::Kib64 => "64 KiB",
        }
    }

    fn items(self) -> usize {
        match self {
            Size::Kib1 => 8,
            Size::Kib64 => 840,
        }
    }
}

/// The event id of event `i`: `b-<i>`. The receiver maps it back to `i`.
pub(crate) fn event_id(i: usize) -> String {
    format!("b-{i}")
}

/// `i` from an event id written by [`event_id`].
pub(crate) fn event_index(id: &str) -> Option<usize> {
    id.strip_prefix("b-")?.parse().ok()
}

/// Event `i` as published: a structured-mode CloudEvent of type `order.paid`, subject
/// `k<i mod 10>`.
pub(crate) fn event(i: usize, size: Size) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0", "id": event_id(i), "source": "bench", "type": "order.paid",
        // Ten keys for the per-key order group (`order_key = "subject"`).
        "subject": format!("k{}", i % 10),
        "time": "2026-11-22T10:00:00Z", "datacontenttype": "application/json",
        "data": {
            "order_id": format!("o-{i}"), "total": 100 + (i % 900), "currency": "BRL",
            "customer": {"name": "Ana Maria Souza", "email": "ana@example.com", "phone": "+55 11 99999-0000"},
            "items": (0..size.items())
                .map(|k| json!({"sku": format!("SKU-{k:05}"), "qty": k % 7 + 1, "note": "x".repeat(40)}))
                .collect::<Vec<_>>()
        }
    }))
    .expect("a JSON value serializes")
}

/// The plugin files [`write_config`] writes: the filter every realistic route runs, and
/// [`TRANSFORM`] for routes that add it with `.transform(TRANSFORM_PLUGIN)`.
const FILTER_PLUGIN: &str = "plugins/filter.rhai";
pub(crate) const TRANSFORM_PLUGIN: &str = "plugins/transform.rhai";

/// The realistic route: every bench event (`order.*`), the schema, the filter, redaction,
/// signing with the secret file; change it further with the builder's methods.
pub(crate) fn realistic_route(
    name: impl Into<String>,
    url: impl Into<String>,
    ordered: bool,
    concurrency: usize,
) -> RouteConfig {
    RouteConfig::new(name)
        .events(["order.*"])
        .url(url)
        .ordered(ordered)
        .concurrency(concurrency)
        .filter(FILTER_PLUGIN)
        .redact(REDACT)
        .signing(Signing::File("secret".into()))
}

/// Which broker a config uses.
#[derive(Debug, Clone)]
pub(crate) enum BrokerSpec {
    /// `[broker]` with this AMQP URL and prefetch.
    RabbitMq {
        /// AMQP URL (a vhost of the bench's own).
        url: String,
        /// `prefetch`.
        prefetch: u32,
    },
    /// No `[broker]` section: the embedded, file-backed broker.
    Embedded,
    /// No broker at all is contacted (micro-benchmarks load the config only).
    Unused,
}

/// The embedded broker's queue file of a config directory [`write_config`] wrote (`[embedded]
/// path`), so that no run uses the working directory's file and the harness can fill it.
pub(crate) fn queue_file(dir: &Path) -> std::path::PathBuf {
    dir.join("hookrelay-queue.db")
}

/// Writes a complete config directory: `hookrelay.toml`, the schema, the plugins, one file per
/// route, and the secret (as `secret_file`, so nothing touches the environment).
///
/// `api_listen` is written as `[api] listen`: `127.0.0.1:0` lets several routers run at once;
/// the embedded broker's producers need a known port instead.
pub(crate) fn write_config(dir: &Path, broker: &BrokerSpec, api_listen: &str, routes: &[RouteConfig]) {
    let w = |rel: &str, text: &str| config::write_file(&dir.join(rel), text);
    let main = match broker {
        BrokerSpec::RabbitMq { url, prefetch } => MainConfig::new().rabbitmq(url).prefetch(*prefetch),
        BrokerSpec::Embedded => MainConfig::new().embedded(queue_file(dir)),
        BrokerSpec::Unused => MainConfig::new(),
    };
    main.loopback_targets().store(format!("sqlite://{}/hookrelay.db", dir.display())).api_listen(api_listen).write(dir);
    w("schemas/order.paid/v1.json", SCHEMA);
    w(FILTER_PLUGIN, FILTER);
    w(TRANSFORM_PLUGIN, TRANSFORM);
    w("secret", SECRET);
    for r in routes {
        r.write(dir);
    }
}
