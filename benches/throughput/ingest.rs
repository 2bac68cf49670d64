//! Ingest alone (issue 15): producers POSTing events to the router's `/v1/events`, 32
//! connections, while the router delivers nothing (its one route is ordered and its receiver
//! holds the first request, so every other event waits in the queue), beside the ceiling of a
//! bare axum handler in the harness that parses the same bodies as JSON and answers 202, and
//! (RabbitMQ) a bare handler that also publishes each body to a quorum queue and answers 202
//! once the broker confirmed it: what RabbitMQ's confirms leave of that ceiling, the router's
//! `POST /v1/events` doing the same with its checks on top.
//!
//! Also what the bare relay's own CPU per event is, so that the router's reads as a ratio: the
//! harness's CPU during the bare relay run (32 at once) less the receiver's share, which is the
//! harness's CPU per event during the unordered router run of the same repetition (there the
//! harness only receives).

use crate::common::{self, BrokerSpec, Size, realistic_route};
use crate::process::{self, Bus, BusKind, Launch};
use crate::receiver::Receiver;
use crate::sys::CpuSample;
use crate::{Bench, CONCURRENCY, PREFETCH, ceil, ceiling_group, group_of};
use axum::http::StatusCode;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// The bare axum handler: `n` events POSTed, `concurrency` at once, each parsed into a
/// `serde_json::Value` and answered 202. Requests per second.
pub(crate) async fn bare_axum(size: Size, n: usize, concurrency: usize) -> Result<f64, String> {
    let handler = |body: Bytes| async move {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => {
                drop(std::hint::black_box(v));
                StatusCode::ACCEPTED
            }
            Err(_) => StatusCode::BAD_REQUEST,
        }
    };
    serve_and_post(axum::Router::new().route("/v1/events", axum::routing::post(handler)), size, n, concurrency).await
}

/// The bare axum handler that also publishes: each body parsed as JSON, published to the
/// exchange `bare` (bound to one quorum queue, `rabbit::declare_bare`) on one confirm-mode
/// channel, and answered 202 once confirmed (503 if not). Requests per second.
pub(crate) async fn bare_axum_publishing(url: &str, size: Size, n: usize, concurrency: usize) -> Result<f64, String> {
    crate::rabbit::declare_bare(url, 1).await;
    let (conn, ch) = crate::rabbit::confirm_channel(url).await;
    let ch = std::sync::Arc::new(ch);
    let handler = move |body: Bytes| {
        let ch = ch.clone();
        async move {
            if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                return StatusCode::BAD_REQUEST;
            }
            // The router's own publish: persistent, mandatory, its confirm awaited.
            let props = lapin::BasicProperties::default().with_content_type("application/cloudevents+json".into());
            match hookrelay::broker::amqp::publish_confirmed(&ch, "bare", "order.paid", &body, props).await {
                Ok(()) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
    };
    let app = axum::Router::new().route("/v1/events", axum::routing::post(handler));
    let rate = serve_and_post(app, size, n, concurrency).await;
    let _ = conn.close(200, "".into()).await;
    rate
}

/// Serves `app` on loopback and POSTs `n` events to its `/v1/events`, `concurrency` at once.
/// Requests per second.
async fn serve_and_post(app: axum::Router, size: Size, n: usize, concurrency: usize) -> Result<f64, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let start = Instant::now();
    let posted = crate::http::ingest_bulk(&format!("http://{addr}/v1/events"), size, n, concurrency).await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.abort();
    posted.map(|()| rate)
}

/// What producers POSTing alone give: events per second and the router's CPU per event.
pub(crate) struct IngestAlone {
    pub(crate) rate: f64,
    pub(crate) cpu_us: f64,
}

