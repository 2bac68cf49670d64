//! Telemetry: spans exported over real OTLP (protobuf decoded by an in-process receiver) carry
//! the producer's trace on to the webhook's `traceparent`; reported events render as exact
//! Prometheus counts; the example dashboard and alert rules use only metrics that exist; the
//! `[telemetry]` config section loads and refuses bad values; the router process takes its trace
//! settings from the standard `OTEL_*` variables alone.

use crate::common::otlp::{OtlpReceiver, ReceivedSpan};
use crate::common::{ConfigDir, Received, Receiver, RouteConfig, RouterProc, Vhost, numbered};
use hookrelay::config::files::{MainFile, OtlpProtocol, TelemetryFile};
use hookrelay::delivery::policy::{HoldReason, State};
use hookrelay::delivery::verdict::{AttemptFailure, Reason};
use hookrelay::metrics::{self, ReloadResult};
use hookrelay::telemetry::{self, LogFormat};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;
use tracing::Instrument;

const T: Duration = Duration::from_secs(60);
const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, pick: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {what}; received:\n{spans:#?}");
    found[0]
}

/// The only test that installs the process-wide subscriber and starts trace export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_producers_trace_through_to_the_webhook_traceparent() {
    let collector = OtlpReceiver::start().await;
    let t = telemetry::init(LogFormat::Text);
    let cfg = TelemetryFile {
        otlp_endpoint: Some(collector.endpoint()),
        protocol: Some(OtlpProtocol::Http),
        service_name: Some("hookrelay-under-test".into()),
        sample_ratio: None,
    };
    assert!(t.start_traces(&cfg).expect("trace export starts"), "an endpoint is configured");
    assert!(matches!(t.start_traces(&cfg), Err(telemetry::TelemetryError::AlreadyStarted)));
    let url: http::Uri = "https://erp.example.com/hooks/orders?token=s3cr3t".parse().unwrap();

    // A producer's sampled trace: the event and its two attempts continue it.
    let incoming = format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01");
    let event = telemetry::event_span("orders", Some(&incoming));
    telemetry::record_event(&event, "evt-traced", "order.paid");
    let (first, second) = async {
        let a1 = telemetry::attempt_span(1, &url);
        let tp1 = telemetry::traceparent(&a1, Some(&incoming));
        async { tracing::warn!(target: "hookrelay::router", status = 503, "delivery failed; will retry") }
            .instrument(a1.clone())
            .await;
        telemetry::record_attempt(&a1, Some(503), Some(AttemptFailure::Http5xx));
        drop(a1);
        let a2 = telemetry::attempt_span(2, &url);
        let tp2 = telemetry::traceparent(&a2, Some(&incoming));
        telemetry::record_attempt(&a2, Some(204), None);
        (tp1, tp2)
    }
    .instrument(event.clone())
    .await;
    drop(event);

    // No traceparent: a new trace, not a child of whatever span is current (even an exported one).
    let outer = tracing::info_span!(target: telemetry::TRACE_TARGET, "outer");
    let lone = outer.in_scope(|| telemetry::event_span("orders", None));
    let lone_tp = lone.in_scope(|| telemetry::traceparent(&telemetry::attempt_span(1, &url), None));
    drop((lone, outer));

    // The producer decided not to sample: nothing exported, the trace goes on unsampled.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = format!("00-{unsampled_trace}-b7ad6b7169203331-00");
    let quiet = telemetry::event_span("orders", Some(&unsampled));
    let quiet_tp = quiet.in_scope(|| telemetry::traceparent(&telemetry::attempt_span(1, &url), Some(&unsampled)));
    drop(quiet);

    t.flush().await.expect("flush");
    let spans = collector
        .wait_for("two traced attempts, their event, the lone event and its attempt", |s| {
            s.iter().filter(|x| x.name == "attempt").count() >= 3
                && s.iter().filter(|x| x.name == "event").count() >= 2
                && s.iter().any(|x| x.name == "outer")
        })
        .await;

    let ev = one(&spans, "event span of the producer's trace", |s| s.name == "event" && s.trace_id == PRODUCER_TRACE);
    assert_eq!(ev.parent_span_id, PRODUCER_SPAN, "the event span's parent is the producer's span");
    assert_eq!(ev.via, "http");
    assert_eq!(ev.service, "hookrelay-under-test");
    assert_eq!(ev.kind, 5, "consumer");
    assert_eq!(ev.attributes.get("route").map(String::as_str), Some("orders"));
    assert_eq!(ev.attributes.get("cloudevents.event_id").map(String::as_str), Some("evt-traced"));
    assert_eq!(ev.attributes.get("cloudevents.event_type").map(String::as_str), Some("order.paid"));

    let attempt = |n: &str| {
        one(&spans, &format!("attempt {n}"), |s| {
            s.name == "attempt"
                && s.trace_id == PRODUCER_TRACE
                && s.attributes.get("attempt").map(String::as_str) == Some(n)
        })
    };
    let (a1, a2) = (attempt("1"), attempt("2"));
    for (a, sent) in [(a1, &first), (a2, &second)] {
        assert_eq!(a.parent_span_id, ev.span_id, "attempts are children of the event span");
        assert_eq!(a.kind, 3, "client");
        assert_eq!(*sent, format!("00-{PRODUCER_TRACE}-{}-01", a.span_id), "the webhook's traceparent is the attempt");
        assert_eq!(a.attributes.get("server.address").map(String::as_str), Some("erp.example.com"));
        assert!(!a.attributes.values().any(|v| v.contains("s3cr3t")), "no query string in span attributes: {a:#?}");
    }
    assert_eq!(a1.attributes.get("http.response.status_code").map(String::as_str), Some("503"));
    assert_eq!(a1.attributes.get("error.type").map(String::as_str), Some("http_5xx"));
    assert_eq!(a1.status, 2, "a failed attempt has status error");
    assert_eq!(a1.events, vec!["delivery failed; will retry".to_string()], "router log events become span events");
    assert_eq!(a2.attributes.get("http.response.status_code").map(String::as_str), Some("204"));
    assert!(!a2.attributes.contains_key("error.type"));

    let lone = one(&spans, "lone event span", |s| s.name == "event" && s.trace_id != PRODUCER_TRACE);
    assert_eq!(lone.parent_span_id, "", "without a traceparent the event span is a root");
    let lone_attempt = one(&spans, "lone attempt", |s| s.trace_id == lone.trace_id && s.name == "attempt");
    assert_eq!(lone_tp, format!("00-{}-{}-01", lone.trace_id, lone_attempt.span_id));
    let outer = one(&spans, "outer span", |s| s.name == "outer");
    assert_ne!(outer.trace_id, lone.trace_id, "the lone event does not join the trace of the span around it");

    assert!(!spans.iter().any(|s| s.trace_id == unsampled_trace), "an unsampled trace is not exported");
    let quiet_sc = telemetry::parse_traceparent(&quiet_tp).expect("a valid traceparent");
    assert_eq!(quiet_sc.trace_id().to_string(), unsampled_trace, "the unsampled trace continues");
    assert!(!quiet_sc.is_sampled(), "and stays unsampled: {quiet_tp}");

    t.shutdown().await;
    assert!(!t.traces_on());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_exporter_sends_real_otlp_protobuf() {
    let collector = OtlpReceiver::start().await;
    let cfg = TelemetryFile {
        otlp_endpoint: Some(collector.endpoint()),
        protocol: Some(OtlpProtocol::Grpc),
        ..TelemetryFile::default()
    };
    let exporter = telemetry::span_exporter(&cfg).unwrap().expect("an endpoint is configured");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder_empty().with_service_name("grpc-check").build())
        .build();
    let parent = telemetry::parse_traceparent(&format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01")).unwrap();
    let cx = opentelemetry::Context::new().with_remote_span_context(parent);
    drop(provider.tracer("it").start_with_context("grpc-check", &cx));
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush()).await.unwrap().expect("flush over gRPC");
    let spans = collector.wait_for("the gRPC span", |s| !s.is_empty()).await;
    let s = one(&spans, "span", |s| s.name == "grpc-check");
    assert_eq!((s.via, s.service.as_str()), ("grpc", "grpc-check"));
    assert_eq!((s.trace_id.as_str(), s.parent_span_id.as_str()), (PRODUCER_TRACE, PRODUCER_SPAN));
    tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
}

