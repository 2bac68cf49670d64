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
    let deadline = std::time::Instant::now() + T;
    while !rx.on(path).iter().any(&pred) {
        assert!(std::time::Instant::now() < deadline, "{path}: waited {T:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reload_cycles_under_load_lose_nothing_and_duplicate_nothing() {
    let vh = Arc::new(Vhost::new());
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    // The stable route changes at every swap (a header carries the swap's number), so every
    // reload touches the running route, not only the route added and removed.
    let stable = |swap: usize| {
        format!(
            "events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\nheaders = {{ x-config-swap = \"{swap}\" }}\n\
             [retry]\nbackoff = [\"1s\"]",
            rx.url("/stable")
        )
    };
    let extra = format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/extra"));
    let swap_of = |r: &Received| r.header("x-config-swap").parse::<usize>().unwrap();
    cfg.route("stable", &stable(0));
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
        cfg.route("stable", &stable(swap));
        cfg.route("extra", &extra);
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
        cfg.route("stable", &stable(swap));
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
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/old")));
    let router = RouterProc::ready(&cfg).await;
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"\ntimeout = \"soon\"", rx.url("/new")));
    let line = router.reload().await;
    assert!(line.contains("reload rejected") && line.contains("routes/r.toml:3:11"), "{line}");
    assert!(router.log_text().contains("the previous config keeps running"));
    vh.publish(&numbered("i", 3)).await;
    rx.wait_distinct("/old", 3, T).await;
    assert!(rx.on("/new").is_empty());
    // Flipping `ordered` is refused too, naming the route and what to do.
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true", rx.url("/old")));
    let line = router.reload().await;
    assert!(line.contains("reload rejected") && line.contains("changes `ordered`"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_and_schema_changes_take_effect_on_the_next_event() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("plugins/f.rhai", "fn filter(event) { event.data.n < 10 }\n");
    cfg.route(
        "r",
        &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\nfilter = \"plugins/f.rhai\"", rx.url("/r")),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_once_for_a_burst_of_changes_then_again_for_a_later_one() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    let route = |path: &str| format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url(path));
    cfg.route("r", &route("/before"));
    let router = RouterProc::start_with(&cfg, &["--watch"]);
    router.wait_log("consuming", T).await;
    // A burst, as a `git pull` or an editor makes: several writes, and a file added, well
    // within one poll (500 ms).
    for i in 1..=5 {
        cfg.route("r", &route(&format!("/burst-{i}")));
        if i == 3 {
            cfg.route("s", &route("/s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst =
        hookrelay::config::load_with(cfg.path(), hookrelay::config::LoadOptions { allow_missing_secrets: true })
            .unwrap()
            .revision;
    router.wait_log_count("config reloaded", 1, T).await;
    vh.publish(&numbered("w", 3)).await;
    rx.wait_distinct("/burst-5", 3, T).await;
    rx.wait_distinct("/s", 3, T).await;
    for path in ["/before", "/burst-1", "/burst-2", "/burst-3", "/burst-4"] {
        assert!(rx.on(path).is_empty(), "{path} got events: the burst was applied part by part");
    }
    // A later change reloads again.
    cfg.route("r", &route("/later"));
    let later =
        hookrelay::config::load_with(cfg.path(), hookrelay::config::LoadOptions { allow_missing_secrets: true })
            .unwrap()
            .revision;
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