/// `n` events POSTed to the router's `/v1/events`, `concurrency` at once, on `kind`, with the
/// realistic route (ordered, its receiver holding the first request): nothing is delivered.
pub(crate) async fn ingest_alone(
    kind: BusKind,
    rx: &Receiver,
    n: usize,
    concurrency: usize,
    prefetch: u32,
    launch: &Launch,
) -> Result<IngestAlone, String> {
    let bus = kind.open();
    let api = match &bus {
        Bus::Embedded { api } => api.clone(),
        Bus::RabbitMq(_) => format!("127.0.0.1:{}", process::free_port()),
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let route = realistic_route("bench-0", format!("{}/held", rx.addr), true, 1).timeout(Duration::from_secs(600));
    let spec: BrokerSpec = bus.broker_spec(prefetch);
    common::write_config(dir.path(), &spec, &api, &[route]);
    rx.reset(None);
    rx.hold(true);
    let run = async {
        let (router, _) = process::start(dir.path(), &bus, launch).await?;
        process::api_up(&api, Duration::from_secs(30)).await?;
        let before = CpuSample::take(router.pid());
        let start = Instant::now();
        let posted = crate::http::ingest_bulk(&format!("http://{api}/v1/events"), Size::Kib1, n, concurrency).await;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let cpu = before.per_event_us(&CpuSample::take(router.pid()), n);
        let tail = router.tail();
        router.stop();
        posted.map_err(|e| format!("{e}\n{tail}"))?;
        Ok(IngestAlone { rate, cpu_us: cpu.router })
    };
    let out = run.await;
    rx.hold(false);
    rx.reset(None);
    out
}

impl Bench {
    /// The bare axum ceiling of ingest (`ceiling.axum.1k`), once per repetition.
    pub(crate) async fn ceiling_axum(&mut self, n: usize) {
        match bare_axum(Size::Kib1, n, CONCURRENCY).await {
            Ok(rate) => {
                self.report.record("ceiling.axum.1k", rate);
                self.progress("bare axum handler (parse, 202)", &format!("{rate:.0}/s"));
            }
            Err(e) => self.fail(ceiling_group(BusKind::RabbitMq), "bare axum handler", &e),
        }
    }

    /// The bare handler that publishes with confirms (`ceiling.axum_publish.1k`), once per
    /// repetition, on a vhost of its own.
    pub(crate) async fn ceiling_axum_publishing(&mut self, n: usize) {
        let vh = crate::rabbit::Vhost::new();
        match bare_axum_publishing(&vh.url(), Size::Kib1, n, CONCURRENCY).await {
            Ok(rate) => {
                self.report.record("ceiling.axum_publish.1k", rate);
                self.progress("bare axum handler (parse, publish, confirm, 202)", &format!("{rate:.0}/s"));
            }
            Err(e) => self.fail(ceiling_group(BusKind::RabbitMq), "bare axum handler that publishes", &e),
        }
    }

    /// The bare relays' own CPU per event on `kind` where they ran in the harness (the embedded
    /// broker's, 32 and one at a time), once the unordered run gave the receiver's share
    /// (`receiver_us`, the harness's CPU per event there).
    pub(crate) fn relay_cpu(&mut self, kind: BusKind, receiver_us: f64) {
        for (harness, own) in [("relay.harness_cpu", "relay.cpu"), ("relay1.harness_cpu", "relay1.cpu")] {
            if let Some(harness) = self.report.current(&ceil(kind, harness)) {
                self.report.record(ceil(kind, own), (harness - receiver_us).max(0.0));
            }
        }
    }

    /// Producers POSTing alone on `kind` (`<broker>.ingest_alone.1k.*`), beside the bare axum
    /// handler measured in the same repetition.
    pub(crate) async fn ingest_alone(&mut self, kind: BusKind) {
        if self.report.current("ceiling.axum.1k").is_none() {
            self.ceiling_axum(self.opts.events).await;
        }
        if kind == BusKind::RabbitMq && self.report.current("ceiling.axum_publish.1k").is_none() {
            self.ceiling_axum_publishing(self.opts.events).await;
        }
        let (b, launch) = (kind.label(), self.opts.launch.clone());
        match ingest_alone(kind, &self.rx, self.opts.events, CONCURRENCY, PREFETCH, &launch).await {
            Ok(r) => {
                self.report.record(format!("{b}.ingest_alone.1k.rate"), r.rate);
                if kind == BusKind::RabbitMq {
                    // The same figure again, read against what RabbitMQ's confirms allow.
                    self.report.record(format!("{b}.ingest_alone.1k.rate_vs_publish"), r.rate);
                }
                self.report.record(format!("{b}.ingest_alone.1k.cpu"), r.cpu_us);
                self.progress(
                    &format!("{b} POST /v1/events alone"),
                    &format!("{:.0}/s, router {:.1} µs/event", r.rate, r.cpu_us),
                );
            }
            Err(e) => self.fail(group_of(kind), &format!("{b} POST /v1/events alone"), &e),
        }
    }
}
