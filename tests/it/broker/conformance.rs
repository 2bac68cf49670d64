//! The conformance suite, written once against the `Broker` trait and run on both brokers
//! ([`on_both_brokers!`]): routing by pattern, unrouted events, redelivery in order after a close
//! or a crash, delays, dead letters and the delivery limit, single active consumers, concurrent
//! publishers and consumers.

use super::{
    QUIET, Subject, T, ack_all, declare, ids, numbered_ids, publish, publish_n, queue, quiet, take, wait_depth,
};
use crate::common::*;
use hookrelay::broker::{BrokerError, DEAD_LETTERS, Destination, Headers};
use hookrelay::runtime::indexer::from_message;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Messages settle out of order (an unordered route's do; one slow delivery holds the first):
/// every ack reaches the broker while the consumer stays open (RabbitMQ sends them in groups,
/// with `multiple` only through a settled prefix, and the others on their own after a moment),
/// and a close, once the broker took them or at once, gives back exactly the one not acked.
async fn acks_in_any_order_reach_the_broker_and_a_close_gives_back_only_the_rest(s: &Subject) {
    let b = s.connect().await;
    b.declare_base().await.unwrap();
    declare(b.as_ref(), "r", &["order.*"], false, 20).await;
    for (prefix, close_at_once) in [("m", false), ("n", true)] {
        publish_n(b.as_ref(), "order.paid", prefix, 40).await;
        let mut c = b.consume(&queue("r"), 40).await.unwrap();
        let got = take(&mut c, 40).await;
        // The first stays in hand; the others settle in a scrambled order, some of them in a row.
        let mut order: Vec<usize> = (1..40).collect();
        order.sort_by_key(|i| (i * 17) % 41);
        for i in order {
            got[i].ack().await.unwrap();
        }
        if let (false, Subject::Rabbitmq(vh)) = (close_at_once, s) {
            // The broker's statistics lag by a few seconds.
            let unacked = async || vh.queue(&queue("r"))["messages_unacknowledged"].as_u64();
            eventually("only the first unacked while the consumer is open", T, unacked, |n| *n == Some(1)).await;
        }
        c.close().await;
        wait_depth(b.as_ref(), "r", 1, "only the message not acked is back").await;
        let mut c = b.consume(&queue("r"), 10).await.unwrap();
        let again = take(&mut c, 1).await;
        assert_eq!(ids(&again), numbered_ids(prefix, 0..1));
        ack_all(&again).await;
        quiet(&mut c, "acked messages never come back").await;
        c.close().await;
        wait_depth(b.as_ref(), "r", 0, "all acked").await;
    }
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
    acks_in_any_order_reach_the_broker_and_a_close_gives_back_only_the_rest,
    a_crash_loses_nothing_and_keeps_order,
    delays_are_respected,
    dead_letters_carry_their_headers,
    the_delivery_limit_dead_letters_with_its_reason,
    ordered_queues_have_a_single_active_consumer,
    concurrent_publishers_each_message_exactly_once,
    two_consumers_share_an_unordered_queue_each_message_once_overall,
);
