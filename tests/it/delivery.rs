//! What a receiver sees: order, fan-out, filters, redaction, retries and dead letters, and a
//! router killed or stopped mid-stream; each test on both brokers (`delivery::on_rabbitmq::*`,
//! `delivery::on_embedded::*`), the router a real process. What only RabbitMQ has (queue
//! arguments, two routers on one queue, a connection the broker closes) is checked on RabbitMQ
//! only, here and in `resilience.rs`.

use crate::common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    ordered_route_delivers_1000_events_in_publish_order,
    fan_out_filter_and_redaction,
    invalid_and_unknown_events_are_dead_lettered_not_sent,
    a_408_or_5xx_is_retried_then_delivered_on_both_kinds_of_route,
    a_400_or_a_redirect_is_dead_lettered_after_exactly_one_attempt_and_the_redirect_is_not_followed,
    a_timeout_is_retried_and_the_next_attempt_delivers_on_both_kinds_of_route,
    a_connect_error_is_retried_then_dead_lettered_as_exhausted_after_max_attempts,
    one_failing_event_blocks_nothing_on_an_unordered_route_and_holds_back_an_ordered_one,
    the_producers_sequence_is_passed_on_and_the_router_assigns_growing_ones_otherwise,
    retries_stop_at_max_attempts_and_honour_retry_after,
    private_targets_are_blocked_at_connect_time_when_not_allowed,
    https_with_a_private_ca_negotiates_http2_and_an_untrusted_certificate_says_so,
    sigkill_mid_stream_then_restart_loses_nothing_and_keeps_order_with_events_published_while_down,
    sigterm_finishes_the_delivery_in_flight_and_exits_zero,
);

/// Each request of `got` with webhook id `id`, in arrival order.
fn tries<'a>(got: &'a [Received], id: &str) -> Vec<&'a Received> {
    let mut t: Vec<&Received> = got.iter().filter(|r| r.id() == id).collect();
    t.sort_by_key(|r| r.at);
    t
}

async fn ordered_route_delivers_1000_events_in_publish_order(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("erp").events(["order.*"]).url(rx.url("/erp")).ordered(true));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("e", 1000)).await;
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
    // RabbitMQ only: an ordered route is a quorum queue with a single active consumer.
    if let Some(vh) = on.vhost() {
        let q = vh.queue("hookrelay.route.erp");
        assert_eq!(q["arguments"]["x-queue-type"], "quorum");
        assert_eq!(q["arguments"]["x-single-active-consumer"], true);
    }
}

async fn fan_out_filter_and_redaction(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("all").events(["order.*"]).url(rx.url("/all")));
    cfg.file("plugins/big.rhai", "fn filter(event) { event.data.total > 100 }\n");
    cfg.route(
        &RouteConfig::new("big")
            .events(["order.paid"])
            .url(rx.url("/big"))
            .filter("plugins/big.rhai")
            .redact(["data.customer.email"])
            .format(BodyFormat::Data),
    );
    let router = RouterProc::ready(&cfg).await;
    let customer = json!({"name": "Ana", "email": "ana@example.com"});
    let events = [
        event("order.paid", "small", json!({"n": 1, "total": 10, "customer": customer})),
        event("order.paid", "large", json!({"n": 2, "total": 200, "customer": customer})),
        event("order.created", "created", json!({"n": 3})),
    ];
    on.publish(&router, &events).await;
    let all = rx.wait_distinct("/all", 3, T).await;
    let big = rx.wait_distinct("/big", 1, T).await;
    let mut ids: Vec<String> = all.iter().map(Received::id).collect();
    ids.sort();
    assert_eq!(ids, ["created", "large", "small"], "fan-out: every event on the catch-all route");
    assert_eq!(all.iter().find(|r| r.id() == "large").unwrap().json()["data"]["customer"]["email"], "ana@example.com");
    // Long enough for a wrongly passed small order to show up.
    tokio::time::sleep(ms(500)).await;
    let big_now = rx.on("/big");
    assert_eq!(big_now.len(), 1, "the filter dropped the small order: {big_now:?}");
    assert_eq!(big[0].id(), "large");
    assert_eq!(big[0].json(), json!({"n": 2, "total": 200, "customer": {"name": "Ana"}}), "email redacted");
    assert!(cfg.dead_letters().await.is_empty(), "filtered events are not dead letters");
}

