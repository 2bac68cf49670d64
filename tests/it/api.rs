//! The admin and ingest API over real HTTP, against a real router process, on both stores:
//! every endpoint's success and error paths, keys and scopes, a dead letter listed, replayed and
//! delivered, and subscriptions that go live, rotate their secret, stop on 410 and on delete,
//! with their secret only in the answers that must carry it.

use crate::common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

struct Setup {
    _vh: Vhost,
    cfg: ConfigDir,
    router: RouterProc,
    admin: Api,
    read: Api,
    ingest: Api,
    _pg: Option<PgDatabase>,
}

/// A router with three keys (admin, read, ingest), a small size limit, and the store `store`
/// (None: SQLite in the config dir).
async fn setup(rx: &Receiver, store: Option<&str>, routes: &[(&str, String)]) -> (Setup, String) {
    let vh = Vhost::new();
    let (admin_key, admin_entry) = api_key("ops", &["admin"]);
    let (read_key, read_entry) = api_key("dashboards", &["read"]);
    let (ingest_key, ingest_entry) = api_key("shop", &["ingest"]);
    let store = store.map(|u| format!("[store]\nurl = \"{u}\"\n")).unwrap_or_default();
    let main = format!(
        "version = 7\n[broker]\nurl = \"{}\"\nprefetch = 50\n[security]\nallow_http = true\nallow_private_networks = true\n\
         [limits]\nmax_event_bytes = 2048\n{store}[api]\nlisten = \"127.0.0.1:0\"\nsecret_overlap = \"1h\"\n{admin_entry}{read_entry}{ingest_entry}",
        vh.url
    );
    let cfg = ConfigDir::with_main(&main);
    for (name, body) in routes {
        cfg.route(name, body);
    }
    let _ = rx;
    let router = RouterProc::ready(&cfg).await;
    let base = router.api().await;
    let setup = Setup {
        admin: Api::new(&base, Some(&admin_key)),
        read: Api::new(&base, Some(&read_key)),
        ingest: Api::new(&base, Some(&ingest_key)),
        _vh: vh,
        cfg,
        router,
        _pg: None,
    };
    (setup, base)
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f().await {
        assert!(Instant::now() < deadline, "waited {T:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn paid(id: &str, n: i64) -> Value {
    event("order.paid", id, json!({"n": n, "total": 10}))
}

/// Every endpoint's success and error paths, on one store.
async fn endpoints(store: Option<PgDatabase>) {
    // The receiver refuses `dl-1` the first time (a dead letter), and takes everything else.
    let rx = Receiver::start(|r, earlier| if r.id() == "dl-1" && earlier == 0 { (400, vec![]) } else { (200, vec![]) })
        .await;
    let routes = [("orders", format!("events = [\"order.*\"]\nurl = \"{}\"\nconcurrency = 4", rx.url("/orders")))];
    let (mut s, base) = setup(&rx, store.as_ref().map(|d| d.url.as_str()), &routes).await;
    s._pg = store;

    // Open endpoints.
    assert_eq!(Api::new(&base, None).get("/healthz").await.expect(200)["status"], "ok");
    wait_for("readyz", async || Api::new(&base, None).get("/readyz").await.status == 200).await;
    let doc = Api::new(&base, None).get("/openapi.json").await;
    for path in ["/v1/events", "/v1/subscriptions/{id}/rotate-secret", "/v1/dead-letters/replay", "/v1/stats"] {
        assert!(doc.json["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
    let metrics = Api::new(&base, None).get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("hookrelay_config_info"), "{}", metrics.text);

    // Keys and scopes.
    let anon = Api::new(&base, None);
    assert_eq!(anon.get("/v1/routes").await.expect(401)["error"]["code"], "unauthorized");
    assert_eq!(s.admin.with_key(Some("hr_wrong")).get("/v1/routes").await.expect(401)["error"]["code"], "unauthorized");
    assert_eq!(s.read.post("/v1/events", paid("x", 1)).await.expect(403)["error"]["code"], "forbidden");
    assert_eq!(s.ingest.get("/v1/routes").await.expect(403)["error"]["code"], "forbidden");
    assert_eq!(s.read.post("/v1/config/reload", json!({})).await.expect(403)["error"]["code"], "forbidden");

    // Ingest.
    let ok = s.ingest.post("/v1/events", paid("in-1", 1)).await;
    assert_eq!(ok.expect(202)["id"], "in-1");
    assert_eq!(ok.json["routed"], true);
    rx.wait_distinct("/orders", 1, T).await;
    let not_json = s.ingest.send("POST", "/v1/events", Some(b"{oops".to_vec()), &[]).await;
    not_json.expect(400);
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
    assert_eq!(routes.expect(200)["items"][0]["name"], "orders");
    assert_eq!(routes.json["items"][0]["origin"], "file");
    assert_eq!(routes.json["items"][0]["file"], "routes/orders.toml");
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

    // Deliveries.
    wait_for("the delivery log", async || {
        s.read.get("/v1/deliveries?route=orders").await.json["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let list = s.read.get("/v1/deliveries?route=orders&status=delivered&type=order.paid").await;
    let d = list.expect(200)["items"][0].clone();
    assert_eq!((d["event_id"].as_str(), d["status"].as_str()), (Some("in-1"), Some("delivered")));
    let detail = s.read.get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap())).await;
    assert_eq!(detail.expect(200)["attempt_log"][0]["status"], 200);
    assert_eq!(detail.json["attempt_log"][0]["config_version"], 7);
    assert_eq!(s.read.get("/v1/deliveries?status=lost").await.expect(400)["error"]["code"], "bad_request");
    assert_eq!(s.read.get("/v1/deliveries?cursor=zzz").await.expect(400)["error"]["code"], "bad_request");
    assert_eq!(s.read.get("/v1/deliveries?since=yesterday").await.expect(400)["error"]["code"], "bad_request");
    assert_eq!(s.read.get("/v1/deliveries?limit=5000").await.expect(400)["error"]["code"], "bad_request");
    s.read.get("/v1/deliveries/nope").await.expect(404);
    let retry_delivered = s.admin.post(&format!("/v1/deliveries/{}/retry", d["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(retry_delivered.expect(409)["error"]["code"], "conflict");

    // A dead letter: listed, shown with its event, replayed once, delivered.
    assert_eq!(s.ingest.post("/v1/events", paid("dl-1", 2)).await.expect(202)["routed"], true);
    wait_for("the dead letter", async || {
        s.read.get("/v1/dead-letters?route=orders").await.json["items"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
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
    wait_for("the replayed event", async || rx.on("/orders").iter().filter(|r| r.id() == "dl-1").count() == 2).await;
    let again = s.admin.post("/v1/dead-letters/replay", json!({"ids": [dl_id]})).await;
    assert_eq!(again.expect(200)["already_replayed"], json!([dl_id]), "a replay happens once");
    assert_eq!(again.json["replayed"], json!([]));
    assert_eq!(s.admin.post("/v1/dead-letters/replay", json!({})).await.expect(422)["error"]["code"], "invalid");
    let by_filter = s.admin.post("/v1/dead-letters/replay", json!({"filter": {"route": "orders"}})).await;
    assert_eq!(by_filter.expect(200)["replayed"], json!([]), "nothing left that was not replayed");
    assert_eq!(s.read.get("/v1/dead-letters").await.expect(200)["items"], json!([]));
    assert_eq!(s.read.get("/v1/dead-letters?include_replayed=true").await.expect(200)["items"][0]["id"], dl_id);
    // A delivery whose event is kept with its dead letter can be retried.
    let dead_delivery = hookrelay::store::delivery_id("orders", "dl-1");
    wait_for("the replayed delivery", async || {
        s.read.get(&format!("/v1/deliveries/{dead_delivery}")).await.json["status"] == "delivered"
    })
    .await;
    let retried = s.admin.post(&format!("/v1/deliveries/{dead_delivery}/retry"), json!({})).await;
    assert_eq!(retried.expect(202)["replayed"].as_array().unwrap().len(), 1);
    wait_for("the retried event", async || rx.on("/orders").iter().filter(|r| r.id() == "dl-1").count() == 3).await;

    // Statistics.
    let stats = s.read.get("/v1/stats?window=1h").await;
    let orders =
        stats.expect(200)["routes"].as_array().unwrap().iter().find(|r| r["route"] == "orders").unwrap().clone();
    assert!(orders["attempts"].as_u64().unwrap() >= 3, "{orders}");
    assert!(orders["dead"].as_u64().unwrap() >= 1, "{orders}");
    assert!(orders["latency_ms"]["p99"].is_u64(), "{orders}");
    s.read.get("/v1/stats?window=forever").await.expect(400);

    // Config and reload.
    let config = s.read.get("/v1/config").await;
    assert_eq!(config.expect(200)["version"], 7);
    assert_eq!(config.json["file_routes"], 1);
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
    let main = std::fs::read_to_string(s.cfg.path().join("hookrelay.toml")).unwrap();
    s.cfg.file("hookrelay.toml", &main.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""));
    let moved = s.admin.post("/v1/config/reload", json!({})).await;
    assert_eq!(moved.expect(422)["error"]["code"], "reload_rejected");
    assert!(moved.text.contains("[api] enabled and listen apply at start only"), "{}", moved.text);
    s.cfg.file("hookrelay.toml", &main);

    // Unknown paths and methods answer in the same shape.
    assert_eq!(s.read.get("/v1/nope").await.expect(404)["error"]["code"], "not_found");
    assert_eq!(s.read.send("PATCH", "/v1/routes", None, &[]).await.expect(405)["error"]["code"], "method_not_allowed");
    drop(s.router);
    if let Some(db) = s._pg.take() {
        db.drop_it().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http_on_sqlite() {
    endpoints(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_over_http_on_postgres() {
    endpoints(Some(PgDatabase::new().await)).await;
}

/// Subscriptions go live, rotate, stop on 410 and on delete; secrets only where they must be.
async fn subscriptions(store: Option<PgDatabase>) {
    // `gone-1` gets a 410 on /gone; everything else 200.
    let rx = Receiver::start(|r, _| if r.id() == "gone-1" { (410, vec![]) } else { (200, vec![]) }).await;
    let routes = [("audit", format!("events = [\"order.created\"]\nurl = \"{}\"", rx.url("/audit")))];
    let (mut s, _) = setup(&rx, store.as_ref().map(|d| d.url.as_str()), &routes).await;
    s._pg = store;
    let mut secrets = Vec::new();

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

    // Create: live at once, signed with the secret it returns.
    let spec = json!({
        "name": "acme", "description": "ACME's ERP", "events": ["order.paid"], "url": rx.url("/acme"),
        "filter": "fn filter(event) { event.subject == \"acme\" }", "redact": ["data.total"], "max_attempts": 2,
        "backoff": ["100ms"]
    });
    let created = s.admin.post("/v1/subscriptions", spec.clone()).await;
    let sub = created.expect(201).clone();
    let (id, secret) = (sub["id"].as_str().unwrap().to_string(), sub["secret"].as_str().unwrap().to_string());
    secrets.push(secret.clone());
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        (sub["live"].as_bool(), sub["enabled"].as_bool(), sub["version"].as_i64()),
        (Some(true), Some(true), Some(1))
    );
    let dup = s.admin.post("/v1/subscriptions", spec.clone()).await;
    assert_eq!(dup.expect(409)["error"]["code"], "conflict");
    let started = Instant::now();
    let mut acme = event("order.paid", "acme-1", json!({"n": 1, "total": 99}));
    acme["subject"] = json!("acme");
    let mut other = event("order.paid", "other-1", json!({"n": 2}));
    other["subject"] = json!("globex");
    s.ingest.post("/v1/events", other).await.expect(202);
    assert_eq!(s.ingest.post("/v1/events", acme).await.expect(202)["routed"], true);
    let got = rx.wait_distinct("/acme", 1, T).await;
    eprintln!("a new subscription received its first event {:?} after it was created", started.elapsed());
    assert_eq!(got.len(), 1, "the filter dropped the other tenant's event");
    verify_spec(&secret, &got[0]).unwrap();
    assert_eq!(got[0].header("hookrelay-route"), "acme");
    assert_eq!(got[0].json()["data"], json!({"n": 1}), "redacted");
    let routes = s.read.get("/v1/routes/acme").await;
    assert_eq!(
        (routes.expect(200)["origin"].as_str(), routes.json["subscription"].as_str()),
        (Some("api"), Some(id.as_str()))
    );

    // Read and list never show the secret.
    for a in [s.read.get(&format!("/v1/subscriptions/{id}")).await, s.read.get("/v1/subscriptions").await] {
        assert!(!a.text.contains(&secret) && !a.text.contains("whsec_"), "{}", a.text);
    }
    s.read.get("/v1/subscriptions/nope").await.expect(404);

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

    // Validate a receiver before subscribing it.
    let check = s.admin.post("/v1/subscriptions/validate", json!({"url": rx.url("/check")})).await;
    assert_eq!(
        (check.expect(200)["allowed"].as_bool(), check.json["ping"]["status"].as_u64()),
        (Some(true), Some(200))
    );
    assert!(check.json["ping"]["latency_ms"].is_u64());
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
    wait_for("the 410 to disable the subscription", async || {
        s.read.get(&format!("/v1/subscriptions/{gone_id}")).await.json["enabled"] == false
    })
    .await;
    let disabled = s.read.get(&format!("/v1/subscriptions/{gone_id}")).await;
    assert!(disabled.json["disabled_reason"].as_str().unwrap().contains("410"), "{}", disabled.text);
    wait_for("the disabled route to stop", async || s.read.get("/v1/routes/leaving").await.status == 404).await;

    // Delete: the route stops receiving (nothing is bound to order.paid any more).
    s.admin.delete(&format!("/v1/subscriptions/{id}")).await.expect(204);
    s.admin.delete(&format!("/v1/subscriptions/{id}")).await.expect(404);
    let mut late = event("order.paid", "acme-late", json!({"n": 6}));
    late["subject"] = json!("acme");
    assert_eq!(s.ingest.post("/v1/events", late).await.expect(202)["routed"], false);
    s.read.get("/v1/routes/acme").await.expect(404);

    // The audit trail has every change, without secrets.
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
    let log = s.router.log_text();
    for secret in &secrets {
        assert!(!audit.text.contains(secret), "a secret in the audit trail");
        assert!(!log.contains(secret), "a secret in the router's log");
    }
    drop(s.router);
    if let Some(db) = s._pg.take() {
        db.drop_it().await;
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

/// A subscription survives a restart: its route comes back from the store, its secret opened
/// with the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_a_restart() {
    let rx = Receiver::ok().await;
    let (s, _) = setup(&rx, None, &[]).await;
    let created =
        s.admin.post("/v1/subscriptions", json!({"name": "crm", "events": ["order.*"], "url": rx.url("/crm")})).await;
    let secret = created.expect(201)["secret"].as_str().unwrap().to_string();
    let mut s = s;
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
    let ingest = Api::new(&s.router.api().await, s.ingest.key.as_deref());
    assert_eq!(ingest.post("/v1/events", paid("after-restart", 1)).await.expect(202)["routed"], true);
    let got = rx.wait_distinct("/crm", 1, T).await;
    verify_spec(&secret, &got[0]).unwrap();
}

/// The OpenAPI document drives the API with schemathesis (from PyPI): no answer is a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    if std::process::Command::new("schemathesis").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "schemathesis is missing (pip install schemathesis)");
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis)");
        return;
    }
    let rx = Receiver::ok().await;
    let routes = [("orders", format!("events = [\"order.*\"]\nurl = \"{}\"", rx.url("/orders")))];
    let (s, base) = setup(&rx, None, &routes).await;
    let key = s.admin.key.clone().unwrap();
    // schemathesis writes a cache where it runs: a scratch directory, not the repository.
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = scratch_dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .args(["run", &format!("{base}/openapi.json"), "--checks", "not_a_server_error"])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(["--max-examples", "25", "--workers", "2", "--phases", "examples,coverage,fuzzing"])
            .args(["--suppress-health-check", "all", "--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .current_dir(&scratch)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{text}\n--- router log ---\n{}",
        s.router.log_text()
    );
}
