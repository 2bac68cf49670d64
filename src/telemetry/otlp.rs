//! The OTLP exporter: where and how spans go (from `[telemetry]`, else the standard `OTEL_*`
//! variables), the resource (`service.name`, `service.version`) and the sampler, and the HTTP
//! client the OTLP/HTTP exporter sends with.

use super::TelemetryError;
use crate::config::files::{OtlpProtocol, TelemetryFile};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::Sampler;
use std::sync::Arc;
use std::time::Duration;

/// The OTLP exporter `cfg` and the `OTEL_*` variables describe; `Ok(None)` when traces are
/// off. Public for tests; [`Telemetry::start_traces`](super::Telemetry::start_traces) is what the router uses.
pub fn span_exporter(cfg: &TelemetryFile) -> Result<Option<opentelemetry_otlp::SpanExporter>, TelemetryError> {
    match Settings::resolve(cfg)? {
        Some(s) => s.exporter().map(Some),
        None => Ok(None),
    }
}

/// Where and how spans are sent.
pub(super) struct Settings {
    protocol: OtlpProtocol,
    /// Set from `[telemetry]`; `None` lets the exporter read the `OTEL_*` endpoint variables.
    endpoint: Option<String>,
    /// For messages.
    pub(super) shown: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl Settings {
    pub(super) fn resolve(cfg: &TelemetryFile) -> Result<Option<Self>, TelemetryError> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let shown = match (&cfg.otlp_endpoint, &env_endpoint) {
            (Some(e), _) | (None, Some(e)) => e.clone(),
            (None, None) => return Ok(None),
        };
        let protocol = match cfg.protocol {
            Some(p) => p,
            None => protocol_from_env()?,
        };
        if protocol == OtlpProtocol::Grpc && shown.starts_with("https:") {
            return Err(TelemetryError::Settings(format!(
                "OTLP endpoint {shown:?} uses TLS, which the gRPC exporter does not support here: set [telemetry] \
                 protocol = \"http\" (or OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf) and the collector's OTLP/HTTP \
                 endpoint (port 4318), or use a plaintext gRPC endpoint"
            )));
        }
        let endpoint = cfg.otlp_endpoint.as_ref().map(|e| match protocol {
            OtlpProtocol::Http => http_traces_url(e),
            OtlpProtocol::Grpc => e.clone(),
        });
        let shown = endpoint.clone().unwrap_or(shown);
        Ok(Some(Self { protocol, endpoint, shown }))
    }

    pub(super) fn protocol_name(&self) -> &'static str {
        match self.protocol {
            OtlpProtocol::Http => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }

    pub(super) fn exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        let built = match self.protocol {
            OtlpProtocol::Http => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_http_client(OtlpHttpClient::new(runtime, export_timeout()));
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
            OtlpProtocol::Grpc => {
                // The tonic channel spawns its connection task on the current runtime.
                let _entered = runtime.enter();
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
        };
        built.map_err(|source| TelemetryError::Exporter { endpoint: self.shown.clone(), source })
    }
}

fn protocol_from_env() -> Result<OtlpProtocol, TelemetryError> {
    let (var, value) = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(v) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v),
        None => match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
            // The specification's default, and the Rust SDK's when HTTP is built in.
            None => return Ok(OtlpProtocol::Http),
        },
    };
    match value.to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok(OtlpProtocol::Http),
        "grpc" => Ok(OtlpProtocol::Grpc),
        other => Err(TelemetryError::Settings(format!(
            "{var}={other} is not supported: use http/protobuf or grpc (or set [telemetry] protocol)"
        ))),
    }
}

/// The OTLP/HTTP traces URL of a collector base URL: `/v1/traces` appended unless present.
fn http_traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") { e.to_string() } else { format!("{e}/v1/traces") }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
fn export_timeout() -> Duration {
    env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// `service.name` from `[telemetry]`, else from `OTEL_SERVICE_NAME`/`OTEL_RESOURCE_ATTRIBUTES`,
/// else `hookrelay`; plus `service.version` and what `OTEL_RESOURCE_ATTRIBUTES` adds.
pub(super) fn resource(cfg: &TelemetryFile) -> Resource {
    let detected = Resource::builder().build();
    let from_env = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.to_string())
        .filter(|n| !n.starts_with("unknown_service"));
    let name = cfg.service_name.clone().or(from_env).unwrap_or_else(|| "hookrelay".to_string());
    Resource::builder()
        .with_service_name(name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `sample_ratio` from `[telemetry]`, else `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, else
/// parent-based always-on. Parent-based samplers follow an incoming `traceparent`'s flag.
pub(super) fn sampler(cfg: &TelemetryFile) -> Sampler {
    let ratio = |r: f64| if r >= 1.0 { Sampler::AlwaysOn } else { Sampler::TraceIdRatioBased(r.max(0.0)) };
    if let Some(r) = cfg.sample_ratio {
        return Sampler::ParentBased(Box::new(ratio(r)));
    }
    let arg = env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse::<f64>().ok()).filter(|r| (0.0..=1.0).contains(r));
    match env("OTEL_TRACES_SAMPLER").map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => ratio(arg.unwrap_or(1.0)),
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Box::new(ratio(arg.unwrap_or(1.0)))),
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// OTLP/HTTP over hyper and rustls (ring, Mozilla roots). The batch exporter runs on a thread
/// of its own without a runtime, so each request runs as a task on the router's runtime.
struct OtlpHttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHttpClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Largest collector answer read (the OTLP response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

impl OtlpHttpClient {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self { client, runtime, timeout }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let resp = client.request(request.map(Full::new)).await?;
                let (parts, body) = resp.into_parts();
                let bytes = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, bytes))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer from the collector within {timeout:?}").into()),
            }
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_get_the_traces_path_once() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("https://c/otlp"), "https://c/otlp/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
