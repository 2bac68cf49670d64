//! The serde shapes of the config files, with their documented defaults. These are what users
//! write; [`super::Snapshot`] is what they compile into. `hookrelay.toml` here, a route file
//! (`routes/<name>.toml`, the same fields as an API subscription) in `route`.

use super::allow::AllowFrom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod route;
pub use route::*;

// Settings types defined beside the code that uses them, assembled here with the file shapes.
pub use crate::broker::embedded::EmbeddedSync;
pub use crate::pipeline::BodyFormat;

/// A duration written as text: `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                humantime::parse_duration(s).map(Dur).map_err(|e| {
                    E::custom(format!("invalid duration {s:?}: {e} (write e.g. \"500ms\", \"5s\", \"2m\")"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// `hookrelay.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MainFile {
    /// Bumped by whoever changes the config; shown everywhere. Default 0.
    #[serde(default)]
    pub version: u64,
    /// The RabbitMQ connection and topology. Absent (and no `HOOKRELAY_BROKER__*` variable): the
    /// embedded broker runs instead, configured by `[embedded]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerFile>,
    /// The embedded broker, used when there is no `[broker]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedFile>,
    /// The SSRF policy for webhook targets.
    #[serde(default)]
    pub security: SecurityFile,
    /// Size limits on what is accepted.
    #[serde(default)]
    pub limits: LimitsFile,
    /// The budgets of every script run.
    #[serde(default)]
    pub scripts: ScriptsFile,
    /// Process-wide delivery settings.
    #[serde(default)]
    pub delivery: DeliveryFile,
    /// The delivery log and dead-letter index.
    #[serde(default)]
    pub store: StoreFile,
    /// The admin and ingest API.
    #[serde(default)]
    pub api: ApiFile,
    /// Traces over OTLP.
    #[serde(default)]
    pub telemetry: TelemetryFile,
    /// How events are matched to tenants.
    #[serde(default)]
    pub tenants: crate::tenant::TenantsFile,
    /// Where the state files go (see [`super::data`]).
    #[serde(default)]
    pub data: super::data::DataFile,
}

/// `[api]`: the admin and ingest API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiFile {
    /// Serve the API. Default true.
    pub enabled: bool,
    /// Address and port. Default `127.0.0.1:8080`. Without `keys`, only a loopback address is
    /// allowed: the API is then open to local callers only.
    pub listen: String,
    /// Bearer API keys, each stored as a hash of the key.
    pub keys: Vec<ApiKeyFile>,
    /// The networks callers may come from (`["10.0.0.0/8", "192.0.2.7"]`), by the TCP peer's
    /// address; others get 403. Default: everyone who can reach `listen`. Applies to every path,
    /// `/healthz` and `/metrics` included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    /// How long the old secret of a subscription stays valid after `rotate-secret` (both
    /// signatures are sent meanwhile). Default 24h.
    pub secret_overlap: Dur,
}

impl Default for ApiFile {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            keys: Vec::new(),
            allow_from: None,
            secret_overlap: Dur(Duration::from_secs(24 * 3600)),
        }
    }
}

/// One `[[api.keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyFile {
    /// Who holds the key; recorded in the audit trail.
    pub name: String,
    /// `sha256:<64 hex digits>` of the key (`hookrelay api-key` prints both).
    pub hash: String,
    /// What the key may do: `ingest` (POST /v1/events), `read` (every GET), `admin` (everything).
    pub scopes: Vec<Scope>,
    /// The networks this key may be used from, on top of `[api] allow_from`: a key presented
    /// from elsewhere gets 403, so that a leaked key is useless outside them. Default: wherever
    /// `[api] allow_from` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Publish events.
    Ingest,
    /// Read everything.
    Read,
    /// Everything, including changes.
    Admin,
}

