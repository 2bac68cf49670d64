//! An ordered route's acks are pipelined (the worker takes the next message without waiting for
//! the previous one's ack; the embedded broker commits them in groups): what a receiver sees
//! when the router is killed or stopped mid-stream, on both brokers. Killed, the only repeats
//! are the last events before the kill, whose acks the broker had not taken, sent again first
//! and in order; stopped, nothing is repeated.

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    sigkill_mid_stream_repeats_only_the_last_events_before_the_kill_then_goes_on_in_order,
    sigterm_mid_stream_leaves_nothing_delivered_unacked,
);

/// The index of a `<prefix>-<i>` event id.
fn index(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

/// Every request's event index, in arrival order, duplicates included.
fn arrivals(got: &[Received]) -> Vec<usize> {
    got.iter().map(|r| index(&r.id())).collect()
}

/// An ordered route on `order.paid` to `rx`'s `/erp`, declared by a first run that stops, then
/// `n` events published while no router runs, then a router started on them.
async fn mid_stream(on: &TestBroker, rx: &Receiver, n: usize) -> (ConfigDir, RouterProc) {
    let cfg = on.config();
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(true));
    let mut first = RouterProc::ready(&cfg).await;
    assert!(first.term(T).await.success());
    on.publish_events_stopped(&numbered("p", n)).await;
    let router = RouterProc::ready(&cfg).await;
    rx.wait_requests("/erp", n / 4, T).await;
    (cfg, router)
}

async fn sigkill_mid_stream_repeats_only_the_last_events_before_the_kill_then_goes_on_in_order(on: TestBroker) {
    // A receiver that answers at once: acks are as far behind the deliveries as they get.
    let rx = Receiver::ok().await;
    let n = 2000;
    let (cfg, mut router) = mid_stream(&on, &rx, n).await;
    router.kill();
    let at_kill = rx.on("/erp").len();
    assert!(at_kill < n, "the kill came mid-stream: {at_kill} of {n} delivered");
    let _restarted = RouterProc::ready(&cfg).await;
    let got = rx.wait_distinct("/erp", n, T).await;
    let seen = arrivals(&got);
    // 0, 1, …, k, then j, j + 1, …, n - 1 with j ≤ k + 1: at most one step back, at the
    // restart, to the first event whose ack the broker had not taken; no gap anywhere.
    let steps: Vec<usize> = (1..seen.len()).filter(|&i| seen[i] != seen[i - 1] + 1).collect();
    assert!(steps.len() <= 1, "one step back at most, at the restart: {seen:?}");
    assert_eq!(seen[0], 0);
    assert_eq!(*seen.last().unwrap(), n - 1);
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
    let rx = Receiver::ok().await;
    let n = 2000;
    let (cfg, mut router) = mid_stream(&on, &rx, n).await;
    assert!(router.term(T).await.success(), "exits 0 on SIGTERM");
    let at_stop = rx.on("/erp").len();
    assert!(at_stop < n, "the stop came mid-stream: {at_stop} of {n} delivered");
    let _restarted = RouterProc::ready(&cfg).await;
    let got = rx.wait_distinct("/erp", n, T).await;
    // Every ack started before the stop ended before the consumer closed: nothing comes twice.
    assert_eq!(arrivals(&got), (0..n).collect::<Vec<_>>(), "each event once, in publish order");
}
