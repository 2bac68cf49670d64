//! Micro-benchmarks of the per-event pieces, through the library's public API, on the realistic
//! route of the throughput bench (JSON Schema, a Rhai filter, redaction, Standard Webhooks
//! signing) and on the same route with a transform, for 1 KiB and 64 KiB events:
//!
//! - `decode`: bytes → `CloudEvent`;
//! - `validate`: the event's `data` against its compiled schema;
//! - `to_value`: the event as the JSON map scripts and redaction work on;
//! - `filter` / `transform`: one Rhai call each (the conversion to and from Rhai included);
//! - `filter/declarative`: the realistic route's filter written as a declarative filter
//!   (`pipeline::condition`), evaluated on the decoded event;
//! - `redact`: the route's two redaction paths;
//! - `render/standard`, `render/cloudevents`, `render/data`: the body in each route `format`
//!   (`pipeline::render`, the last step of `prepare`);
//! - `sign`: `Signer::headers` (one HMAC-SHA256 over id, timestamp and body);
//! - `headers`: every request header of one attempt (`delivery::attempt::request_headers`, signing included);
//! - `prepare`: the whole pipeline from bytes to the rendered body (`pipeline::prepare`);
//! - `baseline`: what the same work costs done another way (one parse into a map, a direct JSON →
//!   Rhai conversion, cloning `data`, dropping the event), the figures behind proposed changes.
//!
//! `cargo bench --bench pipeline [-- FILTER]`. No broker needed.

#[path = "common/mod.rs"]
mod common;

use common::{BrokerSpec, Size, TRANSFORM_PLUGIN, realistic_route};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookrelay::config::Snapshot;
use hookrelay::config::files::BodyFormat;
use hookrelay::event::CloudEvent;
use hookrelay::pipeline::{self, Prepared};
use serde_json::Value;
use std::hint::black_box;

struct Fixture {
    snapshot: Snapshot,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let routes = [
        realistic_route("realistic", "http://127.0.0.1:9/hook", false, 32),
        realistic_route("transform", "http://127.0.0.1:9/hook", false, 32).transform(TRANSFORM_PLUGIN),
    ];
    common::write_config(dir.path(), &BrokerSpec::Unused, "127.0.0.1:0", &routes);
    let snapshot = hookrelay::config::load(dir.path()).unwrap_or_else(|e| panic!("bench config: {e:?}"));
    Fixture { snapshot, _dir: dir }
}

