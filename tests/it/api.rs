//! The admin and ingest API over real HTTP, against a real router process, on both stores:
//! every endpoint's success and error paths, keys and scopes, a dead letter listed, replayed and
//! delivered, retries, payload logging, paging and time filters, and subscriptions that go live
//! (on the replica that made them at once, on the others promptly), rotate their secret, stop on
//! 410 and on delete, with their secret only in the answers that must carry it; lost brokers and
//! stores answered with 503; and the OpenAPI document held to the implementation by schemathesis.

use crate::common::*;
use base64::Engine as _;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// `[limits] response_body_bytes` of these routers: the start of a response body kept in logs.
const KEPT_BYTES: usize = 100;

/// One answer the tests got from the API.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    text: String,
}

/// Every answer of one test's clients.
type Transcript = Arc<Mutex<Vec<Exchange>>>;

/// The API client of these tests: [`Api`], recording every answer it gets, so that the secrets
/// check reads all of them, whatever the endpoint and status.
struct Client {
    api: Api,
    transcript: Transcript,
}

impl Client {
    fn new(base: &str, key: Option<&str>, transcript: &Transcript) -> Self {
        Self { api: Api::new(base, key), transcript: transcript.clone() }
    }

    fn with_key(&self, key: Option<&str>) -> Self {
        Self { api: self.api.with_key(key), transcript: self.transcript.clone() }
    }

    fn key(&self) -> Option<&str> {
        self.api.key.as_deref()
    }

    async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
        let answer = self.api.send(method, path, body, headers).await;
        self.transcript.lock().unwrap().push(Exchange {
            method: method.into(),
            path: path.into(),
            status: answer.status,
            text: answer.text.clone(),
        });
        answer
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(serde_json::to_vec(&body).unwrap()), &[]).await
    }

    async fn put(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.send("PUT", path, Some(serde_json::to_vec(&body).unwrap()), headers).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }
}

struct Setup {
    vh: Option<Vhost>,
    cfg: ConfigDir,
    router: RouterProc,
    base: String,
    admin: Client,
    read: Client,
    ingest: Client,
    transcript: Transcript,
    store_url: String,
    pg: Option<PgDatabase>,
}

impl Setup {
    /// The router's store, opened beside it.
    async fn store(&self) -> Arc<dyn hookrelay::store::Store> {
        hookrelay::store::open(&self.store_url).await.unwrap()
    }

    /// Clients of another router (a replica) with the same keys, recording into the same transcript.
    fn clients(&self, base: &str) -> (Client, Client, Client) {
        let c = |key: Option<&str>| Client::new(base, key, &self.transcript);
        (c(self.admin.key()), c(self.read.key()), c(self.ingest.key()))
    }

    async fn finish(self) {
        drop(self.router);
        if let Some(db) = self.pg {
            db.drop_it().await;
        }
    }
}

/// A router with three keys (admin, read, ingest), small limits, routes, and the store `pg`
/// (None: SQLite in the config dir).
async fn setup(pg: Option<PgDatabase>, routes: &[RouteConfig]) -> Setup {
    let vh = Vhost::new();
    let (admin_key, admin_entry) = api_key("ops", &[Scope::Admin]);
    let (read_key, read_entry) = api_key("dashboards", &[Scope::Read]);
    let (ingest_key, ingest_entry) = api_key("shop", &[Scope::Ingest]);
    let mut main = MainConfig::new()
        .version(7)
        .rabbitmq(&vh.url)
        .prefetch(50)
        .loopback_targets()
        .max_event_bytes(2048)
        .response_body_bytes(KEPT_BYTES)
        .api_listen("127.0.0.1:0")
        .secret_overlap(Duration::from_secs(3600))
        .api_key(admin_entry)
        .api_key(read_entry)
        .api_key(ingest_entry);
    if let Some(db) = &pg {
        main = main.store(&db.url);
    }
    let cfg = ConfigDir::with(main);
    for route in routes {
        cfg.route(route);
    }
    let store_url = pg.as_ref().map_or_else(|| cfg.store_url(), |d| d.url.clone());
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let transcript = Transcript::default();
    Setup {
        admin: Client::new(&base, Some(&admin_key), &transcript),
        read: Client::new(&base, Some(&read_key), &transcript),
        ingest: Client::new(&base, Some(&ingest_key), &transcript),
        vh: Some(vh),
        cfg,
        router,
        base,
        transcript,
        store_url,
        pg,
    }
}

