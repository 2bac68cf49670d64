//! Delivery shapes as a receiver meets them (docs/delivery-shapes.md): per-key order (every
//! key's events in order, keys side by side, a failing key holding only itself) and scheduled
//! delivery (`deliverat`: not before its time, across a router restart; refused beyond
//! `[limits] max_schedule_ahead`), and batches (JSON arrays of the unbatched bodies, signed once,
//! verified by the published `standardwebhooks` library; retried whole, dead-lettered per event). Each on both
//! brokers (`shapes::on_rabbitmq::*`, `shapes::on_embedded::*`), the router a real process.
//!
//! Times are asserted only as orderings the product promises, never as how fast anything went.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const T: Duration = Duration::from_secs(90);

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    every_keys_events_arrive_in_order_with_a_growing_sequence,
    a_failing_key_holds_only_its_own_events,
    a_scheduled_event_waits_for_deliverat_across_a_restart,
    a_burst_arrives_in_signed_batches_of_the_unbatched_bodies,
    a_batch_refused_for_good_dead_letters_each_event,
);

/// `per_key` events for each of `keys` keys (`subject` = `k<key>`), published interleaved:
/// `k0-0, k1-0, …, k0-1, k1-1, …`; ids are `k<key>-<n>`.
fn keyed(keys: usize, per_key: usize) -> Vec<Value> {
    (0..per_key)
        .flat_map(|n| {
            (0..keys).map(move |k| {
                let mut e = event("order.paid", &format!("k{k}-{n}"), json!({"n": n}));
                e["subject"] = json!(format!("k{k}"));
                e
            })
        })
        .collect()
}

/// The key of a webhook id `k<key>-<n>`, and its place.
fn key_of(id: &str) -> (String, usize) {
    let (k, n) = id.split_once('-').unwrap_or((id, "0"));
    (k.to_string(), n.parse().unwrap_or(usize::MAX))
}

/// Per key, the places of its events in the order the receiver first got them.
fn per_key(got: &[Received]) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for id in first_arrivals(got) {
        let (k, n) = key_of(&id);
        out.entry(k).or_default().push(n);
    }
    out
}

fn keyed_route(rx: &Receiver) -> RouteConfig {
    RouteConfig::new("r")
        .events(["order.*"])
        .url(rx.url("/r"))
        .ordered(true)
        .order_key("subject")
        .concurrency(10)
        .max_attempts(1000)
        .backoff([Duration::from_millis(200)])
}

/// 10 keys × 5 events to a receiver that takes 100 ms per request: every key's events arrive in
/// publish order, each once, signed, with `hookrelay-sequence` growing within the key; the
/// lanes gauge is exported.
async fn every_keys_events_arrive_in_order_with_a_growing_sequence(on: TestBroker) {
    let rx = Receiver::start_slow(Duration::from_millis(100), |_, _| (200, vec![])).await;
    let cfg = on.config();
    cfg.route(&keyed_route(&rx));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &keyed(10, 5)).await;

    let got = rx.wait_distinct("/r", 50, T).await;
    let order = per_key(&got);
    assert_eq!(order.len(), 10, "{order:?}");
    for (k, places) in &order {
        assert_eq!(places, &(0..5).collect::<Vec<_>>(), "key {k} in publish order");
    }
    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &got {
        verify_spec(SECRET, r).unwrap();
        let seq = r.header("hookrelay-sequence").parse().expect("a numeric sequence");
        sequences.entry(key_of(&r.id()).0).or_default().push(seq);
    }
    for (k, seqs) in &sequences {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {k}: the sequence grows: {seqs:?}");
    }
    let api = Api::new(&router.api().await, None);
    let view = api.get("/v1/routes/r").await.json;
    assert_eq!(view["order_key"], "subject", "{view}");
    let scrape = api.get("/metrics").await.text;
    assert!(scrape.contains("hookrelay_order_lanes_in_use{route=\"r\"}"), "{scrape}");
    assert!(cfg.dead_letters().await.is_empty());
}

