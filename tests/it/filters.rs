//! The declarative filter (docs/filters.md) through the real binary: a route file's
//! `filter = { … }` and an API subscription's `"filter": { … }` deliver what matches and ack what
//! they drop, on both brokers (`filters::on_rabbitmq::*`, `filters::on_embedded::*`); `validate`
//! names a broken filter's place as `file:line:col`, and `route test` says which test failed.

use crate::common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

on_both_brokers!(super::TestBroker::rabbitmq(), super::TestBroker::embedded();
    a_declarative_filter_delivers_what_matches_and_acks_what_it_drops,
    an_api_subscription_takes_a_declarative_filter_and_names_a_broken_one,
);

/// `hookrelay_events_filtered_total{route}` as the router's `/metrics` shows it (0 when absent).
async fn filtered(api: &Api, route: &str) -> f64 {
    let text = api.get("/metrics").await.text;
    let label = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| l.starts_with("hookrelay_events_filtered_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn with_subject(mut e: Value, subject: &str) -> Value {
    e["subject"] = json!(subject);
    e
}

async fn a_declarative_filter_delivers_what_matches_and_acks_what_it_drops(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    let filter = json!({"all": [{"path": "data.n", "gte": 100}, {"path": "subject", "in": ["f-1", "f-2"]}]});
    // Ordered: the queue's order is the order of handling, so that once a later event has
    // arrived, every event before it has been handled.
    cfg.route(&RouteConfig::new("big").events(["order.paid"]).url(rx.url("/big")).ordered(true).filter_table(filter));
    let mut router = RouterProc::ready(&cfg).await;
    let events = [
        with_subject(event("order.paid", "in-1", json!({"n": 150})), "f-1"),
        with_subject(event("order.paid", "small", json!({"n": 50})), "f-1"),
        with_subject(event("order.paid", "other-franchise", json!({"n": 150})), "f-3"),
        event("order.paid", "no-subject", json!({"n": 300})),
        with_subject(event("order.paid", "in-2", json!({"n": 100})), "f-2"),
    ];
    on.publish(&router, &events).await;
    let got = rx.wait_distinct("/big", 2, T).await;
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["in-1", "in-2"], "what matches, in order");
    let api = Api::new(&router.api().await, None);
    let dropped = eventually("3 events filtered", T, async || filtered(&api, "big").await, |n| *n == 3.0).await;
    assert_eq!(dropped, 3.0);
    assert!(cfg.dead_letters().await.is_empty(), "filtered events are not dead letters");

    // Acked: a new router gets none of the dropped events back. Its first event is published
    // after it starts, behind anything left in the queue, so once it has arrived, whatever came
    // back before it has been handled (and would have been counted).
    assert!(router.term(T).await.success());
    let router = RouterProc::ready(&cfg).await;
    on.publish(&router, &[with_subject(event("order.paid", "after-restart", json!({"n": 500})), "f-1")]).await;
    rx.wait_distinct("/big", 3, T).await;
    let api = Api::new(&router.api().await, None);
    assert_eq!(filtered(&api, "big").await, 0.0, "no dropped event came back: each was acked");
    let all: Vec<String> = rx.on("/big").iter().map(Received::id).collect();
    assert_eq!(all, ["in-1", "in-2", "after-restart"], "nothing else was sent, nothing twice");
}

