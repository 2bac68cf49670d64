//! The serde shape of a route file (`routes/<name>.toml`), with its documented defaults: the
//! fields an API subscription has too, compiled by [`crate::config::route`].

use super::Dur;
use crate::pipeline::BodyFormat;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use toml::Spanned;

/// `routes/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Defaults to the file stem.
    pub name: Option<Spanned<String>>,
    /// Exact event types or AMQP topic patterns (`order.*`: one word; `order.#`: any).
    pub events: Spanned<Vec<Spanned<String>>>,
    /// The webhook target.
    pub url: Spanned<String>,
    /// Strict FIFO: one delivery at a time, retries in place. Default false.
    #[serde(default)]
    pub ordered: bool,
    /// Per-attempt timeout (connect, send, response), above zero. Default 10s.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Ordered routes: FIFO per key instead of one line for the whole route (a CloudEvent
    /// attribute such as `subject`, or `data.<path>`); keys go in parallel, up to
    /// `concurrency` (docs/delivery-shapes.md).
    pub order_key: Option<Spanned<String>>,
    /// Deliveries at once on an unordered route (keys at once on an ordered route with an
    /// `order_key`), 1 to 10,000. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// A plugin that defines `fn filter(event)` (a path), or a declarative filter (a table,
    /// docs/filters.md).
    pub filter: Option<Spanned<FilterFile>>,
    /// A plugin that defines `fn transform(event)`.
    pub transform: Option<Spanned<PathBuf>>,
    /// Paths removed from the event before sending, e.g. `data.customer.email`,
    /// `data.items.*.email`.
    #[serde(default)]
    pub redact: Vec<Spanned<String>>,
    /// Body shape. Default `standard`.
    #[serde(default)]
    pub format: BodyFormat,
    /// Keep the body and the request headers sent with each attempt in the delivery log (and the
    /// event, for retries). Default false: payloads are not logged unless a route opts in.
    #[serde(default)]
    pub log_payload: bool,
    /// Extra static headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The tenant that owns the route: it then receives only that tenant's events (see
    /// `[tenants] attribute`), and that tenant's tokens see it.
    pub tenant: Option<Spanned<String>>,
    /// How the body is signed.
    pub signing: Spanned<SigningFile>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryFile,
    /// Stop sending to a failing endpoint for a while (docs/endpoint-policies.md).
    pub circuit_breaker: Option<CircuitBreakerFile>,
    /// Attempts started per second to the endpoint (docs/endpoint-policies.md).
    pub rate_limit: Option<RateLimitFile>,
    /// Many events in one request (unordered routes; docs/delivery-shapes.md).
    pub batch: Option<BatchFile>,
}

/// `[batch]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    /// Events in one request at most, 1 to 1,000. Default 50.
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// How long the first event of a batch waits for more, above zero, at most 1 minute.
    /// Default 500ms.
    #[serde(default = "default_batch_wait")]
    pub max_wait: Dur,
}

fn default_batch_events() -> usize {
    crate::delivery::policy::DEFAULT_BATCH_EVENTS
}

fn default_batch_wait() -> Dur {
    Dur(crate::delivery::policy::DEFAULT_BATCH_WAIT)
}

/// `filter` of a route: a plugin path (a string), or a declarative filter (a table such as
/// `{ path = "data.total", gte = 100 }`, compiled by [`crate::pipeline::condition`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FilterFile {
    /// A plugin that defines `fn filter(event)`, relative to the config directory.
    Plugin(PathBuf),
    /// A declarative filter, as written.
    Declarative(serde_json::Value),
}

