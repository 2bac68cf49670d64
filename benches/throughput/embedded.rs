//! The embedded broker for the harness, through the library's [`Broker`] API (the same code
//! and the same file settings as the router: SQLite in WAL mode, `sync = "normal"`): filling a
//! queue file in bulk before a router starts on it, and the bare ceilings on a file of the
//! harness's own, a consumer that only acks and a relay that consumes, POSTs and acks on 2xx,
//! as the RabbitMQ ones in [`crate::rabbit`].

use crate::common::{Size, event, event_id};
use crate::rabbit::http_client;
use crate::receiver::Timeline;
use bytes::Bytes;
use futures_util::StreamExt;
use hookrelay::broker::embedded::EmbeddedBroker;
use hookrelay::broker::{Broker, Destination, Headers, RouteTopology};
use hookrelay::config::files::{BrokerFile, EmbeddedSync};
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publishes awaiting their confirm at once: the engine's largest batch, so every group commit
/// can be full.
const IN_FLIGHT: usize = 1024;

/// Opens (or creates) a queue file, as the router does with the default `[embedded] sync`.
pub(crate) async fn open(path: &Path) -> Result<EmbeddedBroker, String> {
    EmbeddedBroker::open(path, EmbeddedSync::Normal).await.map_err(|e| e.to_string())
}

