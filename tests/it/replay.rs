//! Replays and what the API keeps of them: attempts numbered on across a replay, failed replays
//! and SIGHUP reloads in the audit trail, and `PATCH` (JSON Merge Patch) beside `PUT`.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The audit entries with `action`, newest first.
async fn audit(api: &Api, action: &str) -> Vec<Value> {
    let page = api.get(&format!("/v1/audit?action={action}")).await;
    page.expect(200)["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_numbers_its_attempts_on_and_failures_and_sighup_are_audited() {
    // 400 (permanent: dead-lettered at once) to an event's first two requests, then 200.
    let rx = Receiver::start(|_, earlier| (if earlier < 2 { 400 } else { 200 }, vec![])).await;
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    cfg.route(&RouteConfig::new("r").events(["order.paid"]).url(rx.url("/r")).max_attempts(3));
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);

    api.post("/v1/events", event("order.paid", "e-1", json!({"n": 1}))).await.expect(202);
    let replay_next = async |n: usize| {
        let dead = cfg.wait_dead_letters(n, T).await;
        let id = dead.iter().find(|d| d.replayed_at_ms.is_none()).unwrap().id.clone();
        let r = api.post("/v1/dead-letters/replay", json!({"ids": [id]})).await;
        assert_eq!(r.expect(200)["replayed"], json!([id]), "{r:?}");
        id
    };
    replay_next(1).await; // after attempt 1
    replay_next(2).await; // after attempt 2
    let got = rx.wait_requests("/r", 3, T).await;
    let numbers: Vec<String> = got.iter().map(|r| r.header("hookrelay-attempt")).collect();
    assert_eq!(numbers, ["1", "2", "3"], "the receiver sees the attempts numbered on");
    let dead = cfg.dead_letters().await;
    let mut dead_attempts: Vec<u32> = dead.iter().map(|d| d.attempts).collect();
    dead_attempts.sort();
    assert_eq!(dead_attempts, [1, 2], "each dead letter counts the delivery's attempts so far");

    let delivery = hookrelay::store::delivery_id("r", "e-1");
    let detail = eventually(
        "the delivery log to hold 3 attempts",
        T,
        async || api.get(&format!("/v1/deliveries/{delivery}")).await.json,
        |d| d["attempt_log"].as_array().is_some_and(|a| a.len() == 3) && d["status"] == "delivered",
    )
    .await;
    let logged: Vec<u64> =
        detail["attempt_log"].as_array().unwrap().iter().map(|a| a["attempt"].as_u64().unwrap()).collect();
    assert_eq!(logged, [1, 2, 3]);
    assert_eq!(detail["attempts"], 3, "{detail}");

    // A replay that fails (its route is gone, removed by a SIGHUP reload) is audited too.
    api.post("/v1/events", event("order.paid", "e-2", json!({"n": 2}))).await.expect(202);
    let dead = cfg.wait_dead_letters(3, T).await;
    let lost = dead.iter().find(|d| d.event_id == "e-2").unwrap().id.clone();
    std::fs::remove_file(cfg.path().join("routes/r.toml")).unwrap();
    assert!(router.reload().await.contains("config reloaded"));
    let r = api.post("/v1/dead-letters/replay", json!({"ids": [lost]})).await;
    let r = r.expect(200);
    assert_eq!(r["replayed"], json!([]));
    assert_eq!(r["failed"][0]["id"], lost.as_str());

    let replays = audit(&api, "dead_letter.replay").await;
    assert_eq!(replays.len(), 3, "{replays:?}");
    assert_eq!(replays[0]["target"], lost.as_str());
    assert_eq!(replays[0]["details"]["replayed"], json!([]));
    assert_eq!(replays[0]["details"]["failed"][0]["id"], lost.as_str());
    assert!(replays[0]["details"]["failed"][0]["error"].as_str().unwrap().contains("no longer exists"));
    let reloads = audit(&api, "config.reload").await;
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["actor"], "router");
    assert_eq!(reloads[0]["details"]["trigger"], "SIGHUP");
    assert_eq!(reloads[0]["details"]["result"], "applied");
    assert_eq!(reloads[0]["details"]["removed"], json!(["r"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_the_keys_it_names_and_put_replaces_the_whole_definition() {
    let rx = Receiver::ok().await;
    let cfg = ConfigDir::with(MainConfig::new().version(1).loopback_targets());
    let router = RouterProc::ready(&cfg).await;
    let api = Api::new(&router.api().await, None);
    let created = api
        .post(
            "/v1/subscriptions",
            json!({"name": "crm", "events": ["order.paid"], "url": rx.url("/a"), "max_attempts": 3,
                   "filter": "fn filter(event) { true }", "headers": {"x-a": "1", "x-b": "2"}}),
        )
        .await;
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    let patch = |body: &str, content_type: &'static str| {
        let (api, path, body) = (&api, format!("/v1/subscriptions/{id}"), body.as_bytes().to_vec());
        async move { api.send("PATCH", &path, Some(body), &[("content-type", content_type)]).await }
    };

    // Keys named change, `null` removes, objects merge, others stay.
    let body = json!({"url": rx.url("/b"), "filter": null, "headers": {"x-a": null, "x-c": "3"}}).to_string();
    let patched = patch(&body, "application/merge-patch+json").await;
    let sub = patched.expect(200);
    assert_eq!(sub["url"], rx.url("/b"));
    assert!(sub.get("filter").is_none_or(Value::is_null), "{sub}");
    assert_eq!(sub["headers"], json!({"x-b": "2", "x-c": "3"}));
    assert_eq!((sub["max_attempts"].clone(), sub["events"].clone()), (json!(3), json!(["order.paid"])));
    assert_eq!(sub["version"], 2);

    // The API's rules on the result, and on the patch itself.
    patch(r#"{"ordered": true}"#, "application/merge-patch+json").await.expect(422);
    patch(r#"{"retries": 3}"#, "application/merge-patch+json").await.expect(400);
    patch(r#"{"url": "x"}"#, "application/json").await.expect(415);
    let path = format!("/v1/subscriptions/{id}");
    let stale = api
        .send(
            "PATCH",
            &path,
            Some(br#"{"max_attempts": 4}"#.to_vec()),
            &[("content-type", "application/merge-patch+json"), ("if-match", "1")],
        )
        .await;
    assert_eq!(stale.expect(409)["error"]["code"], "conflict");

    // PUT replaces: what it leaves out takes its default.
    let put = api
        .put(
            &format!("/v1/subscriptions/{id}"),
            json!({"name": "crm", "events": ["order.paid"], "url": rx.url("/b")}),
            &[],
        )
        .await;
    let sub = put.expect(200);
    assert!(sub.get("max_attempts").is_none_or(Value::is_null), "{sub}");
    assert_eq!(sub["headers"], json!({}));
    let trail = audit(&api, "subscription.update").await;
    assert_eq!(trail.len(), 2, "the patch and the put: {trail:?}");
}