fn paid(id: &str, n: i64) -> Value {
    event("order.paid", id, json!({"n": n, "total": 10}))
}

fn new_order(id: &str) -> Value {
    event("order.created", id, json!({"note": id}))
}

/// The `items` of a list answer.
fn items(json: &Value) -> Vec<Value> {
    json["items"].as_array().cloned().unwrap_or_default()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// Follows `next` from `path` (which has a `?`) to the last page; returns every item's id.
async fn walk(c: &Client, path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut page = c.get(path).await;
    loop {
        seen.extend(ids(&items(page.expect(200))));
        match page.json["next"].as_str() {
            Some(next) => page = c.get(&format!("{path}&cursor={next}")).await,
            None => return seen,
        }
    }
}

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

/// A `whsec_` secret made here (the caller's own, for `validate`).
fn caller_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes()))
}

/// Subscriptions go live, rotate, stop on 410 and on delete; secrets only where they must be.
async fn subscriptions(pg: Option<PgDatabase>) {
    // `gone-1` gets a 410 on /gone; everything else 200.
    let rx = Receiver::start(|r, _| if r.id() == "gone-1" { (410, vec![]) } else { (200, vec![]) }).await;
    let routes = [RouteConfig::new("audit").events(["order.created"]).url(rx.url("/audit"))];
    let s = setup(pg, &routes).await;
    let mut secrets = vec![SECRET.to_string()];

    // Invalid definitions, every problem at once; names must be unique.
    let bad = s
        .admin
        .post(
            "/v1/subscriptions",
            json!({"name": "acme orders", "events": ["order.**"], "url": "ftp://x", "filter": "fn filter(e) {"}),
        )
        .await;
    assert_eq!(bad.expect(422)["error"]["code"], "invalid");
    let fields: Vec<&str> = bad.json["error"]["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "events[0]", "url", "filter"], "{}", bad.text);
    let clash = s
        .admin
        .post("/v1/subscriptions", json!({"name": "audit", "events": ["order.paid"], "url": rx.url("/x")}))
        .await;
    assert_eq!(clash.expect(422)["error"]["details"]["fields"][0]["field"], "name");
    let unknown_key = s
        .admin
        .post("/v1/subscriptions", json!({"name": "a", "events": ["a"], "url": rx.url("/"), "secret": "x"}))
        .await;
    unknown_key.expect(400);

    // Create: live when the answer comes. The events published right after it, with no wait in
    // between, reach it, signed with the secret it returned.
    let spec = json!({
        "name": "acme", "description": "ACME's ERP", "events": ["order.paid"], "url": rx.url("/acme"),
        "filter": "fn filter(event) { event.subject == \"acme\" }", "redact": ["data.total"], "max_attempts": 2,
        "backoff": ["100ms"]
    });
    let created = s.admin.post("/v1/subscriptions", spec.clone()).await;
    let mut acme = event("order.paid", "acme-1", json!({"n": 1, "total": 99}));
    acme["subject"] = json!("acme");
    let mut other = event("order.paid", "other-1", json!({"n": 2}));
    other["subject"] = json!("globex");
    let started = Instant::now();
    assert_eq!(s.ingest.post("/v1/events", other).await.expect(202)["routed"], true, "bound when created");
    assert_eq!(s.ingest.post("/v1/events", acme).await.expect(202)["routed"], true);
    let sub = created.expect(201).clone();
    let (id, secret) = (sub["id"].as_str().unwrap().to_string(), sub["secret"].as_str().unwrap().to_string());
    secrets.push(secret.clone());
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        (sub["live"].as_bool(), sub["enabled"].as_bool(), sub["version"].as_i64()),
        (Some(true), Some(true), Some(1))
    );
    let got = rx.wait_distinct("/acme", 1, T).await;
    eprintln!("the event published right after the create reached the subscription {:?} later", started.elapsed());
    assert_eq!(got.len(), 1, "the filter dropped the other tenant's event");
    verify_spec(&secret, &got[0]).unwrap();
    assert_eq!(got[0].header("hookrelay-route"), "acme");
    assert_eq!(got[0].json()["data"], json!({"n": 1}), "redacted");
    let dup = s.admin.post("/v1/subscriptions", spec.clone()).await;
    assert_eq!(dup.expect(409)["error"]["code"], "conflict");
    let route = s.read.get("/v1/routes/acme").await;
    assert_eq!(
        (route.expect(200)["origin"].as_str(), route.json["subscription"].as_str()),
        (Some("api"), Some(id.as_str()))
    );
    s.read.get(&format!("/v1/subscriptions/{id}")).await.expect(200);
    s.read.get("/v1/subscriptions").await.expect(200);
    s.read.get("/v1/subscriptions/nope").await.expect(404);
    // Reads that show the route, its deliveries and the config (scanned for secrets below).
    s.read.get("/v1/routes").await.expect(200);
    s.read.get("/v1/config").await.expect(200);
    s.read.get("/v1/stats").await.expect(200);
    let acme_1 = hookrelay::store::delivery_id("acme", "acme-1");
    let shown = async || s.read.get(&format!("/v1/deliveries/{acme_1}")).await;
    eventually("acme-1 in the delivery log", T, shown, |a| a.status == 200).await;
    s.read.get("/v1/deliveries?route=acme").await.expect(200);

    // Update: optimistic concurrency; name and ordered cannot change.
    let mut changed = spec.clone();
    changed["filter"] = json!("fn filter(event) { event.subject == \"acme\" || event.subject == \"acme-eu\" }");
    let stale = s.admin.put(&format!("/v1/subscriptions/{id}"), changed.clone(), &[("if-match", "99")]).await;
    assert_eq!(stale.expect(409)["error"]["code"], "conflict");
    let mut renamed = changed.clone();
    renamed["name"] = json!("acme2");
    renamed["ordered"] = json!(true);
    let refused = s.admin.put(&format!("/v1/subscriptions/{id}"), renamed, &[]).await;
    assert_eq!(refused.expect(422)["error"]["details"]["fields"].as_array().unwrap().len(), 2);
    let updated = s.admin.put(&format!("/v1/subscriptions/{id}"), changed, &[("if-match", "1")]).await;
    assert_eq!(updated.expect(200)["version"], 2);
    let mut eu = event("order.paid", "acme-eu-1", json!({"n": 3}));
    eu["subject"] = json!("acme-eu");
    s.ingest.post("/v1/events", eu).await.expect(202);
    rx.wait_distinct("/acme", 2, T).await;
    s.admin.put("/v1/subscriptions/nope", spec.clone(), &[]).await.expect(404);

    // Rotation: the new secret is returned; both signatures are sent during the overlap.
    let rotated = s.admin.post(&format!("/v1/subscriptions/{id}/rotate-secret"), json!({"overlap": "1h"})).await;
    let new_secret = rotated.expect(200)["secret"].as_str().unwrap().to_string();
    secrets.push(new_secret.clone());
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.json["secrets"]["active"], 2);
    let mut after = event("order.paid", "acme-2", json!({"n": 4}));
    after["subject"] = json!("acme");
    s.ingest.post("/v1/events", after).await.expect(202);
    let got = rx.wait_distinct("/acme", 3, T).await;
    let last = got.iter().find(|r| r.id() == "acme-2").unwrap();
    assert_eq!(last.header("webhook-signature").split(' ').count(), 2, "both secrets sign during the overlap");
    verify_spec(&new_secret, last).unwrap();
    verify_spec(&secret, last).unwrap();
    s.admin.post("/v1/subscriptions/nope/rotate-secret", json!({})).await.expect(404);

    // At rest, the secrets column holds neither secret, only what HOOKRELAY_SECRET_KEY opens.
    let raw = raw_secrets_column(&s.store_url, &id).await;
    for plain in [&secret, &new_secret] {
        assert!(!raw.contains(plain.as_str()), "a plaintext secret in the store: {raw}");
        assert!(!raw.contains(plain.trim_start_matches("whsec_")), "a secret's key in the store: {raw}");
    }
    let sealer = hookrelay::store::SecretBox::from_env_value(SEALING_KEY).unwrap();
    let stored = s.store().await.subscription(&id).await.unwrap().unwrap();
    let opened: Vec<String> =
        stored.secrets.iter().map(|k| String::from_utf8(sealer.open(&k.sealed, &id).unwrap()).unwrap()).collect();
    assert_eq!(opened, [new_secret.clone(), secret.clone()], "sealed, newest first");

    // A short overlap: both signatures while it lasts, only the new one after it.
    let short = s
        .admin
        .post("/v1/subscriptions", json!({"name": "rotating", "events": ["order.created"], "url": rx.url("/rotating")}))
        .await;
    let (short_id, old) =
        (short.expect(201)["id"].as_str().unwrap().to_string(), short.json["secret"].as_str().unwrap().to_string());
    secrets.push(old.clone());
    let rotated = s.admin.post(&format!("/v1/subscriptions/{short_id}/rotate-secret"), json!({"overlap": "3s"})).await;
    let new = rotated.expect(200)["secret"].as_str().unwrap().to_string();
    secrets.push(new.clone());
    let until = humantime::parse_rfc3339(rotated.json["secrets"]["previous_valid_until"].as_str().unwrap()).unwrap();
    let until_ms = until.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    s.ingest.post("/v1/events", new_order("during-overlap")).await.expect(202);
    let during = rx.wait_distinct("/rotating", 1, T).await.remove(0);
    let signed_s: i64 = during.header("webhook-timestamp").parse().unwrap();
    // Signed within [timestamp, timestamp + 1 s): before the overlap's end when that second is.
    if (signed_s + 1) * 1000 <= until_ms {
        assert_eq!(during.header("webhook-signature").split(' ').count(), 2, "both sign during the overlap");
        verify_spec(&new, &during).unwrap();
        verify_spec(&old, &during).unwrap();
    } else {
        eprintln!(
            "the event was signed after the 3 s overlap (a slow run): the 1 h overlap above covers both signatures"
        );
    }
    let shown = async || s.read.get("/v1/routes/rotating").await;
    eventually("the overlap to end (one signing key)", T, shown, |a| a.json["signing_keys"] == 1).await;
    let view = s.read.get(&format!("/v1/subscriptions/{short_id}")).await;
    assert_eq!(
        (view.json["secrets"]["active"].as_u64(), view.json["secrets"]["previous_valid_until"].clone()),
        (Some(1), Value::Null)
    );
    s.ingest.post("/v1/events", new_order("after-overlap")).await.expect(202);
    let got = rx.wait_distinct("/rotating", 2, T).await;
    let after = got.iter().find(|r| r.id() == "after-overlap").unwrap();
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1, "only the new secret signs after the overlap");
    verify_spec(&new, after).unwrap();
    assert!(verify_spec(&old, after).is_err(), "the old secret no longer signs");

    // Validate a receiver before subscribing it: a ping signed with the caller's secret.
    let mine = caller_secret();
    secrets.push(mine.clone());
    let check = s.admin.post("/v1/subscriptions/validate", json!({"url": rx.url("/check"), "secret": mine})).await;
    assert_eq!(
        (check.expect(200)["allowed"].as_bool(), check.json["ping"]["status"].as_u64()),
        (Some(true), Some(200))
    );
    assert!(check.json["ping"]["latency_ms"].is_u64());
    let ping_id = check.json["ping"]["webhook_id"].as_str().unwrap();
    let ping = rx.on("/check").into_iter().find(|r| r.id() == ping_id).expect("the ping reached the receiver");
    verify_spec(&mine, &ping).unwrap();
    assert_eq!(ping.json()["type"], "hookrelay.test");
    let metadata = s.admin.post("/v1/subscriptions/validate", json!({"url": "http://169.254.169.254/latest"})).await;
    assert_eq!(metadata.expect(200)["allowed"], false);
    assert!(metadata.json["policy_error"].as_str().unwrap().contains("169.254.169.254"), "{}", metadata.text);
    s.admin.post("/v1/subscriptions/validate", json!({"url": "not a url"})).await.expect(422);

    // 410 Gone disables the subscription.
    let gone_spec = json!({"name": "leaving", "events": ["order.paid"], "url": rx.url("/gone")});
    let gone = s.admin.post("/v1/subscriptions", gone_spec).await;
    let gone_id = gone.expect(201)["id"].as_str().unwrap().to_string();
    secrets.push(gone.json["secret"].as_str().unwrap().to_string());
    let mut g = event("order.paid", "gone-1", json!({"n": 5}));
    g["subject"] = json!("nobody");
    s.ingest.post("/v1/events", g).await.expect(202);
    let shown = async || s.read.get(&format!("/v1/subscriptions/{gone_id}")).await;
    let disabled = eventually("the 410 to disable the subscription", T, shown, |a| a.json["enabled"] == false).await;
    assert!(disabled.json["disabled_reason"].as_str().unwrap().contains("410"), "{}", disabled.text);
    let shown = async || s.read.get("/v1/routes/leaving").await;
    eventually("the disabled route to stop (404)", T, shown, |a| a.status == 404).await;
    s.read.get("/v1/dead-letters?include_replayed=true").await.expect(200);

    // Delete: the route stops receiving (nothing is bound to order.paid any more).
    s.admin.delete(&format!("/v1/subscriptions/{id}")).await.expect(204);
    s.admin.delete(&format!("/v1/subscriptions/{id}")).await.expect(404);
    let mut late = event("order.paid", "acme-late", json!({"n": 6}));
    late["subject"] = json!("acme");
    assert_eq!(s.ingest.post("/v1/events", late).await.expect(202)["routed"], false);
    s.read.get("/v1/routes/acme").await.expect(404);

    // The audit trail has every change.
    let audit = s.read.get("/v1/audit?limit=100").await;
    let actions: Vec<&str> =
        audit.expect(200)["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for a in [
        "subscription.create",
        "subscription.update",
        "subscription.rotate_secret",
        "subscription.disable",
        "subscription.delete",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    assert!(audit.json["items"].as_array().unwrap().iter().any(|a| a["actor"] == "ops"));

    // No secret in any answer but the create and rotate answers that hand it over (each holds
    // its own), nor in the router's log.
    let transcript = s.transcript.lock().unwrap().clone();
    let hands_over = |e: &Exchange| {
        e.method == "POST"
            && ((e.path == "/v1/subscriptions" && e.status == 201)
                || (e.path.ends_with("/rotate-secret") && e.status == 200))
    };
    let mut handed = 0;
    for e in &transcript {
        if hands_over(e) {
            handed += 1;
            let own: Value = serde_json::from_str(&e.text).unwrap();
            assert!(secrets.contains(&own["secret"].as_str().unwrap().to_string()));
            continue;
        }
        for secret in &secrets {
            assert!(
                !e.text.contains(secret.as_str()),
                "a secret in the answer to {} {} ({}): {}",
                e.method,
                e.path,
                e.status,
                e.text
            );
        }
        assert!(!e.text.contains("whsec_"), "a secret in the answer to {} {}: {}", e.method, e.path, e.text);
    }
    assert_eq!(handed, 5, "3 creates and 2 rotations");
    for path in ["/v1/routes", "/v1/routes/acme", "/v1/config", "/v1/deliveries?route=acme", "/v1/audit?limit=100"] {
        assert!(transcript.iter().any(|e| e.path == path && e.status == 200), "{path} was not read");
    }
    assert!(transcript.iter().any(|e| e.method == "PUT" && e.status == 200));
    assert!(transcript.iter().any(|e| e.status == 409 && e.path == "/v1/subscriptions"));
    let log = s.router.log_text();
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret in the router's log");
    }
    s.finish().await;
}

