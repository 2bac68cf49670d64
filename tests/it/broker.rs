//! One broker conformance suite, run on both implementations: RabbitMQ (a vhost per test) and
//! the embedded broker (a temp dir per test). Then what only the embedded broker has: a real
//! child process killed with SIGKILL in the middle of a burst, the file lock, the config switch,
//! and the router end to end on it.

use crate::common::*;
use hookrelay::broker::amqp::AmqpBroker;
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, BrokerError, Consumer, DEAD_LETTERS, Destination, Headers, Message, RouteTopology};
use hookrelay::config::files::EmbeddedSync;
use hookrelay::runtime::indexer::from_message;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
/// Long enough for a wrongly delivered message to show up.
const QUIET: Duration = Duration::from_millis(700);

/// A broker under test, and how to "crash" it.
enum Subject {
    Rabbitmq(Vhost),
    Embedded { dir: tempfile::TempDir, root: tokio::sync::Mutex<Option<EmbeddedBroker>> },
}

impl Subject {
    fn rabbitmq() -> Self {
        Self::Rabbitmq(Vhost::new())
    }

    fn embedded() -> Self {
        Self::Embedded { dir: tempfile::tempdir().unwrap(), root: tokio::sync::Mutex::new(None) }
    }

    /// A new connection.
    async fn connect(&self) -> Arc<dyn Broker> {
        match self {
            Self::Rabbitmq(vh) => {
                Arc::new(AmqpBroker::connect(&vh.url, "hookrelay.events", "conformance").await.unwrap())
            }
            Self::Embedded { dir, root } => {
                let mut root = root.lock().await;
                if root.is_none() {
                    let path = dir.path().join("queue.db");
                    *root = Some(EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap());
                }
                Arc::new(root.as_ref().unwrap().connection())
            }
        }
    }

    /// The process dies, or its connection does: RabbitMQ closes every connection from the
    /// broker's side; the embedded broker's engine goes (the caller has dropped its connections,
    /// consumers and messages) and the next [`Subject::connect`] reopens the file.
    async fn crash(&self) {
        match self {
            Self::Rabbitmq(vh) => {
                // The management API lists a connection once its stats are in.
                eventually(
                    "a connection to close (connections closed)",
                    T,
                    async || vh.close_connections(),
                    |n| *n > 0,
                )
                .await;
            }
            Self::Embedded { root, .. } => {
                root.lock().await.take();
            }
        }
    }
}

fn queue(route: &str) -> String {
    format!("hookrelay.route.{route}")
}

async fn declare(b: &dyn Broker, route: &str, patterns: &[&str], ordered: bool, limit: u32) {
    let q = queue(route);
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let tiers = if ordered { vec![] } else { vec![Duration::from_secs(1)] };
    let t = RouteTopology { name: route, queue: &q, patterns: &patterns, ordered, delivery_limit: limit, tiers };
    b.declare_route(&t).await.unwrap();
}

async fn publish(b: &dyn Broker, key: &str, id: &str) {
    let body = serde_json::to_vec(&json!({"id": id, "type": key})).unwrap();
    b.publish(Destination::Events { routing_key: key }, &body, &Headers::default(), Some(id)).await.unwrap();
}

async fn publish_n(b: &dyn Broker, key: &str, prefix: &str, n: usize) {
    for i in 0..n {
        publish(b, key, &format!("{prefix}-{i}")).await;
    }
}

/// The next `n` messages (panics after [`T`]).
async fn take(c: &mut Box<dyn Consumer>, n: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(T, c.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            other => panic!("expected {n} messages, got {}, then {other:?}", out.len()),
        }
    }
    out
}

/// Asserts nothing arrives for a while.
async fn quiet(c: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(m) = tokio::time::timeout(QUIET, c.next()).await {
        panic!("{what}: expected nothing, got {m:?}");
    }
}

fn ids(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| m.message_id.clone().unwrap_or_default()).collect()
}

fn numbered_ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

async fn ack_all(ms: &[Message]) {
    for m in ms {
        m.ack().await.unwrap();
    }
}

/// Waits until `route`'s queue holds `n` ready messages. RabbitMQ applies acks and returns
/// asynchronously (an ack has no reply), so its count catches up a moment later.
async fn wait_depth(b: &dyn Broker, route: &str, n: u64, what: &str) {
    let depth = async || b.queue_depth(&queue(route)).await.unwrap();
    eventually(format!("{what}: {n} ready messages in {route}, not"), T, depth, |d| *d == n).await;
}

// ---------------------------------------------------------------------------------------------
// The suite.