async fn an_api_subscription_takes_a_declarative_filter_and_names_a_broken_one(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.route(&RouteConfig::new("audit").events(["order.created"]).url(rx.url("/audit")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let sub = |name: &str, filter: Value| json!({"name": name, "events": ["order.paid"], "url": rx.url("/sub"), "filter": filter});

    // A broken filter: 422, the field named down to the operator; nothing is created.
    for (filter, field, says) in [
        (
            json!({"all": [{"path": "data.n", "gte": 1}, {"path": "data.n", "gtee": 1}]}),
            "filter.all[1].gtee",
            "unknown operator",
        ),
        (json!({"path": "Data.n", "eq": 1}), "filter.path", "attribute name"),
        (json!({"path": "data.n", "gt": true}), "filter.gt", "takes a number"),
        (json!(12), "filter", "must be a table"),
    ] {
        let bad = api.post("/v1/subscriptions", sub("broken", filter.clone())).await;
        assert_eq!(bad.expect(422)["error"]["code"], "invalid", "{filter}");
        let fields = &bad.json["error"]["details"]["fields"];
        assert_eq!(fields[0]["field"], field, "{filter}: {}", bad.text);
        assert!(fields[0]["message"].as_str().unwrap().contains(says), "{filter}: {}", bad.text);
    }
    assert_eq!(api.get("/v1/subscriptions").await.expect(200)["items"], json!([]), "nothing created");

    let filter = json!({"any": [{"path": "data.n", "lt": 10}, {"path": "tenantid", "eq": "acme"}]});
    let created = api.post("/v1/subscriptions", sub("acme", filter.clone())).await;
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    let shown = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(shown.expect(200)["filter"], filter, "shown as given: {}", shown.text);
    let mut tagged = event("order.paid", "tagged", json!({"n": 50}));
    tagged["tenantid"] = json!("acme");
    // A tenant id given as a number is another kind than the string the filter compares with:
    // the test is false, not an error.
    let mut mismatch = event("order.paid", "mismatch", json!({"n": 50}));
    mismatch["tenantid"] = json!(7);
    let events = [
        event("order.paid", "small", json!({"n": 5})),
        event("order.paid", "dropped", json!({"n": 50})),
        tagged,
        mismatch,
    ];
    on.publish(&router, &events).await;
    eventually("2 events filtered", T, async || filtered(&api, "acme").await, |n| *n == 2.0).await;
    let got = rx.wait_distinct("/sub", 2, T).await;
    let mut ids: Vec<String> = got.iter().map(Received::id).collect();
    ids.sort();
    assert_eq!(ids, ["small", "tagged"]);
    assert_eq!(rx.on("/sub").len(), 2, "the dropped ones were not sent");
    assert!(cfg.dead_letters().await.is_empty(), "filtered events are not dead letters");
}

#[test]
fn validate_names_a_broken_filter_by_file_line_and_column() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    // Written as text: the error names the line and column of the unknown operator.
    cfg.route_text(
        "r",
        "events = [\"order.paid\"]\nurl = \"http://127.0.0.1:1/hook\"\nfilter = { all = [\n  { path = \"data.n\", gte = 1 },\n  { path = \"subject\", inn = [\"a\"] },\n] }\n",
    );
    let out =
        Command::new(bin()).args(["validate", "--config"]).arg(cfg.path()).env(SECRET_ENV, SECRET).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("routes/r.toml:5:29: `filter.all[1].inn`: unknown operator `inn`"),
        "the place of the operator: {text}"
    );
}

#[test]
fn route_test_says_whether_the_filter_matched_and_which_test_failed() {
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    let filter = json!({"all": [{"path": "data.n", "gte": 100}, {"path": "subject", "prefix": "f-"}]});
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url("http://127.0.0.1:1/hook").filter_table(filter));
    cfg.file("in.json", &with_subject(event("order.paid", "e1", json!({"n": 150})), "f-1").to_string());
    cfg.file("out.json", &with_subject(event("order.paid", "e2", json!({"n": 50})), "f-1").to_string());
    let run = |file: &str| {
        let out = Command::new(bin())
            .args(["route", "test", "r", "--event"])
            .arg(cfg.path().join(file))
            .arg("--config")
            .arg(cfg.path())
            .env(SECRET_ENV, SECRET)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = run("in.json");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(r#"filter matched: all [data.n gte 100, subject prefix "f-"]"#), "{text}");
    assert!(text.contains("POST http://127.0.0.1:1/hook"), "{text}");
    let (code, text) = run("out.json");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("filtered out: route r's filter did not match: `data.n gte 100` is false (data.n is 50)"),
        "{text}"
    );
    assert!(!text.contains("POST "), "{text}");
}