/// Key `k9`'s receiver answers 500 until told otherwise: every event of the other 9 keys is
/// delivered while `k9`'s first event is still failing and none of its later ones has been
/// sent; once the receiver recovers, `k9`'s events follow, in order. Nothing dead-lettered.
async fn a_failing_key_holds_only_its_own_events(on: TestBroker) {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let rx = Receiver::start_slow(Duration::from_millis(100), move |r, _| {
        let stuck = key_of(&r.id()).0 == "k9" && f.load(Ordering::SeqCst);
        (if stuck { 500 } else { 200 }, vec![])
    })
    .await;
    let cfg = on.config();
    cfg.route(&keyed_route(&rx));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &keyed(10, 5)).await;

    let others = |got: &[Received]| got.iter().filter(|r| key_of(&r.id()).0 != "k9").count();
    let got = rx.wait_until("/r", "the 45 events of the other keys", T, |got| others(got) >= 45).await;
    let k9: Vec<(String, String)> =
        got.iter().filter(|r| key_of(&r.id()).0 == "k9").map(|r| (r.id(), r.header("hookrelay-attempt"))).collect();
    assert!(!k9.is_empty(), "k9's head was attempted");
    assert!(k9.iter().all(|(id, _)| id == "k9-0"), "nothing after k9's failing head was sent: {k9:?}");
    let order = per_key(&got);
    for (k, places) in order.iter().filter(|(k, _)| *k != "k9") {
        assert_eq!(places, &(0..5).collect::<Vec<_>>(), "key {k} in publish order, past the failing key");
    }
    // Still failing after the others were all delivered: k9's head is attempted again.
    let seen = got.iter().filter(|r| r.id() == "k9-0").count();
    rx.wait_until("/r", "k9's head retried after the others", T, |g| {
        g.iter().filter(|r| r.id() == "k9-0").count() > seen
    })
    .await;

    failing.store(false, Ordering::SeqCst);
    let got = rx.wait_distinct("/r", 50, T).await;
    assert_eq!(per_key(&got)["k9"], (0..5).collect::<Vec<_>>(), "k9 in order once it recovers");
    assert!(cfg.dead_letters().await.is_empty(), "nothing dead-lettered");
}

/// An event due 6 s from now is published; the router is stopped and started again at once; the
/// receiver's wall clock when the request arrives is at or past `deliverat`, on the second router
/// (the event waited durably through the restart); an event without `deliverat` published with
/// it goes at once. Ingest refuses a `deliverat` that is not RFC 3339, or lies beyond
/// `max_schedule_ahead`, with a 422 naming the attribute; over AMQP (RabbitMQ) the latter is
/// dead-lettered `malformed`.
async fn a_scheduled_event_waits_for_deliverat_across_a_restart(on: TestBroker) {
    let arrivals: Arc<Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let a = arrivals.clone();
    let rx = Receiver::start(move |r, _| {
        a.lock().unwrap().push((r.id(), SystemTime::now()));
        (200, vec![])
    })
    .await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("r").events(["order.*"]).url(rx.url("/r")));
    let mut router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    for (at, problem) in [(json!("tomorrow"), "RFC 3339"), (json!("2999-01-01T00:00:00Z"), "max_schedule_ahead")] {
        let mut e = event("order.paid", "bad", json!({"n": 0}));
        e["deliverat"] = at;
        let answer = api.post("/v1/events", e).await;
        assert_eq!(answer.status, 422, "{}", answer.text);
        assert_eq!(answer.json["error"]["details"]["attribute"], "deliverat", "{}", answer.text);
        assert!(answer.text.contains(problem), "{}", answer.text);
    }

    let due = SystemTime::now() + Duration::from_secs(6);
    let mut scheduled = event("order.paid", "later", json!({"n": 1}));
    scheduled["deliverat"] = json!(humantime::format_rfc3339_millis(due).to_string());
    on.publish(&router, &[scheduled, event("order.paid", "now", json!({"n": 2}))]).await;
    rx.wait_distinct("/r", 1, T).await;
    router.term(T).await;
    let restarted = SystemTime::now();
    let router = RouterProc::ready(&cfg).await;

    let got = rx.wait_distinct("/r", 2, T).await;
    assert_eq!(first_arrivals(&got), ["now", "later"]);
    let arrived = arrivals.lock().unwrap().iter().find(|(id, _)| id == "later").map(|(_, at)| *at).unwrap();
    assert!(arrived >= due, "not before deliverat: arrived {arrived:?}, due {due:?}");
    assert!(arrived >= restarted, "delivered by the restarted router, after waiting through the restart");
    verify_spec(SECRET, &got[1]).unwrap();
    assert!(cfg.dead_letters().await.is_empty());

    if let Some(vh) = on.vhost() {
        let mut far = event("order.paid", "far", json!({"n": 3}));
        far["deliverat"] = json!("2999-01-01T00:00:00Z");
        vh.publish(&[far]).await;
        let dead = cfg.wait_dead_letters(1, T).await;
        assert_eq!(dead[0].reason, "malformed", "{dead:?}");
        assert!(dead[0].error.contains("max_schedule_ahead"), "{dead:?}");
    }
    drop(router);
}

