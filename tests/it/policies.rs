//! Endpoint policies as a receiver meets them: the circuit breaker (opens after `failures`, no
//! request while open, one probe, closes; every event delivered afterwards, nothing
//! dead-lettered, order kept on an ordered route; held events through a router restart; an API
//! subscription disabled after `disable_after`) and the rate limit (never more than
//! `per_second × window + burst` requests in any window the receiver measures; a 429's
//! `Retry-After` slows the whole route). Each on both brokers (`policies::on_rabbitmq::*`,
//! `policies::on_embedded::*`), the router a real process. Then what only RabbitMQ has (its
//! consumer timeout and delivery limit against an ordered route held in place), and what the
//! CLI says about the policies.
//!
//! Times are asserted only as lower bounds the product promises (no request before the open
//! period or the `Retry-After` is over), never as how fast anything went.

use crate::common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    an_unordered_routes_circuit_opens_holds_its_events_without_a_request_then_one_probe_closes_it,
    an_ordered_routes_circuit_holds_its_head_in_place_and_keeps_order_across_the_open_period,
    held_events_survive_a_router_restart_while_the_circuit_is_open,
    a_subscription_failing_for_disable_after_is_disabled_with_the_reason,
    a_rate_limited_route_never_exceeds_rate_times_window_plus_burst_in_any_window,
    a_429_with_retry_after_holds_back_the_other_events_of_the_route,
);

/// A receiver whose answer to the `n`-th request (0-based, over all paths) is `answer(n)`.
async fn receiver(answer: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
    let count = AtomicUsize::new(0);
    Receiver::start(move |_, _| (answer(count.fetch_add(1, Ordering::SeqCst)), vec![])).await
}

/// The route as `GET /v1/routes/{name}` shows it, once `done` holds.
async fn route_view(api: &Api, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/routes/{name}");
    eventually(what, T, async || api.get(&path).await.json, done).await
}