async fn invalid_and_unknown_events_are_dead_lettered_not_sent(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.file("plugins/boom.rhai", "fn transform(event) { if event.data.n == 13 { throw \"unlucky\"; } event }\n");
    cfg.route(&RouteConfig::new("r").events(["order.#"]).url(rx.url("/r")).transform("plugins/boom.rhai"));
    let mut router = RouterProc::ready(&cfg).await;
    let mut messages = vec![("order.paid".to_string(), b"{not json".to_vec())];
    messages.extend(raw(&[
        event("order.paid", "bad-schema", json!({"n": "one"})),
        event("order.refunded", "unknown", json!({"n": 1})),
        event("order.paid", "script", json!({"n": 13})),
        event("order.paid", "good", json!({"n": 1})),
    ]));
    match &on {
        // A RabbitMQ producer publishes whatever it has to the exchange.
        TestBroker::Rabbitmq(vh) => vh.publish_raw(&messages).await,
        TestBroker::Embedded(_) => {
            // The embedded broker's producers meet the ingest API, which refuses the first three
            // with the reason the router would dead-letter them for...
            let api = Api::new(&router.api().await, None);
            for ((_, body), (status, code)) in
                messages.iter().zip([(400, "bad_request"), (422, "schema"), (422, "unknown_type")])
            {
                let answer = api.send("POST", "/v1/events", Some(body.clone()), &[]).await;
                assert_eq!((answer.status, answer.code()), (status, code), "{}", answer.text);
            }
            // ...but with the router stopped, whatever writes to the queue file is not checked
            // (as `hookrelay publish` then): the router checks every message it takes.
            assert!(router.term(T).await.success());
            on.publish_stopped(&messages).await;
            router = RouterProc::ready(&cfg).await;
        }
    }
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
    drop(router);
}