/// Environment variables for a process.
type Vars = &'static [(&'static str, &'static str)];

/// The router as its own process, configured for traces by the standard `OTEL_*` variables
/// alone (its config has no `[telemetry]`): spans arrive over the protocol and with the service
/// name they give, and `OTEL_SDK_DISABLED=true` keeps them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otel_variables_alone_configure_trace_export_and_otel_sdk_disabled_turns_it_off() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(&RouteConfig::new("traced").events(["order.paid"]).url(rx.url("/traced")));
    assert!(!std::fs::read_to_string(cfg.path().join("hookrelay.toml")).unwrap().contains("[telemetry]"));
    let mut delivered = 0;
    // Each case: the variables, then the protocol and service name the spans must come with.
    let cases: [(Vars, &str, &str); 3] = [
        (&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_SERVICE_NAME", "relay-env-grpc")], "grpc", "relay-env-grpc"),
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_SERVICE_NAME", "relay-env-http")],
            "http",
            "relay-env-http",
        ),
        // The signal's own endpoint variable is the full URL; the protocol defaults to http.
        (
            &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=relay-env-attrs,deployment.environment=test")],
            "http",
            "relay-env-attrs",
        ),
    ];
    for (i, (vars, via, service)) in cases.into_iter().enumerate() {
        let collector = OtlpReceiver::start().await;
        let (base, traces) = (collector.endpoint(), format!("{}/v1/traces", collector.endpoint()));
        let endpoint = if i == 2 {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str())
        } else {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str())
        };
        let env: Vec<(&str, &str)> = std::iter::once(endpoint).chain(vars.iter().copied()).collect();
        let mut router = RouterProc::start_with_env(&cfg, &[], &env);
        router.wait_log("consuming", Duration::from_secs(30)).await;
        assert!(router.log_text().contains("exporting traces over OTLP"), "{env:?}:\n{}", router.log_text());
        let events = numbered(&format!("env{i}"), 2);
        vh.publish(&events).await;
        delivered += events.len();
        let got: Vec<Received> = rx
            .wait_distinct("/traced", delivered, T)
            .await
            .into_iter()
            .filter(|r| r.id().starts_with(&format!("env{i}-")))
            .collect();
        // SIGTERM exports what is buffered before the process exits.
        assert!(router.term(Duration::from_secs(30)).await.success());
        let spans = collector
            .wait_for("an event and an attempt span per event", |s| {
                s.iter().filter(|x| x.name == "attempt").count() >= 2
                    && s.iter().filter(|x| x.name == "event").count() >= 2
            })
            .await;
        assert!(
            spans.iter().all(|s| s.via == via && s.service == service),
            "{env:?}: want {via} and {service}:\n{spans:#?}"
        );
        for r in &got {
            // The webhook's traceparent is the exported attempt span, child of the event's span.
            let tp = r.header("traceparent");
            let parts: Vec<&str> = tp.split('-').collect();
            let attempt = one(&spans, "the webhook's attempt span", |s| {
                s.name == "attempt" && s.trace_id == parts[1] && s.span_id == parts[2]
            });
            let event = one(&spans, "its event span", |s| s.span_id == attempt.parent_span_id);
            assert_eq!(event.attributes.get("cloudevents.event_id"), Some(&r.id()), "{env:?}");
            assert_eq!(event.attributes.get("route").map(String::as_str), Some("traced"));
        }
    }
    // Disabled: the same endpoint and name, and nothing is exported.
    let collector = OtlpReceiver::start().await;
    let base = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
        ("OTEL_SERVICE_NAME", "relay-off"),
        ("OTEL_SDK_DISABLED", "true"),
    ];
    let mut router = RouterProc::start_with_env(&cfg, &[], &env);
    router.wait_log("consuming", Duration::from_secs(30)).await;
    vh.publish(&numbered("off", 2)).await;
    rx.wait_distinct("/traced", delivered + 2, T).await;
    assert!(router.term(Duration::from_secs(30)).await.success());
    assert!(!router.log_text().contains("exporting traces"), "{}", router.log_text());
    assert!(collector.spans().is_empty(), "OTEL_SDK_DISABLED=true exported: {:#?}", collector.spans());
}

