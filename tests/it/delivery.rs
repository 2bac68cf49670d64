//! What a receiver sees: order, fan-out, filters, redaction, retries and dead letters.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

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
async fn a_503_is_retried_then_delivered_on_both_kinds_of_route() {
    let vh = Vhost::new();
    // First attempt of every event answers 503, the next 200.
    let rx = Receiver::start(|_, earlier| if earlier == 0 { (503, vec![]) } else { (200, vec![]) }).await;
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
        for i in 0..5 {
            let tries: Vec<&Received> = got.iter().filter(|r| r.id() == format!("r-{i}")).collect();
            assert_eq!(tries.len(), 2, "{path} r-{i}: one failure, one success");
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
    let attempts = store.attempts(&hookrelay::store::delivery_id("unordered", "r-0")).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome, a.status)).collect();
    use hookrelay::store::Outcome::{Delivered, Retrying};
    assert_eq!(outcomes, [(1, Retrying, Some(503)), (2, Delivered, Some(200))]);
    assert_eq!(attempts[0].config_version, 1);
    assert_eq!(attempts[0].config_revision.len(), 12);
    assert_eq!(attempts[0].response_body.as_deref(), Some("answer from the test receiver"));
    assert!(attempts[0].payload.is_none(), "payloads are not logged unless the route opts in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_lettered_after_exactly_one_attempt() {
    let vh = Vhost::new();
    let rx = Receiver::start(|_, _| (400, vec![])).await;
    let cfg = ConfigDir::new(&vh);
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
    let dls = cfg.wait_dead_letters(2, T).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.on("/r").len(), 1, "exactly one attempt");
    assert_eq!(rx.on("/o").len(), 1, "exactly one attempt");
    for d in &dls {
        assert_eq!(d.reason(), "rejected");
        assert_eq!(d.header("hookrelay-last-status").as_deref(), Some("400"));
        assert_eq!(d.header("hookrelay-last-response").as_deref(), Some("answer from the test receiver"));
        assert_eq!(d.header("hookrelay-attempt").as_deref(), Some("1"));
    }
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
