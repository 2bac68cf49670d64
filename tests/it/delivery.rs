//! What a receiver sees: order, fan-out, filters, redaction, retries and dead letters.

use crate::common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// The delivery log's attempts of one event on one route, once `n` are recorded (the log is
/// written behind the deliveries).
async fn attempts_of(cfg: &ConfigDir, route: &str, event_id: &str, n: usize) -> Vec<hookrelay::store::Attempt> {
    let store = cfg.store().await;
    let id = hookrelay::store::delivery_id(route, event_id);
    let deadline = std::time::Instant::now() + T;
    loop {
        let attempts = store.attempts(&id).await.unwrap();
        if attempts.len() >= n {
            return attempts;
        }
        assert!(std::time::Instant::now() < deadline, "{route} {event_id}: {n} attempts expected, got {attempts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each request of `got` with webhook id `id`, in arrival order.
fn tries<'a>(got: &'a [Received], id: &str) -> Vec<&'a Received> {
    let mut t: Vec<&Received> = got.iter().filter(|r| r.id() == id).collect();
    t.sort_by_key(|r| r.at);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_route_delivers_1000_events_in_publish_order() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route("erp", &format!("events = [\"order.*\"]\nurl = \"{}\"\nordered = true", rx.url("/erp")));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("e", 1000)).await;
    let got = rx.wait_distinct("/erp", 1000, T).await;
    let ns: Vec<i64> = got.iter().map(|r| r.json()["data"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..1000).collect::<Vec<_>>(), "publish order kept, nothing twice");
    let seqs: Vec<u64> = got.iter().map(|r| r.header("hookrelay-sequence").parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "hookrelay-sequence only grows");
    for r in &got {
        verify_spec(SECRET, r).unwrap();
        assert_eq!(r.header("hookrelay-attempt"), "1");
        assert_eq!(r.header("hookrelay-route"), "erp");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.json()["type"], "order.paid");
        assert!(r.header("traceparent").starts_with("00-"));
    }
    let q = vh.queue("hookrelay.route.erp");
    assert_eq!(q["arguments"]["x-queue-type"], "quorum");
    assert_eq!(q["arguments"]["x-single-active-consumer"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_filter_and_redaction() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route("all", &format!("events = [\"order.*\"]\nurl = \"{}\"", rx.url("/all")));
    cfg.file("plugins/big.rhai", "fn filter(event) { event.data.total > 100 }\n");
    cfg.route(
        "big",
        &format!(
            "events = [\"order.paid\"]\nurl = \"{}\"\nfilter = \"plugins/big.rhai\"\nredact = [\"data.customer.email\"]\nformat = \"data\"",
            rx.url("/big")
        ),
    );
    let _router = RouterProc::ready(&cfg).await;
    let customer = json!({"name": "Ana", "email": "ana@example.com"});
    vh.publish(&[
        event("order.paid", "small", json!({"n": 1, "total": 10, "customer": customer})),
        event("order.paid", "large", json!({"n": 2, "total": 200, "customer": customer})),
        event("order.created", "created", json!({"n": 3})),
    ])
    .await;
    let all = rx.wait_distinct("/all", 3, T).await;
    let big = rx.wait_distinct("/big", 1, T).await;
    let mut ids: Vec<String> = all.iter().map(Received::id).collect();
    ids.sort();
    assert_eq!(ids, ["created", "large", "small"], "fan-out: every event on the catch-all route");
    assert_eq!(all.iter().find(|r| r.id() == "large").unwrap().json()["data"]["customer"]["email"], "ana@example.com");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let big_now = rx.on("/big");
    assert_eq!(big_now.len(), 1, "the filter dropped the small order: {big_now:?}");
    assert_eq!(big[0].id(), "large");
    assert_eq!(big[0].json(), json!({"n": 2, "total": 200, "customer": {"name": "Ana"}}), "email redacted");
    assert!(cfg.dead_letters().await.is_empty(), "filtered events are not dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unknown_events_are_dead_lettered_not_sent() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("plugins/boom.rhai", "fn transform(event) { if event.data.n == 13 { throw \"unlucky\"; } event }\n");
    cfg.route("r", &format!("events = [\"order.#\"]\nurl = \"{}\"\ntransform = \"plugins/boom.rhai\"", rx.url("/r")));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish_raw(&[("order.paid".into(), b"{not json".to_vec())]).await;
    vh.publish(&[
        event("order.paid", "bad-schema", json!({"n": "one"})),
        event("order.refunded", "unknown", json!({"n": 1})),
        event("order.paid", "script", json!({"n": 13})),
        event("order.paid", "good", json!({"n": 1})),
    ])
    .await;
    let got = rx.wait_distinct("/r", 1, T).await;
    let dls = cfg.wait_dead_letters(4, T).await;
    assert_eq!(got.len(), 1, "only the valid event is sent: {got:?}");
    assert_eq!(got[0].id(), "good");
    let mut reasons: Vec<String> = dls.iter().map(DeadLetter::reason).collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed", "schema", "script_error", "unknown_type"]);
    let schema = dls.iter().find(|d| d.reason() == "schema").unwrap();
    let details: serde_json::Value = serde_json::from_str(&schema.header("hookrelay-details").unwrap()).unwrap();
    assert_eq!(details[0]["path"], "/n", "the dead letter names the failing path: {details}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&schema.body).unwrap()["id"],
        "bad-schema",
        "the event is kept whole"
    );
    let script = dls.iter().find(|d| d.reason() == "script_error").unwrap();
    assert!(script.header("hookrelay-error").unwrap().contains("unlucky"));
    assert!(dls.iter().all(|d| d.header("hookrelay-route").as_deref() == Some("r")));
    assert_eq!(dls.iter().find(|d| d.reason() == "malformed").unwrap().body, b"{not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_or_5xx_is_retried_then_delivered_on_both_kinds_of_route() {
    let vh = Vhost::new();
    // The first attempt of event r-i answers FIRST[i], the next 200.
    const FIRST: [u16; 5] = [503, 500, 502, 408, 503];
    let first = |id: &str| FIRST[id.strip_prefix("r-").and_then(|i| i.parse::<usize>().ok()).unwrap_or(0)];
    let rx =
        Receiver::start(move |r, earlier| if earlier == 0 { (first(&r.id()), vec![]) } else { (200, vec![]) }).await;
    let cfg = ConfigDir::new(&vh);
    let retry = "[retry]\nmax_attempts = 3\nbackoff = [\"300ms\"]";
    cfg.route("ordered", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\n{retry}", rx.url("/o")));
    cfg.route("unordered", &format!("events = [\"order.paid\"]\nurl = \"{}\"\n{retry}", rx.url("/u")));
    cfg.route("unordered2", &format!("events = [\"order.created\"]\nurl = \"{}\"\n{retry}", rx.url("/u2")));
    let _router = RouterProc::ready(&cfg).await;
    // Unordered routes share one wait queue per backoff step; ordered routes retry in place.
    let wait = vh.queue("hookrelay.retry.300");
    assert_eq!(wait["arguments"]["x-queue-type"], "quorum", "{wait}");
    assert_eq!(vh.bindings("hookrelay.retry.300"), [("hookrelay.retry.300".to_string(), String::new())]);
    vh.publish(&numbered("r", 5)).await;
    for path in ["/o", "/u"] {
        let deadline = std::time::Instant::now() + T;
        while rx.on(path).len() < 10 {
            assert!(std::time::Instant::now() < deadline, "{path}: {:?}", rx.on(path).len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = rx.on(path);
        for (i, status) in FIRST.iter().enumerate() {
            let tries: Vec<&Received> = got.iter().filter(|r| r.id() == format!("r-{i}")).collect();
            assert_eq!(tries.len(), 2, "{path} r-{i}: one failure ({status}), one success");
            assert_eq!(tries[0].header("hookrelay-attempt"), "1");
            assert_eq!(tries[1].header("hookrelay-attempt"), "2");
            assert!(tries[1].at.duration_since(tries[0].at) >= Duration::from_millis(250), "backoff waited");
            verify_spec(SECRET, tries[1]).unwrap();
        }
    }
    let ordered: Vec<i64> = first_arrivals(&rx.on("/o")).iter().map(|id| id[2..].parse().unwrap()).collect();
    assert_eq!(ordered, [0, 1, 2, 3, 4], "ordered retries happen in place");
    assert!(cfg.dead_letters().await.is_empty());
    // The delivery log has every attempt, with the config that made it.
    let store = cfg.store().await;
    let filter = hookrelay::store::DeliveryFilter { route: Some("unordered".into()), limit: 100, ..Default::default() };
    let deadline = std::time::Instant::now() + T;
    let deliveries = loop {
        let page = store.deliveries(&filter).await.unwrap();
        if page.items.iter().filter(|d| d.status == hookrelay::store::Outcome::Delivered).count() == 5 {
            break page.items;
        }
        assert!(std::time::Instant::now() < deadline, "delivery log: {:?}", page.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(deliveries.iter().all(|d| d.attempts == 2 && d.last_status == Some(200)), "{deliveries:?}");
    use hookrelay::store::Outcome::{Delivered, Retrying};
    for route in ["ordered", "unordered"] {
        for (i, status) in FIRST.iter().enumerate() {
            let attempts = attempts_of(&cfg, route, &format!("r-{i}"), 2).await;
            let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome, a.status)).collect();
            assert_eq!(outcomes, [(1, Retrying, Some(*status)), (2, Delivered, Some(200))], "{route} r-{i}");
        }
    }
    let attempts = store.attempts(&hookrelay::store::delivery_id("unordered", "r-0")).await.unwrap();
    assert_eq!(attempts[0].config_version, 1);
    assert_eq!(attempts[0].config_revision.len(), 12);
    assert_eq!(attempts[0].response_body.as_deref(), Some("answer from the test receiver"));
    assert!(attempts[0].payload.is_none(), "payloads are not logged unless the route opts in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_or_a_redirect_is_dead_lettered_after_exactly_one_attempt_and_the_redirect_is_not_followed() {
    let vh = Vhost::new();
    // /moved redirects to another path of the same receiver, which would accept the event.
    let base = Arc::new(OnceLock::<String>::new());
    let here = base.clone();
    let rx = Receiver::start(move |r, _| match r.path.as_str() {
        "/moved" => (302, vec![("location".into(), format!("{}/elsewhere", here.get().unwrap()))]),
        "/elsewhere" => (200, vec![]),
        _ => (400, vec![]),
    })
    .await;
    base.set(rx.base.clone()).unwrap();
    let cfg = ConfigDir::new(&vh);
    cfg.route(
        "moved",
        &format!("events = [\"order.paid\"]\nurl = \"{}\"\n[retry]\nbackoff = [\"100ms\"]", rx.url("/moved")),
    );
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"{}\"\n[retry]\nbackoff = [\"100ms\"]", rx.url("/r")));
    cfg.route(
        "o",
        &format!(
            "events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\n[retry]\nbackoff = [\"100ms\"]",
            rx.url("/o")
        ),
    );
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("p", 1)).await;
    let dls = cfg.wait_dead_letters(3, T).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.on("/r").len(), 1, "exactly one attempt");
    assert_eq!(rx.on("/o").len(), 1, "exactly one attempt");
    assert_eq!(rx.on("/moved").len(), 1, "exactly one attempt");
    assert!(rx.on("/elsewhere").is_empty(), "the redirect was followed: {:?}", rx.on("/elsewhere"));
    for d in &dls {
        let status = if d.route == "moved" { "302" } else { "400" };
        assert_eq!(d.reason(), "rejected", "{d:?}");
        assert_eq!(d.header("hookrelay-last-status").as_deref(), Some(status), "{d:?}");
        assert_eq!(d.header("hookrelay-last-response").as_deref(), Some("answer from the test receiver"));
        assert_eq!(d.header("hookrelay-attempt").as_deref(), Some("1"));
    }
    let mut routes: Vec<&str> = dls.iter().map(|d| d.route.as_str()).collect();
    routes.sort();
    assert_eq!(routes, ["moved", "o", "r"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_and_the_next_attempt_delivers_on_both_kinds_of_route() {
    let vh = Vhost::new();
    // The first request of each event on each path is answered only long after the routes'
    // 300ms timeout, later ones at once. Counted on arrival: the slow answer is still pending
    // (and not yet recorded) when the retry comes in.
    let arrivals: Arc<Mutex<HashMap<(String, String), usize>>> = Arc::default();
    let rx = Receiver::start(move |r, _| {
        let n = {
            let mut a = arrivals.lock().unwrap();
            let n = a.entry((r.path.clone(), r.id())).or_default();
            *n += 1;
            *n
        };
        if n == 1 {
            // Holds this request's task; block_in_place hands the worker's other tasks on.
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs(3)));
        }
        (200, vec![])
    })
    .await;
    let cfg = ConfigDir::new(&vh);
    let rest = "timeout = \"300ms\"\n[retry]\nmax_attempts = 3\nbackoff = [\"100ms\"]";
    cfg.route("o", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\n{rest}", rx.url("/o")));
    cfg.route("u", &format!("events = [\"order.paid\"]\nurl = \"{}\"\n{rest}", rx.url("/u")));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("t", 3)).await;
    use hookrelay::store::Outcome::{Delivered, Retrying};
    for (route, path) in [("o", "/o"), ("u", "/u")] {
        // Both attempts of every event reach the receiver (the first one's answer comes too late).
        let deadline = std::time::Instant::now() + T;
        while rx.on(path).len() < 6 {
            assert!(std::time::Instant::now() < deadline, "{path}: {} requests", rx.on(path).len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut got = rx.on(path);
        got.sort_by_key(|r| r.at);
        for i in 0..3 {
            let id = format!("t-{i}");
            let t = tries(&got, &id);
            let attempt: Vec<String> = t.iter().map(|r| r.header("hookrelay-attempt")).collect();
            assert_eq!(attempt, ["1", "2"], "{path} {id}: timed out once, then delivered");
            verify_spec(SECRET, t[1]).unwrap();
            let attempts = attempts_of(&cfg, route, &id, 2).await;
            let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome, a.status)).collect();
            assert_eq!(outcomes, [(1, Retrying, None), (2, Delivered, Some(200))], "{route} {id}");
            let error = attempts[0].error.as_deref().unwrap_or_default();
            assert!(error.contains("no response within 300ms"), "{route} {id}: {error}");
        }
        if route == "o" {
            assert_eq!(first_arrivals(&got), ["t-0", "t-1", "t-2"], "the ordered route retried in place");
        }
    }
    assert!(cfg.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_error_is_retried_then_dead_lettered_as_exhausted_after_max_attempts() {
    let vh = Vhost::new();
    // A port bound but not listening, held for the whole test: every connect is refused, and no
    // other test can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    let cfg = ConfigDir::new(&vh);
    let retry = "[retry]\nmax_attempts = 3\nbackoff = [\"100ms\"]";
    cfg.route("o", &format!("events = [\"order.paid\"]\nurl = \"{url}/o\"\nordered = true\n{retry}"));
    cfg.route("u", &format!("events = [\"order.paid\"]\nurl = \"{url}/u\"\n{retry}"));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("c", 2)).await;
    let dls = cfg.wait_dead_letters(4, T).await;
    let mut which: Vec<(String, String)> = dls.iter().map(|d| (d.route.clone(), d.event_id.clone())).collect();
    which.sort();
    let want: Vec<(String, String)> =
        ["o", "u"].iter().flat_map(|r| (0..2).map(move |i| (r.to_string(), format!("c-{i}")))).collect();
    assert_eq!(which, want, "each event dead-lettered once per route");
    for d in &dls {
        assert_eq!(d.reason(), "exhausted", "{d:?}");
        assert_eq!(d.attempts, 3, "exactly max_attempts attempts: {d:?}");
        assert_eq!(d.last_status, None, "no response, no status: {d:?}");
        assert!(d.error.contains("connection failed"), "the error says why: {}", d.error);
    }
    use hookrelay::store::Outcome::{Dead, Retrying};
    for (route, id) in want {
        let attempts = attempts_of(&cfg, &route, &id, 3).await;
        let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome, a.status)).collect();
        assert_eq!(outcomes, [(1, Retrying, None), (2, Retrying, None), (3, Dead, None)], "{route} {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_event_blocks_nothing_on_an_unordered_route_and_holds_back_an_ordered_one() {
    let vh = Vhost::new();
    // f-0, published first, is refused every time; every other event is accepted.
    let rx = Receiver::start(|r, _| if r.id() == "f-0" { (503, vec![]) } else { (200, vec![]) }).await;
    let cfg = ConfigDir::new(&vh);
    let retry = "[retry]\nmax_attempts = 4\nbackoff = [\"1s\"]";
    // One delivery at a time on the unordered route too: were its retries to wait in place, the
    // others would have to wait behind them.
    cfg.route("u", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nconcurrency = 1\n{retry}", rx.url("/u")));
    cfg.route("o", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true\n{retry}", rx.url("/o")));
    let _router = RouterProc::ready(&cfg).await;
    let n = 21;
    vh.publish(&numbered("f", n)).await;
    let dls = cfg.wait_dead_letters(2, T).await;
    for d in &dls {
        assert_eq!((d.event_id.as_str(), d.reason.as_str(), d.attempts), ("f-0", "exhausted", 4), "{d:?}");
    }
    for path in ["/u", "/o"] {
        let got = rx.wait_distinct(path, n, T).await;
        let failing = tries(&got, "f-0");
        let attempt: Vec<String> = failing.iter().map(|r| r.header("hookrelay-attempt")).collect();
        assert_eq!(attempt, ["1", "2", "3", "4"], "{path}");
        let last_try = failing[3].at;
        let others: Vec<&Received> = got.iter().filter(|r| r.id() != "f-0").collect();
        assert_eq!(others.len(), n - 1, "{path}: every other event once");
        if path == "/u" {
            let late: Vec<String> = others.iter().filter(|r| r.at > last_try).map(|r| r.id()).collect();
            assert!(late.is_empty(), "/u: events waited for the failing one to be dead-lettered: {late:?}");
        } else {
            let early: Vec<String> = others.iter().filter(|r| r.at < last_try).map(|r| r.id()).collect();
            assert!(early.is_empty(), "/o: events overtook the failing one: {early:?}");
            assert_eq!(first_arrivals(&got), (0..n).map(|i| format!("f-{i}")).collect::<Vec<_>>());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producers_sequence_is_passed_on_and_the_router_assigns_growing_ones_otherwise() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.route("seq", &format!("events = [\"order.paid\"]\nurl = \"{}\"\nordered = true", rx.url("/seq")));
    let _router = RouterProc::ready(&cfg).await;
    // None given, a string, a number beyond f64's exact integers, an empty string (not a
    // sequence), and a number below the ones the router assigns.
    let given = [
        None,
        Some(json!("batch-7/42")),
        None,
        Some(json!(9_007_199_254_740_993u64)),
        Some(json!("")),
        Some(json!(3)),
        None,
    ];
    let events: Vec<_> = given
        .iter()
        .enumerate()
        .map(|(i, seq)| {
            let mut e = event("order.paid", &format!("s-{i}"), json!({"n": i}));
            if let Some(seq) = seq {
                e["sequence"] = seq.clone();
            }
            e
        })
        .collect();
    vh.publish(&events).await;
    let got = rx.wait_distinct("/seq", given.len(), T).await;
    assert_eq!(first_arrivals(&got), (0..given.len()).map(|i| format!("s-{i}")).collect::<Vec<_>>());
    let header: Vec<String> = got.iter().map(|r| r.header("hookrelay-sequence")).collect();
    assert_eq!((header[1].as_str(), header[3].as_str(), header[5].as_str()), ("batch-7/42", "9007199254740993", "3"));
    let assigned: Vec<u64> = [0, 2, 4, 6]
        .iter()
        .map(|&i| header[i].parse().unwrap_or_else(|_| panic!("s-{i}: not a router-assigned number: {:?}", header[i])))
        .collect();
    assert!(assigned.windows(2).all(|w| w[0] < w[1]), "assigned sequences only grow: {assigned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts_and_honour_retry_after() {
    let vh = Vhost::new();
    let rx = Receiver::start(|_, _| (429, vec![("retry-after".into(), "1".into())])).await;
    let cfg = ConfigDir::new(&vh);
    cfg.route(
        "r",
        &format!(
            "events = [\"order.paid\"]\nurl = \"{}\"\n[retry]\nmax_attempts = 3\nbackoff = [\"100ms\"]",
            rx.url("/r")
        ),
    );
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("x", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    let got = rx.on("/r");
    assert_eq!(got.len(), 3, "max_attempts = 3");
    for w in got.windows(2) {
        assert!(
            w[1].at.duration_since(w[0].at) >= Duration::from_millis(950),
            "Retry-After: 1 honoured over a 100ms backoff"
        );
    }
    assert_eq!(dls[0].reason(), "exhausted");
    assert_eq!(dls[0].header("hookrelay-last-status").as_deref(), Some("429"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_blocked_at_connect_time_when_not_allowed() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    // A host name, so the URL passes the load-time check and the guard judges the resolved address.
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    let cfg = ConfigDir::with_main(&format!("[broker]\nurl = \"{}\"\n[security]\nallow_http = true\n", vh.url));
    cfg.route("r", &format!("events = [\"order.paid\"]\nurl = \"http://localhost:{port}/r\""));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("s", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    assert_eq!(dls[0].reason(), "blocked");
    assert!(dls[0].header("hookrelay-error").unwrap().contains("blocked"), "{:?}", dls[0].header("hookrelay-error"));
    assert!(rx.all().is_empty(), "nothing reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_negotiates_http2_and_an_untrusted_certificate_says_so() {
    let vh = Vhost::new();
    let ca = TestCa::new();
    let rx = Receiver::start_tls(&ca).await;
    let main =
        |ca_line: &str| format!("[broker]\nurl = \"{}\"\n[security]\nallow_private_networks = true\n{ca_line}", vh.url);
    // Trusted through [security] ca_file: delivered over HTTP/2, chosen by ALPN.
    let cfg = ConfigDir::with_main(&main("ca_file = \"ca.pem\"\n"));
    cfg.file("ca.pem", &ca.ca_pem);
    cfg.route("tls", &format!("events = [\"order.paid\"]\nurl = \"{}\"", rx.url("/tls")));
    let router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("h", 3)).await;
    let got = rx.wait_distinct("/tls", 3, T).await;
    for r in &got {
        assert_eq!(r.version, http::Version::HTTP_2, "h2 by ALPN");
        verify_spec(SECRET, r).unwrap();
    }
    drop(router);
    // Not trusted: the failure is named as a TLS failure in the dead letter.
    let cfg = ConfigDir::with_main(&main(""));
    cfg.route("tls", &format!("events = [\"order.paid\"]\nurl = \"{}\"\n[retry]\nmax_attempts = 1", rx.url("/tls")));
    let _router = RouterProc::ready(&cfg).await;
    vh.publish(&numbered("u", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    let error = dls[0].header("hookrelay-error").unwrap();
    assert!(error.contains("TLS handshake failed") && error.contains("UnknownIssuer"), "{error}");
    assert_eq!(rx.on("/tls").len(), 3, "nothing reached the untrusted receiver");
}