async fn routes_by_pattern(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "star", &["order.*"], false, 20).await;
    declare(b.as_ref(), "all", &["#"], false, 20).await;
    declare(b.as_ref(), "exact", &["order.paid"], false, 20).await;
    declare(b.as_ref(), "users", &["user.*"], false, 20).await;
    // Two patterns that both match still give one copy.
    declare(b.as_ref(), "both", &["order.*", "order.paid"], false, 20).await;
    let mut h = Headers::default();
    h.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    h.set("n", 5);
    b.publish(Destination::Events { routing_key: "order.paid" }, b"{\"id\":\"1\"}", &h, Some("1")).await.unwrap();
    publish(b.as_ref(), "order.created", "2").await;
    publish(b.as_ref(), "user.created", "3").await;
    publish(b.as_ref(), "order.paid.late", "4").await;
    for (route, want) in [
        ("star", vec!["1", "2"]),
        ("all", vec!["1", "2", "3", "4"]),
        ("exact", vec!["1"]),
        ("users", vec!["3"]),
        ("both", vec!["1", "2"]),
    ] {
        wait_depth(b.as_ref(), route, want.len() as u64, "published").await;
        let mut c = b.consume(&queue(route), 10).await.unwrap();
        let got = take(&mut c, want.len()).await;
        assert_eq!(ids(&got), want, "route {route}");
        quiet(&mut c, route).await;
        let first = &got[0];
        if first.message_id.as_deref() == Some("1") {
            assert_eq!(first.routing_key, "order.paid");
            assert_eq!(&first.body[..], b"{\"id\":\"1\"}");
            assert_eq!(first.headers.str("traceparent"), h.str("traceparent"), "headers kept");
            assert_eq!(first.headers.u64("n"), Some(5));
        }
        assert!(got.iter().all(|m| !m.redelivered), "first deliveries are not redelivered");
        ack_all(&got).await;
        c.close().await;
        wait_depth(b.as_ref(), route, 0, "acked messages are gone").await;
    }
    b.close().await;
}

async fn unrouted_is_an_error_unbind_stops_routing_declare_is_idempotent(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    let body = b"{}";
    let none = b.publish(Destination::Events { routing_key: "nobody.listens" }, body, &Headers::default(), None).await;
    assert!(matches!(none, Err(BrokerError::NotRouted(_))), "{none:?}");
    declare(b.as_ref(), "r", &["order.*", "user.*"], false, 20).await;
    declare(b.as_ref(), "r", &["order.*", "user.*"], false, 20).await;
    declare(b.as_ref(), "r", &["order.*"], false, 20).await;
    publish(b.as_ref(), "user.created", "u1").await;
    b.unbind(&queue("r"), &["user.*".to_string()]).await.unwrap();
    let after = b.publish(Destination::Events { routing_key: "user.created" }, body, &Headers::default(), None).await;
    assert!(matches!(after, Err(BrokerError::NotRouted(_))), "unbound: {after:?}");
    publish(b.as_ref(), "order.paid", "o1").await;
    wait_depth(b.as_ref(), "r", 2, "one copy each, however often declared").await;
    let mut c = b.consume(&queue("r"), 10).await.unwrap();
    let got = take(&mut c, 2).await;
    assert_eq!(ids(&got), ["u1", "o1"]);
    ack_all(&got).await;
    // One queue directly (a replay).
    b.publish(Destination::Queue(&queue("r")), b"replayed", &Headers::default(), Some("again")).await.unwrap();
    let got = take(&mut c, 1).await;
    assert_eq!(ids(&got), ["again"]);
    assert_eq!(&got[0].body[..], b"replayed");
    ack_all(&got).await;
    c.close().await;
    b.close().await;
}

async fn close_without_ack_gives_back_in_order(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "r", &["order.*"], false, 20).await;
    publish_n(b.as_ref(), "order.paid", "m", 10).await;
    let mut c = b.consume(&queue("r"), 10).await.unwrap();
    let got = take(&mut c, 10).await;
    assert_eq!(ids(&got), numbered_ids("m", 0..10));
    ack_all(&got[..3]).await;
    c.close().await;
    wait_depth(b.as_ref(), "r", 7, "unacked messages are back").await;
    let mut c = b.consume(&queue("r"), 10).await.unwrap();
    let again = take(&mut c, 7).await;
    assert_eq!(ids(&again), numbered_ids("m", 3..10), "given back in order");
    assert!(again.iter().all(|m| m.redelivered), "marked redelivered");
    ack_all(&again).await;
    quiet(&mut c, "acked messages never come back").await;
    c.close().await;
    wait_depth(b.as_ref(), "r", 0, "all acked").await;
    b.close().await;
}