fn pieces(c: &mut Criterion) {
    let f = fixture();
    let snap = &f.snapshot;
    let route = snap.route("realistic").expect("route").clone();
    let with_transform = snap.route("transform").expect("route").clone();
    let filter = route.steps.filter.clone().expect("filter");
    let transform = with_transform.steps.transform.clone().expect("transform");
    for size in [Size::Kib1, Size::Kib64] {
        let raw = common::event(7, size);
        let event = CloudEvent::decode(&raw).expect("bench event decodes");
        let value = event.to_value();
        let mut g = c.benchmark_group(format!("pipeline {}", size.label()));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        let id = |name: &str| BenchmarkId::new(name, size.label());

        g.bench_function(id("decode"), |b| b.iter(|| CloudEvent::decode(black_box(&raw)).expect("decodes")));
        g.bench_function(id("validate"), |b| {
            b.iter(|| snap.schemas.validate("order.paid", None, black_box(event.data_ref())).expect("valid"))
        });
        g.bench_function(id("to_value"), |b| b.iter(|| black_box(&event).to_value()));
        g.bench_function(id("filter"), |b| {
            b.iter(|| filter.filter(&snap.engine, black_box(&value)).expect("filter runs"))
        });
        // The same test as `common::FILTER`, declared: no engine, no conversion.
        let declarative = hookrelay::pipeline::condition::Condition::compile(&serde_json::json!({"all": [
            {"path": "data.total", "gte": 0}, {"path": "data.currency", "ne": "XXX"}
        ]}))
        .expect("the declarative filter compiles");
        assert!(declarative.matches(&event), "the bench event passes both filters");
        g.bench_function(id("filter/declarative"), |b| b.iter(|| declarative.matches(black_box(&event))));
        g.bench_function(id("transform"), |b| {
            b.iter(|| transform.transform(&snap.engine, black_box(&value)).expect("transform runs"))
        });
        // Redaction as the realistic route takes it: on the decoded `data`.
        g.bench_function(id("redact"), |b| {
            b.iter_batched_ref(
                || event.data.clone(),
                |d| route.steps.redact.iter().for_each(|p| p.apply_to_data(d)),
                criterion::BatchSize::SmallInput,
            )
        });
        // `render` on what the route's steps leave: the redacted `data` (decoded), or the
        // redacted event as one value (the `cloudevents` body).
        let mut redacted = value.clone();
        route.steps.redact.iter().for_each(|p| p.apply(&mut redacted));
        let mut redacted_data = event.data.clone();
        route.steps.redact.iter().for_each(|p| p.apply_to_data(&mut redacted_data));
        let redacted_data = redacted_data.expect("the bench event has data");
        let time = event.time.as_deref();
        for (format, name) in [(BodyFormat::Standard, "render/standard"), (BodyFormat::Data, "render/data")] {
            g.bench_function(id(name), |b| {
                b.iter(|| pipeline::render(format, &event.ty, time, black_box(redacted_data.root())).expect("renders"))
            });
        }
        g.bench_function(id("render/cloudevents"), |b| {
            b.iter(|| {
                pipeline::render(BodyFormat::Cloudevents, &event.ty, time, black_box(&redacted)).expect("renders")
            })
        });
        let (rendered, _) =
            pipeline::render(BodyFormat::Standard, &event.ty, time, redacted_data.root()).expect("renders");
        g.bench_function(id("sign"), |b| {
            b.iter(|| route.signer.headers(black_box(&event.id), 1_700_000_000, black_box(&rendered)))
        });
        let Ok(Prepared::Deliver(payload)) = pipeline::prepare(&snap.pipeline(), &route.steps, &raw) else {
            panic!("the realistic route delivers the bench event")
        };
        g.bench_function(id("headers"), |b| {
            b.iter(|| {
                hookrelay::delivery::attempt::request_headers(
                    &route,
                    black_box(&payload),
                    "1763805600000000",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    1,
                    1_700_000_000,
                )
            })
        });
        g.bench_function(id("prepare"), |b| {
            b.iter(|| pipeline::prepare(&snap.pipeline(), &route.steps, black_box(&raw)).expect("ok"))
        });
        g.bench_function(id("prepare+transform"), |b| {
            b.iter(|| pipeline::prepare(&snap.pipeline(), &with_transform.steps, black_box(&raw)).expect("ok"))
        });
        g.finish();

        // Baselines for proposed changes to the pipeline (src/), measured on the same inputs:
        // what one parsing pass costs, what a direct JSON → Rhai conversion costs, and what
        // cloning `data` for the body costs.
        let mut g = c.benchmark_group(format!("baseline {}", size.label()));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(id("parse_to_map"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Map<String, Value>>(black_box(&raw)).expect("parses"))
        });
        g.bench_function(id("to_dynamic_serde"), |b| {
            b.iter(|| rhai::serde::to_dynamic(black_box(&value)).expect("converts"))
        });
        g.bench_function(id("to_dynamic_direct"), |b| b.iter(|| to_dynamic(black_box(&value))));
        g.bench_function(id("clone_data"), |b| b.iter(|| black_box(&value).get("data").cloned()));
        g.bench_function(id("drop_event_value"), |b| {
            b.iter_batched(|| value.clone(), drop, criterion::BatchSize::SmallInput)
        });
        g.finish();
    }
}

/// A direct `serde_json::Value` → `rhai::Dynamic` conversion (no serde data model in between),
/// as a baseline for the script path.
fn to_dynamic(v: &Value) -> rhai::Dynamic {
    match v {
        Value::Null => rhai::Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => rhai::Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Object(m) => {
            rhai::Dynamic::from_map(m.iter().map(|(k, v)| (k.as_str().into(), to_dynamic(v))).collect())
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = pieces
}
criterion_main!(benches);