/// A sample of the Prometheus text: `name{labels} value`, the labels as rendered.
fn sample(scrape: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    scrape.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

/// The webhook ids of the requests answered 2xx, in arrival order, given that the first
/// `failed` requests were answered with a failure.
fn delivered(got: &[Received], failed: usize) -> Vec<String> {
    got[failed..].iter().map(Received::id).collect()
}

/// The circuit of route `r` (`ordered` or not, one delivery at a time) against a receiver that
/// fails the first 4 requests: 3 open the circuit, the first probe fails and opens it again, the
/// second closes it. What the receiver sees, the API, the metrics, the dead letters.
async fn circuit_opens_holds_and_closes(on: TestBroker, ordered: bool) {
    const OPEN_FOR: Duration = Duration::from_secs(2);
    let rx = receiver(|n| if n < 4 { 503 } else { 200 }).await;
    let cfg = on.config();
    let route = RouteConfig::new("r")
        .events(["order.*"])
        .url(rx.url("/r"))
        .ordered(ordered)
        .concurrency(1)
        // On the ordered route the head takes the 3 failures and the failed probe: its 4th
        // attempt, the last, which a failed probe never uses up.
        .max_attempts(4)
        .backoff([ms(300)])
        .circuit_breaker(3, OPEN_FOR);
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let closed = api.get("/v1/routes/r").await.json;
    assert_eq!(
        (&closed["circuit_breaker"]["state"], &closed["circuit_breaker"]["failures"]),
        (&json!("closed"), &json!(3)),
        "{closed}"
    );
    on.publish(&router, &numbered("e", 10)).await;

    let failures = rx.wait_requests("/r", 3, T).await;
    let open = route_view(&api, "r", "the circuit open", |v| v["circuit_breaker"]["state"] == "open").await;
    assert_eq!(open["circuit_breaker"]["consecutive_failures"], 3, "{open}");
    let scrape = api.get("/metrics").await.text;
    assert_eq!(sample(&scrape, "hookrelay_circuit_state", r#"route="r",state="open""#), Some(1.0), "{scrape}");

    // Nothing while open: the probe comes one period after the third failure (the circuit
    // opened when the router read that answer), alone; it fails and opens the circuit again.
    let probe = rx.wait_requests("/r", 4, T).await;
    assert!(probe[3].at >= failures[2].at + OPEN_FOR, "no request while open: {:?}", gaps(&probe));
    route_view(&api, "r", "the circuit open again after the failed probe", |v| {
        v["circuit_breaker"]["state"] == "open" && v["circuit_breaker"]["consecutive_failures"] == 4
    })
    .await;

    // The second probe succeeds, a period later; then every event goes.
    let got = rx.wait_until("/r", "every event delivered", T, |got| got.len() >= 4 && distinct(&got[4..]) == 10).await;
    assert!(got[4].at >= got[3].at + OPEN_FOR, "no request while open again: {:?}", gaps(&got));
    let ids = delivered(&got, 4);
    assert_eq!(ids.len(), 10, "each event delivered once: {ids:?}");
    if ordered {
        let expected: Vec<String> = (0..10).map(|i| format!("e-{i}")).collect();
        assert_eq!(ids, expected, "publish order kept across the open period");
        let head: Vec<(String, String)> = got[..5].iter().map(|r| (r.id(), r.header("hookrelay-attempt"))).collect();
        let expected: Vec<(String, String)> = (1..=5).map(|a| ("e-0".to_string(), a.to_string())).collect();
        assert_eq!(head, expected, "the head took every failure and both probes, past max_attempts 4");
    }
    for r in &got {
        verify_spec(SECRET, r).unwrap();
    }
    let closed = route_view(&api, "r", "the circuit closed", |v| v["circuit_breaker"]["state"] == "closed").await;
    assert_eq!(closed["circuit_breaker"]["consecutive_failures"], 0, "{closed}");
    assert!(closed["circuit_breaker"]["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{closed}");

    let scrape = api.get("/metrics").await.text;
    for (to, n) in [("open", 2.0), ("half_open", 2.0), ("closed", 1.0)] {
        let labels = format!(r#"route="r",to="{to}""#);
        assert_eq!(sample(&scrape, "hookrelay_circuit_transitions_total", &labels), Some(n), "to {to}:\n{scrape}");
    }
    assert_eq!(sample(&scrape, "hookrelay_circuit_state", r#"route="r",state="closed""#), Some(1.0));
    let held = sample(&scrape, "hookrelay_events_held_total", r#"route="r",reason="circuit_open""#);
    assert!(held.is_some_and(|n| n >= 1.0), "events were held: {held:?}");
    assert!(cfg.dead_letters().await.is_empty(), "nothing dead-lettered");
    router.wait_log("circuit opened: no request goes to the endpoint", T).await;
    router.wait_log("circuit closed: the probe succeeded", T).await;
}

fn distinct(got: &[Received]) -> usize {
    got.iter().map(Received::id).collect::<std::collections::HashSet<_>>().len()
}

/// Time between arrivals, for failure messages.
fn gaps(got: &[Received]) -> Vec<(String, Duration)> {
    got.windows(2).map(|w| (w[1].id(), w[1].at - w[0].at)).collect()
}

async fn an_unordered_routes_circuit_opens_holds_its_events_without_a_request_then_one_probe_closes_it(on: TestBroker) {
    circuit_opens_holds_and_closes(on, false).await;
}

async fn an_ordered_routes_circuit_holds_its_head_in_place_and_keeps_order_across_the_open_period(on: TestBroker) {
    circuit_opens_holds_and_closes(on, true).await;
}

async fn held_events_survive_a_router_restart_while_the_circuit_is_open(on: TestBroker) {
    const OPEN_FOR: Duration = Duration::from_secs(10);
    // Each route's first request fails, which opens its circuit (failures = 1).
    let firsts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let f = firsts.clone();
    let rx = Receiver::start(move |r, _| {
        let mut seen = f.lock().unwrap();
        let n = seen.entry(r.path.clone()).or_default();
        *n += 1;
        (if *n == 1 { 503 } else { 200 }, vec![])
    })
    .await;
    let cfg = on.config();
    for (name, ordered) in [("u", false), ("o", true)] {
        let route = RouteConfig::new(name)
            .events(["order.*"])
            .url(rx.url(&format!("/{name}")))
            .ordered(ordered)
            .concurrency(1)
            .backoff([ms(300)])
            .circuit_breaker(1, OPEN_FOR);
        cfg.route(&route);
    }
    let mut router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    on.publish(&router, &numbered("e", 6)).await;
    for name in ["u", "o"] {
        rx.wait_requests(&format!("/{name}"), 1, T).await;
        route_view(&api, name, "the circuit open", |v| v["circuit_breaker"]["state"] == "open").await;
    }
    assert!(router.term(T).await.success(), "stopped while open");
    assert_eq!((rx.on("/u").len(), rx.on("/o").len()), (1, 1), "no request while open, before the stop");

    // A new process has a closed circuit of its own; what was held is all there.
    let _router = RouterProc::ready(&cfg).await;
    for name in ["u", "o"] {
        let path = format!("/{name}");
        let got = rx.wait_until(&path, "every event delivered", T, |got| distinct(&got[1..]) == 6).await;
        let ids = delivered(&got, 1);
        if name == "o" {
            let expected: Vec<String> = (0..6).map(|i| format!("e-{i}")).collect();
            assert_eq!(ids, expected, "the ordered route, in order");
        } else {
            assert_eq!(distinct(&got[1..]), 6, "{ids:?}");
        }
    }
    assert!(cfg.dead_letters().await.is_empty(), "nothing dead-lettered");
}

async fn a_subscription_failing_for_disable_after_is_disabled_with_the_reason(on: TestBroker) {
    let rx = receiver(|_| 503).await;
    let cfg = on.config();
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let spec = json!({
        "name": "tenant-a",
        "events": ["order.*"],
        "url": rx.url("/a"),
        "backoff": ["300ms"],
        "circuit_breaker": {"failures": 1, "open_for": "500ms", "disable_after": "2s"},
        "rate_limit": {"per_second": 50},
    });
    let created = api.post("/v1/subscriptions", spec).await;
    let sub = created.expect(201);
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["circuit_breaker"], json!({"failures": 1, "open_for": "500ms", "disable_after": "2s"}));
    let route = api.get("/v1/routes/tenant-a").await.json;
    assert_eq!(route["circuit_breaker"]["disable_after_ms"], 2000, "{route}");
    assert_eq!((&route["rate_limit"]["per_second"], &route["rate_limit"]["burst"]), (&json!(50.0), &json!(50)));

    on.publish(&router, &numbered("s", 3)).await;
    let disabled = eventually(
        "the subscription disabled",
        T,
        async || api.get(&format!("/v1/subscriptions/{id}")).await.json,
        |s| s["enabled"] == false,
    )
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("failed continuously since") && reason.contains("disable_after 2s"), "{disabled}");
    assert!(rx.on("/a").len() >= 2, "the failure that opened the circuit, then probes: {:?}", rx.on("/a"));
    router.wait_log("endpoint failing for disable_after: subscription disabled", T).await;
    assert!(cfg.dead_letters().await.is_empty(), "its events wait in its queue, not in the dead letters");
}

async fn a_rate_limited_route_never_exceeds_rate_times_window_plus_burst_in_any_window(on: TestBroker) {
    const PER_SECOND: f64 = 4.0;
    const BURST: usize = 2;
    const N: usize = 24;
    let rx = Receiver::ok().await;
    let cfg = on.config();
    let route = RouteConfig::new("r")
        .events(["order.*"])
        .url(rx.url("/r"))
        .concurrency(8)
        .rate_limit(PER_SECOND, Some(BURST as u32));
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    on.publish(&router, &numbered("e", N)).await;
    let got = rx.wait_distinct("/r", N, T).await;
    assert_eq!(got.len(), N, "each event once");
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    for window in [ms(500), ms(1000), ms(2000), ms(3000)] {
        let most = (PER_SECOND * window.as_secs_f64()).floor() as usize + BURST;
        for (i, start) in at.iter().enumerate() {
            let within = at[i..].iter().take_while(|t| **t < *start + window).count();
            assert!(
                within <= most,
                "{within} requests in {window:?} from request {i} (at most {most}): {:?}",
                gaps(&got)
            );
        }
    }
    let view = api.get("/v1/routes/r").await.json;
    let rate = &view["rate_limit"];
    assert_eq!(
        (&rate["consumers"], &rate["replica_per_second"], &rate["replica_burst"]),
        (&json!(1), &json!(4.0), &json!(2))
    );
    let scrape = api.get("/metrics").await.text;
    let waits = sample(&scrape, "hookrelay_rate_limited_waits_total", r#"route="r""#);
    assert!(waits.is_some_and(|n| n >= 1.0), "{waits:?}");
    assert_eq!(sample(&scrape, "hookrelay_rate_limit_per_second", r#"route="r""#), Some(4.0));
}

async fn a_429_with_retry_after_holds_back_the_other_events_of_the_route(on: TestBroker) {
    const RETRY_AFTER: Duration = Duration::from_secs(2);
    let count = AtomicUsize::new(0);
    let rx = Receiver::start(move |_, _| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            (429, vec![("retry-after".to_string(), RETRY_AFTER.as_secs().to_string())])
        } else {
            (200, vec![])
        }
    })
    .await;
    let cfg = on.config();
    // A rate that would let every event go at once: what holds them back is the 429.
    let route = RouteConfig::new("r")
        .events(["order.*"])
        .url(rx.url("/r"))
        .concurrency(1)
        .backoff([ms(100)])
        .rate_limit(100.0, None);
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("e", 5)).await;
    let got = rx.wait_until("/r", "every event, and the 429's again", T, |g| g.len() >= 6 && distinct(g) == 5).await;
    let refused = &got[0];
    for r in &got[1..] {
        assert!(
            r.at >= refused.at + RETRY_AFTER,
            "{} came before the 429's Retry-After was over: {:?}",
            r.id(),
            gaps(&got)
        );
    }
    router.wait_log("the receiver answered 429 with Retry-After: the whole route waits", T).await;
    assert!(cfg.dead_letters().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ only: an ordered route's event held in place, against the broker's consumer timeout.

/// The `hookrelay.toml` of a test on `vh` that says RabbitMQ's consumer timeout is `timeout`
/// (RabbitMQ's own stays 30 minutes: what is tested is that the router hands the held event
/// back before the time it was told), with `delivery_limit`.
fn short_consumer_timeout(vh: &Vhost, timeout: Duration, delivery_limit: u32) -> ConfigDir {
    ConfigDir::with(rabbitmq_main(&vh.url).consumer_timeout(timeout).delivery_limit(delivery_limit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_route_hands_its_held_event_back_before_the_consumer_timeout_and_keeps_order() {
    const OPEN_FOR: Duration = Duration::from_secs(9);
    let vh = Vhost::new();
    let rx = receiver(|n| if n == 0 { 503 } else { 200 }).await;
    let cfg = short_consumer_timeout(&vh, Duration::from_secs(3), 20);
    let route = RouteConfig::new("o")
        .events(["order.*"])
        .url(rx.url("/o"))
        .ordered(true)
        .backoff([ms(300)])
        .circuit_breaker(1, OPEN_FOR);
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("e", 5)).await;
    let got = rx.wait_distinct("/o", 5, T).await;
    // Handed back every 2.5 s (5/6 of 3 s) while open: each time the broker gives the head back
    // first, and the circuit, still open, holds it again without a request.
    assert!(router.log_count("held event handed back") >= 2, "{}", router.log_text());
    assert!(got[1].at >= got[0].at + OPEN_FOR, "no request while open: {:?}", gaps(&got));
    let ids: Vec<String> = got[1..].iter().map(Received::id).collect();
    assert_eq!(ids, ["e-0", "e-1", "e-2", "e-3", "e-4"], "in order, each once");
    assert!(cfg.dead_letters().await.is_empty(), "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_delivery_limit_allows_dead_letters_the_held_head_as_documented() {
    // delivery_limit 1: two deliveries, so the second hand back is one too many, for the held
    // head and for the event prefetched behind it alike.
    let vh = Vhost::new();
    let rx = receiver(|_| 503).await;
    let cfg = short_consumer_timeout(&vh, Duration::from_secs(2), 1);
    let route = RouteConfig::new("o")
        .events(["order.*"])
        .url(rx.url("/o"))
        .ordered(true)
        .backoff([ms(300)])
        .circuit_breaker(1, Duration::from_secs(600));
    cfg.route(&route);
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("e", 2)).await;
    let dead = cfg.wait_dead_letters(2, T).await;
    let mut seen: Vec<(String, String)> = dead.iter().map(|d| (d.event_id.clone(), d.reason())).collect();
    seen.sort();
    let limit = "delivery_limit".to_string();
    assert_eq!(seen, [("e-0".to_string(), limit.clone()), ("e-1".to_string(), limit)]);
    assert_eq!(rx.on("/o").len(), 1, "one request (the one that opened the circuit), then none: {:?}", rx.on("/o"));
    assert!(router.log_count("held event handed back") >= 2, "{}", router.log_text());
}

// ---------------------------------------------------------------------------------------------
// The CLI.

#[test]
fn validate_reports_each_bad_policy_value_at_its_line_and_column() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    cfg.route_text(
        "r",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[circuit_breaker]\nfailures = 0\nopen_for = \"0s\"\n\
         disable_after = \"1h\"\n[rate_limit]\nper_second = -2\nburst = 0\n",
    );
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(cfg.path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [
        "error: routes/r.toml:4:12: `circuit_breaker.failures` must be at least 1 and at most 10000",
        "error: routes/r.toml:5:12: `circuit_breaker.open_for` must be more than zero and at most 1 day",
        "error: routes/r.toml:6:1: `circuit_breaker.disable_after` applies to API subscriptions only",
        "error: routes/r.toml:8:14: `rate_limit.per_second` must be more than zero and at most 100000",
        "error: routes/r.toml:9:9: `rate_limit.burst` must be at least 1 and at most 100000",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "expected {line:?} in:\n{text}");
    }
    let unknown = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    unknown.route_text("r", "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/\"\n[rate_limit]\nper_secnd = 2\n");
    let out = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(unknown.path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("routes/r.toml:4:1: unknown field `per_secnd` (did you mean `per_second`?)"), "{text}");
}

#[test]
fn route_test_says_what_each_policy_does_and_nothing_for_a_route_without() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).rabbitmq_defaults().loopback_targets());
    cfg.route(
        &RouteConfig::new("r")
            .events(["order.paid"])
            .url("http://127.0.0.1:1/hook")
            .ordered(true)
            .circuit_breaker(5, Duration::from_secs(30))
            .rate_limit(20.0, None),
    );
    cfg.route(&RouteConfig::new("plain").events(["order.paid"]).url("http://127.0.0.1:1/plain"));
    cfg.file("ok.json", &event("order.paid", "t-1", json!({"n": 1})).to_string());
    let run = |name: &str| {
        let out = std::process::Command::new(bin())
            .args(["route", "test", name, "--event"])
            .arg(cfg.path().join("ok.json"))
            .arg("--config")
            .arg(cfg.path())
            .env(SECRET_ENV, SECRET)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run("r");
    for says in [
        "circuit breaker: after 5 consecutive retryable failures",
        "no request goes to http://127.0.0.1:1/hook for 30s",
        "its first event is held in place and later ones wait behind it, in order",
        "circuit breaker, ordered on RabbitMQ: a delivery may stay unacked for 30m",
        "every 25m the held event goes back to the head of the queue",
        "[broker] delivery_limit (20)",
        "rate limit: at most 20 attempts start per second (a bucket of 20), retries included",
        "a 429 with Retry-After pauses the whole route until then",
        "an ordered route has one active consumer, which uses the whole rate",
    ] {
        assert!(out.contains(says), "expected {says:?} in:\n{out}");
    }
    let plain = run("plain");
    assert!(!plain.contains("circuit breaker") && !plain.contains("rate limit"), "{plain}");
}

// ---------------------------------------------------------------------------------------------
// The API's contract for the new subscription fields.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_states_the_policy_fields_with_their_constraints_and_bad_values_are_refused() {
    let on = TestBroker::embedded();
    let cfg = on.config();
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let doc = api.get("/openapi.json").await.json;
    let schemas = &doc["components"]["schemas"];
    let spec = &schemas["SubscriptionSpec"]["properties"];
    assert!(spec["circuit_breaker"].is_object() && spec["rate_limit"].is_object(), "{spec}");
    let cb = &schemas["CircuitBreakerSpec"]["properties"];
    assert_eq!((&cb["failures"]["minimum"], &cb["failures"]["maximum"]), (&json!(1), &json!(10000)), "{cb}");
    assert!(cb["open_for"].is_object() && cb["disable_after"].is_object(), "{cb}");
    let rl = &schemas["RateLimitSpec"];
    assert_eq!(rl["required"], json!(["per_second"]), "{rl}");
    assert_eq!(rl["properties"]["per_second"]["exclusiveMinimum"], json!(0), "{rl}");
    assert_eq!(rl["properties"]["burst"]["minimum"], json!(1), "{rl}");

    let bad = json!({
        "name": "bad",
        "events": ["order.*"],
        "url": "http://127.0.0.1:1/",
        "circuit_breaker": {"failures": 0, "open_for": "soon", "disable_after": "0s"},
        "rate_limit": {"per_second": 0, "burst": 0},
    });
    let refused = api.post("/v1/subscriptions", bad).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    let fields: Vec<&str> = refused.json["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "circuit_breaker.failures",
            "circuit_breaker.disable_after",
            "rate_limit.per_second",
            "rate_limit.burst",
            "circuit_breaker.open_for"
        ],
        "{}",
        refused.text
    );
}
