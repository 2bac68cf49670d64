//! RabbitMQ for the harness: a vhost of its own per run (created and deleted through the
//! management API), publishing with pipelined publisher confirms (in bulk to pre-fill a queue,
//! or paced at a fixed rate for latency runs), and the bare AMQP ceilings: a consumer that only
//! acks, and a relay that consumes, POSTs with hyper and acks on 2xx.

use crate::common::{Size, event, event_id};
use crate::receiver::Timeline;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where RabbitMQ's management API is, and its credentials (the tests' variable).
fn mgmt() -> (String, String) {
    let url =
        std::env::var("HOOKRELAY_TEST_MANAGEMENT_URL").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
    let (auth, host) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    (
        format!("{scheme}://{}/api", host.trim_end_matches('/')),
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(auth)),
    )
}

/// The AMQP host (the tests' variable), without a vhost.
fn amqp_base() -> String {
    let url = std::env::var("HOOKRELAY_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into());
    let url = url.trim_end_matches('/');
    // Drop a vhost if one is given: the harness uses vhosts of its own.
    match url.split_once("://").map(|(s, rest)| (s, rest.split_once('/'))) {
        Some((scheme, Some((host, _)))) => format!("{scheme}://{host}"),
        _ => url.to_string(),
    }
}

/// Runs a management API call, again up to four times: the API closes idle kept-alive
/// connections, and a call can meet one just as it closes.
fn retried<T>(what: &str, call: impl Fn() -> Result<T, ureq::Error>) -> T {
    let mut tries = 0;
    loop {
        match call() {
            Ok(v) => return v,
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("{what}: {e}; trying again");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{what} (is the management plugin on?): {e}"),
        }
    }
}

/// A vhost of the harness's own, deleted on drop.
pub(crate) struct Vhost(String);

impl Vhost {
    pub(crate) fn new() -> Self {
        let (api, auth) = mgmt();
        let name = format!("hookrelay-bench-{}", uuid::Uuid::new_v4().simple());
        retried(&format!("creating vhost {name} through {api}"), || {
            ureq::put(&format!("{api}/vhosts/{name}")).header("authorization", &auth).send_json(json!({}))
        });
        retried(&format!("granting guest vhost {name}"), || {
            ureq::put(&format!("{api}/permissions/{name}/guest"))
                .header("authorization", &auth)
                .send_json(json!({"configure": ".*", "write": ".*", "read": ".*"}))
        });
        Self(name)
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", amqp_base(), self.0)
    }

    /// The bytes of the messages in `queue` (`message_bytes` of the management API) once it
    /// reports `messages` of them (its statistics lag by a few seconds); `None` when it does not
    /// within 30 s. Blocks: for when nothing else runs.
    pub(crate) fn queue_bytes(&self, queue: &str, messages: u64) -> Option<u64> {
        let (api, auth) = mgmt();
        let url = format!("{api}/queues/{}/{queue}", self.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let q = ureq::get(&url)
                .header("authorization", &auth)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok());
            if let Some(q) = q
                && q["messages"].as_u64().is_some_and(|m| m >= messages)
            {
                return q["message_bytes"].as_u64();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

/// `(messages_ready, messages_unacknowledged)` of `queue` in `vhost` (management API; its
/// statistics lag by a few seconds), `None` when the API does not answer. Blocks.
pub(crate) fn queue_counts(vhost: &str, queue: &str) -> Option<(u64, u64)> {
    let (api, auth) = mgmt();
    let q = ureq::get(&format!("{api}/queues/{vhost}/{queue}"))
        .header("authorization", &auth)
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())?;
    Some((q["messages_ready"].as_u64()?, q["messages_unacknowledged"].as_u64()?))
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let (api, auth) = mgmt();
        for _ in 0..3 {
            match ureq::delete(&format!("{api}/vhosts/{}", self.0)).header("authorization", &auth).call() {
                Err(ureq::Error::Io(_)) => std::thread::sleep(Duration::from_millis(250)),
                _ => return,
            }
        }
    }
}

/// Deletes the queues of vhost `/` whose name starts with `prefix` (what a probe left behind).
pub(crate) fn delete_default_vhost_queues(prefix: &str) {
    let (api, auth) = mgmt();
    let Ok(mut resp) = ureq::get(&format!("{api}/queues/%2F")).header("authorization", &auth).call() else { return };
    let Ok(queues) = resp.body_mut().read_json::<serde_json::Value>() else { return };
    for q in queues.as_array().into_iter().flatten() {
        if let Some(name) = q["name"].as_str().filter(|n| n.starts_with(prefix)) {
            let _ = ureq::delete(&format!("{api}/queues/%2F/{name}")).header("authorization", &auth).call();
        }
    }
}

/// Connection attempts of 15 s each before giving up.
const ATTEMPTS: u32 = 20;

/// Connects, trying again when the handshake stalls: on 2 cores, a RabbitMQ node busy with
/// many quorum queues (consumers of a 100-route run leaving them, a vhost of them being
/// deleted) can stop accepting connections for a while.
async fn connect(url: &str) -> Connection {
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(Duration::from_secs(15), Connection::connect(url, ConnectionProperties::default()))
            .await
        {
            Ok(Ok(c)) => return c,
            Ok(Err(e)) if attempt == ATTEMPTS => panic!("connecting to RabbitMQ at {url}: {e}"),
            Ok(Err(e)) => eprintln!("connecting to RabbitMQ at {url}: {e}; trying again"),
            Err(_) => eprintln!("connecting to RabbitMQ at {url}: no answer within 15 s; trying again"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("connecting to RabbitMQ at {url}: no answer after {ATTEMPTS} attempts")
}

fn props(i: usize) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into())
        .with_message_id(event_id(i).as_str().into())
}

async fn publish_one(ch: &Channel, exchange: &str, key: &str, i: usize, body: &[u8]) -> lapin::PublisherConfirm {
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    ch.basic_publish(exchange.into(), key.into(), opts, body, props(i)).await.expect("publish")
}

/// A confirm-mode channel on a new connection to `url` (the connection stays open while the
/// channel is used).
pub(crate) async fn confirm_channel(url: &str) -> (Connection, Channel) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    (conn, ch)
}

/// Publishes events `0..n` to `exchange` with routing key `key`, 1,000 confirms in flight.
pub(crate) async fn publish_bulk(url: &str, exchange: &str, key: &str, size: Size, n: usize) {
    let (conn, ch) = confirm_channel(url).await;
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        let mut confirms = Vec::with_capacity(end - start);
        for i in start..end {
            confirms.push(publish_one(&ch, exchange, key, i, &event(i, size)).await);
        }
        for c in confirms {
            let confirm = c.await.expect("confirm");
            assert!(confirm.is_ack() && confirm.take_message().is_none(), "the broker refused or returned a publish");
        }
        start = end;
    }
    let _ = conn.close(200, "".into()).await;
}