impl<'de> Deserialize<'de> for FilterFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FilterFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a plugin path such as \"plugins/only-paid.rhai\", or a declarative filter table such as \
                     { path = \"data.total\", gte = 100 }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<FilterFile, E> {
                Ok(FilterFile::Plugin(PathBuf::from(s)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FilterFile, A::Error> {
                let mut value = serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                datetimes_as_text(&mut value);
                Ok(FilterFile::Declarative(value))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML date-time (`gte = 2026-01-01T00:00:00Z`, unquoted) reaches JSON as a one-key table:
/// it is compared as the text it was written as, the way a quoted one is.
fn datetimes_as_text(value: &mut serde_json::Value) {
    const KEY: &str = "$__toml_private_datetime";
    match value {
        serde_json::Value::Object(m) if m.len() == 1 && m.get(KEY).is_some_and(serde_json::Value::is_string) => {
            *value = m.shift_remove(KEY).unwrap_or_default();
        }
        serde_json::Value::Object(m) => m.values_mut().for_each(datetimes_as_text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(datetimes_as_text),
        _ => {}
    }
}

/// `[circuit_breaker]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerFile {
    /// Consecutive retryable failures (5xx, 408, 429, timeout, connect) that open the circuit,
    /// 1 to 10,000. Default 5.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long the circuit stays open (no request goes to the endpoint; its events wait
    /// durably) before one probe attempt; above zero, at most 1 day. Default 30s.
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    /// API subscriptions only; refused here (a file route cannot be disabled).
    pub disable_after: Option<Dur>,
}

fn default_breaker_failures() -> u32 {
    crate::config::route::DEFAULT_BREAKER_FAILURES
}

fn default_open_for() -> Dur {
    Dur(crate::config::route::DEFAULT_OPEN_FOR)
}

/// `[rate_limit]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Attempts started per second to the endpoint (retries included), above zero, at most
    /// 100,000; fractions allowed (0.5: one every 2 s).
    pub per_second: f64,
    /// Token bucket size: attempts that may start at once after a quiet spell, 1 to 100,000.
    /// Default `per_second`, rounded up.
    pub burst: Option<u32>,
}

fn default_timeout() -> Dur {
    Dur(crate::config::route::DEFAULT_TIMEOUT)
}

fn default_concurrency() -> usize {
    crate::config::route::DEFAULT_CONCURRENCY
}

/// `[signing]` of a route. Secrets never sit in files that are committed: a route names the
/// environment variable or the file that holds one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningFile {
    /// Environment variable holding the secret.
    pub secret_env: Option<Spanned<String>>,
    /// File holding the secret (relative to the config directory), e.g. a mounted Secret.
    pub secret_file: Option<Spanned<PathBuf>>,
    /// `standard-webhooks` (default) or `hmac-sha256-hex`.
    #[serde(default)]
    pub scheme: SigningScheme,
    /// Header of the `hmac-sha256-hex` scheme. Default `X-Signature`.
    pub header: Option<Spanned<String>>,
}

/// Signature schemes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigningScheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    #[default]
    StandardWebhooks,
    /// `X-Signature: sha256=<hex HMAC of the body>` for legacy receivers, plus the
    /// `webhook-id` and `webhook-timestamp` headers.
    HmacSha256Hex,
}

/// `[retry]` of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryFile {
    /// Attempts in all, the first included, 1 to 1,000. Default 8.
    pub max_attempts: u32,
    /// Wait before attempt 2, 3, …; the last value repeats. Jitter adds up to 20%.
    pub backoff: Vec<Dur>,
}

impl Default for RetryFile {
    fn default() -> Self {
        Self {
            max_attempts: crate::config::route::DEFAULT_MAX_ATTEMPTS,
            backoff: crate::config::route::default_backoff().into_iter().map(Dur).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        filter: FilterFile,
    }

    fn filter(text: &str) -> FilterFile {
        toml::from_str::<Holder>(text).unwrap().filter
    }

    #[test]
    fn a_filter_is_a_plugin_path_or_a_table_with_datetimes_as_text() {
        assert_eq!(filter("filter = \"plugins/a.rhai\""), FilterFile::Plugin("plugins/a.rhai".into()));
        let table =
            filter("filter = { all = [ { path = \"time\", gte = 2026-01-01T00:00:00Z }, { path = \"x\", eq = 1 } ] }");
        let want =
            serde_json::json!({"all": [{"path": "time", "gte": "2026-01-01T00:00:00Z"}, {"path": "x", "eq": 1}]});
        assert_eq!(table, FilterFile::Declarative(want));
        let e = toml::from_str::<Holder>("filter = 3").err().unwrap().to_string();
        assert!(e.contains("a plugin path") && e.contains("declarative filter table"), "{e}");
    }
}
