//! One route's delivery worker in process (no child process): the embedded broker in a file of
//! its own, a real receiver on loopback, the worker of `routes/r.toml`. What the receiver sees,
//! what the delivery log records, and what is left in the queues once the worker has stopped:
//! stopping closes its consumer, which gives every unacked message back, so an empty route queue
//! means every message was acked.

use crate::common::*;
use arc_swap::ArcSwap;
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, DEAD_LETTERS, Destination, Headers, RouteTopology};
use hookrelay::config::files::EmbeddedSync;
use hookrelay::delivery::worker::{Shared, Worker};
use hookrelay::runtime::indexer::from_message;
use hookrelay::store::{Outcome, delivery_id};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// A running worker and what it works on.
struct Running {
    cfg: ConfigDir,
    _queue_dir: tempfile::TempDir,
    broker: Arc<dyn Broker>,
    queue: String,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), String>>,
    log_stop: CancellationToken,
    log_writer: tokio::task::JoinHandle<()>,
}

/// Starts the worker of route `route` (named `r`, signed with the test secret from a file), plus
/// `files`.
async fn start(route: RouteConfig, files: &[(&str, &str)]) -> Running {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    cfg.file("secret", SECRET);
    cfg.route(&route.signing(Signing::File("secret".into())));
    for (rel, text) in files {
        cfg.file(rel, text);
    }
    let snapshot = hookrelay::config::load(cfg.path()).unwrap_or_else(|e| panic!("{e}"));
    let route = snapshot.route("r").expect("route r").clone();
    let queue_dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedBroker::open(&queue_dir.path().join("queue.db"), EmbeddedSync::Normal).await.unwrap();
    let broker: Arc<dyn Broker> = Arc::new(embedded);
    broker.declare_base().await.unwrap();
    let queue = route.queue();
    let topology = RouteTopology {
        name: &route.name,
        queue: &queue,
        patterns: &route.events,
        ordered: route.ordered,
        delivery_limit: 20,
        tiers: route.retry.tiers(),
    };
    broker.declare_route(&topology).await.unwrap();
    let consumer = broker.consume(&queue, 16).await.unwrap();
    let log_stop = CancellationToken::new();
    let (log, log_writer) = hookrelay::store::log::AttemptLog::start(cfg.store().await, log_stop.clone());
    let shared = Arc::new(Shared::new(snapshot, Some(log)));
    let stop = CancellationToken::new();
    let worker = Worker::new(shared, broker.clone(), Arc::new(ArcSwap::new(route)), stop.clone());
    let worker = tokio::spawn(worker.run(consumer));
    Running { cfg, _queue_dir: queue_dir, broker, queue, stop, worker, log_stop, log_writer }
}

impl Running {
    async fn publish(&self, events: &[Value]) {
        for ev in events {
            let body = serde_json::to_vec(ev).unwrap();
            let (ty, id) = (ev["type"].as_str().unwrap(), ev["id"].as_str().unwrap());
            let to = Destination::Events { routing_key: ty };
            self.broker.publish(to, &body, &Headers::default(), Some(id)).await.unwrap();
        }
    }

    /// Stops the worker (messages in flight settle first) and the delivery log, and returns
    /// what the route queue still holds and every dead letter, as the store would index them.
    async fn stop(self) -> Stopped {
        self.stop.cancel();
        self.worker.await.unwrap().expect("the worker ends without error");
        self.log_stop.cancel();
        self.log_writer.await.unwrap();
        let left = self.broker.queue_depth(&self.queue).await.unwrap();
        let dead = self.broker.queue_depth(DEAD_LETTERS).await.unwrap();
        let mut consumer = self.broker.consume(DEAD_LETTERS, 100).await.unwrap();
        let mut dead_letters = Vec::new();
        for _ in 0..dead {
            let m = tokio::time::timeout(T, consumer.next()).await.expect("a dead letter").unwrap().unwrap();
            dead_letters.push((from_message(&m), m.body.clone()));
        }
        consumer.close().await;
        Stopped { left, dead_letters, cfg: self.cfg }
    }
}

struct Stopped {
    left: u64,
    dead_letters: Vec<(hookrelay::store::DeadLetter, bytes::Bytes)>,
    cfg: ConfigDir,
}

impl Stopped {
    /// The delivery log's attempts of one event.
    async fn attempts(&self, event_id: &str) -> Vec<hookrelay::store::Attempt> {
        self.cfg.store().await.attempts(&delivery_id("r", event_id)).await.unwrap()
    }

    /// The delivery log's outcomes of one event, attempt by attempt.
    async fn outcomes(&self, event_id: &str) -> Vec<(u32, Outcome, Option<u16>)> {
        self.attempts(event_id).await.iter().map(|a| (a.attempt, a.outcome, a.status)).collect()
    }
}