/// The `secrets` column of subscription `id`, as the database holds it.
async fn raw_secrets_column(url: &str, id: &str) -> String {
    let q = "SELECT secrets FROM subscriptions WHERE id = $1";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let raw: String = sqlx::query_scalar(q).bind(id).fetch_one(&pool).await.unwrap();
        pool.close().await;
        raw
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let raw: String = sqlx::query_scalar(q).bind(id).fetch_one(&pool).await.unwrap();
        pool.close().await;
        raw
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_go_live_rotate_and_stop_on_sqlite() {
    subscriptions(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_go_live_rotate_and_stop_on_postgres() {
    subscriptions(Some(PgDatabase::new().await)).await;
}

/// Two replicas share one PostgreSQL store (and one broker, so they consume the same route
/// queues): a subscription made through one is live on the other as soon as the store's
/// notification reaches it, and deleting it through the other stops it on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_postgres_apply_each_others_subscriptions() {
    let rx = Receiver::ok().await;
    let s = setup(Some(PgDatabase::new().await), &[]).await;
    let b = RouterProc::ready(&s.cfg).await;
    let (b_admin, b_read, b_ingest) = s.clients(&b.api().await);

    let created = s
        .admin
        .post("/v1/subscriptions", json!({"name": "shared", "events": ["order.*"], "url": rx.url("/shared")}))
        .await;
    let started = Instant::now();
    let (id, secret) =
        (created.expect(201)["id"].as_str().unwrap().to_string(), created.json["secret"].as_str().unwrap().to_string());
    assert_eq!(created.json["live"], true, "live on the replica that made it");
    let shown = async || b_read.get(&format!("/v1/subscriptions/{id}")).await;
    eventually("the other replica to report it live", T, shown, |a| a.json["live"] == true).await;
    eprintln!("the other replica reported the subscription live {:?} after it was created", started.elapsed());
    assert_eq!(b_ingest.post("/v1/events", paid("shared-1", 1)).await.expect(202)["routed"], true);
    let got = rx.wait_distinct("/shared", 1, T).await;
    verify_spec(&secret, &got[0]).unwrap();

    b_admin.delete(&format!("/v1/subscriptions/{id}")).await.expect(204);
    let started = Instant::now();
    let shown = async || s.read.get("/v1/routes/shared").await;
    eventually("the first replica to stop it (404)", T, shown, |a| a.status == 404).await;
    eprintln!("the first replica stopped the subscription {:?} after the other deleted it", started.elapsed());
    drop(b);
    s.finish().await;
}

/// A subscription survives a restart: its route comes back from the store, its secret opened
/// with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_a_restart() {
    let rx = Receiver::ok().await;
    let mut s = setup(None, &[]).await;
    let created =
        s.admin.post("/v1/subscriptions", json!({"name": "crm", "events": ["order.*"], "url": rx.url("/crm")})).await;
    let secret = created.expect(201)["secret"].as_str().unwrap().to_string();
    assert!(s.router.term(T).await.success());
    // Without the key that sealed its secret, the router refuses to start, and says why.
    for key in [None, Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["run", "--config"]).arg(s.cfg.path()).env_remove("HOOKRELAY_SECRET_KEY").env(SECRET_ENV, SECRET);
        if let Some(k) = key {
            cmd.env("HOOKRELAY_SECRET_KEY", k);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("HOOKRELAY_SECRET_KEY"), "{err}");
    }
    s.router = RouterProc::ready(&s.cfg).await;
    let (_, _, ingest) = s.clients(&s.router.api().await);
    assert_eq!(ingest.post("/v1/events", paid("after-restart", 1)).await.expect(202)["routed"], true);
    let got = rx.wait_distinct("/crm", 1, T).await;
    verify_spec(&secret, &got[0]).unwrap();
}

