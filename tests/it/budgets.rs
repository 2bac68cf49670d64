//! Scripts that cannot hurt the router (issue 13), on the real binary: the worst scripts we can
//! write (many values each under Rhai's limits, closures and curried function pointers in
//! arrays, huge map keys, a body-bloating transform, a loop over a costly built-in), in route
//! files and in an API subscription's inline filter. Each run is stopped at its budget and its
//! event dead-lettered `script_error` naming the budget; the router's peak memory stays under a
//! stated bound; and while scripts burn their time budgets, `/healthz` answers and another
//! route's events are delivered first. A script past its allowance on the async worker moves to
//! the script pool without running twice.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// 128 KiB of text, built inside the script (Rhai's own string limit is 256 KiB a value).
const BIG: &str = "let s = \"0123456789abcdef\"; for k in 0..13 { s += s; }";

/// Each is far over any sane memory unless stopped: 2,000 distinct 128 KiB strings held by
/// closures, by curried function pointers (neither counted by Rhai's size limits) and as map
/// keys (not counted either), or 29 call levels each holding its own.
fn memory_hogs() -> Vec<(&'static str, String)> {
    let filter = |body: &str| format!("fn g(x) {{ x }}\nfn filter(event) {{ {BIG} {body} true }}\n");
    vec![
        ("closures", filter("let a = []; for i in 0..2000 { let t = s + i; a.push(|| t); }")),
        ("curried", filter("let a = []; for i in 0..2000 { a.push(Fn(\"g\").curry(s + i)); }")),
        ("keys", filter("let m = #{}; for i in 0..2000 { m[s + i] = i; }")),
        (
            "deep",
            format!(
                "fn r(n, s) {{ let a = s + n; let b = s + (n + 100); let c = s + (n + 200); let d = s + (n + 300); \
                 let e = s + (n + 400); \
                 if n > 0 {{ r(n - 1, s) }} else {{ 0 }} }}\nfn filter(event) {{ {BIG} r(28, s); true }}\n"
            ),
        ),
    ]
}

/// A transform that turns a tiny event into a body of megabytes, each value small.
const BLOAT: &str = "fn transform(event) { let m = #{}; let pad = \"0123456789abcdef\"; for k in 0..3 { pad += pad; } \
                     for i in 0..8000 { m[pad + i] = i; } event.data = m; event }";

/// A loop over a costly built-in: well within the operation limit, seconds of CPU.
const SLOW: &str = "fn filter(event) { let s = \"0123456789abcdef\"; for k in 0..14 { s += s; } \
                    loop { let t = s.to_upper(); t.replace(\"A\", \"b\"); } }";

/// `VmHWM` (peak resident memory) or `VmRSS` of a process, in bytes.
fn memory_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The router's peak memory while the worst scripts run grows by less than this: two runs at
/// once (`pool = 2`), each stopped at 16 MiB held, plus what the run's result is converted into.
/// Without the budget one event of these grew it by over a GiB.
const PEAK_GROWTH_BOUND: u64 = 160 << 20;