/// Whether `python3` has the published `standardwebhooks` package: required under CI, else the
/// check that needs it is skipped (with a note).
fn standardwebhooks_available() -> bool {
    let probe = std::process::Command::new("python3").args(["-c", "import standardwebhooks"]).status();
    if probe.is_ok_and(|s| s.success()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have the standardwebhooks package (pip install standardwebhooks)"
    );
    eprintln!("SKIPPED the library check: python3 with the standardwebhooks package is not installed");
    false
}

/// Verifies `r` with the published `standardwebhooks` Python library, unmodified.
fn verify_with_library(r: &Received) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &r.body).unwrap();
    let headers: serde_json::Map<String, Value> =
        r.headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().into())).collect();
    let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\n\
                  body=open(sys.argv[2],'rb').read()\nheaders=json.loads(sys.argv[3])\n\
                  print(json.dumps(Webhook(sys.argv[1]).verify(body, headers)))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, SECRET, body.to_str().unwrap(), &Value::Object(headers).to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "standardwebhooks refused {}: {}", r.id(), String::from_utf8_lossy(&out.stderr));
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified, r.json(), "the library gives back the batch");
}

/// 25 events with `time` set, to a route with `[batch] max_events = 10` and, beside it, the same
/// route unbatched. The receiver fails the batch route's first request with a 503. Every event
/// arrives once in a 2xx'd batch; at least ⌈25/10⌉ requests; each body is a JSON array of
/// exactly the unbatched bodies, in publish order within it, listed by `hookrelay-event-ids`
/// and counted by `hookrelay-batch-size`; every request verifies (spec verifier and the
/// published library); the failed batch is retried whole under the same `webhook-id`.
async fn a_burst_arrives_in_signed_batches_of_the_unbatched_bodies(on: TestBroker) {
    const N: usize = 25;
    let failed_first = Arc::new(AtomicBool::new(false));
    let f = failed_first.clone();
    let rx = Receiver::start(move |r, _| {
        let first = r.path == "/batched" && !f.swap(true, Ordering::SeqCst);
        (if first { 503 } else { 200 }, vec![])
    })
    .await;
    let cfg = on.config();
    let route = |name: &str| RouteConfig::new(name).events(["order.*"]).url(rx.url(&format!("/{name}")));
    cfg.route(&route("batched").batch(10, Duration::from_millis(500)).backoff([Duration::from_millis(300)]));
    cfg.route(&route("single"));
    let router = RouterProc::ready(&cfg).await;
    let events: Vec<Value> = (0..N)
        .map(|i| {
            let mut e = event("order.paid", &format!("b-{i}"), json!({"n": i}));
            e["time"] = json!("2030-01-01T00:00:00Z");
            e
        })
        .collect();
    on.publish(&router, &events).await;

    let single = rx.wait_distinct("/single", N, T).await;
    let unbatched: BTreeMap<String, Value> = single.iter().map(|r| (r.id(), r.json())).collect();
    let ids_of = |r: &Received| -> Vec<String> {
        r.header("hookrelay-event-ids").split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let distinct = |got: &[Received]| got.iter().flat_map(ids_of).collect::<std::collections::HashSet<_>>().len();
    let retried = |got: &[Received]| got.iter().any(|r| r.header("hookrelay-attempt") == "2");
    let got = rx
        .wait_until("/batched", format!("{N} events in batches, one retried"), T, |got| {
            distinct(got) >= N && retried(got)
        })
        .await;
    let again = got.iter().find(|r| r.header("hookrelay-attempt") == "2").unwrap();
    let failed = got.iter().find(|r| r.id() == again.id() && r.header("hookrelay-attempt") == "1").unwrap();
    assert_eq!(again.body, failed.body, "the failed batch is sent again whole, under the same webhook-id");
    let ok: Vec<&Received> = got.iter().filter(|r| !std::ptr::eq(*r, failed)).collect();
    assert!(ok.len() >= N.div_ceil(10), "at least ⌈N/max_events⌉ 2xx'd requests: {}", ok.len());
    let library = standardwebhooks_available();
    let mut seen: Vec<String> = Vec::new();
    for r in &got {
        let ids = ids_of(r);
        let body = r.json();
        let elements = body.as_array().expect("a JSON array");
        assert_eq!(r.header("hookrelay-batch-size"), elements.len().to_string());
        assert_eq!(ids.len(), elements.len(), "one id per element");
        assert!(elements.len() <= 10, "max_events");
        for (id, element) in ids.iter().zip(elements) {
            assert_eq!(element, &unbatched[id], "exactly what the unbatched delivery sent for {id}");
        }
        let places: Vec<usize> = ids.iter().map(|id| id[2..].parse().unwrap()).collect();
        assert!(places.windows(2).all(|w| w[0] < w[1]), "publish order within a batch: {places:?}");
        assert!(r.id().starts_with("batch_"), "{}", r.id());
        verify_spec(SECRET, r).unwrap();
        if library {
            verify_with_library(r);
        }
    }
    for r in &ok {
        seen.extend(ids_of(r));
    }
    seen.sort();
    let mut all: Vec<String> = (0..N).map(|i| format!("b-{i}")).collect();
    all.sort();
    assert_eq!(seen, all, "every event once in a delivered batch");
    let api = Api::new(&router.api().await, None);
    let scrape = api.get("/metrics").await.text;
    assert!(scrape.contains("hookrelay_batch_size_count{route=\"batched\"}"), "{scrape}");
    assert!(cfg.dead_letters().await.is_empty());
}

/// A receiver answering 400: each of the 12 events of the batches becomes a dead letter
/// (reason `rejected`, the response's status), after one request per batch.
async fn a_batch_refused_for_good_dead_letters_each_event(on: TestBroker) {
    let rx = Receiver::start(|_, _| (400, vec![])).await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("r").events(["order.*"]).url(rx.url("/r")).batch(5, Duration::from_millis(300)));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("e", 12)).await;
    let dead = cfg.wait_dead_letters(12, T).await;
    let mut ids: Vec<&str> = dead.iter().map(|d| d.event_id.as_str()).collect();
    ids.sort();
    let mut all: Vec<String> = (0..12).map(|i| format!("e-{i}")).collect();
    all.sort();
    assert_eq!(ids, all, "one dead letter per event");
    for d in &dead {
        assert_eq!((d.reason.as_str(), d.last_status), ("rejected", Some(400)), "{d:?}");
    }
    let got = rx.on("/r");
    let sent: usize = got.iter().map(|r| r.json().as_array().map_or(0, Vec::len)).sum();
    assert_eq!(sent, 12, "each event sent once, in a batch: {} requests", got.len());
}