/// A router started without `HOOKRELAY_SECRET_KEY` (fine while the store holds no subscription).
struct Unsealed {
    child: std::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Unsealed {
    fn start(cfg: &ConfigDir) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("router.log");
        let child = std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg.path())
            .env_remove("HOOKRELAY_SECRET_KEY")
            .env(SECRET_ENV, SECRET)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log, _dir: dir }
    }

    async fn api(&self) -> String {
        let listening =
            |text: &Text| text.0.lines().find(|l| l.contains("api listening on http://")).map(str::to_string);
        let log = async || Text(std::fs::read_to_string(&self.log).unwrap_or_default());
        let text = eventually("the router to listen; its log", T, log, |t| listening(t).is_some()).await;
        let line = listening(&text).unwrap();
        line[line.find("http://").unwrap()..].split_whitespace().next().unwrap().to_string()
    }
}

impl Drop for Unsealed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Without `HOOKRELAY_SECRET_KEY` there is nothing to seal a secret with: creating a subscription
/// answers 503 `secrets_unavailable`, says what to set, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_subscription_needs_the_sealing_key() {
    let vh = Vhost::new();
    let cfg = ConfigDir::new(&vh);
    let router = Unsealed::start(&cfg);
    let transcript = Transcript::default();
    let api = Client::new(&router.api().await, None, &transcript);
    let refused = api
        .post("/v1/subscriptions", json!({"name": "crm", "events": ["order.*"], "url": "http://127.0.0.1:9/"}))
        .await;
    assert_eq!(refused.expect(503)["error"]["code"], "secrets_unavailable");
    assert!(refused.json["error"]["message"].as_str().unwrap().contains("HOOKRELAY_SECRET_KEY"), "{}", refused.text);
    assert_eq!(api.get("/v1/subscriptions").await.expect(200)["items"], json!([]), "nothing stored");
    assert!(items(&api.get("/v1/audit").await.json).is_empty(), "nothing changed, nothing audited");
}

