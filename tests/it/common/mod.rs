//! Test helpers: a RabbitMQ vhost per test (created and deleted through the management API),
//! the broker a suite runs on ([`TestBroker`]), a recording webhook receiver on loopback, config
//! directories written with the typed builders of `tests/support/config/`, the router as a
//! real process, a publisher, waiting ([`eventually`]), and a Standard Webhooks verifier written
//! from the specification (not from hookrelay's signer).

#![allow(dead_code, unreachable_pub)] // each test module uses a different subset

mod brokers;
#[path = "../../support/config/mod.rs"]
mod config;
pub mod otlp;
mod wait;

pub use brokers::*;
pub use config::*;
pub use wait::*;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The secret every test route signs with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The environment variable routes name for it.
pub const SECRET_ENV: &str = "TEST_WEBHOOK_SECRET";
/// `HOOKRELAY_SECRET_KEY` of every router the tests start (seals subscription secrets).
pub const SEALING_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

fn amqp_base() -> String {
    std::env::var("HOOKRELAY_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn management() -> (String, String) {
    let url =
        std::env::var("HOOKRELAY_TEST_MANAGEMENT_URL").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
    let (scheme, rest) = url.split_once("://").expect("management URL has a scheme");
    let (auth, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(auth));
    (format!("{scheme}://{}", host.trim_end_matches('/')), header)
}

/// Makes sure the management API answers, once per test process. On this machine kind RabbitMQ
/// usually runs without its management plugin: when the API is on loopback and does not answer,
/// the plugin is enabled on the running node (`rabbitmq-plugins enable`, which needs the rights
/// `.ci/run` has) and the API awaited, so that `cargo test` works without running `.ci/run` first.
fn ensure_management() {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let (base, auth) = management();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
        let up = || agent.get(&format!("{base}/api/overview")).header("authorization", &auth).call().is_ok();
        if up() {
            return Ok(());
        }
        let local = ["://127.0.0.1:", "://localhost:", "://[::1]:"].iter().any(|h| base.contains(h));
        if !local {
            return Err(format!("the RabbitMQ management API at {base} does not answer"));
        }
        eprintln!("the RabbitMQ management API at {base} does not answer: enabling rabbitmq_management");
        let enabled = ["rabbitmq-plugins", "/usr/sbin/rabbitmq-plugins"].iter().any(|cmd| {
            Command::new(cmd)
                .args(["-q", "enable", "rabbitmq_management"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !enabled {
            return Err(format!(
                "the RabbitMQ management API at {base} does not answer and `rabbitmq-plugins enable \
                 rabbitmq_management` failed: is RabbitMQ installed and running? `sudo bash .ci/run` installs \
                 and starts it"
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if up() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("rabbitmq_management was enabled but {base} still does not answer after 90 s"))
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

fn mgmt(method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    ensure_management();
    let (base, auth) = management();
    let url = format!("{base}/api/{path}");
    // Bounded: a broker too busy to answer fails the test instead of hanging it.
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(90))).build().into();
    let resp = match (method, body) {
        ("PUT", Some(b)) => agent.put(&url).header("authorization", &auth).send_json(b),
        ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
        _ => agent.get(&url).header("authorization", &auth).call(),
    };
    let mut resp = resp.map_err(|e| format!("{method} {url}: {e}"))?;
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A RabbitMQ vhost of the test's own, deleted (with everything in it) on drop.
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn new() -> Self {
        let name = format!("hookrelay-test-{}", uuid::Uuid::new_v4().simple());
        mgmt("PUT", &format!("vhosts/{name}"), Some(json!({}))).expect("create a vhost (is the management plugin on?)");
        let perms = json!({"configure": ".*", "write": ".*", "read": ".*"});
        mgmt("PUT", &format!("permissions/{name}/guest"), Some(perms)).expect("grant guest on the vhost");
        let url = format!("{}/{name}", amqp_base());
        Self { name, url }
    }

    /// How many client connections to this vhost the management API lists (it lists a
    /// connection a few seconds after it opens).
    pub fn connections(&self) -> usize {
        let conns = mgmt("GET", &format!("vhosts/{}/connections", self.name), None).unwrap_or(Value::Null);
        conns.as_array().map_or(0, Vec::len)
    }

    /// Closes every client connection to this vhost from the broker side.
    pub fn close_connections(&self) -> usize {
        let conns = mgmt("GET", &format!("vhosts/{}/connections", self.name), None).unwrap_or(Value::Null);
        let names: Vec<String> =
            conns.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect();
        for n in &names {
            let encoded: String = n
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            let _ = mgmt("DELETE", &format!("connections/{encoded}"), None);
        }
        names.len()
    }

    /// Queue arguments as the broker reports them.
    pub fn queue(&self, queue: &str) -> Value {
        mgmt("GET", &format!("queues/{}/{queue}", self.name), None).unwrap_or(Value::Null)
    }

    /// Bindings of a queue: (source exchange, routing key).
    pub fn bindings(&self, queue: &str) -> Vec<(String, String)> {
        let b = mgmt("GET", &format!("queues/{}/{queue}/bindings", self.name), None).unwrap_or(Value::Null);
        b.as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (b["source"].as_str().unwrap_or("").to_string(), b["routing_key"].as_str().unwrap_or("").to_string())
            })
            .filter(|(s, _)| !s.is_empty())
            .collect()
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default()).await.expect("connect to the test vhost")
    }

    /// Publishes events (structured JSON, routing key = type) with confirms; panics when one is
    /// returned or nacked.
    pub async fn publish(&self, events: &[Value]) {
        self.publish_raw(&raw(events)).await;
    }

    /// Publishes raw bodies with the given routing keys.
    pub async fn publish_raw(&self, messages: &[(String, Vec<u8>)]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        for chunk in messages.chunks(500) {
            let mut confirms = Vec::new();
            for (key, body) in chunk {
                let props = BasicProperties::default().with_delivery_mode(2);
                confirms.push(
                    ch.basic_publish("hookrelay.events".into(), key.as_str().into(), opts, body, props).await.unwrap(),
                );
            }
            for c in confirms {
                assert_eq!(c.await.unwrap(), Confirmation::Ack(None), "publish was not routed");
            }
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = mgmt("DELETE", &format!("vhosts/{}", self.name), None);
    }
}

pub use hookrelay::store::DeadLetter;

/// Dead letters as the store indexed them, read by the names of the dead-letter headers.
pub trait DeadLetterExt {
    fn header(&self, name: &str) -> Option<String>;
    fn reason(&self) -> String;
}

impl DeadLetterExt for DeadLetter {
    fn header(&self, name: &str) -> Option<String> {
        match name {
            "hookrelay-route" => Some(self.route.clone()),
            "hookrelay-reason" => Some(self.reason.clone()),
            "hookrelay-error" => Some(self.error.clone()),
            "hookrelay-details" => self.details.clone(),
            "hookrelay-last-status" => self.last_status.map(|s| s.to_string()),
            "hookrelay-last-response" => self.last_response.clone(),
            "hookrelay-attempt" => Some(self.attempts.to_string()),
            _ => None,
        }
    }
    fn reason(&self) -> String {
        self.reason.clone()
    }
}

/// A CloudEvent.
pub fn event(ty: &str, id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "test", "type": ty, "data": data})
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn id(&self) -> String {
        self.header("webhook-id")
    }
}

type Responder = dyn Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync;

/// A webhook receiver on 127.0.0.1 that records every request. The responder gets the request
/// and how many earlier requests carried the same `webhook-id`, and returns the status.
pub struct Receiver {
    pub base: String,
    seen: Arc<Mutex<Vec<Received>>>,
    /// (path, webhook id) of every request as it arrives, before the answer (which a slow
    /// receiver delays): what is under way.
    arrived: Arc<Mutex<Vec<(String, String)>>>,
    notify: Arc<Notify>,
}

impl Receiver {
    pub async fn ok() -> Self {
        Self::start(|_, _| (200, vec![])).await
    }

    pub async fn start(
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        Self::start_slow(Duration::ZERO, responder).await
    }

    /// Like [`Receiver::start`], taking `delay` to answer each request.
    pub async fn start_slow(
        delay: Duration,
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        Self::serve(delay, None, responder).await
    }

    /// An HTTPS receiver (h2 and http/1.1 by ALPN) at `https://localhost:<port>`.
    pub async fn start_tls(ca: &TestCa) -> Self {
        let mut tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(Duration::ZERO, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))), |_, _| (200, vec![])).await
    }

    async fn serve(
        delay: Duration,
        tls: Option<tokio_rustls::TlsAcceptor>,
        responder: impl Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = if tls.is_some() { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let arrived: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let responder: Arc<Responder> = Arc::new(responder);
        let (s, a, n) = (seen.clone(), arrived.clone(), notify.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (s, a, n, r, tls) = (s.clone(), a.clone(), n.clone(), responder.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, a, n, r) = (s.clone(), a.clone(), n.clone(), r.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let rec = Received {
                                path: parts.uri.path().to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            a.lock().unwrap().push((rec.path.clone(), rec.id()));
                            n.notify_waiters();
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let earlier =
                                s.lock().unwrap().iter().filter(|x| x.id() == rec.id() && x.path == rec.path).count();
                            let (status, headers) = r(&rec, earlier);
                            s.lock().unwrap().push(rec);
                            n.notify_waiters();
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(b"answer from the test receiver")));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            for (k, v) in headers {
                                resp.headers_mut().insert(http::HeaderName::try_from(k).unwrap(), v.parse().unwrap());
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            // A failed handshake (the client refused our certificate) just ends.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Self { base, seen, arrived, notify }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything received on `path`, in arrival order.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.seen.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until what `path` received (in arrival order) satisfies `done`, and returns it. On
    /// timeout, panics naming `what` and listing every request `path` got.
    pub async fn wait_until(
        &self,
        path: &str,
        what: impl std::fmt::Display,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        eventually_notified(
            format!("{what} on {path}"),
            timeout,
            &self.notify,
            || self.on(path),
            |got| done(got),
            |got| summary(got),
        )
        .await
    }

    /// Waits until `path` has received requests for `n` distinct webhook ids.
    pub async fn wait_distinct(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(path, format!("{n} distinct events"), timeout, |got| distinct(got) >= n).await
    }

    /// Waits until `path` has received `n` requests, retries included.
    pub async fn wait_requests(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(path, format!("{n} requests"), timeout, |got| got.len() >= n).await
    }

    /// Waits until `n` requests have arrived on `path`, answered or not: deliveries under way.
    pub async fn wait_arrived(&self, path: &str, n: usize, timeout: Duration) {
        let arrived = || -> Vec<String> {
            self.arrived.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, id)| id.clone()).collect()
        };
        let what = format!("{n} requests to arrive on {path}");
        eventually_notified(what, timeout, &self.notify, arrived, |a| a.len() >= n, |a| format!("{a:?}")).await;
    }
}

/// How many distinct webhook ids `got` has.
fn distinct(got: &[Received]) -> usize {
    got.iter().map(Received::id).collect::<std::collections::HashSet<_>>().len()
}

/// What a receiver got, for a failure message: counts, then each request as
/// `<webhook id>#<attempt>` in arrival order.
fn summary(got: &[Received]) -> String {
    let each: Vec<String> = got.iter().map(|r| format!("{}#{}", r.id(), r.header("hookrelay-attempt"))).collect();
    format!("{} requests, {} distinct webhook ids: {}", got.len(), distinct(got), each.join(" "))
}

/// First arrival of each id, in arrival order.
pub fn first_arrivals(got: &[Received]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    got.iter().map(Received::id).filter(|id| seen.insert(id.clone())).collect()
}

/// Requests per id beyond the first.
pub fn duplicates(got: &[Received]) -> usize {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in got {
        *counts.entry(r.id()).or_default() += 1;
    }
    counts.values().map(|c| c - 1).sum()
}

/// Verifies a webhook per the Standard Webhooks specification, written from the spec text:
/// signed content `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with the base64
/// after `whsec_`, `webhook-signature` a space-separated list of `v1,<base64>`.
pub fn verify_spec(secret: &str, r: &Received) -> Result<(), String> {
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret lacks whsec_")?)
        .map_err(|e| e.to_string())?;
    let (id, ts, sigs) = (r.header("webhook-id"), r.header("webhook-timestamp"), r.header("webhook-signature"));
    if id.is_empty() || ts.parse::<i64>().is_err() {
        return Err(format!("missing or bad webhook-id/webhook-timestamp: {:?}", r.headers));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - ts.parse::<i64>().unwrap()).abs() > 300 {
        return Err("timestamp outside the 5 minute tolerance".into());
    }
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if sigs.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str())) {
        Ok(())
    } else {
        Err(format!("no v1 signature matches among {sigs:?}"))
    }
}

