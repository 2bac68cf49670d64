//! Observability of the real router process: `/metrics` scraped over HTTP after a known
//! workload has exact counts per route and reason; a trace exported to an in-process OTLP
//! receiver links the producer's span, the router's spans and the `traceparent` the receiver
//! got; the log of failing deliveries names route, event, attempt, status and reason, and holds
//! no payload and no secret.

use crate::common::otlp::{OtlpReceiver, ReceivedSpan};
use crate::common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(60);

/// A Prometheus text exposition: (name, labels) → value.
struct Scrape {
    series: HashMap<(String, BTreeMap<String, String>), f64>,
    text: String,
}

/// The exposition as scraped, as a failure message wants it.
impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Scrape {
    async fn take(api: &Api) -> Self {
        let answer = api.get("/metrics").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let ct = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "Prometheus text format: {ct}");
        let mut series = HashMap::new();
        for line in answer.text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (s, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line:?}"));
            let (name, labels) = match s.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
                None => (s, ""),
            };
            let mut map = BTreeMap::new();
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                map.insert(k.to_string(), norm(k, v.trim_end_matches('"')));
            }
            assert!(series.insert((name.to_string(), map), value).is_none(), "duplicate series: {line}");
        }
        Self { series, text: answer.text }
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = labels.iter().map(|(k, v)| (k.to_string(), norm(k, v))).collect();
        self.series.get(&(name.to_string(), key)).copied()
    }

    /// The value, 0 when the series is absent (a counter never touched).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }

    /// Every series of `name` whose labels include `route`.
    fn of_route(&self, name: &str, route: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut out: Vec<_> = self
            .series
            .iter()
            .filter(|((n, l), _)| n == name && l.get("route").map(String::as_str) == Some(route))
            .map(|((_, l), v)| (l.clone(), *v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// `le` as a number, so that `5` and `5.0` compare equal.
fn norm(k: &str, v: &str) -> String {
    match (k, v.parse::<f64>()) {
        ("le", Ok(x)) => x.to_string(),
        _ => v.to_string(),
    }
}

/// Scrapes until `settled` holds (the router counts an outcome just after the receiver has
/// answered, so the receiver seeing everything is not enough); panics with the last scrape.
async fn scrape_until(api: &Api, what: &str, settled: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(what, T, async || Scrape::take(api).await, settled).await
}

const CONSUMED: &str = "hookrelay_events_consumed_total";
const FILTERED: &str = "hookrelay_events_filtered_total";
const DELIVERED: &str = "hookrelay_events_delivered_total";
const RETRIED: &str = "hookrelay_events_retried_total";
const DEAD: &str = "hookrelay_events_dead_lettered_total";
const ATTEMPTS: &str = "hookrelay_delivery_attempts_total";
const DURATION: &str = "hookrelay_delivery_duration_seconds";
const LAG: &str = "hookrelay_delivery_lag_seconds";
const IN_FLIGHT: &str = "hookrelay_deliveries_in_flight";
const DEPTH: &str = "hookrelay_queue_depth";
const CONFIG_INFO: &str = "hookrelay_config_info";
const RELOADS: &str = "hookrelay_config_reloads_total";
const LAST_RELOAD_OK: &str = "hookrelay_config_last_reload_successful";

/// An RFC 3339 time `ago` before now.
fn time_ago(ago: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() - ago).to_string()
}

/// Declares `queue` as a classic queue (which the router cannot declare as its quorum queue)
/// and puts `n` messages in it.
async fn occupy_queue(vh: &Vhost, queue: &str, n: usize) {
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    ch.queue_declare(queue.into(), durable, FieldTable::default()).await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for i in 0..n {
        let body = serde_json::to_vec(&event("invoice.sent", &format!("waiting-{i}"), json!({}))).unwrap();
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm =
            ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, props).await.unwrap();
        assert_eq!(confirm.await.unwrap(), Confirmation::Ack(None));
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_after_a_known_workload_have_exact_counts() {
    let vh = Vhost::new();
    // /flaky answers 503 to each event's first request, /reject always 400, the rest 200.
    let rx = Receiver::start(|r, earlier| match r.path.as_str() {
        "/flaky" if earlier == 0 => (503, vec![]),
        "/reject" => (400, vec![]),
        _ => (200, vec![]),
    })
    .await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("schemas/invoice.sent/v1.json", r#"{"type":"object"}"#);
    cfg.file("plugins/small.rhai", "fn filter(event) { event.data.n < 100 }\n");
    cfg.route(&RouteConfig::new("main").events(["order.paid"]).url(rx.url("/main")).filter("plugins/small.rhai"));
    cfg.route(
        &RouteConfig::new("flaky")
            .events(["order.created"])
            .url(rx.url("/flaky"))
            .max_attempts(3)
            .backoff([Duration::from_millis(300)]),
    );
    cfg.route(&RouteConfig::new("reject").events(["invoice.sent"]).url(rx.url("/reject")));
    // A route whose queue exists with other arguments: it cannot start, and its depth shows
    // the 3 messages nobody consumes.
    occupy_queue(&vh, "hookrelay.route.stalled", 3).await;
    cfg.route(&RouteConfig::new("stalled").events(["invoice.sent"]).url(rx.url("/stalled")));

    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);

    // main: 10 delivered (6 of them with a `time` one hour ago), 3 filtered, 2 schema-invalid.
    let mut events = Vec::new();
    for i in 0..10 {
        let mut e = event("order.paid", &format!("ok-{i}"), json!({"n": i}));
        if i < 6 {
            e["time"] = json!(time_ago(Duration::from_secs(3600)));
        }
        events.push(e);
    }
    for i in 0..3 {
        events.push(event("order.paid", &format!("big-{i}"), json!({"n": 100 + i})));
    }
    for i in 0..2 {
        events.push(event("order.paid", &format!("invalid-{i}"), json!({"n": "not a number"})));
    }
    // flaky: one event, 503 then 200 (a retry through the wait queue). reject: one 400.
    events.push(event("order.created", "retried-1", json!({})));
    events.push(event("invoice.sent", "refused-1", json!({})));
    vh.publish(&events).await;

    let s = scrape_until(&api, "the workload's outcomes", |s| {
        let c = |name, route| s.count(name, &[("route", route)]);
        c(DELIVERED, "main") + c(FILTERED, "main") >= 13.0
            && s.count(DEAD, &[("route", "main"), ("reason", "schema")]) >= 2.0
            && c(DELIVERED, "flaky") >= 1.0
            && s.count(DEAD, &[("route", "reject"), ("reason", "rejected")]) >= 1.0
            && c(IN_FLIGHT, "main") + c(IN_FLIGHT, "flaky") + c(IN_FLIGHT, "reject") == 0.0
    })
    .await;
    eprintln!("--- scrape after the workload ---\n{}", s.text);
    let r = |route| [("route", route)];

    // Counters per route.
    assert_eq!(s.value(CONSUMED, &r("main")), 15.0);
    assert_eq!(s.value(FILTERED, &r("main")), 3.0);
    assert_eq!(s.value(DELIVERED, &r("main")), 10.0);
    assert_eq!(s.value(RETRIED, &r("main")), 0.0);
    assert_eq!(s.value(CONSUMED, &r("flaky")), 2.0, "the first attempt, then the retry's return");
    assert_eq!(s.value(RETRIED, &r("flaky")), 1.0);
    assert_eq!(s.value(DELIVERED, &r("flaky")), 1.0);
    assert_eq!(s.value(CONSUMED, &r("reject")), 1.0);
    assert_eq!(s.value(DELIVERED, &r("reject")), 0.0);

    // Dead letters by reason: every reason is shown, from 0.
    let dead = |route, reason| s.value(DEAD, &[("route", route), ("reason", reason)]);
    assert_eq!((dead("main", "schema"), dead("main", "rejected")), (2.0, 0.0));
    assert_eq!((dead("reject", "rejected"), dead("reject", "schema")), (1.0, 0.0));
    for route in ["main", "flaky", "reject"] {
        let total: f64 = s.of_route(DEAD, route).iter().map(|(_, v)| v).sum();
        let expected = match route {
            "main" => 2.0,
            "reject" => 1.0,
            _ => 0.0,
        };
        assert_eq!(total, expected, "{route}: dead letters of other reasons: {:?}", s.of_route(DEAD, route));
        assert_eq!(s.of_route(DEAD, route).len(), 10, "{route}: one series per reason");
    }

    // Attempts by result.
    let attempts = |route, result| s.value(ATTEMPTS, &[("route", route), ("result", result)]);
    assert_eq!((attempts("main", "success"), attempts("main", "http_5xx")), (10.0, 0.0));
    assert_eq!((attempts("flaky", "success"), attempts("flaky", "http_5xx")), (1.0, 1.0));
    assert_eq!((attempts("reject", "success"), attempts("reject", "http_4xx")), (0.0, 1.0));
    let all_attempts: f64 =
        ["main", "flaky", "reject"].iter().flat_map(|r| s.of_route(ATTEMPTS, r)).map(|(_, v)| v).sum();
    assert_eq!(all_attempts, 13.0, "10 + 2 + 1 HTTP requests");
    assert_eq!(rx.all().len(), 13, "the receiver got as many requests as were counted");

    // Histograms: latency of every 2xx; lag only of events with a `time`, one hour old.
    assert_eq!(s.value(&format!("{DURATION}_count"), &r("main")), 10.0);
    assert_eq!(s.value(&format!("{DURATION}_count"), &r("flaky")), 1.0);
    assert_eq!(s.count(&format!("{DURATION}_count"), &r("reject")), 0.0);
    assert_eq!(s.value(&format!("{LAG}_count"), &r("main")), 6.0);
    let lag_bucket = |le| s.value(&format!("{LAG}_bucket"), &[("route", "main"), ("le", le)]);
    assert_eq!((lag_bucket("3600"), lag_bucket("7200"), lag_bucket("+Inf")), (0.0, 6.0, 6.0));
    assert_eq!(s.count(&format!("{LAG}_count"), &r("flaky")), 0.0, "no `time`, no lag");

    // In flight, queue depth, config.
    for route in ["main", "flaky", "reject"] {
        assert_eq!(s.value(IN_FLIGHT, &r(route)), 0.0, "{route}");
        assert!(s.get(DEPTH, &r(route)).is_some(), "{route}'s queue depth is reported:\n{}", s.text);
    }
    assert_eq!(s.value(DEPTH, &r("stalled")), 3.0, "the stalled route's queue holds 3 messages");
    assert_eq!(s.count(CONSUMED, &r("stalled")), 0.0);
    let config = api.get("/v1/config").await;
    let revision = config.json["revision"].as_str().unwrap().to_string();
    assert_eq!(s.value(CONFIG_INFO, &[("version", "1"), ("revision", &revision)]), 1.0);
    assert_eq!(s.value(RELOADS, &[("result", "applied")]), 0.0);
    assert_eq!(s.value(LAST_RELOAD_OK, &[]), 1.0);

    // An applied reload: version 2, the stalled route removed (its depth disappears).
    cfg.set_main(cfg.main().version(2));
    std::fs::remove_file(cfg.path().join("routes/stalled.toml")).unwrap();
    let line = router.reload().await;
    assert!(line.contains("config reloaded"), "{line}");
    let new_revision = api.get("/v1/config").await.json["revision"].as_str().unwrap().to_string();
    assert_ne!(new_revision, revision);
    let s = Scrape::take(&api).await;
    assert_eq!(s.value(RELOADS, &[("result", "applied")]), 1.0);
    assert_eq!(s.value(RELOADS, &[("result", "rejected")]), 0.0);
    assert_eq!(s.value(CONFIG_INFO, &[("version", "2"), ("revision", &new_revision)]), 1.0);
    assert_eq!(s.get(CONFIG_INFO, &[("version", "1"), ("revision", &revision)]), None, "only the live config");
    assert_eq!(s.get(DEPTH, &r("stalled")), None, "a removed route's queue depth is gone");
    assert_eq!(s.value(DELIVERED, &r("main")), 10.0, "counters stay across reloads");

    // A rejected reload: [telemetry] applies at start only.
    cfg.set_main(cfg.main().otlp_endpoint("http://127.0.0.1:4318"));
    let line = router.reload().await;
    assert!(
        line.contains("reload rejected") && line.contains("hookrelay.toml: [telemetry] applies at start only"),
        "{line}"
    );
    let s = Scrape::take(&api).await;
    assert_eq!(s.value(RELOADS, &[("result", "applied")]), 1.0);
    assert_eq!(s.value(RELOADS, &[("result", "rejected")]), 1.0);
    assert_eq!(s.value(LAST_RELOAD_OK, &[]), 0.0);
    assert_eq!(s.value(CONFIG_INFO, &[("version", "2"), ("revision", &new_revision)]), 1.0, "the old config runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_the_broker_made_are_counted_when_indexed() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::with(MainConfig::new().version(1).rabbitmq(&vh.url).delivery_limit(2).loopback_targets());
    cfg.route(&RouteConfig::new("poison").events(["order.paid"]).url(rx.url("/poison")));
    // A first router declares the topology and stops.
    let mut first = RouterProc::ready(&cfg).await;
    assert!(first.term(T).await.success());
    // An event delivered three times without an ack (limit 2): the broker dead-letters it.
    vh.publish(&[event("order.paid", "poisoned", json!({"n": 1}))]).await;
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "hookrelay.route.poison".into(),
            "crasher".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let d = tokio::time::timeout(T, consumer.next()).await.expect("a delivery").unwrap().unwrap();
        d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;

    // A second router indexes it and counts it once, as the broker's.
    let second = RouterProc::ready(&cfg).await;
    let api = Api::new(&second.api().await, None);
    let dead = cfg.wait_dead_letters(1, T).await;
    assert_eq!((dead[0].reason.as_str(), dead[0].event_id.as_str()), ("delivery_limit", "poisoned"));
    let labels = [("route", "poison"), ("reason", "delivery_limit")];
    let s = scrape_until(&api, "the broker's dead letter counted", |s| s.count(DEAD, &labels) >= 1.0).await;
    assert_eq!(s.value(DEAD, &labels), 1.0);
    let total: f64 = s.of_route(DEAD, "poison").iter().map(|(_, v)| v).sum();
    assert_eq!(total, 1.0, "no other reason counted: {:?}", s.of_route(DEAD, "poison"));
    assert_eq!(s.count(CONSUMED, &[("route", "poison")]), 0.0, "this router never took it from the queue");
    assert!(rx.all().is_empty());
}

/// Publishes one event to the events exchange with AMQP headers.
async fn publish_with_headers(vh: &Vhost, ev: &Value, headers: &[(&str, &str)]) {
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    let props = BasicProperties::default().with_delivery_mode(2).with_headers(table);
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let body = serde_json::to_vec(ev).unwrap();
    let key = ev["type"].as_str().unwrap();
    let confirm = ch.basic_publish("hookrelay.events".into(), key.into(), opts, &body, props).await.unwrap();
    assert_eq!(confirm.await.unwrap(), Confirmation::Ack(None), "publish was not routed");
    let _ = conn.close(200, "done".into()).await;
}

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, pick: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {what}; received:\n{spans:#?}");
    found[0]
}

fn attr<'a>(s: &'a ReceivedSpan, key: &str) -> &'a str {
    s.attributes.get(key).map_or("", String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_trace_continues_through_the_router_to_the_receiver() {
    let collector = OtlpReceiver::start().await;
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::with(
        MainConfig::new()
            .version(1)
            .rabbitmq(&vh.url)
            .loopback_targets()
            .otlp_endpoint(collector.endpoint())
            .otlp_protocol(OtlpProtocol::Http)
            .service_name("relay-under-test"),
    );
    cfg.route(&RouteConfig::new("traced").events(["order.paid"]).url(rx.url("/traced")));
    let mut router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);

    // Three producers' traces, each arriving its own way.
    let (amqp_trace, amqp_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (http_trace, http_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (ext_trace, ext_span) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
    let tp = |t: &str, s: &str| format!("00-{t}-{s}-01");
    publish_with_headers(
        &vh,
        &event("order.paid", "via-amqp", json!({"n": 1})),
        &[("traceparent", &tp(amqp_trace, amqp_span))],
    )
    .await;
    let posted = api
        .send(
            "POST",
            "/v1/events",
            Some(serde_json::to_vec(&event("order.paid", "via-http", json!({"n": 2}))).unwrap()),
            &[("traceparent", &tp(http_trace, http_span))],
        )
        .await;
    posted.expect(202);
    // The CloudEvents distributed-tracing extension, without a message header.
    let mut ext = event("order.paid", "via-extension", json!({"n": 3}));
    ext["traceparent"] = json!(tp(ext_trace, ext_span));
    vh.publish(&[ext]).await;
    let got = rx.wait_distinct("/traced", 3, T).await;

    // The router exports what it buffered when it stops.
    assert!(router.term(T).await.success(), "{}", router.log_text());
    let spans = collector
        .wait_for("3 event spans, 3 attempt spans, 1 ingest span", |s| {
            s.iter().filter(|x| x.name == "event").count() >= 3
                && s.iter().filter(|x| x.name == "attempt").count() >= 3
                && s.iter().any(|x| x.name == "ingest")
        })
        .await;
    for s in &spans {
        assert_eq!(s.service, "relay-under-test", "{s:#?}");
        assert_eq!(s.via, "http");
        assert!(!s.attributes.values().any(|v| v.contains("\"n\"")), "no payload in span attributes: {s:#?}");
    }

    let received = |id: &str| got.iter().find(|r| r.id() == id).unwrap_or_else(|| panic!("{id} not received"));
    let check = |id: &str, trace: &str, parent: &str| {
        let ev =
            one(&spans, &format!("event span of {id}"), |s| s.name == "event" && attr(s, "cloudevents.event_id") == id);
        assert_eq!((ev.trace_id.as_str(), ev.parent_span_id.as_str()), (trace, parent), "{id}: event span's parent");
        assert_eq!(ev.kind, 5, "consumer");
        assert_eq!(attr(ev, "route"), "traced");
        assert_eq!(attr(ev, "cloudevents.event_type"), "order.paid");
        let at =
            one(&spans, &format!("attempt span of {id}"), |s| s.name == "attempt" && s.parent_span_id == ev.span_id);
        assert_eq!(at.trace_id, trace);
        assert_eq!(at.kind, 3, "client");
        assert_eq!((attr(at, "attempt"), attr(at, "http.response.status_code")), ("1", "200"));
        assert_eq!(attr(at, "server.address"), "127.0.0.1");
        assert_eq!(at.status, 0, "a delivered attempt is not an error");
        assert_eq!(
            received(id).header("traceparent"),
            format!("00-{trace}-{}-01", at.span_id),
            "{id}: the receiver's traceparent names the attempt span"
        );
    };
    check("via-amqp", amqp_trace, amqp_span);
    check("via-extension", ext_trace, ext_span);

    // Through the ingest API: producer → ingest span → event span → attempt span.
    let ingest = one(&spans, "ingest span", |s| s.name == "ingest");
    assert_eq!((ingest.trace_id.as_str(), ingest.parent_span_id.as_str()), (http_trace, http_span));
    assert_eq!(ingest.kind, 2, "server");
    assert_eq!(attr(ingest, "cloudevents.event_id"), "via-http");
    assert_eq!(attr(ingest, "http.response.status_code"), "202");
    check("via-http", http_trace, &ingest.span_id);
}

/// The distinctive parts of the failing events: none may reach the log.
const MARKERS: [&str; 3] = ["PAYLOAD-MARKER-4111", "SCHEMA-MARKER-7", "answer from the test receiver"];

/// The router's log after three failing events. `RUST_LOG=info` takes the path of a router
/// without debug lines, where the event span is made only for a failed attempt; the tests'
/// default (`info,hookrelay=debug`) makes it up front: the lines must be the same either way.
async fn failing_deliveries_log(json_logs: bool, info_only: bool) -> String {
    let vh = Vhost::new();
    let rx = Receiver::start(|r, _| if r.id() == "refused-400" { (400, vec![]) } else { (503, vec![]) }).await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(
        &RouteConfig::new("failing")
            .events(["order.paid"])
            .url(rx.url("/f"))
            .max_attempts(2)
            .backoff([Duration::from_millis(200)]),
    );
    let format: &[&str] = if json_logs { &["--log-format", "json"] } else { &[] };
    let level: &[(&str, &str)] = if info_only { &[("RUST_LOG", "info")] } else { &[] };
    let router = RouterProc::start_with_env(&cfg, format, level);
    router.wait_log("consuming", T).await;
    let data = json!({"n": 1, "card": MARKERS[0], "customer": {"email": "someone@example.com"}});
    vh.publish(&[
        event("order.paid", "refused-400", data.clone()),
        event("order.paid", "unavailable-503", data),
        event("order.paid", "invalid-schema", json!({"n": MARKERS[1]})),
    ])
    .await;
    cfg.wait_dead_letters(3, T).await;
    let log = router.log_text();
    assert!(!log.is_empty());
    for secret in [SECRET, SECRET.trim_start_matches("whsec_")] {
        assert!(!log.contains(secret), "the signing secret is in the log:\n{log}");
    }
    for marker in MARKERS.iter().chain(&["someone@example.com"]) {
        assert!(!log.contains(marker), "{marker:?} is in the log:\n{log}");
    }
    log
}

/// The log line with `message` about `event_id`.
fn text_line<'a>(log: &'a str, message: &str, event_id: &str, attempt: u32) -> &'a str {
    let found: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(message)
                && l.contains(&format!("cloudevents.event_id=\"{event_id}\""))
                && l.contains(&format!(" attempt={attempt} "))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {message:?} line for {event_id} attempt {attempt}:\n{log}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deliveries_log_route_event_attempt_status_and_reason_without_payload_or_secret() {
    for info_only in [false, true] {
        text_lines_of_failures(&failing_deliveries_log(false, info_only).await);
    }
}

fn text_lines_of_failures(log: &str) {
    let rejected = text_line(log, "delivery failed; dead-lettering", "refused-400", 1);
    for part in ["WARN", "route=failing", "status=400", "reason=\"rejected\"", "failure=\"http_4xx\""] {
        assert!(rejected.contains(part), "{part} missing: {rejected}");
    }
    assert_eq!(rejected.matches("route=").count(), 1, "the route is named once: {rejected}");
    let retry = text_line(log, "delivery failed; will retry", "unavailable-503", 1);
    for part in ["route=failing", "status=503", "reason=\"http_5xx\"", "retry_in="] {
        assert!(retry.contains(part), "{part} missing: {retry}");
    }
    let exhausted = text_line(log, "delivery failed; dead-lettering", "unavailable-503", 2);
    for part in ["route=failing", "status=503", "reason=\"exhausted\"", "failure=\"http_5xx\""] {
        assert!(exhausted.contains(part), "{part} missing: {exhausted}");
    }
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("event refused")).collect();
    assert_eq!(refused.len(), 1, "{log}");
    for part in ["route=failing", "cloudevents.event_id=\"invalid-schema\"", "reason=\"schema\"", "paths=/n"] {
        assert!(refused[0].contains(part), "{part} missing: {}", refused[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deliveries_log_the_same_as_json_without_payload_or_secret() {
    for info_only in [false, true] {
        json_lines_of_failures(&failing_deliveries_log(true, info_only).await);
    }
}

fn json_lines_of_failures(log: &str) {
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let find = |message: &str, event_id: &str, attempt: u64| -> &Value {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| {
                l["message"] == message && l["span"]["cloudevents.event_id"] == event_id && l["attempt"] == attempt
            })
            .collect();
        assert_eq!(found.len(), 1, "one {message:?} line for {event_id} attempt {attempt}:\n{log}");
        found[0]
    };
    for (message, id, attempt, status, reason) in [
        ("delivery failed; dead-lettering", "refused-400", 1, 400, "rejected"),
        ("delivery failed; will retry", "unavailable-503", 1, 503, "http_5xx"),
        ("delivery failed; dead-lettering", "unavailable-503", 2, 503, "exhausted"),
    ] {
        let l = find(message, id, attempt);
        assert_eq!(l["level"], "WARN", "{l}");
        assert_eq!(l["span"]["route"], "failing", "{l}");
        assert_eq!(l["span"]["name"], "event", "{l}");
        assert_eq!(l["status"], status, "{l}");
        assert_eq!(l["reason"], reason, "{l}");
    }
}