/// The dependencies going away under a running router: its PostgreSQL database dropped, then
/// its RabbitMQ vhost deleted. `/readyz` says which, and the API answers 503 where it needs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_store_and_broker_answer_503() {
    let rx = Receiver::ok().await;
    let routes = [RouteConfig::new("orders").events(["order.*"]).url(rx.url("/orders"))];
    let mut s = setup(Some(PgDatabase::new().await), &routes).await;
    let open = Client::new(&s.base, None, &s.transcript);
    eventually("/readyz to answer 200", T, async || open.get("/readyz").await, |a| a.status == 200).await;
    s.ingest.post("/v1/events", paid("before", 1)).await.expect(202);
    rx.wait_distinct("/orders", 1, T).await;

    // The store: its database is dropped (with its connections).
    s.pg.take().unwrap().drop_it().await;
    let ready =
        eventually("/readyz to report the store", T, async || open.get("/readyz").await, |a| a.json["store"] == false)
            .await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!((ready.json["ready"].as_bool(), ready.json["broker"].as_bool()), (Some(false), Some(true)));
    assert!(ready.json["problems"].to_string().contains("store"), "{}", ready.text);
    for path in ["/v1/deliveries", "/v1/dead-letters", "/v1/subscriptions", "/v1/audit", "/v1/stats"] {
        assert_eq!(s.read.get(path).await.expect(503)["error"]["code"], "store_unavailable", "{path}");
    }
    // Ingest needs only the broker.
    assert_eq!(s.ingest.post("/v1/events", paid("storeless", 2)).await.expect(202)["routed"], true);

    // The broker: the vhost is deleted, which closes the router's connection and refuses the next.
    drop(s.vh.take());
    let ready = eventually(
        "/readyz to report the broker",
        T,
        async || open.get("/readyz").await,
        |a| a.json["broker"] == false,
    )
    .await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.json["problems"].to_string().contains("broker"), "{}", ready.text);
    let refused = s.ingest.post("/v1/events", paid("brokerless", 3)).await;
    assert_eq!(refused.expect(503)["error"]["code"], "broker_unavailable");
    assert_eq!(open.get("/healthz").await.expect(200)["status"], "ok", "the process is up all the same");
    s.finish().await;
}