impl Scope {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// `[telemetry]`: traces over OTLP, off unless an endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`. What is set here wins
/// over the `OTEL_*` variables (as code does over them in the OpenTelemetry SDKs); what is left
/// out falls back to them, then to the defaults below. `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none` turn traces off. Applies at start only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryFile {
    /// The collector, e.g. `http://127.0.0.1:4318` (HTTP) or `http://127.0.0.1:4317` (gRPC).
    /// Over HTTP, `/v1/traces` is appended unless the path already ends with it. No default.
    pub otlp_endpoint: Option<String>,
    /// `http` (OTLP/HTTP protobuf, plain or TLS) or `grpc` (plaintext only). Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http`.
    pub protocol: Option<OtlpProtocol>,
    /// `service.name` of the spans. Default: `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`), else `hookrelay`.
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0; an incoming `traceparent`'s sampled flag is
    /// followed either way. Default: `OTEL_TRACES_SAMPLER`/`_ARG`, else 1.0.
    pub sample_ratio: Option<f64>,
}

impl TelemetryFile {
    /// What is wrong with the values, as messages naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.otlp_endpoint {
            let ok = e
                .parse::<http::Uri>()
                .is_ok_and(|u| u.host().is_some() && matches!(u.scheme_str(), Some("http" | "https")));
            if !ok {
                out.push(format!("[telemetry] otlp_endpoint {e:?} is not an http:// or https:// URL"));
            } else if e.starts_with("https:") && self.protocol == Some(OtlpProtocol::Grpc) {
                out.push(format!(
                    "[telemetry] otlp_endpoint {e:?} uses TLS, which protocol = \"grpc\" does not support here: \
                     use protocol = \"http\" (OTLP/HTTP, port 4318 on a collector) or a plaintext endpoint"
                ));
            }
        }
        if let Some(r) = self.sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            out.push(format!("[telemetry] sample_ratio {r} must be between 0.0 and 1.0"));
        }
        if self.service_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
            out.push("[telemetry] service_name must not be empty (leave it out for the default)".into());
        }
        out
    }
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    Http,
    /// OTLP/gRPC.
    Grpc,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    /// `sqlite://path` (a relative path is in the data directory; created when missing) or
    /// `postgres://user@host/db` (several replicas share it). Default `sqlite://hookrelay.db`.
    pub url: String,
    /// Attempts older than this are pruned in the background. Default 7 days.
    pub retention: Dur,
}

impl Default for StoreFile {
    fn default() -> Self {
        Self { url: "sqlite://hookrelay.db".into(), retention: Dur(Duration::from_secs(7 * 24 * 3600)) }
    }
}

/// `[broker]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerFile {
    /// AMQP URL; `%2f` is the vhost `/`. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// The topic exchange producers publish to. Default `hookrelay.events`.
    pub exchange: String,
    /// Messages the broker may push ahead of acks, per route. Default 64.
    pub prefetch: u16,
    /// `x-delivery-limit` of route queues: deliveries (crashes and requeues included) after
    /// which the broker itself dead-letters a message. Default 20.
    pub delivery_limit: u32,
    /// Longest wait between reconnection attempts. Default 30s.
    pub reconnect_max: Dur,
    /// RabbitMQ's `consumer_timeout` (set in rabbitmq.conf, which hookrelay cannot read): the
    /// broker closes the channel of a delivery left unacked for longer. An ordered route that
    /// holds an event in place (its circuit open, its rate limit) hands it back to the queue
    /// before then. Set it here when you changed it there. Default 30m, RabbitMQ's default.
    pub consumer_timeout: Dur,
}

impl Default for BrokerFile {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "hookrelay.events".into(),
            prefetch: 64,
            delivery_limit: 20,
            reconnect_max: Dur(Duration::from_secs(30)),
            consumer_timeout: Dur(super::RABBITMQ_CONSUMER_TIMEOUT),
        }
    }
}

/// `[embedded]`: the file-backed broker used when `hookrelay.toml` has no `[broker]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedFile {
    /// The queue file (SQLite); a relative path is in the data directory, like the store's.
    /// Created when missing. One process owns it at a time. Default `hookrelay-queue.db`.
    pub path: PathBuf,
    /// When a commit is durable. Default `normal`.
    pub sync: EmbeddedSync,
}

impl Default for EmbeddedFile {
    fn default() -> Self {
        Self { path: PathBuf::from("hookrelay-queue.db"), sync: EmbeddedSync::Normal }
    }
}

