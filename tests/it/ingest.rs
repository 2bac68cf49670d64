//! CloudEvents binary content mode in, over HTTP (`ce-` headers on `POST /v1/events`) and over
//! AMQP (`cloudEvents:` / `cloudEvents_` application properties), and batch ingest
//! (`application/cloudevents-batch+json`): checked like structured events, refused with the same
//! errors, delivered in structured form.

use crate::common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A config on the embedded broker with a schema for `note.added` that takes any data, and a
/// route sending whole CloudEvents of `order.paid` and `note.added` to `/ce`.
fn config(on: &TestBroker, rx: &Receiver) -> ConfigDir {
    let cfg = on.config();
    cfg.file("schemas/note.added/v1.json", "{}");
    cfg.route(
        &RouteConfig::new("ce")
            .events(["order.paid", "note.added"])
            .url(rx.url("/ce"))
            .ordered(true)
            .format(BodyFormat::Cloudevents),
    );
    cfg
}

/// A binary-mode request that is refused: id, type, extra headers, body, error code, attribute named.
type Refusal<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], &'a str, Option<&'a str>);

fn by_id(got: &[Received], id: &str) -> Value {
    got.iter().find(|r| r.id() == id).unwrap_or_else(|| panic!("{id} was not delivered: {got:?}")).json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_over_http_is_checked_like_structured_and_delivered_structured() {
    let on = TestBroker::embedded();
    let rx = Receiver::ok().await;
    let cfg = config(&on, &rx);
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let post = async |id: &str, ty: &str, extra: &[(&str, &str)], body: &[u8]| {
        let mut headers = vec![("ce-specversion", "1.0"), ("ce-id", id), ("ce-source", "shop"), ("ce-type", ty)];
        headers.extend_from_slice(extra);
        api.send("POST", "/v1/events", Some(body.to_vec()), &headers).await
    };
    let json_ct = ("content-type", "application/json");
    let accepted = post("h-json", "order.paid", &[json_ct, ("ce-subject", "S%C3%A3o%20Paulo%25")], br#"{"n":1}"#).await;
    assert_eq!(accepted.expect(202), &json!({"id": "h-json", "routed": true}));
    post("h-text", "note.added", &[("content-type", "text/plain; charset=utf-8")], "olá".as_bytes()).await.expect(202);
    post("h-bytes", "note.added", &[("content-type", "application/octet-stream")], &[0, 1, 2, 255]).await.expect(202);

    // Refused as a structured event would be, the attribute named.
    let refusals: [Refusal<'_>; 5] = [
        ("a%20b", "order.paid", &[json_ct], br#"{"n":1}"#, "malformed", Some("id")),
        (
            "h-bad-subject",
            "order.paid",
            &[json_ct, ("ce-subject", "bad%FF")],
            br#"{"n":1}"#,
            "malformed",
            Some("subject"),
        ),
        ("h-not-json", "order.paid", &[json_ct], b"{nope", "malformed", Some("data")),
        ("h-schema", "order.paid", &[json_ct], br#"{"n":"one"}"#, "schema", None),
        ("h-unknown", "order.lost", &[json_ct], br#"{"n":1}"#, "unknown_type", None),
    ];
    for (id, ty, extra, body, code, attribute) in refusals {
        let answer = post(id, ty, extra, body).await;
        assert_eq!((answer.status, answer.code()), (422, code), "{id}: {}", answer.text);
        assert_eq!(answer.json["error"]["details"]["attribute"].as_str(), attribute, "{id}: {}", answer.text);
    }
    let no_source = api
        .send(
            "POST",
            "/v1/events",
            Some(b"{}".to_vec()),
            &[("ce-specversion", "1.0"), ("ce-id", "x"), ("ce-type", "order.paid"), json_ct],
        )
        .await;
    assert_eq!((no_source.status, no_source.json["error"]["details"]["attribute"].as_str()), (422, Some("source")));
    // Without `ce-specversion`, the body must still be a CloudEvent's JSON; and binary mode does
    // not open the keyless API to other sites.
    let plain = api.send("POST", "/v1/events", Some(b"hi".to_vec()), &[("content-type", "text/plain")]).await;
    assert_eq!((plain.status, plain.code()), (415, "unsupported_media_type"), "{}", plain.text);
    let cross =
        post("h-cross", "note.added", &[("content-type", "text/plain"), ("sec-fetch-site", "cross-site")], b"x").await;
    assert_eq!((cross.status, cross.code()), (403, "cross_site"), "{}", cross.text);

    let got = rx.wait_distinct("/ce", 3, T).await;
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["h-json", "h-text", "h-bytes"], "the accepted ones, in order, and only them");
    let ev = by_id(&got, "h-json");
    assert_eq!(ev["subject"], "São Paulo%", "percent-decoded");
    assert_eq!(ev["data"], json!({"n": 1}));
    assert_eq!(ev["datacontenttype"], "application/json");
    let text = by_id(&got, "h-text");
    assert_eq!(
        (text["data"].as_str(), text["datacontenttype"].as_str()),
        (Some("olá"), Some("text/plain; charset=utf-8"))
    );
    let bytes = by_id(&got, "h-bytes");
    assert_eq!(bytes["data_base64"], "AAEC/w==");
    assert!(bytes.get("data").is_none(), "{bytes}");
}

/// Publishes one message to the events exchange with `headers` as application properties.
async fn publish_binary(vh: &Vhost, key: &str, props: &[(&str, AMQPValue)], content_type: Option<&str>, body: &[u8]) {
    let conn = vh.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut table = FieldTable::default();
    for (k, v) in props {
        table.insert(ShortString::from(k.to_string()), v.clone());
    }
    let mut p = BasicProperties::default().with_delivery_mode(2).with_headers(table);
    if let Some(ct) = content_type {
        p = p.with_content_type(ct.into());
    }
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = ch.basic_publish("hookrelay.events".into(), key.into(), opts, body, p).await.unwrap();
    assert_eq!(confirm.await.unwrap(), Confirmation::Ack(None), "{key} was not routed");
    let _ = conn.close(200, "done".into()).await;
}

fn s(text: &str) -> AMQPValue {
    AMQPValue::LongString(text.into())
}

/// The attribute properties of an event, with `prefix`.
fn attributes(prefix: &str, id: &str, ty: &str) -> Vec<(String, AMQPValue)> {
    [("specversion", "1.0"), ("id", id), ("source", "shop"), ("type", ty)]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), s(v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_over_amqp_is_checked_like_structured_and_delivered_structured() {
    let on = TestBroker::rabbitmq();
    let vh = on.vhost().unwrap();
    let rx = Receiver::ok().await;
    let cfg = config(&on, &rx);
    let _router = RouterProc::ready(&cfg).await;
    let publish = async |key: &str, props: Vec<(String, AMQPValue)>, ct: Option<&str>, body: &[u8]| {
        let props: Vec<(&str, AMQPValue)> = props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        publish_binary(vh, key, &props, ct, body).await;
    };
    let mut json_props = attributes("cloudEvents:", "a-json", "order.paid");
    json_props.push(("cloudEvents:subject".into(), s("São Paulo")));
    json_props.push(("cloudEvents:time".into(), AMQPValue::Timestamp(1_709_210_096)));
    json_props.push(("cloudEvents:tenantid".into(), s("acme")));
    json_props.push(("traceparent".into(), s("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")));
    publish("order.paid", json_props, Some("application/json"), br#"{"n":1}"#).await;
    publish("order.paid", attributes("cloudEvents_", "a-underscore", "order.paid"), None, br#"{"n":2}"#).await;
    publish("note.added", attributes("cloudEvents:", "a-text", "note.added"), Some("text/plain"), "olá".as_bytes())
        .await;
    let octets = Some("application/octet-stream");
    publish("note.added", attributes("cloudEvents:", "a-bytes", "note.added"), octets, &[0, 1, 2, 255]).await;
    // Dead-lettered `malformed` or `schema`, as the same event in structured form would be.
    let no_source: Vec<_> = attributes("cloudEvents:", "a-no-source", "order.paid")
        .into_iter()
        .filter(|(k, _)| !k.ends_with("source"))
        .collect();
    publish("order.paid", no_source, Some("application/json"), br#"{"n":3}"#).await;
    publish("order.paid", attributes("cloudEvents:", "a b", "order.paid"), None, br#"{"n":4}"#).await;
    publish("order.paid", attributes("cloudEvents:", "a-not-json", "order.paid"), Some("application/json"), b"{nope")
        .await;
    publish("order.paid", attributes("cloudEvents:", "a-schema", "order.paid"), None, br#"{"n":"one"}"#).await;
    // A structured event's content type wins over stray attribute properties.
    let structured = serde_json::to_vec(&event("order.paid", "a-structured", json!({"n": 5}))).unwrap();
    let stray = attributes("cloudEvents:", "ignored", "order.paid");
    publish("order.paid", stray, Some("application/cloudevents+json"), &structured).await;

    let got = rx.wait_distinct("/ce", 5, T).await;
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["a-json", "a-underscore", "a-text", "a-bytes", "a-structured"]);
    let ev = by_id(&got, "a-json");
    assert_eq!(
        (&ev["subject"], &ev["time"], &ev["tenantid"], &ev["datacontenttype"], &ev["data"]),
        (
            &json!("São Paulo"),
            &json!("2024-02-29T12:34:56Z"),
            &json!("acme"),
            &json!("application/json"),
            &json!({"n": 1})
        )
    );
    assert!(ev.as_object().unwrap().keys().all(|k| !k.starts_with("cloudEvents")), "{ev}");
    let sent = got.iter().find(|r| r.id() == "a-json").unwrap();
    assert!(sent.header("traceparent").starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "headers kept");
    assert_eq!(by_id(&got, "a-underscore")["data"], json!({"n": 2}));
    assert_eq!(by_id(&got, "a-text")["data"], "olá");
    assert_eq!(by_id(&got, "a-bytes")["data_base64"], "AAEC/w==");

    let dls = cfg.wait_dead_letters(4, T).await;
    let mut found: Vec<(String, String)> = dls.iter().map(|d| (d.reason(), d.error.clone())).collect();
    found.sort();
    let reasons: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["malformed", "malformed", "malformed", "schema"], "{found:?}");
    let errors: Vec<&str> = found.iter().map(|(_, e)| e.as_str()).collect();
    assert!(errors.iter().any(|e| e.contains("attribute `id`")), "the id is named: {errors:?}");
    assert!(errors.iter().any(|e| e.contains("source")), "the missing source is named: {errors:?}");
    assert!(dls.iter().all(|d| d.route == "ce"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_event_and_queues_the_accepted_ones_in_order() {
    let on = TestBroker::embedded();
    let rx = Receiver::ok().await;
    let cfg = config(&on, &rx);
    cfg.set_main(on.main().max_event_bytes(1024));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let batch = async |body: Vec<u8>| {
        api.send("POST", "/v1/events", Some(body), &[("content-type", "application/cloudevents-batch+json")]).await
    };
    let as_batch = |events: &[Value]| serde_json::to_vec(events).unwrap();

    let all_good: Vec<Value> = (0..5).map(|i| event("order.paid", &format!("b-{i}"), json!({"n": i}))).collect();
    let answer = batch(as_batch(&all_good)).await;
    assert_eq!(answer.expect(202)["accepted"], 5, "{}", answer.text);
    assert_eq!(answer.json["refused"], 0);
    let results = answer.json["results"].as_array().unwrap();
    assert!(results.iter().enumerate().all(|(i, r)| r["index"] == i && r["status"] == 202 && r["routed"] == true));
    assert_eq!(results[3]["id"], "b-3");

    let mut no_id = event("order.paid", "x", json!({"n": 1}));
    no_id.as_object_mut().unwrap().remove("id");
    let mixed = [
        event("order.paid", "m-ok", json!({"n": 10})),
        event("order.paid", "m-schema", json!({"n": "ten"})),
        no_id,
        event("order.lost", "m-unknown", json!({})),
        event("order.paid", "m-large", json!({"n": 11, "pad": "x".repeat(1200)})),
        event("order.created", "m-unrouted", json!({})),
        event("order.paid", "m-ok-2", json!({"n": 12})),
    ];
    let answer = batch(as_batch(&mixed)).await;
    assert_eq!(answer.expect(207)["accepted"], 3, "{}", answer.text);
    assert_eq!(answer.json["refused"], 4);
    let r = &answer.json["results"];
    let statuses: Vec<u64> = r.as_array().unwrap().iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [202, 422, 422, 422, 413, 202, 202]);
    let codes: Vec<&str> = r.as_array().unwrap().iter().map(|x| x["error"]["code"].as_str().unwrap_or("")).collect();
    assert_eq!(codes, ["", "schema", "malformed", "unknown_type", "too_large", "", ""]);
    assert_eq!(r[1]["id"], "m-schema");
    assert_eq!(r[1]["error"]["details"]["violations"][0]["path"], "/n");
    assert!(r[2].get("id").is_none());
    assert_eq!((r[5]["id"].as_str(), r[5]["routed"].as_bool()), (Some("m-unrouted"), Some(false)));

    // Refused as a whole: not a batch at all.
    for (body, status) in [(b"{not json".to_vec(), 400), (b"{}".to_vec(), 400), (b"[]".to_vec(), 400)] {
        let answer = batch(body.clone()).await;
        assert_eq!(answer.status, status, "{}: {}", String::from_utf8_lossy(&body), answer.text);
    }
    let too_many: Vec<Value> = (0..1001).map(|i| event("order.paid", &format!("t-{i}"), json!({"n": i}))).collect();
    assert_eq!(batch(as_batch(&too_many)).await.code(), "too_large");

    let got = rx.wait_distinct("/ce", 7, T).await;
    let ids: Vec<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids, ["b-0", "b-1", "b-2", "b-3", "b-4", "m-ok", "m-ok-2"], "each accepted event, in batch order");
}
