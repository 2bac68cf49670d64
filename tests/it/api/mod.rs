//! The admin and ingest API over real HTTP, against a real router process, on both stores:
//! every endpoint's success and error paths, keys and scopes, a dead letter listed, replayed and
//! delivered, retries, payload logging, paging and time filters (`endpoints`), and subscriptions
//! that go live (on the replica that made them at once, on the others promptly), rotate their
//! secret, stop on 410 and on delete, with their secret only in the answers that must carry it
//! (`subscriptions`); lost brokers and stores answered with 503 (`outages`); and the OpenAPI
//! document held to the implementation by schemathesis (`openapi`).
//!
//! This module holds what they share: a router with three keys ([`setup`]), and an API client
//! that records every answer ([`Client`]), so that the secrets checks read all of them.

mod endpoints;
mod openapi;
mod outages;
mod subscriptions;

use crate::common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
