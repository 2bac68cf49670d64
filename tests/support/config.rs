//! Typed builders of hookrelay's config files, shared by the integration tests
//! (`tests/it/common`) and the benchmarks (`benches/common`): [`MainConfig`] is `hookrelay.toml`,
//! [`RouteConfig`] one `routes/<name>.toml`. Both render through serde and the `toml` crate, so a
//! misspelt key or a value of the wrong kind is a compile error, and quoting is never by hand.
//!
//! They are written from the documented file format (README "Configuration reference"), not
//! from the library's own `config::files` types: a key renamed in the product breaks the tests
//! instead of silently following them. A key left unset is not written, so the product's default
//! applies. Cases that must write a broken file, or whose assertions name a line and column,
//! write the file's text themselves.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration as the files write it: `"300ms"`, `"10s"`, `"1h"`.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Renders a config file.
fn render(value: &impl Serialize, what: &str) -> String {
    toml::to_string(value).unwrap_or_else(|e| panic!("{what} renders as TOML: {e}"))
}

// ---------------------------------------------------------------------------------------------
// routes/<name>.toml

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

// ---------------------------------------------------------------------------------------------
// hookrelay.toml

/// `[broker]`: RabbitMQ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct BrokerSection {
    url: Option<String>,
    prefetch: Option<u32>,
    delivery_limit: Option<u32>,
    consumer_timeout: Option<String>,
}

/// `[embedded]`: the file-backed broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct EmbeddedSection {
    path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct SecuritySection {
    allow_http: Option<bool>,
    allow_private_networks: Option<bool>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct LimitsSection {
    max_event_bytes: Option<usize>,
    response_body_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct DeliverySection {
    shutdown_grace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct StoreSection {
    url: Option<String>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Every GET.
    Read,
    /// Everything.
    Admin,
}

/// One `[[api.keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyEntry {
    /// Who holds the key.
    pub name: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The networks it may be used from (`allow_from`); none listed: wherever `[api]` allows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<String>,
}

impl ApiKeyEntry {
    /// The key, usable from these networks only.
    pub fn allow_from<S: Into<String>>(mut self, networks: impl IntoIterator<Item = S>) -> Self {
        self.allow_from = networks.into_iter().map(Into::into).collect();
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct ApiSection {
    listen: Option<String>,
    secret_overlap: Option<String>,
    allow_from: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    keys: Vec<ApiKeyEntry>,
}

/// OTLP transports (`[telemetry] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// `[scripts]`: the budgets of every script run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScriptsSection {
    /// `max_memory_bytes`.
    pub max_memory_bytes: Option<usize>,
    /// `max_time`.
    #[serde(serialize_with = "opt_duration")]
    pub max_time: Option<Duration>,
    /// `max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// `pool`.
    pub pool: Option<usize>,
}

fn opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct TenantsSection {
    attribute: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct TelemetrySection {
    otlp_endpoint: Option<String>,
    protocol: Option<OtlpProtocol>,
    service_name: Option<String>,
}

/// `hookrelay.toml`: `MainConfig::new().version(1).rabbitmq(url).prefetch(100).loopback_targets()`.
/// No broker set means the embedded broker with its default file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MainConfig {
    version: Option<u64>,
    broker: Option<BrokerSection>,
    embedded: Option<EmbeddedSection>,
    security: Option<SecuritySection>,
    limits: Option<LimitsSection>,
    scripts: Option<ScriptsSection>,
    delivery: Option<DeliverySection>,
    store: Option<StoreSection>,
    api: Option<ApiSection>,
    telemetry: Option<TelemetrySection>,
    tenants: Option<TenantsSection>,
}

impl MainConfig {
    /// An empty `hookrelay.toml`: every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// `version`.
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    fn broker_section(&mut self) -> &mut BrokerSection {
        self.broker.get_or_insert_with(BrokerSection::default)
    }

    /// `[broker] url`: RabbitMQ at this AMQP URL.
    pub fn rabbitmq(mut self, url: impl Into<String>) -> Self {
        self.broker_section().url = Some(url.into());
        self
    }

    /// An empty `[broker]` section: RabbitMQ with every default.
    pub fn rabbitmq_defaults(mut self) -> Self {
        self.broker_section();
        self
    }

    /// `[broker] prefetch` (a `[broker]` section, so RabbitMQ).
    pub fn prefetch(mut self, n: u32) -> Self {
        self.broker_section().prefetch = Some(n);
        self
    }

    /// `[broker] delivery_limit` (a `[broker]` section, so RabbitMQ).
    pub fn delivery_limit(mut self, n: u32) -> Self {
        self.broker_section().delivery_limit = Some(n);
        self
    }

    /// `[broker] consumer_timeout`: RabbitMQ's, as rabbitmq.conf sets it (a `[broker]` section,
    /// so RabbitMQ).
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.broker_section().consumer_timeout = Some(duration(timeout));
        self
    }

    /// `[embedded] path`: the embedded broker's queue file. Only read without `[broker]`.
    pub fn embedded(mut self, path: impl Into<PathBuf>) -> Self {
        self.embedded = Some(EmbeddedSection { path: Some(path.into()) });
        self
    }

    /// Whether a `[broker]` section is set.
    pub fn is_rabbitmq(&self) -> bool {
        self.broker.is_some()
    }

    fn security_section(&mut self) -> &mut SecuritySection {
        self.security.get_or_insert_with(SecuritySection::default)
    }

    /// `[security] allow_http`.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.security_section().allow_http = Some(allow);
        self
    }

    /// `[security] allow_private_networks`.
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.security_section().allow_private_networks = Some(allow);
        self
    }

    /// Both `[security]` switches on: plain HTTP receivers on loopback, as tests and benches run.
    pub fn loopback_targets(self) -> Self {
        self.allow_http(true).allow_private_networks(true)
    }

    /// `[security] ca_file`, relative to the config directory.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.security_section().ca_file = Some(path.into());
        self
    }

    fn limits_section(&mut self) -> &mut LimitsSection {
        self.limits.get_or_insert_with(LimitsSection::default)
    }

    /// `[limits] max_event_bytes`.
    pub fn max_event_bytes(mut self, n: usize) -> Self {
        self.limits_section().max_event_bytes = Some(n);
        self
    }

    /// `[limits] response_body_bytes`.
    pub fn response_body_bytes(mut self, n: usize) -> Self {
        self.limits_section().response_body_bytes = Some(n);
        self
    }

    /// `[scripts]`.
    pub fn scripts(mut self, scripts: ScriptsSection) -> Self {
        self.scripts = Some(scripts);
        self
    }

    /// `[delivery] shutdown_grace`.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.delivery = Some(DeliverySection { shutdown_grace: Some(duration(grace)) });
        self
    }

    /// `[store] url`.
    pub fn store(mut self, url: impl Into<String>) -> Self {
        self.store = Some(StoreSection { url: Some(url.into()) });
        self
    }

    /// Whether `[store] url` is set.
    pub fn has_store(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.url.is_some())
    }

    fn api_section(&mut self) -> &mut ApiSection {
        self.api.get_or_insert_with(ApiSection::default)
    }

    /// `[api] listen`.
    pub fn api_listen(mut self, addr: impl Into<String>) -> Self {
        self.api_section().listen = Some(addr.into());
        self
    }

    /// Whether `[api] listen` is set.
    pub fn has_api_listen(&self) -> bool {
        self.api.as_ref().is_some_and(|a| a.listen.is_some())
    }

    /// `[api] secret_overlap`.
    pub fn secret_overlap(mut self, overlap: Duration) -> Self {
        self.api_section().secret_overlap = Some(duration(overlap));
        self
    }

    /// `[api] allow_from`.
    pub fn api_allow_from<S: Into<String>>(mut self, networks: impl IntoIterator<Item = S>) -> Self {
        self.api_section().allow_from = Some(networks.into_iter().map(Into::into).collect());
        self
    }

    /// One `[[api.keys]]` entry.
    pub fn api_key(mut self, key: ApiKeyEntry) -> Self {
        self.api_section().keys.push(key);
        self
    }

    fn telemetry_section(&mut self) -> &mut TelemetrySection {
        self.telemetry.get_or_insert_with(TelemetrySection::default)
    }

    /// `[telemetry] otlp_endpoint`.
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.telemetry_section().otlp_endpoint = Some(endpoint.into());
        self
    }

    /// `[telemetry] protocol`.
    pub fn otlp_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.telemetry_section().protocol = Some(protocol);
        self
    }

    /// `[telemetry] service_name`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.telemetry_section().service_name = Some(name.into());
        self
    }

    /// `[tenants] attribute`: the CloudEvent attribute that names an event's tenant.
    pub fn tenant_attribute(mut self, attribute: impl Into<String>) -> Self {
        self.tenants = Some(TenantsSection { attribute: Some(attribute.into()) });
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        render(self, "hookrelay.toml")
    }

    /// Writes `<dir>/hookrelay.toml`.
    pub fn write(&self, dir: &Path) {
        write_file(&dir.join("hookrelay.toml"), &self.to_toml());
    }
}

