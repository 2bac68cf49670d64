//! Logs and traces through `tracing`.
//!
//! Logs: human-readable on a terminal, JSON when asked (`--log-format json`), level from
//! `RUST_LOG`-style filters (default `info`), on stderr. Payloads and secrets are never logged:
//! spans made here carry ids, names and statuses only.
//!
//! Traces: OTLP (HTTP/protobuf or gRPC), off by default. [`init`] installs the subscriber
//! before the config is read, with the OpenTelemetry layer already in place but switched off
//! (a per-layer filter that lets nothing through costs one atomic load per span). Once the
//! config is loaded, [`Telemetry::start_traces`] builds the exporter from `[telemetry]` and the
//! standard `OTEL_*` variables and switches the layer on; [`Telemetry::shutdown`] flushes what
//! is buffered. Only the spans made by this module's constructors ([`event_span`],
//! [`attempt_span`], [`ingest_span`]) are exported, with the `hookrelay` log events (info and
//! above) inside them as span events; spans of other crates never are.
//!
//! W3C trace context: a producer's `traceparent` (AMQP header or ingest request header) becomes
//! the parent of the event span; [`traceparent`] gives the value to send on the webhook, so the
//! receiver continues the producer's trace. With traces off it passes the incoming value
//! through, or makes a new one, exactly as the router did before.

use crate::config::files::{OtlpProtocol, TelemetryFile};
use crate::delivery::verdict::AttemptFailure;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
    SpanProcessor,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::field::{Empty, Field, Visit};