async fn a_crash_loses_nothing_and_keeps_order(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "r", &["order.*"], true, 20).await;
    publish_n(b.as_ref(), "order.paid", "m", 20).await;
    let mut c = b.consume(&queue("r"), 5).await.unwrap();
    let got = take(&mut c, 5).await;
    assert_eq!(ids(&got), numbered_ids("m", 0..5));
    ack_all(&got[..2]).await;
    // Crash: nothing is closed, nothing more is acked.
    s.crash().await;
    drop((got, c, b));
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "r", &["order.*"], true, 20).await;
    wait_depth(b.as_ref(), "r", 18, "every unacked message is still there").await;
    let mut c = b.consume(&queue("r"), 50).await.unwrap();
    let after = take(&mut c, 18).await;
    assert_eq!(ids(&after), numbered_ids("m", 2..20), "in publish order");
    let redelivered: Vec<bool> = after.iter().map(|m| m.redelivered).collect();
    // m2..m4 were held; the two acks let m5 and m6 go out too, perhaps before the crash.
    assert_eq!(redelivered[..3], [true, true, true], "delivered before the crash");
    assert!(redelivered[5..].iter().all(|r| !r), "never delivered before: {redelivered:?}");
    ack_all(&after).await;
    c.close().await;
    b.close().await;
}

async fn delays_are_respected(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "r", &["order.*"], false, 20).await;
    let delay = Duration::from_millis(1000);
    let mut h = Headers::default();
    h.set("hookrelay-attempt", 2);
    let sent = Instant::now();
    b.publish_delayed(&queue("r"), Duration::from_secs(1), b"later", &h, delay).await.unwrap();
    publish(b.as_ref(), "order.paid", "now").await;
    let mut c = b.consume(&queue("r"), 10).await.unwrap();
    let first = take(&mut c, 1).await;
    assert_eq!(ids(&first), ["now"], "the delayed message does not overtake");
    ack_all(&first).await;
    let later = take(&mut c, 1).await;
    let waited = sent.elapsed();
    assert!(waited >= delay, "delivered after {waited:?}, before its delay of {delay:?}");
    assert_eq!(&later[0].body[..], b"later");
    assert_eq!(later[0].headers.u64("hookrelay-attempt"), Some(2), "headers kept");
    assert!(!later[0].redelivered);
    ack_all(&later).await;
    // A delayed message survives a crash and still waits.
    let sent = Instant::now();
    b.publish_delayed(&queue("r"), Duration::from_secs(1), b"after crash", &h, delay).await.unwrap();
    s.crash().await;
    drop((later, first, c, b));
    let b = s.connect().await;
    let mut c = b.consume(&queue("r"), 10).await.unwrap();
    let got = take(&mut c, 1).await;
    assert!(sent.elapsed() >= delay, "delivered after {:?}, before its delay", sent.elapsed());
    assert_eq!(&got[0].body[..], b"after crash");
    ack_all(&got).await;
    c.close().await;
    b.close().await;
}

async fn dead_letters_carry_their_headers(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    let mut h = Headers::default();
    h.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    h.set("hookrelay-route", "erp");
    h.set("hookrelay-reason", "rejected");
    h.set("hookrelay-error", "HTTP 400");
    h.set("hookrelay-last-status", 400);
    h.set("hookrelay-attempt", 1);
    let body = br#"{"id":"ev-1","type":"order.paid","source":"t","specversion":"1.0"}"#;
    b.publish(Destination::DeadLetters { route: "erp" }, body, &h, Some("dl-1")).await.unwrap();
    let mut c = b.consume(DEAD_LETTERS, 10).await.unwrap();
    let got = take(&mut c, 1).await;
    assert_eq!(got[0].routing_key, "erp");
    let dl = from_message(&got[0]);
    assert_eq!((dl.id.as_str(), dl.route.as_str(), dl.reason.as_str()), ("dl-1", "erp", "rejected"));
    assert_eq!((dl.error.as_str(), dl.last_status, dl.attempts), ("HTTP 400", Some(400), 1));
    assert_eq!((dl.event_id.as_str(), dl.event_type.as_str()), ("ev-1", "order.paid"));
    assert_eq!(dl.body, body);
    assert!(dl.headers.contains("traceparent"), "producer headers kept: {}", dl.headers);
    ack_all(&got).await;
    c.close().await;
    b.close().await;
}

