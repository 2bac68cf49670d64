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
//! the parent of the event span; [`traceparent()`] gives the value to send on the webhook, so the
//! receiver continues the producer's trace. With traces off it passes the incoming value
//! through, or makes a new one, exactly as the router did before.
//!
//! The parts: this file installs the subscriber and holds the switch ([`Telemetry`], the filter
//! of the OpenTelemetry layer, the exporter and sampler slots the provider is built with);
//! `logs.rs` the log layer and its text format; `spans.rs` the span constructors and what they
//! record; `traceparent.rs` the W3C `traceparent` (parse, format, pass on); `otlp.rs` the OTLP
//! exporter (settings from `[telemetry]` and `OTEL_*`, resource, sampler, its HTTP client).

mod logs;
mod otlp;
mod spans;
mod traceparent;

pub use self::logs::LogFormat;
pub use self::otlp::span_exporter;
pub use self::spans::{
    attempt_span, decoded_event_span, event_span, event_span_up_front, ingest_span, record_attempt, record_event,
    record_ingest, set_parent,
};
pub use self::traceparent::{
    checked_traceparent, format_traceparent, forward_traceparent, is_valid_traceparent, new_traceparent,
    parse_traceparent, traceparent, traceparent_ref,
};

use crate::config::files::TelemetryFile;
use opentelemetry::trace::{Link, SpanKind, TraceId, TraceState, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
    SpanProcessor,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context as LayerContext, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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
    init_with(format, "info")
}

/// [`init`] with another filter than `info` when `RUST_LOG` is not set: `warn` for a command
/// whose output is its answer (`publish` prints ids, not the broker's start-up lines).
pub fn init_with(format: LogFormat, default_filter: &str) -> Telemetry {
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
        let installed =
            tracing_subscriber::registry().with(logs::layer(format, default_filter)).with(otel).try_init().is_ok();
        Shared { provider, exporter, sampler, installed }
    });
    Telemetry { shared }
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
        let Some(settings) = otlp::Settings::resolve(cfg)? else { return Ok(false) };
        let exporter = settings.exporter()?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        let resource = otlp::resource(cfg);
        processor.set_resource(&resource);
        let service = resource.get(&opentelemetry::Key::from_static_str("service.name")).map(|v| v.to_string());
        let _ = self.shared.sampler.0.set(otlp::sampler(cfg));
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