#[test]
fn traces_stay_off_without_an_endpoint_and_refuse_tls_over_grpc() {
    // No endpoint here; the test environment sets no OTEL_* variables.
    assert!(telemetry::span_exporter(&TelemetryFile::default()).unwrap().is_none());
    let tls_grpc = TelemetryFile {
        otlp_endpoint: Some("https://collector.example.com:4317".into()),
        protocol: Some(OtlpProtocol::Grpc),
        ..TelemetryFile::default()
    };
    let err = telemetry::span_exporter(&tls_grpc).expect_err("refused").to_string();
    assert!(err.contains("protocol = \"http\""), "the message says what to do: {err}");
}

/// Series of a Prometheus text exposition: (name, labels) → value. `le` is normalised as a
/// number so that `5` and `5.0` compare equal.
fn parse_exposition(text: &str) -> HashMap<(String, BTreeMap<String, String>), f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
            map.insert(k.to_string(), norm(k, v.trim_end_matches('"')));
        }
        assert!(out.insert((name.to_string(), map), value).is_none(), "duplicate series: {line}");
    }
    out
}

fn norm(k: &str, v: &str) -> String {
    match (k, v.parse::<f64>()) {
        ("le", Ok(x)) => x.to_string(),
        _ => v.to_string(),
    }
}