async fn the_delivery_limit_dead_letters_with_its_reason(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "poison", &["order.*"], true, 2).await;
    publish(b.as_ref(), "order.paid", "p").await;
    // Deliveries end without an ack: a close, a crash, a close, ... (limit 2: three deliveries).
    let mut deliveries = 0;
    let mut b = b;
    loop {
        let mut c = b.consume(&queue("poison"), 1).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(3), c.next()).await {
            Ok(Some(Ok(m))) => {
                deliveries += 1;
                assert_eq!(m.message_id.as_deref(), Some("p"));
                assert_eq!(m.redelivered, deliveries > 1);
                assert!(deliveries <= 3, "delivered {deliveries} times, beyond the limit");
                if deliveries == 2 {
                    s.crash().await;
                    drop((m, c, b));
                    b = s.connect().await;
                } else {
                    c.close().await;
                }
            }
            _ => {
                c.close().await;
                break;
            }
        }
    }
    assert_eq!(deliveries, 3, "limit 2: a first delivery and two more");
    let mut dl = b.consume(DEAD_LETTERS, 10).await.unwrap();
    let got = take(&mut dl, 1).await;
    let d = from_message(&got[0]);
    assert_eq!((d.reason.as_str(), d.route.as_str()), ("delivery_limit", "poison"));
    assert_eq!(d.body, br#"{"id":"p","type":"order.paid"}"#);
    assert!(!d.error.is_empty());
    wait_depth(b.as_ref(), "poison", 0, "dead-lettered").await;
    ack_all(&got).await;
    dl.close().await;
    b.close().await;
}

async fn ordered_queues_have_a_single_active_consumer(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "fifo", &["order.*"], true, 20).await;
    publish_n(b.as_ref(), "order.paid", "m", 6).await;
    let mut first = b.consume(&queue("fifo"), 10).await.unwrap();
    let got = take(&mut first, 2).await;
    assert_eq!(ids(&got), numbered_ids("m", 0..2));
    let other = s.connect().await;
    let mut second = other.consume(&queue("fifo"), 10).await.unwrap();
    quiet(&mut second, "a second consumer of an ordered queue waits").await;
    got[0].ack().await.unwrap();
    first.close().await;
    let taken_over = take(&mut second, 5).await;
    assert_eq!(ids(&taken_over), numbered_ids("m", 1..6), "the next consumer continues in order");
    assert!(taken_over[0].redelivered);
    ack_all(&taken_over).await;
    second.close().await;
    other.close().await;
    b.close().await;
}

async fn concurrent_publishers_each_message_exactly_once(s: &Subject) {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 250;
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "busy", &["order.*"], false, 20).await;
    let mut c = b.consume(&queue("busy"), 64).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let b = if p % 2 == 0 { b.clone() } else { s.connect().await };
        tasks.spawn(async move { publish_n(b.as_ref(), "order.paid", &format!("p{p}"), EACH).await });
    }
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut last: Vec<Option<usize>> = vec![None; PUBLISHERS];
    let mut acks = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS * EACH {
        let m = take(&mut c, 1).await.pop().unwrap();
        let id = m.message_id.clone().unwrap();
        assert!(!m.redelivered, "{id} redelivered while nothing crashed");
        let (p, i) = id[1..].split_once('-').unwrap();
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert!(last[p].is_none_or(|l| l < i), "publisher {p}: {i} after {:?}", last[p]);
        last[p] = Some(i);
        *seen.entry(id).or_default() += 1;
        acks.spawn(async move { m.ack().await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    while let Some(r) = acks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(seen.len(), PUBLISHERS * EACH);
    assert!(seen.values().all(|n| *n == 1));
    quiet(&mut c, "nothing twice").await;
    wait_depth(b.as_ref(), "busy", 0, "all acked").await;
    c.close().await;
    b.close().await;
}

async fn two_consumers_share_an_unordered_queue_each_message_once_overall(s: &Subject) {
    const N: usize = 200;
    const PREFETCH: u16 = 8;
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "shared", &["order.*"], false, 20).await;
    let other = s.connect().await;
    let consumers = [
        b.consume(&queue("shared"), PREFETCH).await.unwrap(),
        other.consume(&queue("shared"), PREFETCH).await.unwrap(),
    ];
    let seen: Arc<std::sync::Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    // Cancelled once both consumers have a message. Until then neither acks: the first one to
    // get messages soon holds all its prefetch allows and gets no more, so the broker has to feed
    // the other.
    let both = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (who, mut c) in consumers.into_iter().enumerate() {
        let (seen, stop, both) = (seen.clone(), stop.clone(), both.clone());
        tasks.spawn(async move {
            let mut held = Vec::new();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = both.cancelled(), if !held.is_empty() => None,
                    m = c.next() => Some(m),
                };
                if let Some(next) = next {
                    let m = match next {
                        Some(Ok(m)) => m,
                        other => panic!("consumer {who}: {other:?}"),
                    };
                    assert!(!m.redelivered, "{:?} redelivered while nothing crashed", m.message_id);
                    let mut seen = seen.lock().unwrap();
                    seen.push((who, m.message_id.clone().unwrap_or_default()));
                    if seen.iter().any(|(w, _)| *w != who) {
                        both.cancel();
                    }
                    held.push(m);
                }
                if both.is_cancelled() {
                    ack_all(&held).await;
                    held.clear();
                }
            }
            assert!(held.is_empty(), "consumer {who} still holds {} messages", held.len());
            c.close().await;
        });
    }
    publish_n(b.as_ref(), "order.paid", "m", N).await;
    let consumed = async || seen.lock().unwrap().clone();
    eventually(format!("{N} messages consumed; (consumer, id)"), T, consumed, |now| now.len() >= N).await;
    tokio::time::sleep(QUIET).await;
    stop.cancel();
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let mut got: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    got.sort_by_key(|id| id[2..].parse::<usize>().unwrap());
    assert_eq!(got, numbered_ids("m", 0..N), "every message exactly once overall");
    let per: Vec<usize> = (0..2).map(|who| seen.iter().filter(|(w, _)| *w == who).count()).collect();
    assert!(per.iter().all(|n| *n > 0), "both consumers got some: {per:?}");
    eprintln!("{N} messages shared by two consumers: {per:?} on {}", b.kind());
    wait_depth(b.as_ref(), "shared", 0, "all acked").await;
    other.close().await;
    b.close().await;
}