/// `hookrelay validate` places each misuse of the shapes at its `file:line:col`: `[batch]` on an
/// ordered route, `order_key` without `ordered`, a key that is no attribute, batch limits.
#[test]
fn validate_places_shape_mistakes_at_their_line() {
    let cfg = TestBroker::embedded().config();
    let head = "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n";
    cfg.route_text("a", &format!("{head}ordered = true\n[batch]\nmax_events = 10\n"));
    cfg.route_text("b", &format!("{head}order_key = \"subject\"\n"));
    cfg.route_text("c", &format!("{head}ordered = true\norder_key = \"data\"\n"));
    cfg.route_text("d", &format!("{head}[batch]\nmax_events = 0\nmax_wait = \"2m\"\n"));
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "routes/a.toml:4:2: `batch` applies to unordered routes only",
        "routes/b.toml:3:13: `order_key` needs `ordered = true`",
        "routes/c.toml:4:13: `order_key` \"data\" as a whole is no key",
        "routes/d.toml:4:14: `batch.max_events` must be at least 1 and at most 1000",
        "routes/d.toml:5:12: `batch.max_wait` must be more than zero and at most 1 minute",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
}

/// Two replicas on one RabbitMQ route with `order_key` (the second a standby consumer); the
/// active one is killed mid-stream: the standby takes over, and every key's events still first
/// arrive in publish order (redeliveries of what was in flight at the kill may repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_through_a_consumer_failover_between_replicas() {
    let on = TestBroker::rabbitmq();
    let rx = Receiver::start_slow(Duration::from_millis(50), |_, _| (200, vec![])).await;
    let cfg = on.config();
    cfg.route(&keyed_route(&rx));
    let mut active = RouterProc::ready(&cfg).await;
    let standby = RouterProc::ready(&cfg).await;
    let vh = on.vhost().unwrap();
    vh.publish(&keyed(10, 20)).await;
    rx.wait_requests("/r", 40, T).await;
    active.kill();
    let at_kill = rx.on("/r").len();
    let got = rx.wait_distinct("/r", 200, T).await;
    assert!(at_kill < 200, "the kill came mid-stream: {at_kill} requests");
    for (k, places) in per_key(&got) {
        assert_eq!(places, (0..20).collect::<Vec<_>>(), "key {k} in publish order through the failover");
    }
    drop(standby);
}