struct Scrape(HashMap<(String, BTreeMap<String, String>), f64>, String);

impl Scrape {
    fn take() -> Self {
        let text = metrics::install().unwrap().render();
        Self(parse_exposition(&text), text)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = labels.iter().map(|(k, v)| (k.to_string(), norm(k, v))).collect();
        self.0.get(&(name.to_string(), key)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.1))
    }
}

#[test]
fn reported_events_render_as_exact_prometheus_counts() {
    let m = metrics::install().expect("the recorder installs");
    assert!(metrics::install().is_ok(), "installing again returns the same recorder");
    // A route name of this test's own: the recorder is process-wide.
    let route = format!("metrics-{}", uuid::Uuid::new_v4().simple());
    let r = route.as_str();
    for _ in 0..7 {
        metrics::consumed(r);
    }
    metrics::filtered(r);
    metrics::filtered(r);
    metrics::delivered(r, Duration::from_millis(20), Some(Duration::from_millis(1500)));
    metrics::delivered(r, Duration::from_millis(200), Some(Duration::from_secs(100)));
    metrics::delivered(r, Duration::from_secs(3), None);
    metrics::attempt_failed(r, AttemptFailure::Http5xx);
    metrics::attempt_failed(r, AttemptFailure::Http5xx);
    metrics::attempt_failed(r, AttemptFailure::Timeout);
    metrics::retried(r);
    metrics::retried(r);
    metrics::retried(r);
    metrics::dead_lettered(r, Reason::Exhausted);
    metrics::dead_lettered(r, Reason::Schema);
    metrics::queue_depth(r, 42);
    metrics::config_loaded(3, "aaaaaaaaaaaa");
    metrics::config_loaded(4, "bbbbbbbbbbbb");
    metrics::reload(ReloadResult::Applied);
    metrics::reload(ReloadResult::Rejected);
    let guards = (metrics::in_flight(r), metrics::in_flight(r));
    let gate = metrics::GateMeter::new(r);
    gate.circuit(State::Closed);
    for state in [State::Open, State::HalfOpen, State::Open] {
        gate.entered(state);
    }
    gate.held(HoldReason::CircuitOpen);
    gate.held(HoldReason::CircuitOpen);
    gate.rate_waited();
    gate.rate(2.5);
    metrics::LanesMeter::new(r).in_use(3);
    let batches = metrics::BatchMeter::new(r);
    batches.sent(50);
    batches.sent(7);

    let s = Scrape::take();
    let route_l = [("route", r)];
    assert_eq!(s.value(metrics::EVENTS_CONSUMED, &route_l), 7.0);
    assert_eq!(s.value(metrics::EVENTS_FILTERED, &route_l), 2.0);
    assert_eq!(s.value(metrics::EVENTS_DELIVERED, &route_l), 3.0);
    assert_eq!(s.value(metrics::EVENTS_RETRIED, &route_l), 3.0);
    let attempts = |result| s.value(metrics::DELIVERY_ATTEMPTS, &[("route", r), ("result", result)]);
    assert_eq!(attempts("success"), 3.0);
    assert_eq!(attempts("http_5xx"), 2.0);
    assert_eq!(attempts("timeout"), 1.0);
    assert_eq!(attempts("http_4xx"), 0.0, "every failure label is shown from 0");
    let dead = |reason| s.value(metrics::EVENTS_DEAD_LETTERED, &[("route", r), ("reason", reason)]);
    assert_eq!((dead("exhausted"), dead("schema"), dead("gone")), (1.0, 1.0, 0.0));
    assert_eq!(s.value(metrics::IN_FLIGHT, &route_l), 2.0);
    assert_eq!(s.value(metrics::QUEUE_DEPTH, &route_l), 42.0);
    let circuit = |state| s.value(metrics::CIRCUIT_STATE, &[("route", r), ("state", state)]);
    assert_eq!((circuit("closed"), circuit("open"), circuit("half_open")), (0.0, 1.0, 0.0));
    let entered = |to| s.value(metrics::CIRCUIT_TRANSITIONS, &[("route", r), ("to", to)]);
    assert_eq!((entered("open"), entered("half_open"), entered("closed")), (2.0, 1.0, 0.0));
    let held = |reason| s.value(metrics::EVENTS_HELD, &[("route", r), ("reason", reason)]);
    assert_eq!((held("circuit_open"), held("rate_limited")), (2.0, 0.0));
    assert_eq!(s.value(metrics::RATE_LIMITED_WAITS, &route_l), 1.0);
    assert_eq!(s.value(metrics::RATE_LIMIT_PER_SECOND, &route_l), 2.5);
    assert_eq!(s.value(metrics::ORDER_LANES, &route_l), 3.0);
    let b = metrics::BATCH_SIZE;
    assert_eq!((s.value(&format!("{b}_count"), &route_l), s.value(&format!("{b}_sum"), &route_l)), (2.0, 57.0));

    let bucket = |name: &str, le: &str| s.value(&format!("{name}_bucket"), &[("route", r), ("le", le)]);
    let d = metrics::DELIVERY_DURATION;
    assert_eq!(s.value(&format!("{d}_count"), &route_l), 3.0);
    assert!((s.value(&format!("{d}_sum"), &route_l) - 3.22).abs() < 1e-9);
    assert_eq!((bucket(d, "0.01"), bucket(d, "0.025"), bucket(d, "0.25")), (0.0, 1.0, 2.0));
    assert_eq!((bucket(d, "2.5"), bucket(d, "5"), bucket(d, "+Inf")), (2.0, 3.0, 3.0));
    let l = metrics::DELIVERY_LAG;
    assert_eq!(s.value(&format!("{l}_count"), &route_l), 2.0, "a delivery without event time adds no lag");
    assert_eq!((bucket(l, "1"), bucket(l, "2.5"), bucket(l, "60"), bucket(l, "300")), (0.0, 1.0, 1.0, 2.0));

    assert_eq!(s.value(metrics::CONFIG_INFO, &[("version", "4"), ("revision", "bbbbbbbbbbbb")]), 1.0);
    assert_eq!(
        s.get(metrics::CONFIG_INFO, &[("version", "3"), ("revision", "aaaaaaaaaaaa")]),
        None,
        "old label set gone"
    );
    assert_eq!(s.value(metrics::CONFIG_RELOADS, &[("result", "applied")]), 1.0);
    assert_eq!(s.value(metrics::CONFIG_RELOADS, &[("result", "rejected")]), 1.0);
    assert_eq!(s.value(metrics::CONFIG_LAST_RELOAD_OK, &[]), 0.0);
    assert_eq!(s.value(metrics::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // METRICS lists exactly what is exported: every name shows up, nothing else does.
    let exported: std::collections::BTreeSet<String> =
        s.0.keys()
            .map(|(n, _)| {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|x| n.strip_suffix(x)).unwrap_or(n);
                if metrics::METRICS.contains(&base) { base.to_string() } else { n.clone() }
            })
            .collect();
    let listed: std::collections::BTreeSet<String> = metrics::METRICS.iter().map(|s| s.to_string()).collect();
    assert_eq!(exported, listed);
    for name in metrics::METRICS {
        assert!(s.1.contains(&format!("# HELP {name} ")), "{name} has help text:\n{}", s.1);
    }

    drop(guards);
    metrics::route_removed(r);
    let after = Scrape::take();
    assert_eq!(after.value(metrics::IN_FLIGHT, &route_l), 0.0, "in-flight guards decrement on drop");
    assert_eq!(after.get(metrics::QUEUE_DEPTH, &route_l), None, "a removed route's queue depth is not shown");
    assert_eq!(after.value(metrics::EVENTS_CONSUMED, &route_l), 7.0, "counters stay");
    let _ = m;
}

/// Every `hookrelay_*` name in a file, histogram series folded onto their base name.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("hookrelay_").map(|i| i + from) {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let end = text[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| i + e);
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let name = &text[i..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|x| name.strip_suffix(x))
                .filter(|b| metrics::METRICS.contains(b))
                .unwrap_or(name);
            out.push(base.to_string());
        }
        from = end;
    }
    out
}

