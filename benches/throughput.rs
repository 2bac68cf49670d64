//! End-to-end throughput against the bare ceilings, in one run, on one machine:
//!
//! - ceiling 1: a bare lapin consumer that only acks, same queue type (quorum) and prefetch;
//! - ceiling 2: a bare hyper client POSTing the same bodies to the same receiver (concurrency 16);
//! - hookrelay (release binary) on a realistic route — JSON Schema validation, a Rhai filter,
//!   redaction, Standard Webhooks signing — ordered and unordered: events per second (first to
//!   last arrival, queue pre-filled) and router CPU time per event (from /proc).
//!
//! Needs RabbitMQ with the management plugin (a vhost per run, deleted at the end).
//! `cargo bench --bench throughput [-- --events N]`. Never a pass/fail test: it prints figures.

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PREFETCH: u16 = 100;

fn auth() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("guest:guest"))
}

fn mgmt_url() -> String {
    // Same variable as the tests; credentials in it are dropped (guest is used).
    let url = std::env::var("HOOKRELAY_TEST_MANAGEMENT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{}/api", host.trim_end_matches('/'))
}

struct Vhost(String);

impl Vhost {
    fn new() -> Self {
        let name = format!("hookrelay-bench-{}", uuid::Uuid::new_v4().simple());
        ureq::put(&format!("{}/vhosts/{name}", mgmt_url()))
            .header("authorization", &auth())
            .send_json(json!({}))
            .expect("vhost");
        ureq::put(&format!("{}/permissions/{name}/guest", mgmt_url()))
            .header("authorization", &auth())
            .send_json(json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .expect("permissions");
        Self(name)
    }
    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/vhosts/{}", mgmt_url(), self.0)).header("authorization", &auth()).call();
    }
}

fn body(i: usize) -> Vec<u8> {
    // About 1 KiB, valid against the bench schema.
    serde_json::to_vec(&json!({
        "specversion": "1.0", "id": format!("b-{i}"), "source": "bench", "type": "order.paid",
        "time": "2026-11-22T10:00:00Z",
        "data": {"order_id": format!("o-{i}"), "total": 100 + (i % 900), "currency": "BRL",
                 "customer": {"name": "Ana Maria Souza", "email": "ana@example.com", "phone": "+55 11 99999-0000"},
                 "items": (0..8).map(|k| json!({"sku": format!("SKU-{k:05}"), "qty": k + 1, "note": "x".repeat(40)})).collect::<Vec<_>>()}
    }))
    .unwrap()
}

async fn publish(url: &str, exchange: &str, key: &str, n: usize) {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut confirms = Vec::new();
        for &i in chunk {
            let props = BasicProperties::default().with_delivery_mode(2);
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            confirms.push(ch.basic_publish(exchange.into(), key.into(), opts, &body(i), props).await.unwrap());
        }
        for c in confirms {
            c.await.unwrap();
        }
    }
    let _ = conn.close(200, "".into()).await;
}