on_both_brokers!(&super::Subject::rabbitmq(), &super::Subject::embedded();
    routes_by_pattern,
    unrouted_is_an_error_unbind_stops_routing_declare_is_idempotent,
    close_without_ack_gives_back_in_order,
    a_crash_loses_nothing_and_keeps_order,
    delays_are_respected,
    dead_letters_carry_their_headers,
    the_delivery_limit_dead_letters_with_its_reason,
    ordered_queues_have_a_single_active_consumer,
    concurrent_publishers_each_message_exactly_once,
    two_consumers_share_an_unordered_queue_each_message_once_overall,
);

// ---------------------------------------------------------------------------------------------
// The embedded broker in a real process, killed with SIGKILL in the middle of a burst.

const BURST_FILE: &str = "HOOKRELAY_TEST_BURST_FILE";

/// Publishes from four tasks as fast as it can while a consumer acks, printing each id once its
/// publish or ack is confirmed, until killed.
#[test]
#[ignore = "the child process of embedded_sigkill_mid_burst_loses_nothing, which starts it and kills it"]
fn embedded_burst_child() {
    let path = PathBuf::from(std::env::var(BURST_FILE).expect("started by embedded_sigkill_mid_burst_loses_nothing"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let b: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap());
        b.declare_base().await.unwrap();
        declare(b.as_ref(), "burst", &["burst.*"], true, 20).await;
        println!("ready");
        let mut tasks = tokio::task::JoinSet::new();
        let c = b.clone();
        tasks.spawn(async move {
            let mut c = c.consume(&queue("burst"), 32).await.unwrap();
            while let Some(Ok(m)) = c.next().await {
                let id = m.message_id.clone().unwrap();
                println!("received {id}");
                m.ack().await.unwrap();
                println!("acked {id}");
            }
        });
        for p in 0..4 {
            let b = b.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    publish(b.as_ref(), "burst.event", &format!("p{p}-{i}")).await;
                    println!("published p{p}-{i}");
                }
            });
        }
        tasks.join_next().await;
    });
}