/// Writes a file, creating its directory.
pub fn write_file(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What the renderings look like, so that a change of the `toml` crate's output shows here first.
#[test]
fn the_builders_render_the_documented_keys() {
    let route = RouteConfig::new("erp")
        .events(["order.*"])
        .url("http://127.0.0.1:9000/erp")
        .ordered(true)
        .timeout(Duration::from_millis(300))
        .tenant("acme")
        .header("x-tenant", "a \"quoted\" value")
        .signing(Signing::Env("SECRET".into()))
        .max_attempts(3)
        .backoff([Duration::from_millis(300), Duration::from_secs(60)])
        .circuit_breaker(5, Duration::from_secs(30))
        .rate_limit(2.5, Some(4));
    assert_eq!(
        route.to_toml(),
        "events = [\"order.*\"]\nurl = \"http://127.0.0.1:9000/erp\"\nordered = true\ntimeout = \"300ms\"\ntenant = \"acme\"\n\n\
         [headers]\nx-tenant = 'a \"quoted\" value'\n\n[signing]\nsecret_env = \"SECRET\"\n\n\
         [retry]\nmax_attempts = 3\nbackoff = [\"300ms\", \"1m\"]\n\n\
         [circuit_breaker]\nfailures = 5\nopen_for = \"30s\"\n\n[rate_limit]\nper_second = 2.5\nburst = 4\n"
    );
    let main =
        MainConfig::new().version(1).rabbitmq("amqp://h/%2f").prefetch(100).loopback_targets().api_key(ApiKeyEntry {
            name: "ops".into(),
            hash: "sha256:00".into(),
            scopes: vec![Scope::Admin, Scope::Read],
            allow_from: Vec::new(),
        });
    assert_eq!(
        main.to_toml(),
        "version = 1\n\n[broker]\nurl = \"amqp://h/%2f\"\nprefetch = 100\n\n\
         [security]\nallow_http = true\nallow_private_networks = true\n\n\
         [[api.keys]]\nname = \"ops\"\nhash = \"sha256:00\"\nscopes = [\"admin\", \"read\"]\n"
    );
    assert_eq!(MainConfig::new().rabbitmq_defaults().to_toml(), "[broker]\n", "an empty [broker] is still RabbitMQ");
}