/// `[security]`: both switches off by default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityFile {
    /// Allow plain `http://` targets.
    pub allow_http: bool,
    /// Allow loopback, RFC 1918, link-local, CGNAT and ULA targets (cloud metadata addresses
    /// stay blocked).
    pub allow_private_networks: bool,
    /// PEM file of extra CA certificates to trust besides the Mozilla roots (receivers behind a
    /// private CA), relative to the config directory.
    pub ca_file: Option<PathBuf>,
}

/// Default `[limits] max_schedule_ahead`: 30 days.
pub const DEFAULT_MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Largest event accepted, in bytes. Default 262144 (256 KiB).
    pub max_event_bytes: usize,
    /// Response body bytes kept for logs and dead letters. Default 4096.
    pub response_body_bytes: usize,
    /// How far ahead an event's `deliverat` may lie: ingest refuses one further off (422), and
    /// one consumed over AMQP is dead-lettered `malformed`. Above zero. Default 30d.
    pub max_schedule_ahead: Dur,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            response_body_bytes: 4096,
            max_schedule_ahead: Dur(DEFAULT_MAX_SCHEDULE_AHEAD),
        }
    }
}

/// `[scripts]`: the budgets of every filter and transform run (docs/security.md, "The script
/// sandbox"). A run over one is stopped and its event dead-lettered with reason `script_error`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsFile {
    /// Bytes one run may hold at once, everything counted (its variables, the event it was given,
    /// function pointers and their values). Default 33554432 (32 MiB).
    pub max_memory_bytes: usize,
    /// Wall-clock time of one run. Default 1s.
    pub max_time: Dur,
    /// The largest body a transform may produce, rendered. Default: `[limits] max_event_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// How many runs may go at once, each on a blocking thread of its own (never on the threads
    /// that serve the API and deliver). Default: the number of cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<usize>,
    /// How long a run may go on the threads that serve the API and deliver before it moves to
    /// the pool; `0s` runs every script on the pool. Default 1ms; at most `max_time`.
    pub inline_allowance: Dur,
}

impl Default for ScriptsFile {
    fn default() -> Self {
        let d = crate::pipeline::script::Budgets::default();
        Self {
            max_memory_bytes: d.max_memory_bytes,
            max_time: Dur(d.max_time),
            max_body_bytes: None,
            pool: None,
            inline_allowance: Dur(d.inline_allowance),
        }
    }
}

/// The largest `[scripts] pool`.
pub const MAX_SCRIPT_POOL: usize = 256;

impl ScriptsFile {
    /// The budgets, with `max_body_bytes` defaulting to `max_event_bytes`.
    pub fn budgets(&self, limits: &LimitsFile) -> crate::pipeline::script::Budgets {
        crate::pipeline::script::Budgets {
            max_memory_bytes: self.max_memory_bytes,
            max_time: self.max_time.0,
            max_body_bytes: self.max_body_bytes.unwrap_or(limits.max_event_bytes),
            inline_allowance: self.inline_allowance.0,
        }
    }

    /// The pool's size.
    pub fn pool_size(&self) -> usize {
        self.pool.unwrap_or_else(crate::pipeline::script::ScriptPool::default_size)
    }

    /// Each value out of range, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_memory_bytes < 1 << 20 {
            out.push((
                "max_memory_bytes",
                "must be at least 1048576 (1 MiB): a run holds the event it is given".into(),
            ));
        }
        if self.max_time.0.is_zero() {
            out.push(("max_time", "must be more than zero".into()));
        }
        if self.max_body_bytes == Some(0) {
            out.push(("max_body_bytes", "must be more than zero".into()));
        }
        if self.inline_allowance.0 > self.max_time.0 {
            out.push((
                "inline_allowance",
                format!(
                    "must not be more than max_time ({}): a run that long is stopped wherever it runs",
                    humantime::format_duration(self.max_time.0)
                ),
            ));
        }
        if let Some(n) = self.pool
            && !(1..=MAX_SCRIPT_POOL).contains(&n)
        {
            out.push(("pool", format!("must be from 1 to {MAX_SCRIPT_POOL} threads, not {n}")));
        }
        out
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryFile {
    /// On SIGTERM, how long in-flight deliveries may take to finish. Default 25s.
    pub shutdown_grace: Dur,
}

impl Default for DeliveryFile {
    fn default() -> Self {
        Self { shutdown_grace: Dur(Duration::from_secs(25)) }
    }
}