use tracing::{Level, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{self, FormatFields};
use tracing_subscriber::layer::{Context as LayerContext, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `tracing` target of the spans this module makes: the only spans exported over OTLP.
pub const TRACE_TARGET: &str = "hookrelay::trace";

/// Whether the OpenTelemetry layer sees anything (set by [`Telemetry::start_traces`]).
static TRACES_ON: AtomicBool = AtomicBool::new(false);
static SHARED: OnceLock<Shared> = OnceLock::new();

struct Shared {
    /// The provider behind the layer's tracer, built at [`init`] with empty slots.
    provider: SdkTracerProvider,
    exporter: ExportSlot,
    sampler: SamplerSlot,
    /// Our subscriber is the process-wide one.
    installed: bool,
}

/// The handle [`init`] returns: starts and stops trace export.
#[derive(Clone, Copy)]
pub struct Telemetry {
    shared: &'static Shared,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("installed", &self.shared.installed)
            .field("traces", &TRACES_ON.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why traces could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Another global `tracing` subscriber was installed before [`init`].
    #[error("traces need hookrelay's log subscriber, but another global subscriber was installed first")]
    NotInstalled,
    /// [`Telemetry::start_traces`] already ran in this process.
    #[error("trace export is already running; [telemetry] applies at start only")]
    AlreadyStarted,
    /// Called outside a tokio runtime.
    #[error("trace export must start inside the tokio runtime")]
    NoRuntime,
    /// A setting or `OTEL_*` variable is not usable.
    #[error("{0}")]
    Settings(String),
    /// The OTLP exporter refused its configuration.
    #[error("cannot set up the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// Where traces were to go.
        endpoint: String,
        /// The exporter's reason.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Flushing or shutting down the exporter failed.
    #[error("OTLP export: {0}")]
    Export(String),
}

/// Installs the process-wide subscriber (logs now; traces once [`Telemetry::start_traces`]
/// runs). Later calls return the same handle and change nothing.
pub fn init(format: LogFormat) -> Telemetry {
    let shared = SHARED.get_or_init(|| {
        let exporter = ExportSlot::default();
        let sampler = SamplerSlot::default();
        let provider =
            SdkTracerProvider::builder().with_span_processor(exporter.clone()).with_sampler(sampler.clone()).build();
        let scope = InstrumentationScope::builder("hookrelay").with_version(env!("CARGO_PKG_VERSION")).build();
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer_with_scope(scope))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(TracesFilter);
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
            LogFormat::Text => fmt::layer()
                .fmt_fields(TextFields)
                // Colours on a terminal only: log files and collectors get plain text.
                .with_ansi(ansi())
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Json => fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed(),
        };
        let installed = tracing_subscriber::registry().with(logs.with_filter(filter)).with(otel).try_init().is_ok();
        Shared { provider, exporter, sampler, installed }
    });
    Telemetry { shared }
}

/// A terminal on stderr, and no `NO_COLOR`.
fn ansi() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl Telemetry {
    /// Starts exporting traces if `[telemetry]` or the `OTEL_*` variables ask for it (see
    /// [`TelemetryFile`]); `Ok(false)` when they do not. Call once, inside the tokio runtime,
    /// after the config is loaded and before the router starts.
    pub fn start_traces(&self, cfg: &TelemetryFile) -> Result<bool, TelemetryError> {
        if !self.shared.installed {
            return Err(TelemetryError::NotInstalled);
        }
        if self.shared.exporter.0.get().is_some() {
            return Err(TelemetryError::AlreadyStarted);
        }
        let Some(settings) = Settings::resolve(cfg)? else { return Ok(false) };
        let exporter = settings.exporter()?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        let resource = resource(cfg);
        processor.set_resource(&resource);
        let service = resource.get(&opentelemetry::Key::from_static_str("service.name")).map(|v| v.to_string());
        let _ = self.shared.sampler.0.set(sampler(cfg));
        if self.shared.exporter.0.set(processor).is_err() {
            return Err(TelemetryError::AlreadyStarted);
        }
        TRACES_ON.store(true, Ordering::Release);
        tracing::info!(
            endpoint = %settings.shown,
            protocol = settings.protocol_name(),
            service = service.as_deref().unwrap_or("hookrelay"),
            "exporting traces over OTLP"
        );
        Ok(true)
    }

    /// Whether spans are being exported.
    pub fn traces_on(&self) -> bool {
        TRACES_ON.load(Ordering::Acquire)
    }

    /// Exports every finished span now.
    pub async fn flush(&self) -> Result<(), TelemetryError> {
        if !self.traces_on() {
            return Ok(());
        }
        let provider = self.shared.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|e| TelemetryError::Export(e.to_string()))?
            .map_err(|e| TelemetryError::Export(e.to_string()))
    }

    /// Stops trace export after exporting what is buffered. Call at the end of `run`, inside
    /// the runtime (the exporter's connections live there).
    pub async fn shutdown(&self) {
        if !TRACES_ON.swap(false, Ordering::AcqRel) {
            return;
        }
        let provider = self.shared.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spans buffered at shutdown may not have been exported"),
            Err(e) => tracing::warn!(error = %e, "spans buffered at shutdown may not have been exported"),
        }
    }
}

/// The span of one event on one route, from consume to ack. Its parent is the producer's
/// `traceparent` (the AMQP message's header) when valid; without one it starts a new trace.
/// Create it before anything runs inside it, and record the event's id and type with
/// [`record_event`] once decoded.
///
/// In the log's span tree the event span is a root: it names the route itself, so log lines
/// inside it do not repeat the route span's `route=`.
pub fn event_span(route: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        parent: None,
        "event",
        otel.kind = "consumer",
        route = %route,
        cloudevents.event_id = Empty,
        cloudevents.event_type = Empty,
    );
    adopt(&span, traceparent);
    span
}

/// [`event_span`] for an event already decoded: its id and type are set when the span is made
/// (cheaper than recording them afterwards, which makes the log layer format the span again),
/// and its parent is the first valid of `traceparents` (the message header, then the event's
/// extension).
pub fn decoded_event_span(route: &str, traceparents: [Option<&str>; 2], id: &str, ty: &str) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        parent: None,
        "event",
        otel.kind = "consumer",
        route = %route,
        cloudevents.event_id = id,
        cloudevents.event_type = ty,
    );
    adopt(&span, traceparents.into_iter().flatten().find(|tp| parse_traceparent(tp).is_some()));
    span
}