async fn bare_consumer(url: &str, n: usize) -> f64 {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare("bare".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args).await.unwrap();
    publish(url, "", "bare", n).await;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume("bare".into(), "bare".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.unwrap().unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = conn.close(200, "".into()).await;
    rate
}

struct Receiver {
    addr: String,
    count: Arc<AtomicUsize>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = Receiver {
        addr: format!("http://{}", listener.local_addr().unwrap()),
        count: Arc::default(),
        first: Arc::default(),
        last: Arc::default(),
    };
    let (c, f, l) = (r.count.clone(), r.first.clone(), r.last.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (c, f, l) = (c.clone(), f.clone(), l.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (c, f, l) = (c.clone(), f.clone(), l.clone());
                    async move {
                        let _ = req.into_body().collect().await?;
                        let now = Instant::now();
                        f.lock().unwrap().get_or_insert(now);
                        *l.lock().unwrap() = Some(now);
                        c.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    r
}

impl Receiver {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        *self.first.lock().unwrap() = None;
        *self.last.lock().unwrap() = None;
    }
    async fn wait(&self, n: usize) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.count.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "receiver got {} of {n}", self.count.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (f, l) = (self.first.lock().unwrap().unwrap(), self.last.lock().unwrap().unwrap());
        (n - 1) as f64 / l.duration_since(f).as_secs_f64()
    }
}

async fn bare_client(url: &str, n: usize) -> f64 {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, next, url) = (client.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let req = hyper::Request::post(&url).body(Full::new(Bytes::from(body(i)))).unwrap();
                let resp = client.request(req).await.unwrap();
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct RouterRun {
    rate: f64,
    cpu_us: f64,
    rss_mib: f64,
}

async fn router(rx: &Receiver, ordered: bool, n: usize) -> RouterRun {
    let vh = Vhost::new();
    let dir = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "hookrelay.toml",
        &format!(
            "[broker]\nurl = \"{}\"\nprefetch = {PREFETCH}\n[security]\nallow_http = true\nallow_private_networks = true\n[store]\nurl = \"sqlite://{}/hookrelay.db\"\n",
            vh.url(),
            dir.path().display()
        ),
    );
    w(
        "schemas/order.paid/v1.json",
        r#"{"type":"object","required":["order_id","total","currency","customer"],"properties":{"order_id":{"type":"string"},"total":{"type":"number","minimum":0},"currency":{"type":"string","pattern":"^[A-Z]{3}$"},"customer":{"type":"object","required":["name"]},"items":{"type":"array","items":{"type":"object","required":["sku","qty"]}}}}"#,
    );
    w("plugins/f.rhai", "fn filter(event) { event.data.total >= 0 }\n");
    w(
        "routes/bench.toml",
        &format!(
            "events = [\"order.*\"]\nurl = \"{}/hook\"\nordered = {ordered}\nconcurrency = 32\nfilter = \"plugins/f.rhai\"\nredact = [\"data.customer.email\", \"data.customer.phone\"]\n[signing]\nsecret_env = \"BENCH_SECRET\"\n",
            rx.addr
        ),
    );
    let start = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
            .args(["run", "--config"])
            .arg(dir)
            .env("BENCH_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Declare the topology, stop, pre-fill the queue, then measure a fresh router draining it.
    let mut first = start(dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = first.kill();
    let _ = first.wait();
    publish(&vh.url(), "hookrelay.events", "order.paid", n).await;
    rx.reset();
    let mut child = start(dir.path());
    let rate = rx.wait(n).await;
    let cpu = cpu_seconds(child.id());
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    RouterRun { rate, cpu_us: cpu * 1e6 / n as f64, rss_mib: rss as f64 / 1024.0 }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rx = receiver().await;
    let vh = Vhost::new();
    let consume = bare_consumer(&vh.url(), n).await;
    drop(vh);
    let post = bare_client(&format!("{}/hook", rx.addr), n).await;
    let unordered = router(&rx, false, n).await;
    let ordered = router(&rx, true, n / 4).await;
    let ceiling = consume.min(post);
    println!("\nhookrelay throughput ({n} events of ~1 KiB; ordered run uses {}; prefetch {PREFETCH})", n / 4);
    println!("{:<44} {:>12} {:>10}", "measure", "value", "ratio");
    println!("{:<44} {:>10.0}/s {:>10}", "ceiling: bare consumer, ack only (quorum)", consume, "1.00");
    println!("{:<44} {:>10.0}/s {:>10}", "ceiling: bare hyper POST (concurrency 16)", post, "1.00");
    println!(
        "{:<44} {:>10.0}/s {:>10.2}",
        "hookrelay unordered route (realistic)",
        unordered.rate,
        unordered.rate / ceiling
    );
    println!("{:<44} {:>10.0}/s {:>10.2}", "hookrelay ordered route (realistic)", ordered.rate, ordered.rate / ceiling);
    println!("{:<44} {:>9.1} µs {:>10}", "router CPU per event, unordered", unordered.cpu_us, "");
    println!("{:<44} {:>9.1} µs {:>10}", "router CPU per event, ordered", ordered.cpu_us, "");
    println!("{:<44} {:>8.1} MiB {:>10}", "router peak RSS, unordered", unordered.rss_mib, "");
    println!(
        "{}",
        json!({"events": n, "bare_consume_per_s": consume, "bare_post_per_s": post,
               "unordered_per_s": unordered.rate, "ordered_per_s": ordered.rate,
               "unordered_cpu_us_per_event": unordered.cpu_us, "ordered_cpu_us_per_event": ordered.cpu_us,
               "unordered_peak_rss_mib": unordered.rss_mib})
    );
}