/// Publishes events `0..n` at `rate` per second, marking each on `timeline` as it goes out;
/// confirms are awaited off the pacing loop.
pub(crate) async fn publish_paced(
    url: &str,
    exchange: &str,
    key: &str,
    size: Size,
    n: usize,
    rate: f64,
    timeline: &Timeline,
) {
    let (conn, ch) = confirm_channel(url).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<lapin::PublisherConfirm>();
    let confirms = tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            let _ = c.await;
        }
    });
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| event(i, size)).collect();
    let start = tokio::time::Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        timeline.sent(i);
        let _ = tx.send(publish_one(&ch, exchange, key, i, body).await);
    }
    drop(tx);
    let _ = confirms.await;
    let _ = conn.close(200, "".into()).await;
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

/// Declares `queues` quorum queues `bare.<k>`, each bound to the topic exchange `bare` for
/// `order.*`, so one publish fans out to all of them.
pub(crate) async fn declare_bare(url: &str, queues: usize) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_declare(
        "bare".into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    for k in 0..queues {
        let q = format!("bare.{k}");
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum())
            .await
            .expect("queue");
        ch.queue_bind(
            q.as_str().into(),
            "bare".into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    let _ = conn.close(200, "".into()).await;
}

/// The bare consumer ceiling: `queues` pre-filled quorum queues (`n` events fanned out to each),
/// one channel per queue at `prefetch`, every message acked on its own as it arrives.
/// Deliveries per second.
pub(crate) async fn bare_consumer(url: &str, queues: usize, n: usize, size: Size, prefetch: u16) -> f64 {
    declare_bare(url, queues).await;
    publish_bulk(url, "bare", "order.paid", size, n).await;
    let conn = connect(url).await;
    let mut consumers = Vec::new();
    for k in 0..queues {
        let ch = conn.create_channel().await.expect("channel");
        ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
        let q = format!("bare.{k}");
        let c = ch
            .basic_consume(q.as_str().into(), q.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        consumers.push((ch, c));
    }
    let start = Instant::now();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|(ch, mut c)| {
            tokio::spawn(async move {
                for _ in 0..n {
                    let d = c.next().await.expect("stream open").expect("delivery");
                    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                }
                drop(ch);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("consumer task");
    }
    let rate = (queues * n) as f64 / start.elapsed().as_secs_f64();
    let _ = conn.close(200, "".into()).await;
    rate
}

/// The client a bare relay or the bare POST ceiling uses: hyper's pooled HTTP/1.1 client.
pub(crate) fn http_client()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http()
}

/// A bare relay: consumes queue `bare.0` at `prefetch`, POSTs each body to `target` with the
/// message id as `webhook-id`, at most `in_flight` at once, and acks on 2xx. Runs until `n`
/// messages are relayed.
/// Returns this process's CPU seconds from its first delivery to the end (what the relay's own
/// process reports, [`bare_relay_process`]).
pub(crate) async fn bare_relay(url: &str, target: &str, n: usize, prefetch: u16, in_flight: usize) -> f64 {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("bare.0".into(), "relay".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let client = http_client();
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let mut cpu_at_first = None;
    for _ in 0..n {
        let permit = slots.clone().acquire_owned().await.expect("open");
        let d = consumer.next().await.expect("stream open").expect("delivery");
        cpu_at_first.get_or_insert_with(crate::sys::own_cpu_seconds);
        let (client, target) = (client.clone(), target.to_string());
        tasks.spawn(async move {
            let id = d.properties.message_id().as_ref().map(|m| m.as_str().to_string()).unwrap_or_default();
            let req = hyper::Request::post(target)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .body(Full::new(Bytes::from(d.data.clone())))
                .expect("request");
            let resp = client.request(req).await.expect("POST");
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            assert!(ok, "the receiver refused a relayed POST");
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let cpu = crate::sys::own_cpu_seconds() - cpu_at_first.unwrap_or_default();
    let _ = conn.close(200, "".into()).await;
    cpu
}

/// The argument that makes this binary the bare relay's own process: `--bare-relay-child URL
/// TARGET N PREFETCH IN_FLIGHT`.
const RELAY_CHILD: &str = "--bare-relay-child";

/// The bare relay as a process of its own: this binary started again, outside the receiver's
/// process, as the router is; under `wrap` when it is not empty (under `--wrap`, the relay 32 at
/// once, so that its instructions per event are counted as the router's are: docs/benchmarks.md,
/// "Profile"). Returns the relay's CPU microseconds per event, from its first delivery to its
/// last ack, as the process measured itself (meaningless under `wrap`).
pub(crate) async fn bare_relay_process(
    wrap: &[String],
    url: &str,
    target: &str,
    n: usize,
    prefetch: u16,
    in_flight: usize,
) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let mut command = match wrap.split_first() {
        Some((cmd, args)) => {
            let mut c = tokio::process::Command::new(cmd);
            c.args(args).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    let what = wrap.first().map_or_else(|| exe.display().to_string(), Clone::clone);
    let out = command
        .args([RELAY_CHILD, url, target, &n.to_string(), &prefetch.to_string(), &in_flight.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| format!("starting {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("the bare relay's process ended with {}", out.status));
    }
    let said = String::from_utf8_lossy(&out.stdout);
    said.lines()
        .find_map(|l| l.strip_prefix(CPU_LINE)?.trim().parse::<f64>().ok())
        .map(|seconds| seconds * 1e6 / n as f64)
        .ok_or_else(|| format!("the bare relay's process did not say its CPU time ({said:?})"))
}

/// How the bare relay's own process prints its CPU seconds on its standard output.
const CPU_LINE: &str = "bare-relay-cpu-seconds ";

/// When this process is the bare relay's own ([`bare_relay_process`]), runs it and returns
/// true.
pub(crate) async fn run_relay_child() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == RELAY_CHILD) else {
        return false;
    };
    let arg = |i: usize| args.get(at + i).unwrap_or_else(|| panic!("{RELAY_CHILD} takes 5 arguments"));
    let number =
        |i: usize| arg(i).parse::<usize>().unwrap_or_else(|_| panic!("{RELAY_CHILD}: {} is no number", arg(i)));
    let cpu = bare_relay(arg(1), arg(2), number(3), number(4) as u16, number(5)).await;
    println!("{CPU_LINE}{cpu}");
    true
}
