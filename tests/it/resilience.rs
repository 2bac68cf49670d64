//! What only RabbitMQ has, under failure: two routers competing for one ordered queue, a
//! connection the broker closes mid-stream, and a queue declared with other arguments. (A router
//! killed or stopped mid-stream is in `delivery.rs`, on both brokers; the embedded broker's file
//! belongs to one router, so there is nothing to compete for, and no connection to lose.)

use crate::common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn index(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

/// A route on `order.paid` delivering to `url`.
fn paid(name: &str, url: String) -> RouteConfig {
    RouteConfig::new(name).events(["order.paid"]).url(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_on_one_ordered_route_only_one_delivers_and_the_other_takes_over() {
    let vh = Vhost::new();
    let rx = Receiver::start_slow(Duration::from_millis(3), |_, _| (200, vec![])).await;
    // Two replicas with one config but for a header naming the replica.
    let route = |who: &str| paid("erp", rx.url("/erp")).ordered(true).header("x-replica", who);
    let (cfg_a, cfg_b) = (ConfigDir::new(&vh), ConfigDir::new(&vh));
    cfg_a.route(&route("a"));
    cfg_b.route(&route("b"));
    let mut a = RouterProc::ready(&cfg_a).await;
    let mut b = RouterProc::ready(&cfg_b).await;
    let n = 600;
    vh.publish(&numbered("t", n)).await;
    let before = rx.wait_distinct("/erp", 150, T).await;
    let first = before[0].header("x-replica");
    assert!(before.iter().all(|r| r.header("x-replica") == first), "only the active consumer delivers");
    if first == "a" {
        a.kill()
    } else {
        b.kill()
    }
    let got = rx.wait_distinct("/erp", n, T).await;
    let order: Vec<usize> = first_arrivals(&got).iter().map(|id| index(id)).collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "order holds across the takeover");
    let mut seen = std::collections::HashSet::new();
    let seqs: Vec<(u64, String)> = got
        .iter()
        .filter(|r| seen.insert(r.id()))
        .map(|r| (r.header("hookrelay-sequence").parse().unwrap(), r.header("x-replica")))
        .collect();
    let back = seqs.windows(2).find(|w| w[0].0 >= w[1].0);
    assert!(back.is_none(), "hookrelay-sequence of first arrivals grows across the takeover: {back:?}");
    let replicas: std::collections::BTreeSet<String> = got.iter().map(|r| r.header("x-replica")).collect();
    assert_eq!(replicas.len(), 2, "the standby carried on after the kill");
    let last = got.last().unwrap().header("x-replica");
    assert_ne!(last, first, "the standby finished the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_mid_stream_is_survived_in_order() {
    let vh = Vhost::new();
    // Slow enough that the close lands while deliveries are in flight and prefetched messages
    // wait unacked behind them.
    let rx = Receiver::start_slow(Duration::from_millis(5), |_, _| (200, vec![])).await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(&paid("erp", rx.url("/erp")).ordered(true));
    let router = RouterProc::ready(&cfg).await;
    // The management API lists connections a few seconds after they open: wait for the
    // router's before publishing, so that closing it is immediate.
    eventually("the router's connection in the management API", T, async || vh.connections(), |n| *n > 0).await;
    let n = 400;
    vh.publish(&numbered("c", n)).await;
    rx.wait_distinct("/erp", 50, T).await;
    assert!(vh.close_connections() > 0, "closed the router's connection");
    let at_close = rx.on("/erp").len();
    assert!(at_close < n, "the close came mid-stream: {at_close} of {n} delivered");
    router.wait_log("reconnecting", T).await;
    // Events published after the reconnect follow the ones that were in flight.
    let more: Vec<_> =
        (n..n + 100).map(|i| event("order.paid", &format!("c-{i}"), serde_json::json!({"n": i}))).collect();
    vh.publish(&more).await;
    let n = n + 100;
    let got = rx.wait_distinct("/erp", n, T).await;
    let order: Vec<usize> = first_arrivals(&got).iter().map(|id| index(id)).collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "first arrivals keep publish order across the reconnect");
    eprintln!("connection closed after {at_close} deliveries; duplicates after the reconnect: {}", duplicates(&got));
    // What repeats is what the broker had not seen acked at the close: the delivery in flight
    // (its ack had no channel left), and acks still on the wire (AMQP acks have no reply). That
    // is never more than the prefetch (100 in `rabbitmq_main`); acked messages never come back.
    assert!(duplicates(&got) <= 100, "more repeats than could be unacked at the close: {}", duplicates(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_is_reported_and_the_other_routes_run() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(&paid("erp", rx.url("/erp")).ordered(true));
    let mut first = RouterProc::ready(&cfg).await;
    assert!(first.term(Duration::from_secs(20)).await.success());
    // Flip `ordered`: RabbitMQ cannot change x-single-active-consumer on an existing queue.
    cfg.route(&paid("erp", rx.url("/erp")).ordered(false));
    cfg.route(&paid("other", rx.url("/other")));
    let mut second = RouterProc::ready(&cfg).await;
    let log = second.log_text();
    assert!(log.contains("queue hookrelay.route.erp exists with different arguments"), "{log}");
    assert!(log.contains("x-single-active-consumer"), "the message names the argument: {log}");
    vh.publish(&numbered("m", 3)).await;
    rx.wait_distinct("/other", 3, T).await;
    assert!(second.term(Duration::from_secs(20)).await.success(), "still running, stops cleanly");
    assert!(rx.on("/erp").is_empty());
}