/// The `hookrelay.toml` of most tests on RabbitMQ: the vhost with prefetch 100, loopback targets,
/// a 10 s shutdown grace.
pub fn rabbitmq_main(url: &str) -> MainConfig {
    MainConfig::new().version(1).rabbitmq(url).prefetch(100).loopback_targets().shutdown_grace(Duration::from_secs(10))
}

/// A config directory in a temp dir: `hookrelay.toml`, schemas for `order.paid` (requires `n`, an
/// integer) and `order.created` (any object), and whatever the test adds.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    /// The `hookrelay.toml` last written from a builder.
    main: Mutex<Option<MainConfig>>,
}

impl ConfigDir {
    /// [`rabbitmq_main`] on the vhost.
    pub fn new(vhost: &Vhost) -> Self {
        Self::with(rabbitmq_main(&vhost.url))
    }

    /// A config with this `hookrelay.toml` (a `[store]` in the temp dir and an `[api]` on any
    /// free loopback port are added when unset).
    pub fn with(main: MainConfig) -> Self {
        let c = Self::empty();
        c.set_main(main);
        c
    }

    /// A config whose `hookrelay.toml` is this text, for files that must be written as they are:
    /// broken ones, and ones whose errors name a line (a `[store]` in the temp dir and an `[api]`
    /// on any free loopback port are appended when absent).
    pub fn with_main_text(main: &str) -> Self {
        let c = Self::empty();
        let store =
            if main.contains("[store]") { String::new() } else { format!("\n[store]\nurl = \"{}\"\n", c.store_url()) };
        let api = if main.contains("[api]") { "" } else { "\n[api]\nlisten = \"127.0.0.1:0\"\n" };
        c.file("hookrelay.toml", &format!("{main}{store}{api}"));
        c
    }

