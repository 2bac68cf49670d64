//! Subscriptions made through the API, on both stores: they go live (on the replica that made them
//! at once, on the others promptly), rotate their secret, stop on 410 and on delete, come back
//! after a restart, need the sealing key, and carry their secret only in the answers that must.

use super::{Client, Exchange, T, Transcript, items, new_order, paid, setup};
use crate::common::*;
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

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