async fn a_408_or_5xx_is_retried_then_delivered_on_both_kinds_of_route(on: TestBroker) {
    // The first attempt of event r-i answers FIRST[i], the next 200.
    const FIRST: [u16; 5] = [503, 500, 502, 408, 503];
    let first = |id: &str| FIRST[id.strip_prefix("r-").and_then(|i| i.parse::<usize>().ok()).unwrap_or(0)];
    let rx =
        Receiver::start(move |r, earlier| if earlier == 0 { (first(&r.id()), vec![]) } else { (200, vec![]) }).await;
    let cfg = on.config();
    let route = |name: &str, events: &str, path: &str| {
        RouteConfig::new(name).events([events]).url(rx.url(path)).max_attempts(3).backoff([ms(300)])
    };
    cfg.route(&route("ordered", "order.paid", "/o").ordered(true));
    cfg.route(&route("unordered", "order.paid", "/u"));
    cfg.route(&route("unordered2", "order.created", "/u2"));
    let router = RouterProc::ready(&cfg).await;
    // RabbitMQ only: unordered routes share one wait queue per backoff step (the embedded broker
    // delays a message in its own queue); ordered routes retry in place on both.
    if let Some(vh) = on.vhost() {
        let wait = vh.queue("hookrelay.retry.300");
        assert_eq!(wait["arguments"]["x-queue-type"], "quorum", "{wait}");
        assert_eq!(vh.bindings("hookrelay.retry.300"), [("hookrelay.retry.300".to_string(), String::new())]);
    }
    on.publish(&router, &numbered("r", 5)).await;
    for path in ["/o", "/u"] {
        let got = rx.wait_requests(path, 10, T).await;
        for (i, status) in FIRST.iter().enumerate() {
            let tries: Vec<&Received> = got.iter().filter(|r| r.id() == format!("r-{i}")).collect();
            assert_eq!(tries.len(), 2, "{path} r-{i}: one failure ({status}), one success");
            assert_eq!(tries[0].header("hookrelay-attempt"), "1");
            assert_eq!(tries[1].header("hookrelay-attempt"), "2");
            assert!(tries[1].at.duration_since(tries[0].at) >= ms(250), "backoff waited");
            verify_spec(SECRET, tries[1]).unwrap();
        }
    }
    let ordered: Vec<i64> = first_arrivals(&rx.on("/o")).iter().map(|id| id[2..].parse().unwrap()).collect();
    assert_eq!(ordered, [0, 1, 2, 3, 4], "ordered retries happen in place");
    assert!(cfg.dead_letters().await.is_empty());
    // The delivery log has every attempt, with the config that made it.
    let store = cfg.store().await;
    let filter = hookrelay::store::DeliveryFilter { route: Some("unordered".into()), limit: 100, ..Default::default() };
    let delivered = |items: &[hookrelay::store::Delivery]| {
        items.iter().filter(|d| d.status == hookrelay::store::Outcome::Delivered).count()
    };
    let deliveries = eventually(
        "5 deliveries logged as delivered on route unordered",
        T,
        async || store.deliveries(&filter).await.unwrap().items,
        |items| delivered(items) == 5,
    )
    .await;
    assert!(deliveries.iter().all(|d| d.attempts == 2 && d.last_status == Some(200)), "{deliveries:?}");
    use hookrelay::store::Outcome::{Delivered, Retrying};
    for route in ["ordered", "unordered"] {
        for (i, status) in FIRST.iter().enumerate() {
            let attempts = cfg.wait_attempts(route, &format!("r-{i}"), 2, T).await;
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

async fn a_400_or_a_redirect_is_dead_lettered_after_exactly_one_attempt_and_the_redirect_is_not_followed(
    on: TestBroker,
) {
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
    let cfg = on.config();
    let route =
        |name: &str, path: &str| RouteConfig::new(name).events(["order.paid"]).url(rx.url(path)).backoff([ms(100)]);
    cfg.route(&route("moved", "/moved"));
    cfg.route(&route("r", "/r"));
    cfg.route(&route("o", "/o").ordered(true));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("p", 1)).await;
    let dls = cfg.wait_dead_letters(3, T).await;
    // Long enough for a wrong retry (100 ms backoff) to show up.
    tokio::time::sleep(ms(700)).await;
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

async fn a_timeout_is_retried_and_the_next_attempt_delivers_on_both_kinds_of_route(on: TestBroker) {
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
    let cfg = on.config();
    let route = |name: &str, path: &str| {
        RouteConfig::new(name)
            .events(["order.paid"])
            .url(rx.url(path))
            .timeout(ms(300))
            .max_attempts(3)
            .backoff([ms(100)])
    };
    cfg.route(&route("o", "/o").ordered(true));
    cfg.route(&route("u", "/u"));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("t", 3)).await;
    use hookrelay::store::Outcome::{Delivered, Retrying};
    for (route, path) in [("o", "/o"), ("u", "/u")] {
        // Both attempts of every event reach the receiver (the first one's answer comes too late).
        let mut got = rx.wait_requests(path, 6, T).await;
        got.sort_by_key(|r| r.at);
        for i in 0..3 {
            let id = format!("t-{i}");
            let t = tries(&got, &id);
            let attempt: Vec<String> = t.iter().map(|r| r.header("hookrelay-attempt")).collect();
            assert_eq!(attempt, ["1", "2"], "{path} {id}: timed out once, then delivered");
            verify_spec(SECRET, t[1]).unwrap();
            let attempts = cfg.wait_attempts(route, &id, 2, T).await;
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

async fn a_connect_error_is_retried_then_dead_lettered_as_exhausted_after_max_attempts(on: TestBroker) {
    // A port bound but not listening, held for the whole test: every connect is refused, and no
    // other test can take the port meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    let cfg = on.config();
    let route = |name: &str| {
        RouteConfig::new(name).events(["order.paid"]).url(format!("{url}/{name}")).max_attempts(3).backoff([ms(100)])
    };
    cfg.route(&route("o").ordered(true));
    cfg.route(&route("u"));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("c", 2)).await;
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
        let attempts = cfg.wait_attempts(&route, &id, 3, T).await;
        let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome, a.status)).collect();
        assert_eq!(outcomes, [(1, Retrying, None), (2, Retrying, None), (3, Dead, None)], "{route} {id}");
    }
}

async fn one_failing_event_blocks_nothing_on_an_unordered_route_and_holds_back_an_ordered_one(on: TestBroker) {
    // f-0, published first, is refused every time; every other event is accepted.
    let rx = Receiver::start(|r, _| if r.id() == "f-0" { (503, vec![]) } else { (200, vec![]) }).await;
    let cfg = on.config();
    let route = |name: &str, path: &str| {
        RouteConfig::new(name)
            .events(["order.paid"])
            .url(rx.url(path))
            .max_attempts(4)
            .backoff([Duration::from_secs(1)])
    };
    // One delivery at a time on the unordered route too: were its retries to wait in place, the
    // others would have to wait behind them.
    cfg.route(&route("u", "/u").concurrency(1));
    cfg.route(&route("o", "/o").ordered(true));
    let router = RouterProc::ready(&cfg).await;
    let n = 21;
    on.publish(&router, &numbered("f", n)).await;
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

async fn the_producers_sequence_is_passed_on_and_the_router_assigns_growing_ones_otherwise(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("seq").events(["order.paid"]).url(rx.url("/seq")).ordered(true));
    let router = RouterProc::ready(&cfg).await;
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
    on.publish(&router, &events).await;
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

async fn retries_stop_at_max_attempts_and_honour_retry_after(on: TestBroker) {
    let rx = Receiver::start(|_, _| (429, vec![("retry-after".into(), "1".into())])).await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(rx.url("/r")).max_attempts(3).backoff([ms(100)]));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("x", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    let got = rx.on("/r");
    assert_eq!(got.len(), 3, "max_attempts = 3");
    for w in got.windows(2) {
        assert!(w[1].at.duration_since(w[0].at) >= ms(950), "Retry-After: 1 honoured over a 100ms backoff");
    }
    assert_eq!(dls[0].reason(), "exhausted");
    assert_eq!(dls[0].header("hookrelay-last-status").as_deref(), Some("429"));
}

async fn private_targets_are_blocked_at_connect_time_when_not_allowed(on: TestBroker) {
    let rx = Receiver::ok().await;
    // A host name, so the URL passes the load-time check and the guard judges the resolved address.
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    let cfg = ConfigDir::with(on.main().allow_private_networks(false));
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(format!("http://localhost:{port}/r")));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("s", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    assert_eq!(dls[0].reason(), "blocked");
    assert!(dls[0].header("hookrelay-error").unwrap().contains("blocked"), "{:?}", dls[0].header("hookrelay-error"));
    assert!(rx.all().is_empty(), "nothing reached the private address");
}

async fn https_with_a_private_ca_negotiates_http2_and_an_untrusted_certificate_says_so(on: TestBroker) {
    let ca = TestCa::new();
    let rx = Receiver::start_tls(&ca).await;
    let main = on.main().allow_http(false);
    // Trusted through [security] ca_file: delivered over HTTP/2, chosen by ALPN.
    let cfg = ConfigDir::with(main.clone().ca_file("ca.pem"));
    cfg.file("ca.pem", &ca.ca_pem);
    cfg.route(&RouteConfig::new("tls").events(["order.paid"]).url(rx.url("/tls")));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("h", 3)).await;
    let got = rx.wait_distinct("/tls", 3, T).await;
    for r in &got {
        assert_eq!(r.version, http::Version::HTTP_2, "h2 by ALPN");
        verify_spec(SECRET, r).unwrap();
    }
    drop(router);
    // Not trusted: the failure is named as a TLS failure in the dead letter.
    let cfg = ConfigDir::with(main);
    cfg.route(&RouteConfig::new("tls").events(["order.paid"]).url(rx.url("/tls")).max_attempts(1));
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("u", 1)).await;
    let dls = cfg.wait_dead_letters(1, T).await;
    let error = dls[0].header("hookrelay-error").unwrap();
    assert!(error.contains("TLS handshake failed") && error.contains("UnknownIssuer"), "{error}");
    assert_eq!(rx.on("/tls").len(), 3, "nothing reached the untrusted receiver");
}

