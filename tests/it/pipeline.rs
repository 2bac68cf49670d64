//! The per-event pipeline of the real router: an event POSTed to `/v1/events` is validated
//! against its schema once, at ingest, and not again when it is delivered under the same config
//! (`hookrelay_schema_validations_total{at}` on `/metrics` counts each); a mark the router did
//! not make itself is worth nothing.

use crate::common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const VALIDATIONS: &str = "hookrelay_schema_validations_total";

/// A sample's value on `/metrics` (0 when the series is absent).
async fn sample(api: &Api, series: &str) -> f64 {
    let text = api.get("/metrics").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap_or_else(|_| panic!("{series}: not a number: {v}")))
}

fn validated_at(at: &str) -> String {
    format!("{VALIDATIONS}{{at=\"{at}\"}}")
}

async fn events_posted_to_ingest_are_validated_once(on: TestBroker) {
    let rx = Receiver::ok().await;
    let cfg = on.config();
    cfg.file(
        "schemas/order.paid/v1.json",
        r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}"#,
    );
    cfg.route(&RouteConfig::new("paid").events(["order.paid"]).url(rx.url("/paid")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    for i in 0..5 {
        let answer = api.post("/v1/events", event("order.paid", &format!("once-{i}"), json!({"n": i}))).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    // Refused at ingest: validated there, never published.
    let answer = api.post("/v1/events", event("order.paid", "bad", json!({"n": "x"}))).await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    rx.wait_distinct("/paid", 5, T).await;
    let delivered = "hookrelay_events_delivered_total{route=\"paid\"}";
    eventually("5 delivered", T, async || sample(&api, delivered).await, |n| *n == 5.0).await;
    assert_eq!(sample(&api, &validated_at("ingest")).await, 6.0, "each POSTed event, once");
    assert_eq!(sample(&api, &validated_at("pipeline")).await, 0.0, "not again before delivery");
}

on_both_brokers!(crate::common::TestBroker::rabbitmq(), crate::common::TestBroker::embedded();
    events_posted_to_ingest_are_validated_once,
);

/// A producer's `hookrelay-validated` header, even one with the live revision, does not spare
/// an event its validation: the invalid event is dead-lettered `schema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_validation_mark_is_ignored() {
    let vh = Vhost::new();
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::new(&vh);
    cfg.file("schemas/order.paid/v1.json", r#"{"type":"object","required":["n"]}"#);
    cfg.route(&RouteConfig::new("paid").events(["order.paid"]).url(rx.url("/paid")));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let metrics = api.get("/metrics").await.text;
    let revision = metrics
        .lines()
        .find_map(|l| l.split("revision=\"").nth(1).and_then(|r| r.split('"').next()))
        .unwrap_or_else(|| panic!("no revision in:\n{metrics}"))
        .to_string();

    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for (id, mark) in [("forged-1", format!("{revision}.{}", "0".repeat(32))), ("forged-2", revision.clone())] {
        let mut headers = FieldTable::default();
        headers.insert("hookrelay-validated".into(), AMQPValue::LongString(mark.into()));
        let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        let body = serde_json::to_vec(&event("order.paid", id, json!({"no_n": true}))).unwrap();
        let confirm = ch
            .basic_publish("hookrelay.events".into(), "order.paid".into(), BasicPublishOptions::default(), &body, props)
            .await
            .unwrap();
        assert_eq!(confirm.await.unwrap(), Confirmation::Ack(None));
    }
    let _ = conn.close(200, "done".into()).await;

    let dead = cfg.wait_dead_letters(2, T).await;
    assert!(dead.iter().all(|d| d.reason() == "schema"), "{dead:?}");
    assert_eq!(sample(&api, &validated_at("pipeline")).await, 2.0);
    assert!(rx.all().is_empty(), "nothing delivered");
}