/// API subscriptions take the same keys: `order_key` and `batch` are shown on the route and
/// deliver as a route file's do; the same mistakes are refused with a 422 naming each field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_take_order_key_and_batch_with_the_same_checks() {
    let on = TestBroker::embedded();
    let rx = Receiver::ok().await;
    let cfg = on.config();
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let keyed = json!({"name": "keyed", "events": ["order.*"], "url": rx.url("/keyed"), "ordered": true,
                       "order_key": "data.n", "concurrency": 4});
    api.post("/v1/subscriptions", keyed).await.expect(201);
    let batched = json!({"name": "batched", "events": ["order.*"], "url": rx.url("/batched"),
                         "batch": {"max_events": 3, "max_wait": "300ms"}});
    let created = api.post("/v1/subscriptions", batched).await;
    let sub = created.expect(201);
    assert_eq!(sub["batch"], json!({"max_events": 3, "max_wait": "300ms"}), "{sub}");
    let route = api.get("/v1/routes/batched").await.json;
    assert_eq!((&route["batch_max_events"], &route["batch_max_wait_ms"]), (&json!(3), &json!(300)), "{route}");
    assert_eq!(api.get("/v1/routes/keyed").await.json["order_key"], "data.n");

    on.publish(&router, &numbered("s", 3)).await;
    rx.wait_distinct("/keyed", 3, T).await;
    let got = rx
        .wait_until("/batched", "3 events in batches", T, |got| {
            got.iter().map(|r| r.json().as_array().map_or(0, Vec::len)).sum::<usize>() >= 3
        })
        .await;
    assert!(got.iter().all(|r| r.id().starts_with("batch_")), "batches, not single events");

    let bad = json!({"name": "bad", "events": ["order.*"], "url": rx.url("/bad"), "ordered": true,
                     "order_key": "Subject", "batch": {"max_events": 0, "max_wait": "soon"}});
    let refused = api.post("/v1/subscriptions", bad).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    let fields: Vec<&str> = refused.json["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["order_key", "batch", "batch.max_events", "batch.max_wait"], "{}", refused.text);
}