// ---------------------------------------------------------------------------------------------
// A router killed or stopped mid-stream.

/// The index of a `<prefix>-<i>` event id.
fn index(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

async fn sigkill_mid_stream_then_restart_loses_nothing_and_keeps_order_with_events_published_while_down(
    on: TestBroker,
) {
    let rx = Receiver::start_slow(ms(1), |_, _| (200, vec![])).await;
    // The unordered route's receiver is slower, so both routes are mid-stream at the kill.
    let slow = Receiver::start_slow(ms(20), |_, _| (200, vec![])).await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(true));
    cfg.route(&RouteConfig::new("bulk").events(["order.paid"]).url(slow.url("/bulk")).concurrency(4));
    // A first run declares the routes; the queues then hold every event when the router starts,
    // so that the kill comes mid-stream however fast either side runs.
    let mut first = RouterProc::ready(&cfg).await;
    assert!(first.term(T).await.success());
    let n = 1500;
    on.publish_events_stopped(&numbered("k", n)).await;
    let mut router = RouterProc::ready(&cfg).await;
    // Kill while both routes are mid-stream.
    let progress = async || (rx.on("/erp").len(), slow.on("/bulk").len());
    eventually("300 requests on /erp and 100 on /bulk before the kill", T, progress, |(erp, bulk)| {
        *erp >= 300 && *bulk >= 100
    })
    .await;
    router.kill();
    let at_kill = (rx.on("/erp").len(), slow.on("/bulk").len());
    assert!(at_kill.0 < n && at_kill.1 < n, "the kill came mid-stream: {at_kill:?}");
    // Producers carry on while no router runs: these wait in the queues behind the rest.
    let down = 200;
    let later: Vec<_> = (n..n + down).map(|i| event("order.paid", &format!("k-{i}"), json!({"n": i}))).collect();
    on.publish_events_stopped(&later).await;
    let n = n + down;
    let _restarted = RouterProc::ready(&cfg).await;
    let erp = rx.wait_distinct("/erp", n, T).await;
    let bulk = slow.wait_distinct("/bulk", n, T).await;
    let order: Vec<usize> = first_arrivals(&erp).iter().map(|id| index(id)).collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "first arrivals on the ordered route keep publish order");
    let seqs: Vec<u64> = erp.iter().map(|r| r.header("hookrelay-sequence").parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequences only grow, across the restart too");
    let mut all_bulk: Vec<usize> = first_arrivals(&bulk).iter().map(|id| index(id)).collect();
    all_bulk.sort();
    assert_eq!(all_bulk, (0..n).collect::<Vec<_>>(), "every event arrived on the unordered route");
    eprintln!(
        "killed at {at_kill:?} deliveries; duplicates after restart: ordered {}, unordered {}",
        duplicates(&erp),
        duplicates(&bulk)
    );
    // At least once: duplicates are allowed, but only of what the broker had not seen acked at
    // the kill. Besides the deliveries in flight, on RabbitMQ that includes acks the router had
    // written: AMQP acks have no reply, and a killed process's socket is reset, losing what was
    // on the way (12 repeats on the ordered route were seen once). The broker holds at most the
    // prefetch unacked per route (100 in `rabbitmq_main`; the embedded broker's default is 64);
    // acked messages never come back.
    assert!(duplicates(&erp) <= 100, "ordered route: more repeats than could be unacked at the kill");
    assert!(duplicates(&bulk) <= 100, "unordered route: more repeats than could be unacked at the kill");
}

async fn sigterm_finishes_the_delivery_in_flight_and_exits_zero(on: TestBroker) {
    let rx = Receiver::start_slow(ms(700), |_, _| (200, vec![])).await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("erp").events(["order.paid"]).url(rx.url("/erp")).ordered(true));
    let mut router = RouterProc::ready(&cfg).await;
    on.publish(&router, &numbered("g", 5)).await;
    // Once the first delivery is under way (the receiver answers 700 ms after it arrives).
    rx.wait_arrived("/erp", 1, T).await;
    let status = router.term(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    let after_stop = rx.on("/erp").len();
    assert!((1..5).contains(&after_stop), "the in-flight delivery finished, the rest waited: {after_stop}");
    let _restarted = RouterProc::ready(&cfg).await;
    let got = rx.wait_distinct("/erp", 5, T).await;
    assert_eq!(first_arrivals(&got), (0..5).map(|i| format!("g-{i}")).collect::<Vec<_>>());
    assert_eq!(duplicates(&got), 0, "what finished before the stop was acked, not sent again");
}