async fn memory_and_body_budgets_stop_the_worst_scripts(on: TestBroker) {
    let rx = Receiver::ok().await;
    let scripts = ScriptsSection {
        max_memory_bytes: Some(16 << 20),
        max_time: Some(Duration::from_secs(20)),
        pool: Some(2),
        ..Default::default()
    };
    let cfg = ConfigDir::with(on.main().scripts(scripts));
    let hogs = memory_hogs();
    for (name, text) in &hogs {
        cfg.file(&format!("plugins/{name}.rhai"), text);
        cfg.route(
            &RouteConfig::new(*name)
                .events(["order.paid"])
                .url(rx.url(&format!("/{name}")))
                .filter(format!("plugins/{name}.rhai")),
        );
    }
    cfg.file("plugins/bloat.rhai", BLOAT);
    cfg.route(&RouteConfig::new("bloat").events(["order.paid"]).url(rx.url("/bloat")).transform("plugins/bloat.rhai"));
    cfg.route(&RouteConfig::new("plain").events(["order.paid"]).url(rx.url("/plain")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);

    // The same worst script through an API subscription's inline filter.
    let sub = api
        .post(
            "/v1/subscriptions",
            json!({"name": "inline", "events": ["order.paid"], "url": rx.url("/inline"), "filter": hogs[0].1}),
        )
        .await;
    sub.expect(201);
    router.wait_log("consuming", T).await;
    eventually("the subscription's route live", T, async || api.get("/v1/routes/inline").await.status, |s| *s == 200)
        .await;

    let routes = hogs.len() + 2; // the hogs, bloat, inline
    let baseline = memory_kb(router.pid(), "VmHWM:");
    let events = numbered("worst", 5);
    on.publish(&router, &events).await;
    rx.wait_distinct("/plain", 5, T).await;
    let dead = cfg.wait_dead_letters(routes * 5, T).await;
    let grown = memory_kb(router.pid(), "VmHWM:").saturating_sub(baseline);
    assert!(
        grown < PEAK_GROWTH_BOUND,
        "peak memory grew by {} MiB (bound {} MiB)",
        grown >> 20,
        PEAK_GROWTH_BOUND >> 20
    );

    assert_eq!(dead.len(), routes * 5, "{dead:?}");
    for d in &dead {
        assert_eq!(d.reason, "script_error", "{d:?}");
        let budget = if d.route == "bloat" { "max_body_bytes" } else { "max_memory_bytes" };
        assert!(d.error.contains(budget), "{}: {}", d.route, d.error);
        assert!(d.error.contains(".rhai") || d.route == "inline", "names the script: {}", d.error);
    }
    for route in ["closures", "curried", "keys", "deep", "bloat", "inline"] {
        assert_eq!(dead.iter().filter(|d| d.route == route).count(), 5, "route {route}: {dead:?}");
    }
    assert!(rx.on("/bloat").is_empty() && rx.on("/closures").is_empty(), "nothing over budget was sent");
    eprintln!("peak memory growth under the worst scripts: {} KiB", grown >> 10);
}

/// While four events burn their whole time budget on the only script thread, `/healthz` answers
/// and another route's events are all delivered before the last of them is dead-lettered.
async fn scripts_burning_their_time_budget_hold_up_nothing_else(on: TestBroker) {
    let rx = Receiver::ok().await;
    let scripts = ScriptsSection { max_time: Some(Duration::from_secs(3)), pool: Some(1), ..Default::default() };
    let cfg = ConfigDir::with(on.main().scripts(scripts));
    cfg.file("plugins/slow.rhai", SLOW);
    cfg.route(
        &RouteConfig::new("slow")
            .events(["order.created"])
            .url(rx.url("/slow"))
            .concurrency(4)
            .filter("plugins/slow.rhai"),
    );
    cfg.route(&RouteConfig::new("fast").events(["order.paid"]).url(rx.url("/fast")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);

    let slow: Vec<_> = (0..4).map(|i| event("order.created", &format!("slow-{i}"), json!({"i": i}))).collect();
    on.publish(&router, &slow).await;
    let fast = numbered("fast", 10);
    on.publish(&router, &fast).await;
    api.get("/healthz").await.expect(200);
    rx.wait_distinct("/fast", 10, T).await;
    let stopped = router.log_count("over its time budget");
    assert!(stopped < 4, "the fast route's events and /healthz came after all four slow runs ended ({stopped})");

    let dead = cfg.wait_dead_letters(4, T).await;
    for d in &dead {
        assert_eq!((d.route.as_str(), d.reason.as_str()), ("slow", "script_error"), "{d:?}");
        assert!(d.error.contains("over its time budget") && d.error.contains("max_time = 3s"), "{}", d.error);
    }
    assert!(rx.on("/slow").is_empty());
}

/// Tens of milliseconds of work in a few hundred operations: well past the allowance a script
/// has on an async worker (1 ms), far within every budget.
const PAST_ALLOWANCE: &str = "fn filter(event) { print(\"seen \" + event.id); let s = \"0123456789abcdef\"; \
                              for k in 0..12 { s += s; } let n = 0; for i in 0..300 { n += s.to_upper().len(); } n > 0 }";

/// What the router logs when a route's scripts move to the script pool for good.
const MOVED: &str = "the route's scripts run on the script pool until the next reload";

/// The route `long`: `order.created`, one at a time, filtered by [`PAST_ALLOWANCE`].
fn long_route(cfg: &ConfigDir, rx: &Receiver) {
    cfg.file("plugins/long.rhai", PAST_ALLOWANCE);
    cfg.route(
        &RouteConfig::new("long")
            .events(["order.created"])
            .url(rx.url("/long"))
            .concurrency(1)
            .filter("plugins/long.rhai"),
    );
}

/// Five `order.created` events for [`long_route`], `long-0` to `long-4`.
async fn publish_long(on: &TestBroker, router: &RouterProc) {
    let long: Vec<_> = (0..5).map(|i| event("order.created", &format!("long-{i}"), json!({"i": i}))).collect();
    on.publish(router, &long).await;
}

/// Each of [`publish_long`]'s events reached the receiver once and its filter printed once.
async fn long_each_sent_and_printed_once(router: &RouterProc, rx: &Receiver) {
    rx.wait_distinct("/long", 5, T).await;
    router.wait_log_count("seen long-", 5, T).await;
    assert_eq!(rx.on("/long").len(), 5, "each event sent once");
    for i in 0..5 {
        assert_eq!(router.log_count(&format!("seen long-{i}")), 1, "long-{i} printed once");
    }
}

/// A script that runs past its allowance on the async worker is moved to the script pool and run
/// again there from the start: each event is still sent once and its `print` logged once; after
/// three such runs in a row the route says, once, that its scripts run on the pool from then on;
/// a quick script's route never moves.
async fn a_script_past_its_allowance_moves_to_the_pool_and_runs_once(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::with(on.main());
    long_route(&cfg, &rx);
    cfg.file("plugins/quick.rhai", "fn filter(event) { print(\"quick \" + event.id); true }");
    cfg.route(&RouteConfig::new("quick").events(["order.paid"]).url(rx.url("/quick")).filter("plugins/quick.rhai"));
    let router = RouterProc::ready(&cfg).await;

    publish_long(&on, &router).await;
    on.publish(&router, &numbered("quick", 5)).await;
    rx.wait_distinct("/quick", 5, T).await;
    router.wait_log_count("quick quick-", 5, T).await;
    long_each_sent_and_printed_once(&router, &rx).await;
    for i in 0..5 {
        assert_eq!(router.log_count(&format!("quick quick-{i}")), 1, "quick-{i} printed once");
    }
    assert_eq!(router.log_count(MOVED), 1, "the long route moves once");
    let text = router.log_text();
    let line = text.lines().find(|l| l.contains(MOVED)).unwrap();
    assert!(line.contains("route=long") && line.contains("allowance=1ms") && line.contains("runs=3"), "{line}");
    assert!(cfg.dead_letters().await.is_empty(), "nothing dead-lettered");
}

/// `[scripts] inline_allowance = "0s"`: every script runs on the pool from the start, so a
/// script that would go past the allowance is never started on the async worker, never stopped
/// there and run again, and no route has to move: each event is sent once and printed once, and
/// the router never says that a route moved.
#[tokio::test]
async fn a_zero_inline_allowance_runs_every_script_on_the_pool() {
    let on = TestBroker::embedded();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::with(
        on.main().scripts(ScriptsSection { inline_allowance: Some(Duration::ZERO), ..Default::default() }),
    );
    long_route(&cfg, &rx);
    let router = RouterProc::ready(&cfg).await;
    publish_long(&on, &router).await;
    long_each_sent_and_printed_once(&router, &rx).await;
    assert_eq!(router.log_count(MOVED), 0, "nothing started on the async worker, nothing moved");
}

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    memory_and_body_budgets_stop_the_worst_scripts,
    scripts_burning_their_time_budget_hold_up_nothing_else,
    a_script_past_its_allowance_moves_to_the_pool_and_runs_once,
);

/// `validate` shows the budgets, defaults filled in, and refuses values out of range at their
/// line.
#[test]
fn validate_shows_the_script_budgets_and_refuses_bad_ones() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).scripts(ScriptsSection {
        max_memory_bytes: Some(8 << 20),
        pool: Some(3),
        ..Default::default()
    }));
    let out = std::process::Command::new(bin()).args(["validate", "--config"]).arg(cfg.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("scripts: each run within 8.0 MiB of memory (max_memory_bytes = 8388608), 1s (max_time), a body of at most 262144 bytes (max_body_bytes); 3 run(s) at once (pool), moved there after 1ms (inline_allowance)"),
        "{text}"
    );
    let out = std::process::Command::new(bin())
        .args(["validate", "--format", "json", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["scripts"],
        json!({"max_memory_bytes": 8388608, "max_time": "1s", "max_body_bytes": 262144, "pool": 3, "inline_allowance": "1ms"})
    );

    let cfg =
        ConfigDir::with_main_text("version = 1\n[scripts]\nmax_time = \"0s\"\npool = 0\ninline_allowance = \"2s\"\n");
    let out = std::process::Command::new(bin()).args(["validate", "--config"]).arg(cfg.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hookrelay.toml:3:12: [scripts] max_time must be more than zero"), "{text}");
    assert!(text.contains("hookrelay.toml:4:8: [scripts] pool must be from 1 to 256 threads, not 0"), "{text}");
    assert!(
        text.contains("hookrelay.toml:5:20: [scripts] inline_allowance must not be more than max_time (0s)"),
        "{text}"
    );
}
