//! `routes/<name>.toml`: [`RouteConfig`] and the values of its keys.

use super::{duration, render, write_file};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The body a route sends (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `{"type", "timestamp", "data"}` (the default).
    Standard,
    /// The whole CloudEvent.
    Cloudevents,
    /// Only `data`.
    Data,
}

/// Where a route's signing secret comes from (`[signing]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Signing {
    /// `secret_env`: an environment variable of the router.
    #[serde(rename = "secret_env")]
    Env(String),
    /// `secret_file`: a file, relative to the config directory.
    #[serde(rename = "secret_file")]
    File(PathBuf),
}

/// `filter` of a route: a plugin path, or a declarative filter table (docs/filters.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Filter {
    Plugin(PathBuf),
    Declarative(serde_json::Value),
}

/// `[retry]` of a route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct RetrySection {
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backoff: Vec<String>,
}

/// `[circuit_breaker]` of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct CircuitBreakerSection {
    failures: u32,
    open_for: String,
}

/// `[rate_limit]` of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct RateLimitSection {
    per_second: f64,
    burst: Option<u32>,
}

/// `[batch]` of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct BatchSection {
    max_events: usize,
    max_wait: String,
}

/// One `routes/<name>.toml`:
/// `RouteConfig::new("erp").events(["order.*"]).url(rx.url("/erp")).ordered(true)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteConfig {
    /// The file stem, which names the route.
    #[serde(skip)]
    name: String,
    events: Vec<String>,
    url: String,
    ordered: Option<bool>,
    order_key: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    filter: Option<Filter>,
    transform: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    redact: Vec<String>,
    format: Option<BodyFormat>,
    log_payload: Option<bool>,
    tenant: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    /// As a table: `[signing] secret_env = "…"` or `[signing] secret_file = "…"`.
    signing: Option<Signing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RetrySection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<CircuitBreakerSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<BatchSection>,
}

impl RouteConfig {
    /// A route named `name` (its file is `routes/<name>.toml`); set at least
    /// [`RouteConfig::events`] and [`RouteConfig::url`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            events: Vec::new(),
            url: String::new(),
            ordered: None,
            order_key: None,
            timeout: None,
            concurrency: None,
            filter: None,
            transform: None,
            redact: Vec::new(),
            format: None,
            log_payload: None,
            tenant: None,
            headers: BTreeMap::new(),
            signing: None,
            retry: None,
            circuit_breaker: None,
            rate_limit: None,
            batch: None,
        }
    }

    /// The route's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `events`: exact types or topic patterns (`order.*`, `order.#`).
    pub fn events<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.events = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// `url`: the webhook target.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// `ordered`: strict FIFO, retries in place.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = Some(ordered);
        self
    }

    /// `order_key`: FIFO per key on an ordered route (`subject`, `data.<path>`).
    pub fn order_key(mut self, key: impl Into<String>) -> Self {
        self.order_key = Some(key.into());
        self
    }

    /// `timeout`: per attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(duration(timeout));
        self
    }

    /// `concurrency`: deliveries at once on an unordered route.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// `filter`: a declarative filter, e.g. `json!({"path": "data.n", "gte": 100})`, written
    /// as a TOML table.
    pub fn filter_table(mut self, table: serde_json::Value) -> Self {
        self.filter = Some(Filter::Declarative(table));
        self
    }

    /// `filter`: a plugin defining `fn filter(event)`, relative to the config directory.
    pub fn filter(mut self, plugin: impl Into<PathBuf>) -> Self {
        self.filter = Some(Filter::Plugin(plugin.into()));
        self
    }

    /// `transform`: a plugin defining `fn transform(event)`, relative to the config directory.
    pub fn transform(mut self, plugin: impl Into<PathBuf>) -> Self {
        self.transform = Some(plugin.into());
        self
    }

    /// `redact`: paths removed before sending, e.g. `data.customer.email`.
    pub fn redact<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        self.redact = paths.into_iter().map(Into::into).collect();
        self
    }

    /// `format`: the body shape.
    pub fn format(mut self, format: BodyFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// `log_payload`: keep each attempt's body and request headers in the delivery log.
    pub fn log_payload(mut self, keep: bool) -> Self {
        self.log_payload = Some(keep);
        self
    }

    /// `tenant`: the route takes only this tenant's events, and this tenant's tokens see it.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// One entry of `[headers]`: a static header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// `[signing]`: where the secret comes from.
    pub fn signing(mut self, signing: Signing) -> Self {
        self.signing = Some(signing);
        self
    }

    /// Whether [`RouteConfig::signing`] was set.
    pub fn has_signing(&self) -> bool {
        self.signing.is_some()
    }

    /// `[retry] max_attempts`: attempts in all, the first included.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.get_or_insert_with(RetrySection::default).max_attempts = Some(n);
        self
    }

    /// `[retry] backoff`: the waits before attempt 2, 3, …; the last one repeats.
    pub fn backoff(mut self, waits: impl IntoIterator<Item = Duration>) -> Self {
        self.retry.get_or_insert_with(RetrySection::default).backoff = waits.into_iter().map(duration).collect();
        self
    }

    /// `[circuit_breaker] failures, open_for`: after `failures` retryable failures in a row,
    /// no request for `open_for`, then one probe.
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.circuit_breaker = Some(CircuitBreakerSection { failures, open_for: duration(open_for) });
        self
    }

    /// `[rate_limit] per_second, burst`: attempts started per second, through a bucket of
    /// `burst` (`None`: its default, `per_second`).
    pub fn rate_limit(mut self, per_second: f64, burst: Option<u32>) -> Self {
        self.rate_limit = Some(RateLimitSection { per_second, burst });
        self
    }

    /// `[batch] max_events, max_wait`: many events in one request.
    pub fn batch(mut self, max_events: usize, max_wait: Duration) -> Self {
        self.batch = Some(BatchSection { max_events, max_wait: duration(max_wait) });
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        assert!(!self.url.is_empty(), "route {:?}: set .url(…)", self.name);
        render(self, &format!("route {:?}", self.name))
    }

    /// Writes `<dir>/routes/<name>.toml`.
    pub fn write(&self, dir: &Path) {
        write_file(&dir.join("routes").join(format!("{}.toml", self.name)), &self.to_toml());
    }
}
