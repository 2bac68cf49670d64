//! Every endpoint's success and error paths, on both stores: keys and scopes, routes and types,
//! ingest, a dead letter listed, replayed and delivered, retries, payload logging (the kept start
//! of a long answer), paging and time filters, and the audit trail.

use super::{Client, KEPT_BYTES, T, ids, items, new_order, paid, setup, walk};
use crate::common::*;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A receiver that answers every request 200 with a long body, and records the webhook ids.
struct Chatty {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

/// What [`Chatty`] answers: far longer than [`KEPT_BYTES`], and sent in several chunks.
fn long_answer() -> String {
    (0..2000).map(|i| format!("line {i:04} of a long answer\n")).collect()
}

impl Chatty {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let answer = Bytes::from(long_answer());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, answer) = (s.clone(), answer.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (s, answer) = (s.clone(), answer.clone());
                        async move {
                            let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                            s.lock().unwrap().push(id.to_string());
                            let body = http_body_util::StreamBody::new(futures_util::stream::iter(
                                answer
                                    .chunks(4096)
                                    .map(|c| Ok::<_, hyper::Error>(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
                                    .collect::<Vec<_>>(),
                            ));
                            Ok::<_, hyper::Error>(http::Response::new(body))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { base, seen }
    }

    fn count(&self, id: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.as_str() == id).count()
    }
}

/// Every endpoint's success and error paths, on one store.
async fn endpoints(pg: Option<PgDatabase>) {
    // /orders refuses `dl-1` and /kept refuses `kept-dead` the first time (dead letters); both
    // take everything else. `chatty` answers with a long body.
    let rx = Receiver::start(|r, earlier| {
        if earlier == 0 && ["dl-1", "kept-dead"].contains(&r.id().as_str()) { (400, vec![]) } else { (200, vec![]) }
    })
    .await;
    let chatty = Chatty::start().await;
    let routes = [
        RouteConfig::new("orders").events(["order.paid"]).url(rx.url("/orders")).concurrency(4),
        RouteConfig::new("kept").events(["order.created"]).url(rx.url("/kept")).log_payload(true),
        RouteConfig::new("chatty").events(["order.created"]).url(format!("{}/chatty", chatty.base)).ordered(true),
    ];
    let s = setup(pg, &routes).await;
    let base = s.base.clone();
    let open = Client::new(&base, None, &s.transcript);

    // Open endpoints.
    assert_eq!(open.get("/healthz").await.expect(200)["status"], "ok");
    let ready = eventually("/readyz to answer 200", T, async || open.get("/readyz").await, |a| a.status == 200).await;
    assert_eq!((ready.json["broker"].as_bool(), ready.json["store"].as_bool()), (Some(true), Some(true)));
    let doc = open.get("/openapi.json").await;
    for path in ["/v1/events", "/v1/subscriptions/{id}/rotate-secret", "/v1/dead-letters/replay", "/v1/stats"] {
        assert!(doc.json["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
    // Every operation behind a key documents the refusals of the key check.
    let mut secured = 0;
    for (path, ops) in doc.json["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["security"].is_array() {
                secured += 1;
                for status in ["401", "403"] {
                    assert!(op["responses"][status].is_object(), "{method} {path} does not document {status}");
                }
            }
        }
    }
    assert!(secured >= 20, "{secured} operations behind a key");
    let metrics = open.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("hookrelay_config_info"), "{}", metrics.text);

    // Keys and scopes.
    assert_eq!(open.get("/v1/routes").await.expect(401)["error"]["code"], "unauthorized");
    assert_eq!(s.admin.with_key(Some("hr_wrong")).get("/v1/routes").await.expect(401)["error"]["code"], "unauthorized");
    assert_eq!(s.read.post("/v1/events", paid("x", 1)).await.expect(403)["error"]["code"], "forbidden");
    assert_eq!(s.ingest.get("/v1/routes").await.expect(403)["error"]["code"], "forbidden");
    assert_eq!(s.read.post("/v1/config/reload", json!({})).await.expect(403)["error"]["code"], "forbidden");

    // Ingest.
    let ok = s.ingest.post("/v1/events", paid("in-1", 1)).await;
    assert_eq!(ok.expect(202)["id"], "in-1");
    assert_eq!(ok.json["routed"], true);
    rx.wait_distinct("/orders", 1, T).await;
    s.ingest.send("POST", "/v1/events", Some(b"{oops".to_vec()), &[]).await.expect(400);
    let no_id = json!({"specversion": "1.0", "source": "s", "type": "order.paid", "data": {"n": 1}});
    assert_eq!(s.ingest.post("/v1/events", no_id).await.expect(422)["error"]["code"], "malformed");
    let unknown = event("order.refunded", "u-1", json!({}));
    assert_eq!(s.ingest.post("/v1/events", unknown).await.expect(422)["error"]["code"], "unknown_type");
    let invalid = s.ingest.post("/v1/events", event("order.paid", "bad-1", json!({"n": "one"}))).await;
    assert_eq!(invalid.expect(422)["error"]["code"], "schema");
    assert_eq!(invalid.json["error"]["details"]["violations"][0]["path"], "/n");
    let big = event("order.paid", "big-1", json!({"n": 1, "pad": "x".repeat(4096)}));
    assert_eq!(s.ingest.post("/v1/events", big).await.expect(413)["error"]["code"], "too_large");

    // Catalogue.
    let types = s.read.get("/v1/event-types").await;
    let names: Vec<&str> =
        types.expect(200)["items"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(names, ["order.created", "order.paid"]);
    let one = s.read.get("/v1/event-types/order.paid").await;
    assert_eq!(one.expect(200)["schemas"]["1"]["required"], json!(["n"]));
    assert_eq!(one.json["routes"], json!(["orders"]));
    s.read.get("/v1/event-types/nope").await.expect(404);
    let routes = s.read.get("/v1/routes").await;
    let names: Vec<String> =
        items(routes.expect(200)).iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["chatty", "kept", "orders"]);
    assert_eq!(routes.json["items"][2]["origin"], "file");
    assert_eq!(routes.json["items"][2]["file"], "routes/orders.toml");
    assert_eq!(s.read.get("/v1/routes/orders").await.expect(200)["concurrency"], 4);
    s.read.get("/v1/routes/nope").await.expect(404);

    // A signed test send, now; and an event that would be dead-lettered.
    let test = s.admin.post("/v1/routes/orders/test", json!(null)).await;
    let sent = test.expect(200);
    assert_eq!((sent["ok"].as_bool(), sent["status"].as_u64()), (Some(true), Some(200)), "{}", test.text);
    let ping = rx.on("/orders").into_iter().find(|r| r.id() == sent["webhook_id"].as_str().unwrap()).unwrap();
    verify_spec(SECRET, &ping).unwrap();
    assert_eq!(ping.json()["type"], "hookrelay.test");
    let through = s.admin.post("/v1/routes/orders/test", event("order.paid", "t-2", json!({"n": "x"}))).await;
    assert_eq!(through.expect(422)["error"]["code"], "schema");
    s.admin.post("/v1/routes/nope/test", json!(null)).await.expect(404);
    // A long answer is kept only up to [limits] response_body_bytes.
    let long = long_answer();
    let chatty_test = s.admin.post("/v1/routes/chatty/test", json!(null)).await;
    assert_eq!(chatty_test.expect(200)["response_body"].as_str(), Some(&long[..KEPT_BYTES]), "{}", chatty_test.text);

    // Deliveries.
    let listed = async || s.read.get("/v1/deliveries?route=orders").await;
    eventually("a delivery of route orders in the log", T, listed, |a| !items(&a.json).is_empty()).await;
    let list = s.read.get("/v1/deliveries?route=orders&status=delivered&type=order.paid").await;
    let d = list.expect(200)["items"][0].clone();
    assert_eq!((d["event_id"].as_str(), d["status"].as_str()), (Some("in-1"), Some("delivered")));
    let in_1 = d["id"].as_str().unwrap().to_string();
    let detail = s.read.get(&format!("/v1/deliveries/{in_1}")).await;
    assert_eq!(detail.expect(200)["attempt_log"][0]["status"], 200);
    assert_eq!(detail.json["attempt_log"][0]["config_version"], 7);
    assert_eq!(detail.json["attempt_log"][0]["payload"], Value::Null, "orders does not log payloads");
    assert_eq!(detail.json["attempt_log"][0]["request_headers"], Value::Null, "nor request headers");
    for bad in ["status=lost", "cursor=zzz", "since=yesterday", "until=later", "limit=5000", "limit=0"] {
        let a = s.read.get(&format!("/v1/deliveries?{bad}")).await;
        assert_eq!(a.expect(400)["error"]["code"], "bad_request", "{bad}");
    }
    assert_eq!(s.read.get("/v1/deliveries?limit=many").await.expect(400)["error"]["code"], "invalid_query");
    s.read.get("/v1/deliveries/nope").await.expect(404);
    s.admin.post("/v1/deliveries/nope/retry", json!({})).await.expect(404);
    // Its route keeps no payload and it has no dead letter: nothing to retry from, and why.
    let not_kept = s.admin.post(&format!("/v1/deliveries/{in_1}/retry"), json!({})).await;
    assert_eq!(not_kept.expect(409)["error"]["code"], "conflict");
    assert!(not_kept.json["error"]["message"].as_str().unwrap().contains("log_payload = true"), "{}", not_kept.text);

    // A route that logs payloads keeps the body it sent (shown with the attempt) and the event
    // (in the store, for a retry); the other route of the event keeps the start of its long answer.
    s.ingest.post("/v1/events", new_order("kept-1")).await.expect(202);
    let kept_1 = hookrelay::store::delivery_id("kept", "kept-1");
    let chatty_1 = hookrelay::store::delivery_id("chatty", "kept-1");
    let both = async || {
        (s.read.get(&format!("/v1/deliveries/{kept_1}")).await, s.read.get(&format!("/v1/deliveries/{chatty_1}")).await)
    };
    eventually("kept-1 in the delivery log, on both routes", T, both, |(k, c)| k.status == 200 && c.status == 200)
        .await;
    let sent_body = rx.on("/kept").into_iter().find(|r| r.id() == "kept-1").unwrap().json();
    let kept = s.read.get(&format!("/v1/deliveries/{kept_1}")).await;
    assert_eq!(kept.expect(200)["attempt_log"][0]["payload"], sent_body, "the body sent, as the receiver got it");
    let sent = rx.on("/kept").into_iter().find(|r| r.id() == "kept-1").unwrap();
    let headers = kept.json["attempt_log"][0]["request_headers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = headers.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"webhook-signature") && names.contains(&"traceparent"), "{}", kept.text);
    for h in &headers {
        assert_eq!(h["value"], sent.header(h["name"].as_str().unwrap()), "the headers sent, as the receiver got them");
    }
    let store = s.store().await;
    let event: Value = serde_json::from_slice(&store.delivery_event(&kept_1).await.unwrap().unwrap()).unwrap();
    assert_eq!((event["id"].as_str(), event["type"].as_str()), (Some("kept-1"), Some("order.created")));
    assert_eq!(store.delivery_event(&in_1).await.unwrap(), None, "no event kept without log_payload");
    assert_eq!(store.attempts(&in_1).await.unwrap()[0].payload, None, "no body kept without log_payload");
    let chatty_log = s.read.get(&format!("/v1/deliveries/{chatty_1}")).await;
    assert_eq!(chatty_log.expect(200)["attempt_log"][0]["response_body"].as_str(), Some(&long[..KEPT_BYTES]));
    assert_eq!(chatty_log.json["attempt_log"][0]["payload"], Value::Null);
    // So a delivered delivery of that route can be retried: republished to its queue only.
    let retried = s.admin.post(&format!("/v1/deliveries/{kept_1}/retry"), json!({})).await;
    assert_eq!(retried.expect(202)["source"], "delivery_log", "{}", retried.text);
    assert_eq!((retried.json["route"].as_str(), retried.json["event_id"].as_str()), (Some("kept"), Some("kept-1")));
    rx.wait_until("/kept", "kept-1 twice", T, |got| got.iter().filter(|r| r.id() == "kept-1").count() == 2).await;
    let again = rx.on("/kept").into_iter().filter(|r| r.id() == "kept-1").nth(1).unwrap();
    verify_spec(SECRET, &again).unwrap();
    // chatty is ordered: an event published after the retry reaches it after anything the retry
    // would have sent it.
    s.ingest.post("/v1/events", new_order("after-retry")).await.expect(202);
    eventually("after-retry at chatty, once", T, async || chatty.count("after-retry"), |n| *n == 1).await;
    assert_eq!(chatty.count("kept-1"), 1, "a retry goes to its route only");

    // A dead letter: listed, shown with its event, replayed once, delivered.
    assert_eq!(s.ingest.post("/v1/events", paid("dl-1", 2)).await.expect(202)["routed"], true);
    let listed = async || s.read.get("/v1/dead-letters?route=orders").await;
    eventually("a dead letter of route orders", T, listed, |a| !items(&a.json).is_empty()).await;
    let dls = s.read.get("/v1/dead-letters?route=orders&reason=rejected").await;
    let dl = dls.expect(200)["items"][0].clone();
    assert_eq!((dl["event_id"].as_str(), dl["last_status"].as_u64()), (Some("dl-1"), Some(400)));
    let dl_id = dl["id"].as_str().unwrap().to_string();
    let shown = s.read.get(&format!("/v1/dead-letters/{dl_id}")).await;
    assert_eq!(shown.expect(200)["event"]["id"], "dl-1");
    s.read.get("/v1/dead-letters/nope").await.expect(404);
    let replay = s.admin.post("/v1/dead-letters/replay", json!({"ids": [dl_id, "nope"]})).await;
    assert_eq!(replay.expect(200)["replayed"], json!([dl_id]), "{}", replay.text);
    assert_eq!(replay.json["not_found"], json!(["nope"]));
    rx.wait_until("/orders", "dl-1 replayed", T, |got| got.iter().filter(|r| r.id() == "dl-1").count() == 2).await;
    let again = s.admin.post("/v1/dead-letters/replay", json!({"ids": [dl_id]})).await;
    assert_eq!(again.expect(200)["already_replayed"], json!([dl_id]), "a replay happens once");
    assert_eq!((again.json["replayed"].clone(), again.json["in_progress"].clone()), (json!([]), json!([])));
    assert_eq!(s.admin.post("/v1/dead-letters/replay", json!({})).await.expect(422)["error"]["code"], "invalid");
    let by_filter = s.admin.post("/v1/dead-letters/replay", json!({"filter": {"route": "orders"}})).await;
    assert_eq!(by_filter.expect(200)["replayed"], json!([]), "nothing left that was not replayed");
    assert_eq!(s.read.get("/v1/dead-letters?route=orders").await.expect(200)["items"], json!([]));
    let with_replayed = s.read.get("/v1/dead-letters?route=orders&include_replayed=true").await;
    assert_eq!(with_replayed.expect(200)["items"][0]["id"], dl_id);
    assert!(with_replayed.json["items"][0]["replayed_at"].is_string());
    // A delivery whose event is kept with its dead letter can be retried, replayed or not.
    let dl_1 = hookrelay::store::delivery_id("orders", "dl-1");
    let shown = async || s.read.get(&format!("/v1/deliveries/{dl_1}")).await;
    eventually("the replayed delivery delivered", T, shown, |a| a.json["status"] == "delivered").await;
    let retried = s.admin.post(&format!("/v1/deliveries/{dl_1}/retry"), json!({})).await;
    assert_eq!(
        (retried.expect(202)["source"].as_str(), retried.json["dead_letter"].as_str()),
        (Some("dead_letter"), Some(dl_id.as_str()))
    );
    rx.wait_until("/orders", "dl-1 retried", T, |got| got.iter().filter(|r| r.id() == "dl-1").count() == 3).await;
    // A dead delivery of a route that logs payloads: its retry replays its dead letter.
    s.ingest.post("/v1/events", new_order("kept-dead")).await.expect(202);
    let kept_dead = hookrelay::store::delivery_id("kept", "kept-dead");
    let both = async || {
        (s.read.get("/v1/dead-letters?route=kept").await, s.read.get(&format!("/v1/deliveries/{kept_dead}")).await)
    };
    eventually("kept-dead's dead letter, and its delivery dead", T, both, |(dls, d)| {
        !items(&dls.json).is_empty() && d.json["status"] == "dead"
    })
    .await;
    let kept_dl = items(&s.read.get("/v1/dead-letters?route=kept").await.json)[0]["id"].as_str().unwrap().to_string();
    let retried = s.admin.post(&format!("/v1/deliveries/{kept_dead}/retry"), json!({})).await;
    assert_eq!(retried.expect(202)["dead_letter"], kept_dl.as_str(), "{}", retried.text);
    let shown = async || s.read.get(&format!("/v1/deliveries/{kept_dead}")).await;
    eventually("the retried kept-dead delivered", T, shown, |a| a.json["status"] == "delivered").await;
    assert!(s.read.get(&format!("/v1/dead-letters/{kept_dl}")).await.json["replayed_at"].is_string());
    assert_eq!(rx.on("/kept").iter().filter(|r| r.id() == "kept-dead").count(), 2);

    // Paging and time filters, on a log that no longer moves: orders has in-1 and dl-1; kept and
    // chatty have kept-1, after-retry and kept-dead.
    let listed = async || items(&s.read.get("/v1/deliveries?limit=1000").await.json);
    eventually("8 deliveries, all delivered", T, listed, |all| {
        all.len() == 8 && all.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let all = items(&s.read.get("/v1/deliveries?limit=1000").await.json);
    assert_eq!(
        walk(&s.read, "/v1/deliveries?limit=3").await,
        ids(&all),
        "the cursor walks every delivery once, in order"
    );
    let cut = all[3]["last_at"].as_str().unwrap().to_string();
    let (newer, older): (Vec<Value>, Vec<Value>) =
        all.iter().cloned().partition(|d| d["last_at"].as_str().unwrap() >= cut.as_str());
    assert!(!newer.is_empty() && !older.is_empty());
    assert_eq!(ids(&items(&s.read.get(&format!("/v1/deliveries?limit=1000&since={cut}")).await.json)), ids(&newer));
    assert_eq!(ids(&items(&s.read.get(&format!("/v1/deliveries?limit=1000&until={cut}")).await.json)), ids(&older));
    assert_eq!(walk(&s.read, &format!("/v1/deliveries?limit=1&since={cut}")).await, ids(&newer));
    let kept_only = walk(&s.read, "/v1/deliveries?route=kept&limit=1").await;
    assert_eq!(kept_only.len(), 3, "{kept_only:?}");
    let dead = items(&s.read.get("/v1/dead-letters?include_replayed=true").await.json);
    assert_eq!(dead.len(), 2, "dl-1 and kept-dead");
    let dead_cut = dead[0]["dead_at"].as_str().unwrap();
    let since = s.read.get(&format!("/v1/dead-letters?include_replayed=true&since={dead_cut}")).await;
    assert_eq!(ids(&items(since.expect(200))), ids(&dead[..1]));
    let until = s.read.get(&format!("/v1/dead-letters?include_replayed=true&until={dead_cut}")).await;
    assert_eq!(ids(&items(until.expect(200))), ids(&dead[1..]));
    assert_eq!(walk(&s.read, "/v1/dead-letters?include_replayed=true&limit=1").await, ids(&dead));
    for bad in ["since=yesterday", "until=later", "cursor=zzz", "limit=0", "limit=5000"] {
        let a = s.read.get(&format!("/v1/dead-letters?{bad}")).await;
        assert_eq!(a.expect(400)["error"]["code"], "bad_request", "{bad}");
    }
    assert_eq!(
        s.read.get("/v1/dead-letters?include_replayed=perhaps").await.expect(400)["error"]["code"],
        "invalid_query"
    );

    // Statistics.
    let stats = s.read.get("/v1/stats?window=1h").await;
    let orders =
        stats.expect(200)["routes"].as_array().unwrap().iter().find(|r| r["route"] == "orders").cloned().unwrap();
    assert!(orders["attempts"].as_u64().unwrap() >= 3, "{orders}");
    assert!(orders["dead"].as_u64().unwrap() >= 1, "{orders}");
    assert!(orders["latency_ms"]["p99"].is_u64(), "{orders}");
    s.read.get("/v1/stats?window=forever").await.expect(400);

    // Config and reload.
    let config = s.read.get("/v1/config").await;
    assert_eq!(config.expect(200)["version"], 7);
    assert_eq!(config.json["file_routes"], 3);
    let applied = s.admin.post("/v1/config/reload", json!({})).await;
    assert_eq!(applied.expect(200)["version"], 7);
    s.cfg.file("routes/broken.toml", "events = [\"order.*\"]\nurll = \"x\"\n");
    let rejected = s.admin.post("/v1/config/reload", json!({})).await;
    assert_eq!(rejected.expect(422)["error"]["code"], "reload_rejected");
    let errors = rejected.json["error"]["details"]["errors"].to_string();
    assert!(errors.contains("routes/broken.toml:2:1: unknown field `urll`"), "{errors}");
    assert!(s.read.get("/v1/config").await.json["last_reload_errors"].to_string().contains("broken.toml"));
    std::fs::remove_file(s.cfg.path().join("routes/broken.toml")).unwrap();
    // The API's own socket cannot move under a reload: refused, and said so.
    let main = s.cfg.main();
    s.cfg.set_main(main.clone().api_listen("127.0.0.1:1"));
    let moved = s.admin.post("/v1/config/reload", json!({})).await;
    assert_eq!(moved.expect(422)["error"]["code"], "reload_rejected");
    assert!(moved.text.contains("[api] enabled and listen apply at start only"), "{}", moved.text);
    s.cfg.set_main(main);

    // The audit trail has every change made here: reloads (applied or not), the replay, the
    // retries, each with the key that made it.
    let audit = items(&s.read.get("/v1/audit?limit=1000").await.json);
    let entry = |action: &str, target: &str| {
        audit.iter().filter(|a| a["action"] == action && a["target"] == target).cloned().collect::<Vec<_>>()
    };
    let reloads = entry("config.reload", "config");
    let results: Vec<&str> = reloads.iter().map(|a| a["details"]["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["rejected", "rejected", "applied"], "newest first: {reloads:?}");
    assert!(reloads.iter().all(|a| a["actor"] == "ops"));
    assert_eq!(reloads[2]["details"]["version"], 7);
    assert!(reloads[1]["details"]["errors"].as_u64() >= Some(1), "{reloads:?}");
    let replays = entry("dead_letter.replay", &dl_id);
    assert_eq!(replays.len(), 1, "{audit:?}");
    assert_eq!(
        (replays[0]["actor"].as_str(), replays[0]["details"]["replayed"].clone()),
        (Some("ops"), json!([dl_id]))
    );
    for (delivery, source) in [(&kept_1, "delivery_log"), (&dl_1, "dead_letter"), (&kept_dead, "dead_letter")] {
        let retries = entry("delivery.retry", delivery);
        assert_eq!(retries.len(), 1, "{delivery}: {audit:?}");
        assert_eq!(
            (retries[0]["actor"].as_str(), retries[0]["details"]["source"].as_str()),
            (Some("ops"), Some(source))
        );
    }
    assert!(entry("delivery.retry", &in_1).is_empty(), "a refused retry changes nothing and is not audited");

    // Unknown paths and methods answer in the same shape.
    assert_eq!(s.read.get("/v1/nope").await.expect(404)["error"]["code"], "not_found");
    assert_eq!(s.read.send("PATCH", "/v1/routes", None, &[]).await.expect(405)["error"]["code"], "method_not_allowed");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http_on_sqlite() {
    endpoints(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http_on_postgres() {
    endpoints(Some(PgDatabase::new().await)).await;
}