/// The OpenAPI document drives the API with schemathesis (from PyPI), over real resources
/// (deliveries, a dead letter, subscriptions, routes, types), and every answer conforms to it:
/// no 5xx, only documented statuses and content types, bodies that match their schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_api_as_documented() {
    if std::process::Command::new("schemathesis").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "schemathesis is missing (pip install schemathesis)");
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let rx = Receiver::start(|r, _| if r.id() == "sx-dead" { (400, vec![]) } else { (200, vec![]) }).await;
    let routes = [RouteConfig::new("orders").events(["order.*"]).url(rx.url("/orders")).log_payload(true)];
    let s = setup(None, &routes).await;
    for id in ["sx-1", "sx-dead"] {
        s.ingest.post("/v1/events", paid(id, 1)).await.expect(202);
    }
    let both =
        async || (items(&s.read.get("/v1/deliveries").await.json), items(&s.read.get("/v1/dead-letters").await.json));
    eventually("2 deliveries and 1 dead letter", T, both, |(d, dls)| d.len() == 2 && dls.len() == 1).await;
    let deliveries = ids(&items(&s.read.get("/v1/deliveries").await.json));
    let dead_letter = ids(&items(&s.read.get("/v1/dead-letters").await.json)).remove(0);
    let subscribe = async |name: &str| {
        let a = s
            .admin
            .post("/v1/subscriptions", json!({"name": name, "events": ["order.*"], "url": rx.url("/sub")}))
            .await;
        a.expect(201)["id"].as_str().unwrap().to_string()
    };
    let (kept, doomed) = (subscribe("sx-kept").await, subscribe("sx-doomed").await);
    let quoted = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    // Half the generated path parameters are real ids, so that the answers past the 404s are
    // checked too; DELETE gets a subscription of its own.
    let config = format!(
        r#"[dictionaries.subscriptions]
values = [{kept:?}]
[dictionaries.doomed]
values = [{doomed:?}]
[dictionaries.deliveries]
values = [{deliveries}]
[dictionaries.dead-letters]
values = [{dead_letter:?}]
[dictionaries.routes]
values = ["orders", "sx-kept"]
[dictionaries.types]
values = ["order.paid", "order.created"]

[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "GET"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "PUT"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "PATCH"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}/rotate-secret"
parameters = {{ "path.id" = {{ dictionary = "subscriptions", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/subscriptions/{{id}}"
include-method = "DELETE"
parameters = {{ "path.id" = {{ dictionary = "doomed", probability = 0.5 }} }}
[[operations]]
include-path-regex = "^/v1/deliveries/[{{]id[}}]"
parameters = {{ "path.id" = {{ dictionary = "deliveries", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/dead-letters/{{id}}"
parameters = {{ "path.id" = {{ dictionary = "dead-letters", probability = 0.5 }} }}
[[operations]]
include-path-regex = "^/v1/routes/[{{]name[}}]"
parameters = {{ "path.name" = {{ dictionary = "routes", probability = 0.5 }} }}
[[operations]]
include-path = "/v1/event-types/{{type}}"
parameters = {{ "path.type" = {{ dictionary = "types", probability = 0.5 }} }}

# Every check runs everywhere but where the document cannot say what the handler decides
# (reported in the issue 17 notes; each is a document or handler change still to make):
# a CloudEvent's extension attributes (any name, any value, with rules for some names);
[[operations]]
include-path-regex = "^/v1/(events|routes/[{{]name[}}]/test)$"
include-method = "POST"
checks.negative_data_rejection.enabled = false
# URLs against the security policy, durations in humantime's grammar (`timeout`, `backoff`,
# `overlap`), Rhai scripts, and a PUT's name that must be the subscription's own;
[[operations]]
include-path-regex = "^/v1/subscriptions"
checks.positive_data_acceptance.enabled = false
# a body given as a JSON array, which serde reads into the request's fields in order, and a
# portal link's `ttl` in humantime's grammar.
[[operations]]
include-path-regex = "^/v1/tenants/"
checks.negative_data_rejection.enabled = false
checks.positive_data_acceptance.enabled = false
"#,
        deliveries = quoted(&deliveries),
    );
    // schemathesis reads schemathesis.toml and writes a cache where it runs: a scratch directory,
    // not the repository.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("schemathesis.toml"), config).unwrap();
    let dir = scratch.path();
    let mut child = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{}/openapi.json", s.base)])
        // Every check (schemathesis runs all of them unless told otherwise; `--checks all` would
        // also override the per-operation exceptions of schemathesis.toml above).
        .args(["--header", &format!("Authorization: Bearer {}", s.admin.key().unwrap())])
        .args(["--max-examples", "25", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--seed", "1"])
        .args(["--request-timeout", "30", "--suppress-health-check", "all", "--no-color"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("out.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("err.txt")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Bounded: it is part of CI. Out of time, it is killed, and fails below.
    let status = match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            child.kill().await.unwrap();
            child.wait().await.unwrap()
        }
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let text = format!("{}{}", read("out.txt"), read("err.txt"));
    eprintln!("{text}");
    assert!(
        status.success(),
        "schemathesis found answers that do not match the document (or ran out of time):\n{text}\n--- router log ---\n{}",
        s.router.log_text()
    );
    assert!(text.contains("passed"), "{text}");
}