#[test]
fn the_example_dashboard_and_alert_rules_use_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dashboard = std::fs::read_to_string(root.join("grafana/hookrelay.json")).unwrap();
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    let vars: Vec<&str> =
        json["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(vars.contains(&"route"), "the dashboard has a route variable: {vars:?}");
    let panels = json["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 8, "the dashboard queries: {exprs:?}");
    for (file, text) in [("grafana/hookrelay.json", &dashboard), ("prometheus/alerts.yml", &alerts)] {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{file} uses hookrelay metrics");
        for n in names {
            assert!(metrics::METRICS.contains(&n.as_str()), "{file} uses {n}, which hookrelay does not export");
        }
    }
    for alert in [
        "HookrelayDeliveryFailureRateHigh",
        "HookrelayLagHigh",
        "HookrelayDeadLettersGrowing",
        "HookrelayRouteStalled",
        "HookrelayConfigReloadFailed",
        "HookrelayCircuitOpen",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}")), "alerts.yml defines {alert}");
    }
}

#[test]
fn the_telemetry_section_loads_with_defaults_and_refuses_bad_values() {
    let parsed: MainFile = toml::from_str("").unwrap();
    assert_eq!(parsed.telemetry, TelemetryFile::default(), "traces are off unless configured");

    let cfg = ConfigDir::with_main_text(
        "version = 1\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\nservice_name = \"relay-eu\"\nsample_ratio = 0.25\n",
    );
    let snap = hookrelay::config::load(cfg.path()).expect("valid");
    assert_eq!(
        snap.telemetry,
        TelemetryFile {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            service_name: Some("relay-eu".into()),
            sample_ratio: Some(0.25),
        }
    );

    for (section, expect) in [
        ("[telemetry]\nsample_ratio = 2.0\n", "sample_ratio 2 must be between 0.0 and 1.0"),
        ("[telemetry]\notlp_endpoint = \"collector:4317\"\n", "is not an http:// or https:// URL"),
        ("[telemetry]\notlp_endpoint = \"https://c:4317\"\nprotocol = \"grpc\"\n", "use protocol = \"http\""),
        ("[telemetry]\nendpoint = \"http://c:4318\"\n", "hookrelay.toml:3:1: unknown field `endpoint`"),
        ("[telemetry]\nprotocol = \"http/json\"\n", "unknown variant `http/json`"),
    ] {
        let cfg = ConfigDir::with_main_text(&format!("version = 1\n{section}"));
        let errs = hookrelay::config::load(cfg.path()).expect_err(section);
        let text = errs.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains(expect), "{section}: expected {expect:?} in:\n{text}");
    }
}