#[test]
fn embedded_sigkill_mid_burst_loses_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["broker::embedded_burst_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(BURST_FILE, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut published, mut received, mut acked) =
        (std::collections::HashSet::new(), std::collections::HashSet::new(), std::collections::HashSet::new());
    let mut killed = false;
    for line in lines {
        let line = line.unwrap();
        if line == "ready" {
            // While the child owns the file, nobody else may open it, and the refusal says who has it.
            let refused = rt.block_on(EmbeddedBroker::open(&path, EmbeddedSync::Normal)).unwrap_err().to_string();
            assert!(refused.contains("in use by another hookrelay"), "{refused}");
            assert!(refused.contains(&format!("process {}", child.id())), "names the owner: {refused}");
            assert!(refused.contains(&path.display().to_string()), "names the file: {refused}");
            assert!(refused.contains("[embedded] path"), "says what to do: {refused}");
            continue;
        }
        let Some((what, id)) = line.split_once(' ') else { continue };
        match what {
            "published" => published.insert(id.to_string()),
            "received" => received.insert(id.to_string()),
            "acked" => acked.insert(id.to_string()),
            _ => continue,
        };
        if !killed && published.len() >= 3000 && acked.len() >= 100 {
            // Mid-burst: the child is publishing and acking as this lands.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child ended before the burst was under way: {status}");
    rt.block_on(async {
        let b = EmbeddedBroker::open(&path, EmbeddedSync::Normal).await.unwrap();
        let n = b.queue_depth(&queue("burst")).await.unwrap() as usize;
        let mut c = b.consume(&queue("burst"), 500).await.unwrap();
        let mut left = Vec::new();
        while left.len() < n {
            let m = take(&mut c, 1).await.pop().unwrap();
            m.ack().await.unwrap();
            left.push(m);
        }
        quiet(&mut c, "the depth counted everything").await;
        let left_ids: std::collections::HashSet<String> = ids(&left).into_iter().collect();
        assert_eq!(left_ids.len(), n, "nothing twice");
        // A message the child received may have been acked with the kill landing before its
        // "acked" line: received and gone is not lost. Confirmed, never received, and gone is.
        let lost: Vec<&String> =
            published.iter().filter(|id| !received.contains(*id) && !left_ids.contains(*id)).collect();
        assert!(lost.is_empty(), "{} confirmed publishes lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
        // The child acks one message at a time: at most one ack can have committed unprinted.
        let unprinted: Vec<&String> =
            received.iter().filter(|id| !acked.contains(*id) && !left_ids.contains(*id)).collect();
        assert!(unprinted.len() <= 1, "received, never confirmed acked, and gone: {unprinted:?}");
        let back: Vec<&String> = acked.iter().filter(|id| left_ids.contains(*id)).collect();
        assert!(back.is_empty(), "confirmed acks undone: {back:?}");
        let mut last: [Option<u64>; 4] = [None; 4];
        for m in &left {
            let id = m.message_id.clone().unwrap();
            let (p, i) = id[1..].split_once('-').unwrap();
            let (p, i): (usize, u64) = (p.parse().unwrap(), i.parse().unwrap());
            assert!(last[p].is_none_or(|l| l < i), "publisher {p}: {i} after {:?}: order lost", last[p]);
            last[p] = Some(i);
            if received.contains(&id) {
                assert!(m.redelivered, "{id} was delivered before the kill, so it is redelivered");
            }
        }
        eprintln!(
            "killed after {} confirmed publishes and {} acks; {} messages waited in the file",
            published.len(),
            acked.len(),
            n
        );
        c.close().await;
        b.close().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Choosing the broker in hookrelay.toml.

#[test]
fn no_broker_section_means_the_embedded_broker() {
    use hookrelay::config::{BrokerKind, files::EmbeddedFile};
    let kind = |main: &str| {
        let cfg = ConfigDir::with_main_text(main);
        let s = hookrelay::config::load(cfg.path()).unwrap();
        // A relative queue file is placed in the data directory, by default data/ in the config.
        let kind = match s.broker_kind.clone() {
            BrokerKind::Embedded(mut e) => {
                if let Ok(rel) = e.path.strip_prefix(cfg.path().join("data")) {
                    e.path = rel.to_path_buf();
                }
                BrokerKind::Embedded(e)
            }
            other => other,
        };
        (kind, s.broker.prefetch, s.broker.delivery_limit, s.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    };
    let default = EmbeddedFile { path: "hookrelay-queue.db".into(), sync: EmbeddedSync::Normal };
    assert_eq!(
        kind("version = 1\n"),
        (BrokerKind::Embedded(default), 64, 20, vec![]),
        "router settings keep their defaults"
    );
    assert_eq!(
        kind("version = 1\n[broker]\n").0,
        BrokerKind::Rabbitmq,
        "an empty [broker] is RabbitMQ with its defaults"
    );
    assert_eq!(kind("[broker]\nprefetch = 10\n").1, 10);
    let full = EmbeddedFile { path: "/var/lib/hookrelay/queue.db".into(), sync: EmbeddedSync::Full };
    assert_eq!(
        kind("[embedded]\npath = \"/var/lib/hookrelay/queue.db\"\nsync = \"full\"\n").0,
        BrokerKind::Embedded(full)
    );
    let (both, _, _, warnings) = kind("version = 1\n[broker]\nurl = \"amqp://h/%2f\"\n\n[embedded]\nsync = \"full\"\n");
    assert_eq!(both, BrokerKind::Rabbitmq);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("hookrelay.toml:5:1: [embedded] is ignored: [broker] is present"), "{warnings:?}");
}

#[test]
fn embedded_section_errors_say_where() {
    for (main, want) in [
        (
            "version = 1\n[embedded]\nsyncc = \"full\"\n",
            "hookrelay.toml:3:1: unknown field `syncc` (did you mean `sync`?)",
        ),
        (
            "[embedded]\nsync = \"sometimes\"\n",
            "hookrelay.toml:2:8: unknown variant `sometimes`, expected `normal` or `full`",
        ),
        ("[embedded]\npath = \"\"\n", "hookrelay.toml:1:1: [embedded] path must name a file"),
    ] {
        let cfg = ConfigDir::with_main_text(main);
        let errors = hookrelay::config::load(cfg.path()).unwrap_err().to_string();
        assert!(errors.contains(want), "{main:?}: {errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_uses_the_embedded_file_unless_the_environment_names_rabbitmq() {
    let vh = Vhost::new();
    let cfg = ConfigDir::with_main_text("version = 1\n");
    let cwd = tempfile::tempdir().unwrap();
    let publish = |env: Option<&str>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["publish", "--type", "order.paid", "--data", "{\"n\": 1}", "--id", "cli-1", "--config"])
            .arg(cfg.path())
            .current_dir(cwd.path());
        if let Some(url) = env {
            cmd.env("HOOKRELAY_BROKER__URL", url);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // No [broker]: the embedded broker's file in the data directory, where no route is bound yet.
    let (code, text) = publish(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no route subscribes"), "{text}");
    let file = cfg.path().join("data/hookrelay-queue.db");
    assert!(file.exists(), "the queue file is created in the data directory");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "nothing in the working directory");
    // With a route's queue declared in the file, the event waits there for the router.
    {
        let b = EmbeddedBroker::open(&file, EmbeddedSync::Normal).await.unwrap();
        declare(&b, "r", &["order.*"], false, 20).await;
        b.shutdown().await;
    }
    let (code, text) = publish(None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("cli-1\n"), "the confirmed id on stdout: {text}");
    {
        let b = EmbeddedBroker::open(&file, EmbeddedSync::Normal).await.unwrap();
        assert_eq!(b.queue_depth(&queue("r")).await.unwrap(), 1);
        // While this process owns the file, the command is refused, and says why.
        let (code, text) = publish(None);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("in use by another hookrelay") && text.contains("hookrelay-queue.db"), "{text}");
        b.shutdown().await;
    }
    // HOOKRELAY_BROKER__URL makes [broker] present: RabbitMQ.
    let rabbit = AmqpBroker::connect(&vh.url, "hookrelay.events", "test").await.unwrap();
    rabbit.declare_base().await.unwrap();
    declare(&rabbit, "r", &["order.*"], false, 20).await;
    let (code, text) = publish(Some(&vh.url));
    assert_eq!(code, Some(0), "{text}");
    wait_depth(&rabbit, "r", 1, "published to RabbitMQ").await;
    rabbit.close().await;
}

/// Publishes one CloudEvent (routing key = type) with its id.
async fn publish_event(b: &dyn Broker, ev: &serde_json::Value) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(ev).unwrap();
    let to = Destination::Events { routing_key: ev["type"].as_str().unwrap() };
    b.publish(to, &body, &Headers::default(), ev["id"].as_str()).await
}

// ---------------------------------------------------------------------------------------------
// The router on the embedded broker, in process (producers will reach a running router's
// embedded broker through the ingest API).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_delivers_signed_webhooks_from_the_embedded_broker() {
    use hookrelay::broker::H_REASON;
    use hookrelay::runtime::ReloadOutcome;
    // Every first attempt on /flaky answers 503: its retry goes through a delayed publish.
    let rx =
        Receiver::start(|r, earlier| if r.path == "/flaky" && earlier == 0 { (503, vec![]) } else { (200, vec![]) })
            .await;
    let qdir = tempfile::tempdir().unwrap();
    let qfile = qdir.path().join("queue.db");
    let cfg = ConfigDir::with(
        MainConfig::new().version(1).embedded(&qfile).loopback_targets().shutdown_grace(Duration::from_secs(5)),
    );
    cfg.file("secret", SECRET);
    let route = |name: &str, events: &str, path: &str| {
        RouteConfig::new(name).events([events]).url(rx.url(path)).signing(Signing::File("secret".into()))
    };
    cfg.route(&route("erp", "order.*", "/erp").ordered(true));
    cfg.route(&route("flaky", "order.paid", "/flaky").backoff([Duration::from_millis(300)]));
    let snapshot = hookrelay::config::load(cfg.path()).unwrap();
    assert!(matches!(snapshot.broker_kind, hookrelay::config::BrokerKind::Embedded(_)));
    let store = cfg.store().await;
    let log_stop = tokio_util::sync::CancellationToken::new();
    let (log, log_writer) = hookrelay::store::log::AttemptLog::start(store.clone(), log_stop.clone());
    let router = hookrelay::runtime::Runtime::new(snapshot, Some((store, log)));
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Router::run's future is not `Send` (a borrow across its declaration stream), as in main:
    // run it beside the test instead of spawning it.
    let test = async {
        // The same engine as the router's: connect hands out connections to one instance.
        let s = router.snapshot();
        let b = hookrelay::broker::connect(s.broker_endpoint(), "test").await.unwrap();
        assert_eq!(b.kind(), "embedded");
        let mut events = numbered("e", 100);
        events.push(event("order.paid", "bad", json!({"n": "one"})));
        // The first publish may come before the router has declared its routes.
        let (first, rest) = events.split_first().unwrap();
        let routed = |r: &Result<(), BrokerError>| !matches!(r, Err(BrokerError::NotRouted(_)));
        let publish_first = async || publish_event(b.as_ref(), first).await;
        eventually("the router to declare its routes", T, publish_first, routed).await.unwrap();
        for ev in rest {
            publish_event(b.as_ref(), ev).await.unwrap();
        }
        let erp = rx.wait_distinct("/erp", 100, T).await;
        let ns: Vec<i64> = erp.iter().map(|r| r.json()["data"]["n"].as_i64().unwrap()).collect();
        assert_eq!(ns, (0..100).collect::<Vec<_>>(), "the ordered route keeps publish order");
        for r in &erp {
            verify_spec(SECRET, r).unwrap();
        }
        let flaky = rx.wait_distinct("/flaky", 100, T).await;
        rx.wait_until("/flaky", "100 retries", T, |got| {
            got.iter().filter(|r| r.header("hookrelay-attempt") == "2").count() >= 100
        })
        .await;
        assert!(flaky.iter().all(|r| verify_spec(SECRET, r).is_ok()));
        let dead = cfg.wait_dead_letters(2, T).await;
        assert!(dead.iter().all(|d| d.reason == "schema" && d.event_id == "bad"), "{dead:?}");
        let mut routes: Vec<&str> = dead.iter().map(|d| d.route.as_str()).collect();
        routes.sort();
        assert_eq!(routes, ["erp", "flaky"]);
        assert!(dead.iter().all(|d| d.header(H_REASON).is_some()));

        // A reload that adds a route declares it on the embedded broker and starts it.
        cfg.route(&route("late", "order.created", "/late"));
        let outcome = router.reload(hookrelay::config::load(cfg.path()).unwrap()).await;
        assert!(matches!(&outcome, ReloadOutcome::Applied { added, .. } if added == &["late"]), "{outcome:?}");
        let created = serde_json::to_vec(&event("order.created", "c1", json!({}))).unwrap();
        b.publish(Destination::Events { routing_key: "order.created" }, &created, &Headers::default(), Some("c1"))
            .await
            .unwrap();
        rx.wait_distinct("/late", 1, T).await;
        // Moving to RabbitMQ takes a restart.
        cfg.set_main(cfg.main().rabbitmq_defaults());
        let outcome = router.reload(hookrelay::config::load(cfg.path()).unwrap()).await;
        let ReloadOutcome::Rejected { errors } = &outcome else { panic!("{outcome:?}") };
        assert!(errors.iter().any(|e| e.contains("apply at start only")), "{errors:?}");

        shutdown.cancel();
        b
    };
    let ((), b) = tokio::join!(router.clone().run(shutdown.clone()), test);
    for route in ["erp", "flaky"] {
        wait_depth(b.as_ref(), route, 0, "everything delivered and acked").await;
    }
    assert_eq!(b.queue_depth(DEAD_LETTERS).await.unwrap(), 0, "dead letters indexed and acked");
    b.close().await;
    log_stop.cancel();
    let _ = log_writer.await;
}