/// Publishes events `0..n` to the events exchange (routing key `order.paid`), through
/// [`Broker::publish`], [`IN_FLIGHT`] at once. Calls `progress` with the count every 100,000.
/// Publishes per second.
pub(crate) async fn publish_bulk(
    broker: &dyn Broker,
    size: Size,
    n: usize,
    progress: impl Fn(usize),
) -> Result<f64, String> {
    let start = Instant::now();
    let headers = Headers::default();
    let mut confirmed = futures_util::stream::iter(0..n)
        .map(|i| {
            let headers = &headers;
            async move {
                let id = event_id(i);
                broker
                    .publish(Destination::Events { routing_key: "order.paid" }, &event(i, size), headers, Some(&id))
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some(r) = confirmed.next().await {
        r.map_err(|e| format!("publishing to the embedded broker: {e}"))?;
        done += 1;
        if done % 100_000 == 0 {
            progress(done);
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Declares `queues` queues `bare.<k>` bound to `order.*`, unordered, with the router's default
/// delivery limit, as the router declares a route.
async fn declare_bare(broker: &dyn Broker, queues: usize) -> Result<(), String> {
    broker.declare_base().await.map_err(|e| e.to_string())?;
    let patterns = vec!["order.*".to_string()];
    for k in 0..queues {
        let (name, queue) = (format!("bare-{k}"), format!("bare.{k}"));
        let t = RouteTopology {
            name: &name,
            queue: &queue,
            patterns: &patterns,
            ordered: false,
            delivery_limit: BrokerFile::default().delivery_limit,
            tiers: Vec::new(),
        };
        broker.declare_route(&t).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The bare consumer ceiling on the embedded broker: a fresh file in `dir`, `queues` queues
/// filled with `n` events each (fan-out), one consumer per queue at `prefetch`, each message
/// acked as it arrives, acks pipelined as lapin pipelines them (the next delivery is not held
/// for the previous ack's commit). Deliveries per second.
pub(crate) async fn bare_consumer(
    dir: &Path,
    queues: usize,
    n: usize,
    size: Size,
    prefetch: u16,
) -> Result<f64, String> {
    let broker = open(&dir.join("bare-consumer.db")).await?;
    declare_bare(&broker, queues).await?;
    publish_bulk(&broker, size, n, |_| {}).await?;
    let mut consumers = Vec::new();
    for k in 0..queues {
        consumers.push(broker.consume(&format!("bare.{k}"), prefetch).await.map_err(|e| e.to_string())?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = consumers
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut acks = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let m = c.next().await.ok_or("the consumer ended")?.map_err(|e| e.to_string())?;
                    acks.spawn(async move { m.ack().await.map_err(|e| e.to_string()) });
                    while let Some(a) = acks.try_join_next() {
                        a.map_err(|e| e.to_string())??;
                    }
                }
                while let Some(a) = acks.join_next().await {
                    a.map_err(|e| e.to_string())??;
                }
                c.close().await;
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let rate = (queues * n) as f64 / start.elapsed().as_secs_f64();
    broker.shutdown().await;
    Ok(rate)
}

/// A bare relay on the embedded broker: consumes `bare.0` at `prefetch`, POSTs each body to
/// `target` with the message id as `webhook-id`, at most `in_flight` at once, and acks on 2xx,
/// until `n` messages are relayed.
async fn relay(broker: &dyn Broker, target: &str, n: usize, prefetch: u16, in_flight: usize) -> Result<(), String> {
    let mut consumer = broker.consume("bare.0", prefetch).await.map_err(|e| e.to_string())?;
    let client = http_client();
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = slots.clone().acquire_owned().await.expect("open");
        let m = consumer.next().await.ok_or("the consumer ended")?.map_err(|e| e.to_string())?;
        let (client, target) = (client.clone(), target.to_string());
        tasks.spawn(async move {
            let req = hyper::Request::post(target)
                .header("content-type", "application/json")
                .header("webhook-id", m.message_id.clone().unwrap_or_default())
                .body(Full::new(m.body.clone()))
                .expect("request");
            let resp = client.request(req).await.map_err(|e| format!("POST: {e}"))?;
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            if !ok {
                return Err("the receiver refused a relayed POST".to_string());
            }
            m.ack().await.map_err(|e| e.to_string())?;
            drop(permit);
            Ok(())
        });
        while let Some(t) = tasks.try_join_next() {
            t.map_err(|e| e.to_string())??;
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.map_err(|e| e.to_string())??;
    }
    consumer.close().await;
    Ok(())
}

/// The bare relay's throughput: `n` events filled into a fresh file in `dir`, then relayed.
pub(crate) async fn bare_relay(
    dir: &Path,
    target: &str,
    n: usize,
    prefetch: u16,
    in_flight: usize,
) -> Result<(), String> {
    let broker = open(&dir.join("bare-relay.db")).await?;
    declare_bare(&broker, 1).await?;
    publish_bulk(&broker, Size::Kib1, n, |_| {}).await?;
    let out = relay(&broker, target, n, prefetch, in_flight).await;
    broker.shutdown().await;
    out
}

/// The bare relay's latency: events `0..n` published at `rate` per second through
/// [`Broker::publish`] (each confirm awaited on a task of its own, marked on `timeline` as it
/// goes out) while the relay runs at `in_flight`.
pub(crate) async fn bare_relay_paced(
    dir: &Path,
    target: &str,
    n: usize,
    rate: f64,
    timeline: &Arc<Timeline>,
    prefetch: u16,
    in_flight: usize,
) -> Result<(), String> {
    let broker: Arc<EmbeddedBroker> = Arc::new(open(&dir.join("bare-latency.db")).await?);
    declare_bare(broker.as_ref(), 1).await?;
    let (b, target) = (broker.clone(), target.to_string());
    let relayed = tokio::spawn(async move { relay(b.as_ref(), &target, n, prefetch, in_flight).await });
    let bodies: Vec<Bytes> = (0..n).map(|i| Bytes::from(event(i, Size::Kib1))).collect();
    let mut confirms = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    for (i, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        timeline.sent(i);
        let b = broker.clone();
        confirms.spawn(async move {
            let to = Destination::Events { routing_key: "order.paid" };
            b.publish(to, &body, &Headers::default(), Some(&event_id(i))).await.map_err(|e| e.to_string())
        });
        while let Some(c) = confirms.try_join_next() {
            c.map_err(|e| e.to_string())??;
        }
    }
    while let Some(c) = confirms.join_next().await {
        c.map_err(|e| e.to_string())??;
    }
    let out = relayed.await.map_err(|e| e.to_string())?;
    if let Ok(b) = Arc::try_unwrap(broker) {
        b.shutdown().await;
    }
    out
}

/// Size in bytes of a queue file with its write-ahead log.
pub(crate) fn file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        size(Path::new(&s))
    };
    size(path) + with("-wal") + with("-shm")
}