/// Waits until `rx` has `n` requests on `path`.
async fn requests(rx: &Receiver, path: &str, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + T;
    loop {
        let got = rx.on(path);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{path}: {n} requests expected, got {}: {got:?}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An `order.paid` event with a `time` (the body's timestamp: the same on every attempt).
fn order(id: &str, n: Value) -> Value {
    let mut ev = event("order.paid", id, json!({"n": n}));
    ev["time"] = json!("2026-11-22T10:00:00Z");
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_delivers_signed_webhooks_and_acks_them() {
    let rx = Receiver::ok().await;
    let w = start(RouteConfig::new("r").events(["order.*"]).url(rx.url("/hook")), &[]).await;
    w.publish(&[order("a", json!(1)), order("b", json!(2)), order("c", json!(3))]).await;
    let got = rx.wait_distinct("/hook", 3, T).await;
    let stopped = w.stop().await;
    assert_eq!(got.len(), 3, "one request per event: {got:?}");
    for r in &got {
        verify_spec(SECRET, r).unwrap();
        assert_eq!((r.header("hookrelay-attempt").as_str(), r.header("hookrelay-route").as_str()), ("1", "r"));
        assert_eq!(r.json()["type"], "order.paid");
    }
    assert_eq!(stopped.left, 0, "every message acked");
    assert!(stopped.dead_letters.is_empty());
    assert_eq!(stopped.outcomes("b").await, [(1, Outcome::Delivered, Some(200))]);
    let logged = stopped.attempts("b").await;
    assert_eq!((logged[0].payload.as_ref(), logged[0].request_headers.as_ref()), (None, None), "no log_payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_logs_payloads_keeps_each_attempts_headers_as_sent_with_credentials_masked() {
    let rx = Receiver::start(|_, earlier| if earlier == 0 { (503, vec![]) } else { (200, vec![]) }).await;
    let route = RouteConfig::new("r")
        .events(["order.paid"])
        .url(rx.url("/logged"))
        .log_payload(true)
        .header("authorization", "Bearer s3cret-token")
        .header("x-api-key", "k3y")
        .header("x-tenant", "acme")
        .backoff([Duration::from_millis(100)]);
    let w = start(route, &[]).await;
    w.publish(&[order("h", json!(1))]).await;
    let got = requests(&rx, "/logged", 2).await;
    let stopped = w.stop().await;
    let attempts = stopped.attempts("h").await;
    assert_eq!(attempts.len(), 2);
    for (sent, logged) in got.iter().zip(&attempts) {
        // The receiver got the credentials; the log keeps every other header exactly as sent.
        assert_eq!(
            (sent.header("authorization").as_str(), sent.header("x-api-key").as_str()),
            ("Bearer s3cret-token", "k3y")
        );
        let text = logged.request_headers.as_deref().expect("the headers of a route that logs payloads");
        assert!(!text.contains("s3cret") && !text.contains("k3y"), "no credential in the log:\n{text}");
        let lines: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(": ").expect("name: value")).collect();
        let names: std::collections::BTreeSet<&str> = lines.iter().map(|(n, _)| *n).collect();
        let expected = [
            "authorization",
            "content-type",
            "hookrelay-attempt",
            "hookrelay-route",
            "hookrelay-sequence",
            "traceparent",
            "user-agent",
            "webhook-id",
            "webhook-signature",
            "webhook-timestamp",
            "x-api-key",
            "x-tenant",
        ];
        assert_eq!(names.into_iter().collect::<Vec<_>>(), expected, "every header sent, once:\n{text}");
        for (name, value) in lines {
            match name {
                "authorization" | "x-api-key" => assert_eq!(value, "<masked>"),
                _ => assert_eq!(value, sent.header(name), "{name}, as the receiver got it"),
            }
        }
    }
    assert_eq!(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2]);
}

/// The first attempt of every event gets a 503, the second a 200.
async fn retried_then_delivered(ordered: bool) {
    let rx = Receiver::start(|_, earlier| if earlier == 0 { (503, vec![]) } else { (200, vec![]) }).await;
    let route = RouteConfig::new("r")
        .events(["order.paid"])
        .url(rx.url("/flaky"))
        .ordered(ordered)
        .backoff([Duration::from_millis(100)]);
    let w = start(route, &[]).await;
    w.publish(&[order("x", json!(1)), order("y", json!(2))]).await;
    let got = requests(&rx, "/flaky", 4).await;
    let stopped = w.stop().await;
    for id in ["x", "y"] {
        let tries: Vec<&Received> = got.iter().filter(|r| r.id() == id).collect();
        let attempts: Vec<String> = tries.iter().map(|r| r.header("hookrelay-attempt")).collect();
        assert_eq!(attempts, ["1", "2"], "{id}: one failed attempt, then the one that delivered");
        let sequence = |r: &Received| r.header("hookrelay-sequence").parse::<u64>().unwrap();
        if ordered {
            assert_eq!(sequence(tries[0]), sequence(tries[1]), "{id}: retried in place, the same delivery");
        } else {
            assert!(sequence(tries[1]) > sequence(tries[0]), "{id}: a parked retry is delivered anew, later");
        }
        assert_eq!(tries[0].body, tries[1].body, "{id}: the same body on every attempt");
        assert_eq!(
            stopped.outcomes(id).await,
            [(1, Outcome::Retrying, Some(503)), (2, Outcome::Delivered, Some(200))],
            "{id}"
        );
    }
    if ordered {
        let order: Vec<(String, String)> = got.iter().map(|r| (r.id(), r.header("hookrelay-attempt"))).collect();
        let expected = [("x", "1"), ("x", "2"), ("y", "1"), ("y", "2")].map(|(i, a)| (i.to_string(), a.to_string()));
        assert_eq!(order, expected, "an ordered route retries in place: y waits behind x");
    }
    assert_eq!(stopped.left, 0, "every message acked, parked copies included");
    assert!(stopped.dead_letters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_parked_then_delivered_on_an_unordered_route() {
    retried_then_delivered(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_is_retried_in_place_then_delivered_on_an_ordered_route() {
    retried_then_delivered(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_exhausted_retries_and_refused_events_are_dead_lettered_then_acked() {
    let rx = Receiver::start(|r, _| match r.id().as_str() {
        "rejected" => (400, vec![]),
        _ => (503, vec![]),
    })
    .await;
    let route = RouteConfig::new("r")
        .events(["order.paid"])
        .url(rx.url("/down"))
        .max_attempts(2)
        .backoff([Duration::from_millis(50)]);
    let w = start(route, &[]).await;
    let events = [order("rejected", json!(1)), order("exhausted", json!(2)), order("schema", json!("two"))];
    w.publish(&events).await;
    let got = requests(&rx, "/down", 3).await;
    let stopped = w.stop().await;
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids.iter().filter(|i| *i == "rejected").count(), 1, "a 400 is not retried: {ids:?}");
    assert_eq!(ids.iter().filter(|i| *i == "exhausted").count(), 2, "max_attempts = 2: {ids:?}");
    assert!(!ids.contains(&"schema".to_string()), "an event refused by its schema is never sent");
    let mut dead: Vec<_> = stopped.dead_letters.iter().collect();
    dead.sort_by(|a, b| a.0.event_id.cmp(&b.0.event_id));
    let summary: Vec<(&str, &str, u32, Option<u16>)> =
        dead.iter().map(|(d, _)| (d.event_id.as_str(), d.reason.as_str(), d.attempts, d.last_status)).collect();
    assert_eq!(
        summary,
        [
            ("exhausted", "exhausted", 2, Some(503)),
            ("rejected", "rejected", 1, Some(400)),
            ("schema", "schema", 0, None)
        ]
    );
    for (d, body) in &dead {
        assert_eq!(d.route, "r");
        let published = events.iter().find(|e| e["id"] == d.event_id.as_str()).unwrap();
        assert_eq!(body.as_ref(), serde_json::to_vec(published).unwrap(), "the original body, untouched");
    }
    assert!(dead[2].0.details.as_deref().is_some_and(|v| v.contains("/n")), "schema violations by path");
    assert_eq!(stopped.left, 0, "every message acked once its dead letter was stored");
    assert_eq!(stopped.outcomes("exhausted").await, [(1, Outcome::Retrying, Some(503)), (2, Outcome::Dead, Some(503))]);
    assert_eq!(stopped.outcomes("rejected").await, [(1, Outcome::Dead, Some(400))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_filter_drops_is_acked_and_never_sent() {
    let rx = Receiver::ok().await;
    let route =
        RouteConfig::new("r").events(["order.paid"]).url(rx.url("/kept")).ordered(true).filter("plugins/positive.rhai");
    let w = start(route, &[("plugins/positive.rhai", "fn filter(event) { event.data.n > 0 }")]).await;
    w.publish(&[order("dropped", json!(0)), order("kept", json!(1))]).await;
    // Ordered: the dropped event settled before the kept one was taken.
    let got = rx.wait_distinct("/kept", 1, T).await;
    let stopped = w.stop().await;
    assert_eq!(got.iter().map(Received::id).collect::<Vec<_>>(), ["kept"]);
    assert_eq!(stopped.left, 0, "the dropped event was acked");
    assert!(stopped.dead_letters.is_empty(), "a filtered event is not a dead letter");
    assert!(stopped.outcomes("dropped").await.is_empty(), "no attempt was made");
}
