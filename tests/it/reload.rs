//! Config as code: reloads on SIGHUP and on file changes, under load, and refused reloads.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The index of a `l-<i>` event id.
fn index(r: &Received) -> usize {
    r.id().strip_prefix("l-").and_then(|i| i.parse().ok()).unwrap_or(usize::MAX)
}

/// Waits until `path` has received a request that `pred` accepts.
async fn wait_for(rx: &Receiver, path: &str, what: &str, pred: impl Fn(&Received) -> bool) {
    rx.wait_until(path, what, T, |got| got.iter().any(&pred)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reload_cycles_under_load_lose_nothing_and_duplicate_nothing() {
    let vh = Arc::new(Vhost::new());
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    // The stable route changes at every swap (a header carries the swap's number), so every
    // reload touches the running route, not only the route added and removed.
    let stable = |swap: usize| {
        RouteConfig::new("stable")
            .events(["order.paid"])
            .url(rx.url("/stable"))
            .ordered(true)
            .header("x-config-swap", swap.to_string())
            .backoff([Duration::from_secs(1)])
    };
    let extra = RouteConfig::new("extra").events(["order.paid"]).url(rx.url("/extra"));
    let swap_of = |r: &Received| r.header("x-config-swap").parse::<usize>().unwrap();
    cfg.route(&stable(0));
    let router = RouterProc::ready(&cfg).await;
    // A producer publishing continuously, in batches of 10, until told to stop. `published`
    // counts confirmed events: when it reads c, every event from c + 10 on (the batch after the
    // one that may be in flight) is published after that moment.
    let (published, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let producer = {
        let (vh, published, stop) = (vh.clone(), published.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let from = published.load(Ordering::SeqCst);
                let batch: Vec<_> =
                    (from..from + 10).map(|i| event("order.paid", &format!("l-{i}"), json!({"n": i}))).collect();
                vh.publish(&batch).await;
                published.fetch_add(10, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let after_now = |published: &AtomicUsize| published.load(Ordering::SeqCst) + 10;
    wait_for(&rx, "/stable", "a delivery before any reload", |r| swap_of(r) == 0).await;
    let (mut swap, mut extra_per_cycle, mut extra_gone_from) = (0, Vec::new(), 0);
    for cycle in 0..20 {
        // Add the extra route and change the stable one.
        swap += 1;
        cfg.route(&stable(swap));
        cfg.route(&extra);
        let line = router.reload().await;
        assert!(
            line.contains("config reloaded")
                && line.contains("added=[\"extra\"]")
                && line.contains("changed=[\"stable\"]"),
            "cycle {cycle}, add: {line}"
        );
        let from = after_now(&published);
        let n = swap;
        wait_for(&rx, "/stable", &format!("a delivery with swap {n}"), |r| swap_of(r) == n).await;
        // The added route receives events published while it is present, in every cycle.
        wait_for(&rx, "/extra", &format!("cycle {cycle}: an event published after the route was added"), |r| {
            index(r) >= from
        })
        .await;
        // Remove it, and change the stable route again.
        swap += 1;
        cfg.route(&stable(swap));
        std::fs::remove_file(cfg.path().join("routes/extra.toml")).unwrap();
        let line = router.reload().await;
        assert!(
            line.contains("config reloaded")
                && line.contains("removed=[\"extra\"]")
                && line.contains("changed=[\"stable\"]"),
            "cycle {cycle}, remove: {line}"
        );
        extra_gone_from = after_now(&published);
        extra_per_cycle.push(rx.on("/extra").iter().filter(|r| index(r) >= from).count());
        let n = swap;
        wait_for(&rx, "/stable", &format!("a delivery with swap {n}"), |r| swap_of(r) == n).await;
    }
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    vh.publish(&[event("order.paid", "after", json!({"n": 0}))]).await;
    let total = published.load(Ordering::SeqCst);
    let got = rx.wait_distinct("/stable", total + 1, Duration::from_secs(120)).await;

    // The stable route: nothing lost, nothing twice, in order, and every swap applied to the
    // deliveries that started after it (the swap number never goes back along the arrivals).
    assert_eq!(duplicates(&got), 0, "nothing delivered twice because of a reload");
    assert_eq!(got.len(), total + 1, "distinct webhook-ids == deliveries");
    let order: Vec<String> = first_arrivals(&got);
    let expected: Vec<String> = (0..total).map(|i| format!("l-{i}")).chain(["after".to_string()]).collect();
    assert_eq!(order, expected, "nothing lost, order kept, on the stable route");
    let swaps: Vec<usize> = got.iter().map(swap_of).collect();
    assert!(swaps.windows(2).all(|w| w[0] <= w[1]), "the header follows the swaps, never back: {swaps:?}");
    let mut seen = swaps.clone();
    seen.dedup();
    assert_eq!(seen, (0..=swap).collect::<Vec<_>>(), "every one of the {swap} swaps reached the running route");
    assert_eq!(swaps.last(), Some(&swap), "the last event carries the last config");

    // The extra route: nothing twice, and nothing published after its final removal.
    let extra_got = rx.on("/extra");
    assert_eq!(duplicates(&extra_got), 0, "the extra route got nothing twice");
    let late: Vec<String> =
        extra_got.iter().filter(|r| r.id() == "after" || index(r) >= extra_gone_from).map(Received::id).collect();
    assert!(late.is_empty(), "the removed route received events published after its removal: {late:?}");
    eprintln!(
        "published {total} events across {swap} reloads; the extra route got {extra_per_cycle:?} per cycle of \
         events published while present"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_on_sighup_leaves_the_old_one_serving() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    let r = RouteConfig::new("r").events(["order.paid"]).url(rx.url("/old"));
    cfg.route(&r);
    let router = RouterProc::ready(&cfg).await;
    // Written as text: not a duration, at the line and column the error names.
    cfg.route_text("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"\ntimeout = \"soon\"", rx.url("/new")));
    let line = router.reload().await;
    assert!(line.contains("reload rejected") && line.contains("routes/r.toml:3:11"), "{line}");
    assert!(router.log_text().contains("the previous config keeps running"));
    vh.publish(&numbered("i", 3)).await;
    rx.wait_distinct("/old", 3, T).await;
    assert!(rx.on("/new").is_empty());
    // Flipping `ordered` is refused too, naming the route and what to do.
    cfg.route(&r.ordered(true));
    let line = router.reload().await;
    assert!(line.contains("reload rejected") && line.contains("changes `ordered`"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_and_schema_changes_take_effect_on_the_next_event() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("plugins/f.rhai", "fn filter(event) { event.data.n < 10 }\n");
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(rx.url("/r")).ordered(true).filter("plugins/f.rhai"));
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&[event("order.paid", "a-big", json!({"n": 50})), event("order.paid", "a-small", json!({"n": 1}))])
        .await;
    rx.wait_distinct("/r", 1, T).await;
    assert_eq!(first_arrivals(&rx.on("/r")), ["a-small"]);
    cfg.file("plugins/f.rhai", "fn filter(event) { event.data.n >= 10 }\n");
    assert!(router.reload().await.contains("changed=[\"r\"]"), "the route is reported as changed");
    vh.publish(&[event("order.paid", "b-big", json!({"n": 50})), event("order.paid", "b-small", json!({"n": 1}))])
        .await;
    rx.wait_distinct("/r", 2, T).await;
    // The schema now requires `total`: the next event without it is dead-lettered.
    cfg.file("schemas/order.paid/v1.json", r#"{"type":"object","required":["n","total"]}"#);
    assert!(router.reload().await.contains("config reloaded"));
    vh.publish(&[event("order.paid", "c-big", json!({"n": 50}))]).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    assert_eq!(dls[0].reason(), "schema");
    assert_eq!(first_arrivals(&rx.on("/r")), ["a-small", "b-big"]);
}

/// An ordered route takes its next event while the one in hand is delivered and runs that
/// event's pipeline then: a reload in between still applies to it, as to any event that has
/// not started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_an_ordered_route_retries_in_place_applies_to_the_event_behind() {
    let vh = Vhost::new();
    let failing = Arc::new(AtomicBool::new(true));
    let down = failing.clone();
    let rx = Receiver::start(
        move |r, _| {
            if r.id() == "a" && down.load(Ordering::SeqCst) { (503, vec![]) } else { (200, vec![]) }
        },
    )
    .await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("plugins/t.rhai", "fn transform(event) { event.data.v = 1; event }\n");
    let route = RouteConfig::new("r")
        .events(["order.paid"])
        .url(rx.url("/r"))
        .ordered(true)
        .transform("plugins/t.rhai")
        .max_attempts(100)
        .backoff([Duration::from_millis(100)]);
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&[event("order.paid", "a", json!({"n": 1})), event("order.paid", "b", json!({"n": 2}))]).await;
    // Two failed attempts of `a`: `b` has come (prefetched) and waits behind it.
    rx.wait_requests("/r", 2, T).await;
    cfg.file("plugins/t.rhai", "fn transform(event) { event.data.v = 2; event }\n");
    assert!(router.reload().await.contains("config reloaded"));
    failing.store(false, Ordering::SeqCst);
    rx.wait_distinct("/r", 2, T).await;
    let got = rx.on("/r");
    assert_eq!(first_arrivals(&got), ["a", "b"]);
    let delivered = |id: &str| got.iter().rfind(|r| r.id() == id).expect("delivered").json()["data"].clone();
    assert_eq!(delivered("a")["v"], 1, "`a` started before the reload: its attempts keep the config they began with");
    assert_eq!(delivered("b")["v"], 2, "`b` starts after the reload: the new transform applies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_once_for_a_burst_of_changes_then_again_for_a_later_one() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    let route = |name: &str, path: &str| RouteConfig::new(name).events(["order.paid"]).url(rx.url(path));
    cfg.route(&route("r", "/before"));
    let router = RouterProc::start_with(&cfg, &["--watch"]);
    router.wait_log("consuming", T).await;
    // A burst, as a `git pull` or an editor makes: several writes, and a file added, well
    // within one poll (500 ms).
    for i in 1..=5 {
        cfg.route(&route("r", &format!("/burst-{i}")));
        if i == 3 {
            cfg.route(&route("s", "/s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst = hookrelay::config::load_with(cfg.path(), hookrelay::config::LoadOptions::checking()).unwrap().revision;
    router.wait_log_count("config reloaded", 1, T).await;
    vh.publish(&numbered("w", 3)).await;
    rx.wait_distinct("/burst-5", 3, T).await;
    rx.wait_distinct("/s", 3, T).await;
    for path in ["/before", "/burst-1", "/burst-2", "/burst-3", "/burst-4"] {
        assert!(rx.on(path).is_empty(), "{path} got events: the burst was applied part by part");
    }
    // A later change reloads again.
    cfg.route(&route("r", "/later"));
    let later = hookrelay::config::load_with(cfg.path(), hookrelay::config::LoadOptions::checking()).unwrap().revision;
    router.wait_log_count("config reloaded", 2, T).await;
    vh.publish(&numbered("v", 2)).await;
    rx.wait_distinct("/later", 2, T).await;
    let log = router.log_text();
    let reloads: Vec<&str> = log.lines().filter(|l| l.contains("config reloaded")).collect();
    assert_eq!(reloads.len(), 2, "one reload for the burst, one for the later change:\n{}", reloads.join("\n"));
    assert!(
        reloads[0].contains(&format!("revision={burst}")) && reloads[0].contains("added=[\"s\"]"),
        "the burst's reload applied all of it at once: {}",
        reloads[0]
    );
    assert!(reloads[1].contains(&format!("revision={later}")), "{}", reloads[1]);
}

/// Route `r<i>` of the many-route tests: ordered (so that an event routed to its queue before a
/// later one is also delivered before it), bound to `t<i>.<kind>`, delivering to `/<at>/<i>`.
fn many_route(rx: &Receiver, i: usize, kind: &str, at: &str) -> RouteConfig {
    RouteConfig::new(format!("r{i}")).events([format!("t{i}.{kind}")]).url(rx.url(&format!("/{at}/{i}"))).ordered(true)
}

/// Schemas for `t<i>.old` and `t<i>.new`, `i` below `n`.
fn many_schemas(cfg: &ConfigDir, n: usize) {
    for i in 0..n {
        for kind in ["old", "new"] {
            cfg.file(&format!("schemas/t{i}.{kind}/v1.json"), r#"{"type":"object"}"#);
        }
    }
}

/// The events exchange's bindings of route `name`'s queue, as routing keys.
fn bound(vh: &Vhost, name: &str) -> Vec<String> {
    let mut keys: Vec<String> = vh
        .bindings(&format!("hookrelay.route.{name}"))
        .into_iter()
        .filter(|(source, _)| source == "hookrelay.events")
        .map(|(_, key)| key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_routes_moved_to_new_patterns_in_one_sighup_get_only_their_new_events() {
    const N: usize = 40;
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    many_schemas(&cfg, N);
    // A route on every `*.old` type, unchanged throughout: the old types stay routable, so a
    // route that kept its old binding by mistake would get a copy too.
    cfg.route(&RouteConfig::new("witness").events(["*.old"]).url(rx.url("/witness")));
    for i in 0..N {
        cfg.route(&many_route(&rx, i, "old", "r"));
    }
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&(0..N).map(|i| event(&format!("t{i}.old"), &format!("before-{i}"), json!({}))).collect::<Vec<_>>())
        .await;
    for i in 0..N {
        rx.wait_distinct(&format!("/r/{i}"), 1, T).await;
    }

    // Every route moves to its new type in one reload: N routes declared and bound, then N
    // old bindings removed after the swap.
    for i in 0..N {
        cfg.route(&many_route(&rx, i, "new", "r"));
    }
    let line = router.reload().await;
    assert!(line.contains("config reloaded"), "{line}");
    let changed =
        line.split("changed=[").nth(1).map_or(0, |c| c.split(']').next().unwrap_or("").matches('"').count() / 2);
    assert_eq!(changed, N, "every route is reported as changed: {line}");
    for i in 0..N {
        assert_eq!(bound(&vh, &format!("r{i}")), [format!("t{i}.new")], "route r{i}: only its new binding is left");
    }

    // Per route, its old type first, then its new one: an ordered route that still got the old
    // one would deliver it before the new one.
    let mut after = Vec::new();
    for i in 0..N {
        after.push(event(&format!("t{i}.old"), &format!("old-{i}"), json!({})));
        after.push(event(&format!("t{i}.new"), &format!("new-{i}"), json!({})));
    }
    vh.publish(&after).await;
    for i in 0..N {
        let got = rx.wait_distinct(&format!("/r/{i}"), 2, T).await;
        assert_eq!(first_arrivals(&got), [format!("before-{i}"), format!("new-{i}")], "route r{i}");
    }
    let witness = rx.wait_distinct("/witness", 2 * N, T).await;
    let mut ids = first_arrivals(&witness);
    ids.sort();
    let mut expected: Vec<String> = (0..N).flat_map(|i| [format!("before-{i}"), format!("old-{i}")]).collect();
    expected.sort();
    assert_eq!(ids, expected, "the old types were still published and routed, to the witness only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_half_way_through_declaring_leaves_the_old_config_serving() {
    const N: usize = 40;
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    many_schemas(&cfg, N);
    for i in 0..N {
        cfg.route(&many_route(&rx, i, "old", "old"));
    }
    let router = RouterProc::ready(&cfg).await;
    // The queue of a route about to be added exists already, as a classic queue: RabbitMQ
    // refuses to declare it as a quorum queue.
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("hookrelay.route.r20-clash".into(), durable, Default::default()).await.unwrap();

    // Every route moves to a new type and a new URL, and the clashing route is added, sorted
    // among them, so that routes on either side of it are declared in the same reload.
    for i in 0..N {
        cfg.route(&many_route(&rx, i, "new", "new"));
    }
    cfg.route(&RouteConfig::new("r20-clash").events(["order.paid"]).url(rx.url("/clash")));
    let line = router.reload().await;
    assert!(line.contains("reload rejected"), "{line}");
    assert!(
        line.contains("route `r20-clash`")
            && line.contains("queue hookrelay.route.r20-clash exists with different arguments"),
        "the error names the route and its queue: {line}"
    );
    assert!(router.log_text().contains("the previous config keeps running"));
    // Every queue keeps its old binding; what the reload bound before the refusal stays (undoing
    // it could unbind what another replica sharing the queues applied), and is at most one new
    // binding per route.
    for i in 0..N {
        let b = bound(&vh, &format!("r{i}"));
        assert!(b.contains(&format!("t{i}.old")), "route r{i}: {b:?}");
        assert!(b.iter().all(|k| *k == format!("t{i}.old") || *k == format!("t{i}.new")), "route r{i}: {b:?}");
    }
    vh.publish(&(0..N).map(|i| event(&format!("t{i}.old"), &format!("old-{i}"), json!({}))).collect::<Vec<_>>()).await;
    for i in 0..N {
        let got = rx.wait_distinct(&format!("/old/{i}"), 1, T).await;
        assert_eq!(first_arrivals(&got), [format!("old-{i}")], "route r{i}, on its old config");
    }
    assert!(rx.all().iter().all(|r| r.path.starts_with("/old/")), "nothing went to the new config's URLs");

    // Once the queue is out of the way, the same config applies.
    ch.queue_delete("hookrelay.route.r20-clash".into(), Default::default()).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    let line = router.reload().await;
    assert!(line.contains("config reloaded") && line.contains("added=[\"r20-clash\"]"), "{line}");
    vh.publish(&(0..N).map(|i| event(&format!("t{i}.new"), &format!("new-{i}"), json!({}))).collect::<Vec<_>>()).await;
    for i in 0..N {
        let got = rx.wait_distinct(&format!("/new/{i}"), 1, T).await;
        assert_eq!(first_arrivals(&got), [format!("new-{i}")], "route r{i}, on its new config");
    }
}