/// The span of one `POST /v1/events` on the ingest API, child of the caller's `traceparent`.
/// Publish the event with `traceparent` = [`traceparent`] of this span in its AMQP headers.
pub fn ingest_span(traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "ingest",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/events",
        http.response.status_code = Empty,
        otel.status_code = Empty,
        cloudevents.event_id = Empty,
        cloudevents.event_type = Empty,
    );
    adopt(&span, traceparent);
    span
}

/// Records the status an [`ingest_span`]'s request was answered with (an error from 500 up).
pub fn record_ingest(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records the CloudEvent's `id` and `type` on an [`event_span`] or [`ingest_span`].
pub fn record_event(span: &Span, id: &str, ty: &str) {
    span.record("cloudevents.event_id", id);
    span.record("cloudevents.event_type", ty);
}

/// Sets the parent of a span made by this module that has not been entered yet (e.g. from the
/// event's `traceparent` extension when the message had no header). `false` if it did not
/// parse or the span had already started.
pub fn set_parent(span: &Span, traceparent: &str) -> bool {
    match parse_traceparent(traceparent) {
        Some(sc) => span.set_parent(Context::new().with_remote_span_context(sc)).is_ok(),
        None => false,
    }
}

fn adopt(span: &Span, traceparent: Option<&str>) {
    if !TRACES_ON.load(Ordering::Relaxed) {
        return;
    }
    let parent = traceparent.and_then(parse_traceparent).map(|sc| Context::new().with_remote_span_context(sc));
    // Without a parent, an explicit empty context: a new trace, never a child of whatever
    // span happens to be current (the route's, say).
    let _ = span.set_parent(parent.unwrap_or_default());
}

/// The span of one HTTP attempt, a child of the current span (the [`event_span`]): create it
/// inside the event span, send [`traceparent`] of it on the request, and close it with
/// [`record_attempt`].
pub fn attempt_span(attempt: u32, url: &http::Uri) -> Span {
    // Without traces the attempt span only feeds the log, whose failure lines carry the
    // attempt themselves: not making it saves the log layer formatting one span per attempt.
    if !TRACES_ON.load(Ordering::Relaxed) {
        return Span::none();
    }
    tracing::info_span!(
        target: TRACE_TARGET,
        "attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        attempt,
        http.request.method = "POST",
        server.address = url.host().unwrap_or_default(),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Records how an attempt ended: the status when there was a response, and the failure (the
/// same bounded label as the metrics) when it was not a 2xx.
pub fn record_attempt(span: &Span, status: Option<u16>, failure: Option<AttemptFailure>) {
    if let Some(s) = status {
        span.record("http.response.status_code", s);
    }
    if let Some(f) = failure {
        span.record("error.type", f.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// The `traceparent` to send for `span`: the span's own context when traces are on; otherwise
/// `incoming` when it is a valid `traceparent`, else a new random one (same shape either way).
pub fn traceparent(span: &Span, incoming: Option<&str>) -> String {
    forward_traceparent(span, incoming).unwrap_or_else(new_traceparent)
}

/// The `traceparent` to pass on with something handed to the next hop (the ingest API's
/// publish): the span's own context when traces are on; otherwise `incoming` when it is a valid
/// `traceparent`; otherwise none, so that the next hop can still use what the event itself
/// carries (its `traceparent` extension).
pub fn forward_traceparent(span: &Span, incoming: Option<&str>) -> Option<String> {
    if TRACES_ON.load(Ordering::Relaxed) {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(format_traceparent(&sc));
        }
    }
    incoming.filter(|tp| parse_traceparent(tp).is_some()).map(|tp| tp.trim().to_string())
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// A fresh, sampled W3C `traceparent`, for events that carry none.
pub fn new_traceparent() -> String {
    format!("00-{:032x}-{:016x}-01", fastrand::u128(1..), fastrand::u64(1..))
}

/// Parses a W3C `traceparent` (`version-traceid-parentid-flags`, lowercase hex; version `ff`
/// and all-zero ids are invalid; future versions may append fields).
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let mut parts = s.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace_id, span_id, TraceFlags::new(flags & 1), true, TraceState::default()))
}

/// The OTLP exporter `cfg` and the `OTEL_*` variables describe; `Ok(None)` when traces are
/// off. Public for tests; [`Telemetry::start_traces`] is what the router uses.
pub fn span_exporter(cfg: &TelemetryFile) -> Result<Option<opentelemetry_otlp::SpanExporter>, TelemetryError> {
    match Settings::resolve(cfg)? {
        Some(s) => s.exporter().map(Some),
        None => Ok(None),
    }
}

/// Where and how spans are sent.
struct Settings {
    protocol: OtlpProtocol,
    /// Set from `[telemetry]`; `None` lets the exporter read the `OTEL_*` endpoint variables.
    endpoint: Option<String>,
    /// For messages.
    shown: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl Settings {
    fn resolve(cfg: &TelemetryFile) -> Result<Option<Self>, TelemetryError> {
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

    fn protocol_name(&self) -> &'static str {
        match self.protocol {
            OtlpProtocol::Http => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }

    fn exporter(&self) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
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
fn resource(cfg: &TelemetryFile) -> Resource {
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
fn sampler(cfg: &TelemetryFile) -> Sampler {
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

/// Lets the OpenTelemetry layer see this module's spans and the `hookrelay` events at info and
/// above inside them, and only while traces are on.
struct TracesFilter;

impl TracesFilter {
    fn wanted(meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::INFO
            && if meta.is_span() { meta.target() == TRACE_TARGET } else { meta.target().starts_with("hookrelay") }
    }
}

impl<S> Filter<S> for TracesFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        TRACES_ON.load(Ordering::Relaxed) && Self::wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if Self::wanted(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// The text log format's fields, without the `otel.*` fields that only steer the exporter.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut v = SkipOtel(DefaultVisitor::new(writer, true));
        fields.record(&mut v);
        v.0.finish()
    }
}

struct SkipOtel<'a>(DefaultVisitor<'a>);

impl Visit for SkipOtel<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !field.name().starts_with("otel.") {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !field.name().starts_with("otel.") {
            self.0.record_debug(field, value);
        }
    }
}

/// The span processor slot: empty (spans dropped) until [`Telemetry::start_traces`] fills it.
#[derive(Debug, Clone, Default)]
struct ExportSlot(Arc<OnceLock<BatchSpanProcessor>>);

impl SpanProcessor for ExportSlot {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        if let Some(p) = self.0.get() {
            p.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        if let Some(p) = self.0.get() {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.get().map_or(Ok(()), |p| p.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.get().map_or(Ok(()), |p| p.shutdown_with_timeout(timeout))
    }
}

/// The sampler slot, filled with the configured sampler by [`Telemetry::start_traces`].
#[derive(Debug, Clone, Default)]
struct SamplerSlot(Arc<OnceLock<Sampler>>);

impl ShouldSample for SamplerSlot {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        match self.0.get() {
            Some(s) => s.should_sample(parent_context, trace_id, name, span_kind, attributes, links),
            None => SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            },
        }
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
    fn traceparent_parsing_follows_the_w3c_rules() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert!(!parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().is_sampled());
        // A later version may append fields; version 00 may not.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn without_traces_the_incoming_traceparent_passes_through_or_a_new_one_is_made() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(&Span::none(), Some(tp)), tp);
        for incoming in [None, Some("garbage")] {
            let made = traceparent(&Span::none(), incoming);
            assert!(parse_traceparent(&made).is_some_and(|sc| sc.is_sampled()), "{made}");
        }
        let sc = parse_traceparent(tp).unwrap();
        assert_eq!(format_traceparent(&sc), tp);
    }

    #[test]
    fn http_endpoints_get_the_traces_path_once() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("https://c/otlp"), "https://c/otlp/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
