//! Acks go in groups: an ordered route's are pipelined (the worker takes the next message
//! without waiting for the previous one's ack; the embedded broker commits them in groups), and
//! on RabbitMQ every route's go through its consumer's window (one `basic.ack` through the last
//! of several settled messages), never held while a later event takes its time. What a receiver
//! sees when the router is killed or stopped mid-stream, on both brokers, ordered or not:
//! killed, the only repeats are the last events before the kill, whose acks the broker had not
//! taken (on an ordered route sent again first and in order); stopped, nothing is repeated.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    sigkill_mid_stream_repeats_only_the_last_events_before_the_kill_then_goes_on_in_order,
    sigterm_mid_stream_leaves_nothing_delivered_unacked,
    unordered_sigkill_mid_stream_loses_nothing_and_repeats_a_few,
    unordered_sigterm_mid_stream_leaves_nothing_delivered_unacked,
);

/// The index of a `<prefix>-<i>` event id.
fn index(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

/// Every request's event index, in arrival order, duplicates included.
fn arrivals(got: &[Received]) -> Vec<usize> {
    got.iter().map(|r| index(&r.id())).collect()
}

/// Events published while no router runs, on the route of [`interrupted`].
const N: usize = 2000;

/// How [`interrupted`] interrupts the router.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

/// A route on `order.paid` to a receiver that answers at once (so acks are as far behind the
/// deliveries as they get), ordered or not, declared by a first run that stops; then [`N`]
/// events published while no router runs, a router started on them and interrupted mid-stream
/// (`how`), and a second router started. Returns how many requests arrived before the
/// interruption, and every request once each event has arrived.
async fn interrupted(on: &TestBroker, ordered: bool, how: Stop) -> (usize, Vec<Received>) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(ordered));
    let mut first = RouterProc::ready(&cfg).await;
    assert!(first.term(T).await.success());
    on.publish_events_stopped(&numbered("p", N)).await;
    let mut router = RouterProc::ready(&cfg).await;
    rx.wait_requests("/erp", N / 4, T).await;
    match how {
        Stop::Kill => router.kill(),
        Stop::Term => assert!(router.term(T).await.success(), "exits 0 on SIGTERM"),
    }
    let before = rx.on("/erp").len();
    assert!(before < N, "the interruption came mid-stream: {before} of {N} delivered");
    let _restarted = RouterProc::ready(&cfg).await;
    (before, rx.wait_distinct("/erp", N, T).await)
}

/// Every event's index once, sorted: what an unordered route must have delivered.
fn each_once(got: &[Received]) -> Vec<usize> {
    let mut seen = arrivals(got);
    seen.sort_unstable();
    seen.dedup();
    seen
}

async fn sigkill_mid_stream_repeats_only_the_last_events_before_the_kill_then_goes_on_in_order(on: TestBroker) {
    let (at_kill, got) = interrupted(&on, true, Stop::Kill).await;
    let seen = arrivals(&got);
    // 0, 1, …, k, then j, j + 1, …, n - 1 with j ≤ k + 1: at most one step back, at the
    // restart, to the first event whose ack the broker had not taken; no gap anywhere.
    let steps: Vec<usize> = (1..seen.len()).filter(|&i| seen[i] != seen[i - 1] + 1).collect();
    assert!(steps.len() <= 1, "one step back at most, at the restart: {seen:?}");
    assert_eq!(seen[0], 0);
    assert_eq!(*seen.last().unwrap(), N - 1);
    let repeats = match steps.first() {
        None => 0,
        Some(&i) => {
            assert!(seen[i] <= seen[i - 1], "a step back, never over an event: {seen:?}");
            // The repeats are the last events the killed router delivered.
            assert!(i + 1 >= at_kill, "the step back comes at the restart ({i}, killed at {at_kill})");
            seen[i - 1] + 1 - seen[i]
        }
    };
    assert_eq!(repeats, duplicates(&got));
    eprintln!("killed after {at_kill} deliveries; the restart repeated the last {repeats}");
    // Unacked messages never outnumber the prefetch (100 on RabbitMQ here, the embedded
    // broker's 64), the message in flight included.
    assert!(repeats <= 100, "more repeats than could be unacked at the kill: {repeats}");
    let seqs: Vec<u64> = got.iter().map(|r| r.header("hookrelay-sequence").parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "hookrelay-sequence only grows, across the restart too");
}

async fn sigterm_mid_stream_leaves_nothing_delivered_unacked(on: TestBroker) {
    let (_, got) = interrupted(&on, true, Stop::Term).await;
    // Every ack started before the stop ended before the consumer closed: nothing comes twice.
    assert_eq!(arrivals(&got), (0..N).collect::<Vec<_>>(), "each event once, in publish order");
}

async fn unordered_sigkill_mid_stream_loses_nothing_and_repeats_a_few(on: TestBroker) {
    let (_, got) = interrupted(&on, false, Stop::Kill).await;
    assert_eq!(each_once(&got), (0..N).collect::<Vec<_>>(), "every event delivered");
    // At most what was prefetched and unacked at the kill: the events in flight and those whose
    // acks were still in the window.
    let repeats = duplicates(&got);
    assert!(repeats <= 100, "more repeats than could be unacked at the kill: {repeats}");
}

async fn unordered_sigterm_mid_stream_leaves_nothing_delivered_unacked(on: TestBroker) {
    let (_, got) = interrupted(&on, false, Stop::Term).await;
    // Every settled message's ack went before the consumer closed: nothing comes twice.
    assert_eq!(duplicates(&got), 0, "each event once");
    assert_eq!(each_once(&got), (0..N).collect::<Vec<_>>(), "every event delivered");
}

/// The broker's count of a queue's unacked messages (its statistics lag by a few seconds).
fn unacked(vh: &Vhost, queue: &str) -> Option<u64> {
    vh.queue(queue)["messages_unacknowledged"].as_u64()
}

/// Acks deferred to go in one frame still go while the next event is retried in place: the
/// broker sees the delivered events acked, and only the one in hand unacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_are_acked_while_the_next_one_is_retried_in_place() {
    let vh = Vhost::new();
    let failing = Arc::new(AtomicBool::new(true));
    let down = failing.clone();
    let rx =
        Receiver::start(
            move |r, _| {
                if r.id() == "slow" && down.load(Ordering::SeqCst) { (503, vec![]) } else { (200, vec![]) }
            },
        )
        .await;
    let cfg = ConfigDir::new(&vh);
    let route = RouteConfig::new("erp")
        .events(["order.paid"])
        .url(rx.url("/erp"))
        .ordered(true)
        .max_attempts(1000)
        .backoff([Duration::from_millis(200)]);
    cfg.route(&route);
    let _router = RouterProc::ready(&cfg).await;
    let mut events = numbered("e", 10);
    events.push(event("order.paid", "slow", json!({"n": 10})));
    vh.publish(&events).await;
    rx.wait_until("/erp", "the ten delivered and `slow` tried twice", T, |got| {
        got.iter().filter(|r| r.id() == "slow").count() >= 2
    })
    .await;
    let queue = "hookrelay.route.erp";
    let deadline = tokio::time::Instant::now() + T;
    while unacked(&vh, queue) != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only `slow` should be unacked while it is retried: {:?}",
            unacked(&vh, queue)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    failing.store(false, Ordering::SeqCst);
    let got = rx.wait_distinct("/erp", 11, T).await;
    assert_eq!(first_arrivals(&got).last().map(String::as_str), Some("slow"));
    let delivered = got.iter().filter(|r| r.id() != "slow").count();
    assert_eq!(delivered, 10, "each of the ten delivered once");
}
