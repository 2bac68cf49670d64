//! `hookrelay.toml`: [`MainConfig`] and the values of its keys.

use super::{duration, render, write_file};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `inline_allowance`.
    #[serde(serialize_with = "opt_duration")]
    pub inline_allowance: Option<Duration>,
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
