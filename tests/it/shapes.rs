//! Delivery shapes as a receiver meets them (docs/delivery-shapes.md): per-key order (every
//! key's events in order, keys side by side, a failing key holding only itself) and scheduled
//! delivery (`deliverat`: not before its time, across a router restart; refused beyond
//! `[limits] max_schedule_ahead`). Each on both
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