    fn empty() -> Self {
        let c = Self { dir: tempfile::tempdir().unwrap(), main: Mutex::new(None) };
        c.file(
            "schemas/order.paid/v1.json",
            r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer"},"total":{"type":"number"}}}"#,
        );
        c.file("schemas/order.created/v1.json", r#"{"type":"object"}"#);
        c
    }

    /// Rewrites `hookrelay.toml` from `main`, completed as in [`ConfigDir::with`].
    pub fn set_main(&self, mut main: MainConfig) {
        if !main.has_store() {
            main = main.store(self.store_url());
        }
        if !main.has_api_listen() {
            main = main.api_listen("127.0.0.1:0");
        }
        main.write(self.path());
        *self.main.lock().unwrap() = Some(main);
    }

    /// The `hookrelay.toml` last written from a builder, to change and write again with
    /// [`ConfigDir::set_main`].
    pub fn main(&self) -> MainConfig {
        self.main.lock().unwrap().clone().expect("hookrelay.toml was written from a MainConfig")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The router's SQLite store, in the temp dir.
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("hookrelay.db").display())
    }

    pub async fn store(&self) -> std::sync::Arc<dyn hookrelay::store::Store> {
        hookrelay::store::open(&self.store_url()).await.unwrap()
    }

    /// Every dead letter the router indexed, replayed ones included.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        let filter = hookrelay::store::DeadLetterFilter { limit: 1000, include_replayed: true, ..Default::default() };
        self.store().await.dead_letters(&filter).await.unwrap().items
    }

    /// Waits until `n` dead letters are indexed.
    pub async fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<DeadLetter> {
        let store = self.store().await;
        let filter = hookrelay::store::DeadLetterFilter { limit: 1000, include_replayed: true, ..Default::default() };
        eventually(
            format!("{n} dead letters"),
            timeout,
            async || store.dead_letters(&filter).await.unwrap().items,
            |all| all.len() >= n,
        )
        .await
    }

    /// The delivery log's attempts of one event on one route, once `n` are recorded (the log is
    /// written behind the deliveries).
    pub async fn wait_attempts(
        &self,
        route: &str,
        event_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<hookrelay::store::Attempt> {
        let store = self.store().await;
        let id = hookrelay::store::delivery_id(route, event_id);
        eventually(
            format!("{n} attempts of {event_id} on route {route}"),
            timeout,
            async || store.attempts(&id).await.unwrap(),
            |attempts| attempts.len() >= n,
        )
        .await
    }

    pub fn file(&self, rel: &str, text: &str) {
        write_file(&self.dir.path().join(rel), text);
    }

    /// `routes/<name>.toml`, signed with the test secret (`secret_env`) unless it says otherwise.
    pub fn route(&self, route: &RouteConfig) {
        if route.has_signing() {
            route.write(self.path());
        } else {
            route.clone().signing(Signing::Env(SECRET_ENV.into())).write(self.path());
        }
    }

    /// `routes/<name>.toml` as this text plus a `[signing]` section with the test secret, for
    /// files that must be written as they are: broken ones, and ones whose errors name a line.
    pub fn route_text(&self, name: &str, body: &str) {
        self.file(&format!("routes/{name}.toml"), &format!("{body}\n[signing]\nsecret_env = \"{SECRET_ENV}\"\n"));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hookrelay")
}

/// The router as a real process, its log in a file.
pub struct RouterProc {
    child: Child,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl RouterProc {
    pub fn start(cfg: &ConfigDir) -> Self {
        Self::start_with(cfg, &[])
    }

    /// Starts with extra arguments after `run --config DIR`.
    pub fn start_with(cfg: &ConfigDir, extra: &[&str]) -> Self {
        Self::start_with_env(cfg, extra, &[])
    }

    /// Starts with extra arguments and extra environment variables.
    pub fn start_with_env(cfg: &ConfigDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(cfg, None, extra, env)
    }

    /// Starts in the working directory `cwd` (the test's own when `None`).
    pub fn start_in(cfg: &ConfigDir, cwd: Option<&Path>, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("router.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(cfg.path())
            .args(extra)
            .env(SECRET_ENV, SECRET)
            .env("HOOKRELAY_SECRET_KEY", SEALING_KEY)
            .env("RUST_LOG", "info,hookrelay=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start hookrelay");
        Self { child, log, _logdir: logdir }
    }

    /// Starts and waits until it consumes.
    pub async fn ready(cfg: &ConfigDir) -> Self {
        let p = Self::start(cfg);
        p.wait_log("consuming", Duration::from_secs(30)).await;
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin API's base URL, from the log (`api listening on http://…`).
    pub async fn api(&self) -> String {
        self.wait_log("api listening on http://", Duration::from_secs(30)).await;
        let text = self.log_text();
        let line = text.lines().find(|l| l.contains("api listening on http://")).unwrap();
        let start = line.find("http://").unwrap();
        line[start..].split_whitespace().next().unwrap().to_string()
    }

    /// Waits until the log says `needle`. (A failure prints the log: see `Drop`.)
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout).await;
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` appears in at least `n` log lines.
    pub async fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        let what = format!("{n} router log lines saying {needle:?} (the log follows), lines so far");
        eventually(what, timeout, async || self.log_count(needle), |seen| *seen >= n).await;
    }

    /// Sends SIGHUP and waits for the reload's outcome in the log; returns the log line.
    pub async fn reload(&self) -> String {
        let outcomes = || (self.log_count("config reloaded"), self.log_count("reload rejected"));
        let before = outcomes();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGHUP).unwrap();
        let what =
            format!("a reload outcome after SIGHUP (the log follows); (applied, rejected) before: {before:?}, now");
        eventually(what, Duration::from_secs(30), async || outcomes(), |now| *now != before).await;
        self.log_text()
            .lines()
            .rfind(|l| l.contains("config reloaded") || l.contains("reload rejected"))
            .unwrap()
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn kill(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (within `timeout`).
    pub async fn term(&mut self, timeout: Duration) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
        let what = "the router to exit after SIGTERM (the log follows)";
        eventually(what, timeout, async || self.child.try_wait().unwrap(), Option::is_some).await.unwrap()
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- router log ---\n{}", self.log_text());
        }
    }
}

/// `n` order.paid events with `data.n` = 0..n and ids `<prefix>-<i>`.
pub fn numbered(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| event("order.paid", &format!("{prefix}-{i}"), json!({"n": i}))).collect()
}

/// A throwaway CA and a `localhost` server certificate it signed.
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert: rustls::pki_types::CertificateDer<'static>,
    pub server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "hookrelay test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        // `localhost` and 127.0.0.1: a route may name the receiver by its address, too.
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            server_cert: cert.der().clone(),
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

/// A database of the test's own on the PostgreSQL server, dropped at the end.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn new() -> Self {
        let admin = std::env::var("HOOKRELAY_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple());
        let conn = sqlx::PgPool::connect(&admin).await.expect("PostgreSQL (HOOKRELAY_TEST_POSTGRES_URL) is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&conn).await.unwrap();
        conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
        Self { url: format!("{base}/{name}"), admin, name }
    }

    pub async fn drop_it(self) {
        let conn = sqlx::PgPool::connect(&self.admin).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&conn)
            .await;
    }
}

/// The admin API of a running router, over real HTTP.
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// An API answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

/// The status and the body, as a failure message wants them.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

impl Api {
    pub fn new(base: &str, key: Option<&str>) -> Self {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Self { base: base.to_string(), key: key.map(str::to_string), client }
    }

    /// The same API with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self::new(&self.base, key)
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if body.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
        let resp = self.client.request(req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(serde_json::to_vec(&body).unwrap()), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.send("PUT", path, Some(serde_json::to_vec(&body).unwrap()), headers).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }
}

impl Answer {
    /// Asserts the status and, for errors, the API's error shape; returns the JSON.
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        if status >= 400 {
            let e = &self.json["error"];
            assert!(e["code"].is_string() && e["message"].is_string(), "not the error shape: {}", self.text);
        }
        &self.json
    }

    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// An API key and its `[[api.keys]]` entry.
pub fn api_key(name: &str, scopes: &[Scope]) -> (String, ApiKeyEntry) {
    use sha2::Digest;
    let key = format!("hr_test_{name}_{}", uuid::Uuid::new_v4().simple());
    let hash = format!("sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())));
    (key, ApiKeyEntry { name: name.into(), hash, scopes: scopes.to_vec(), allow_from: Vec::new() })
}
