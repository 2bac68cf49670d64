//! Config as code: reloads on SIGHUP and on file changes, under load, and refused reloads.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing_and_duplicate_nothing() {
    let vh = Arc::new(Vhost::new());
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    let stable = format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true", rx.url("/stable"));
    let extra = format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/extra"));
    cfg.route("stable", &stable);
    let router = RouterProc::ready(&cfg).await;
    // A producer publishing continuously, in batches of 10, until told to stop.
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
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut extra_windows = Vec::new();
    for round in 0..20 {
        let add = round % 2 == 0;
        if add {
            cfg.route("extra", &extra);
        } else {
            std::fs::remove_file(cfg.path().join("routes/extra.toml")).unwrap();
        }
        let line = router.reload().await;
        assert!(line.contains("config reloaded"), "round {round}: {line}");
        if add {
            let before = rx.on("/extra").len();
            tokio::time::sleep(Duration::from_millis(300)).await;
            extra_windows.push(rx.on("/extra").len() - before);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    let total = published.load(Ordering::SeqCst);
    let got = rx.wait_distinct("/stable", total, T).await;
    assert_eq!(duplicates(&got), 0, "nothing delivered twice because of a reload");
    let order: Vec<usize> = first_arrivals(&got).iter().map(|id| id[2..].parse().unwrap()).collect();
    assert_eq!(order, (0..total).collect::<Vec<_>>(), "nothing lost, order kept, on the stable route");
    assert!(extra_windows.iter().all(|&n| n > 0), "the added route received events while present: {extra_windows:?}");
    // After the last round the extra route is gone: nothing more reaches it.
    let settled = rx.on("/extra").len();
    vh.publish(&[event("order.paid", "after", json!({"n": 0}))]).await;
    rx.wait_distinct("/stable", total + 1, T).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.on("/extra").len(), settled, "a removed route stops receiving");
    eprintln!("published {total} events across 20 reloads; extra route got {extra_windows:?} per window");
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
async fn watch_reloads_when_files_change() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/before")));
    let router = RouterProc::start_with(&cfg, &["--watch"]);
    router.wait_log("consuming", T).await;
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/after")));
    router.wait_log_count("config reloaded", 1, T).await;
    vh.publish(&numbered("w", 2)).await;
    rx.wait_distinct("/after", 2, T).await;
    assert!(rx.on("/before").is_empty());
}
