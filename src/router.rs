//! The router: one consumer per route, and the at-least-once rules, which live here and nowhere
//! else. A message is acked only after a 2xx, after its dead letter is confirmed by the broker,
//! after a filter dropped it, or after its retry is confirmed into a wait queue.
//!
//! Ordered routes (single active consumer) handle one message at a time and retry in place, so
//! later events wait. Unordered routes run up to `concurrency` deliveries at once and retry
//! through the wait queues, so one failing event blocks nothing.
//!
//! Shutdown (SIGTERM/SIGINT): stop taking messages, let in-flight deliveries finish and ack
//! within the grace period, then close the connection, which returns every unacked message to
//! its queue in order. Consumers are never cancelled while holding unacked messages: on a
//! single-active-consumer queue that would let the next consumer overtake them.

use crate::broker::amqp::{
    self, BrokerError, DeadLetter, H_ATTEMPT, H_NOT_BEFORE, Publisher, RouteTopology, header_str, header_u64, now_ms,
};
use crate::config::{Route, Snapshot};
use crate::deliver::client::{SendError, WebhookClient};
use crate::deliver::retry::{Class, classify};
use crate::pipeline::{self, Prepared, Reason};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, message::Delivery};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Router-assigned sequence numbers: a hybrid clock in microseconds since the Unix epoch that
/// never repeats or goes back within a process, and starts above anything an earlier process
/// on a clock-synchronised host assigned (it starts from the current time).
#[derive(Debug, Default)]
pub struct Sequencer(AtomicU64);

impl Sequencer {
    /// The next sequence number: greater than every earlier one.
    pub fn next(&self) -> u64 {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            let n = now.max(prev + 1);
            match self.0.compare_exchange_weak(prev, n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return n,
                Err(p) => prev = p,
            }
        }
    }
}

/// Everything the workers share.
struct Shared {
    snapshot: Arc<Snapshot>,
    client: WebhookClient,
    sequencer: Sequencer,
}

/// Runs the router until `shutdown` is cancelled, reconnecting to RabbitMQ with backoff.
///
/// A route whose queue cannot be declared as configured (RabbitMQ refuses to change a queue's
/// arguments in place) is reported and left stopped while the other routes run; the process
/// stays up rather than exiting into a restart loop that could not fix it.
pub async fn run(snapshot: Arc<Snapshot>, shutdown: CancellationToken) {
    let shared =
        Arc::new(Shared { client: WebhookClient::new(snapshot.security), snapshot, sequencer: Sequencer::default() });
    let s = &shared.snapshot;
    info!(version = s.version, revision = %s.revision, routes = s.routes.len(), "config loaded");
    let mut backoff = Duration::from_millis(500);
    let max = s.broker.reconnect_max.0;
    while !shutdown.is_cancelled() {
        let name = format!("hookrelay {} pid {}", env!("CARGO_PKG_VERSION"), std::process::id());
        match amqp::connect(&s.broker.url, &name).await {
            Ok(conn) => {
                backoff = Duration::from_millis(500);
                if let Err(why) = session(&shared, conn, &shutdown).await {
                    warn!(error = %why, "connection to RabbitMQ lost; reconnecting");
                }
            }
            Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot connect to RabbitMQ"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff.mul_f64(1.0 + fastrand::f64() * 0.2)) => {}
        }
        backoff = (backoff * 2).min(max);
    }
    info!("stopped");
}

/// One connection's life: declare, consume, and wind down on shutdown or loss (`Err(why)`).
async fn session(shared: &Arc<Shared>, conn: Connection, shutdown: &CancellationToken) -> Result<(), String> {
    let snap = &shared.snapshot;
    let lost = CancellationToken::new();
    let lost_why = Arc::new(std::sync::Mutex::new(String::new()));
    let fail = |e: BrokerError| e.to_string();

    let base = conn.create_channel().await.map_err(|e| fail(e.into()))?;
    amqp::declare_base(&base, &snap.broker.exchange).await.map_err(fail)?;
    let publisher = Publisher::open(&conn).await.map_err(fail)?;

    let stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let mut failed = Vec::new();
    for route in &snap.routes {
        let ch = conn.create_channel().await.map_err(|e| fail(e.into()))?;
        let queue = route.queue();
        let topo = RouteTopology {
            name: &route.name,
            queue: &queue,
            patterns: &route.events,
            ordered: route.ordered,
            delivery_limit: snap.broker.delivery_limit,
            tiers: if route.ordered { Vec::new() } else { route.retry.tiers() },
        };
        match amqp::declare_route(&ch, &snap.broker.exchange, &topo).await {
            Ok(()) => {}
            Err(e @ BrokerError::Mismatch { .. }) => {
                error!(route = %route.name, error = %e, "route not started");
                failed.push(format!("{}: {e}", route.name));
                continue;
            }
            Err(e) => return Err(fail(e)),
        }
        let prefetch =
            if route.ordered { snap.broker.prefetch } else { snap.broker.prefetch.max(route.concurrency as u16) };
        ch.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| fail(e.into()))?;
        let tag = format!("hookrelay-{}-{}", route.name, std::process::id());
        let consumer = ch
            .basic_consume(queue.as_str().into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| fail(e.into()))?;
        let w =
            Worker { shared: shared.clone(), route: route.clone(), publisher: publisher.clone(), stop: stop.clone() };
        let (lost, why) = (lost.clone(), lost_why.clone());
        let span = info_span!("route", route = %route.name);
        workers.spawn(
            async move {
                // The channel lives as long as its worker.
                let _channel = ch;
                let end = w.run(consumer).await;
                if let Err(e) = end {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = e;
                    lost.cancel();
                }
            }
            .instrument(span),
        );
    }
    if !failed.is_empty() {
        error!(not_started = failed.len(), "some routes are not running: {}", failed.join("; "));
    }
    info!(routes = workers.len(), "consuming");

    let mut events = conn.events_listener();
    let conn_lost = async {
        while let Some(ev) = events.next().await {
            if let lapin::Event::Error(e) = ev {
                return e.to_string();
            }
        }
        "connection closed".to_string()
    };
    let outcome = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = lost.cancelled() => Some(lost_why.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        why = conn_lost => Some(why),
    };
    stop.cancel();
    let grace = snap.delivery.shutdown_grace.0;
    let drained = tokio::time::timeout(grace, async {
        loop {
            tokio::select! {
                next = workers.join_next() => if next.is_none() { break },
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    info!(routes = workers.len(), "waiting for in-flight deliveries to finish");
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(?grace, "grace period over: unfinished deliveries go back to their queues");
        workers.abort_all();
    }
    // Closing the connection returns every unacked message to its queue, in order.
    let _ = conn.close(200, "hookrelay stopping".into()).await;
    match outcome {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

struct Worker {
    shared: Arc<Shared>,
    route: Arc<Route>,
    publisher: Publisher,
    stop: CancellationToken,
}

/// What happened to one message.
enum Handled {
    /// Acked (delivered, filtered, dead-lettered or parked for a retry).
    Done,
    /// Left unacked because the route is stopping: the broker gives it back on close.
    Abandoned,
}

impl Worker {
    async fn run(self, mut consumer: lapin::Consumer) -> Result<(), String> {
        let this = Arc::new(self);
        let limit = if this.route.ordered { 1 } else { this.route.concurrency };
        let slots = Arc::new(Semaphore::new(limit));
        let mut inflight: JoinSet<Result<Handled, BrokerError>> = JoinSet::new();
        let mut result = Ok(());
        loop {
            while let Some(done) = inflight.try_join_next() {
                if let Err(e) = flatten(done) {
                    result = Err(e);
                }
            }
            if result.is_err() {
                break;
            }
            let permit = tokio::select! {
                _ = this.stop.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("never closed"),
            };
            let next = tokio::select! {
                _ = this.stop.cancelled() => break,
                d = consumer.next() => d,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    result = Err(format!("consumer failed: {e}"));
                    break;
                }
                None => {
                    result = Err("consumer closed by the broker".into());
                    break;
                }
            };
            let w = this.clone();
            inflight.spawn(
                async move {
                    let out = w.handle(delivery).await;
                    drop(permit);
                    out
                }
                .in_current_span(),
            );
            if this.route.ordered {
                // One delivery at a time: wait for it before taking the next message.
                if let Some(done) = inflight.join_next().await {
                    match flatten(done) {
                        Ok(Handled::Done) => {}
                        Ok(Handled::Abandoned) => break,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
            }
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = flatten(done) {
                result = result.and(Err(e));
            }
        }
        result
    }

    async fn handle(&self, d: Delivery) -> Result<Handled, BrokerError> {
        let snap = &self.shared.snapshot;
        let route = &self.route;
        if let Some(nb) = header_u64(&d.properties, H_NOT_BEFORE) {
            let now = now_ms();
            if nb > now + 50 {
                // Back early from a wait queue (its wait is capped by the tier): wait again.
                let attempt = header_u64(&d.properties, H_ATTEMPT).unwrap_or(1) as u32;
                return self.park(&d, attempt, Duration::from_millis(nb - now)).await;
            }
        }
        let attempt = header_u64(&d.properties, H_ATTEMPT).unwrap_or(1).max(1) as u32;
        let payload = match pipeline::prepare(snap, route, &d.data) {
            Ok(Prepared::Filtered) => {
                debug!("filtered out");
                return ack(&d).await;
            }
            Ok(Prepared::Deliver(p)) => p,
            Err(rej) => {
                let details =
                    (!rej.violations.is_empty()).then(|| serde_json::to_value(&rej.violations).unwrap_or_default());
                warn!(reason = rej.reason.as_str(), error = %rej.message, "event refused; dead-lettering");
                return self.dead_letter(&d, rej.reason, &rej.message, details, None, None, attempt - 1).await;
            }
        };
        let sequence = payload.sequence.clone().unwrap_or_else(|| self.shared.sequencer.next().to_string());
        let traceparent = header_str(&d.properties, "traceparent")
            .or_else(|| payload.traceparent.clone())
            .unwrap_or_else(new_traceparent);
        let mut attempt = attempt;
        loop {
            let headers = request_headers(route, &payload, &sequence, &traceparent, attempt, unix_now());
            let sent = self
                .shared
                .client
                .post(&route.url, headers, payload.body.clone(), route.timeout, snap.limits.response_body_bytes)
                .await;
            let (status, body, retry_after, error) = match &sent {
                Ok(r) => (Some(r.status), Some(r.body.as_str()), r.retry_after, format!("HTTP {}", r.status)),
                Err(e) => (None, None, None, e.to_string()),
            };
            let class = match &sent {
                Ok(r) => classify(r.status),
                Err(SendError::Blocked(_)) => Class::Permanent,
                Err(_) => Class::Retryable,
            };
            let ms = sent.as_ref().map_or(0, |r| r.duration.as_millis() as u64);
            match class {
                Class::Success => {
                    debug!(event = %payload.event_id, attempt, status, ms, "delivered");
                    return ack(&d).await;
                }
                Class::Retryable if route.retry.may_retry(attempt) => {
                    let delay = route.retry.delay(attempt, retry_after, fastrand::f64());
                    warn!(event = %payload.event_id, attempt, status, error = %error, retry_in = ?delay, "delivery failed; will retry");
                    if !route.ordered {
                        return self.park(&d, attempt + 1, delay).await;
                    }
                    // Ordered: retry in place; later events wait behind this one.
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(Handled::Abandoned),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
                _ => {
                    let reason = match (&sent, class) {
                        (Err(SendError::Blocked(_)), _) => Reason::Blocked,
                        (_, Class::Gone) => Reason::Gone,
                        (_, Class::Retryable) => Reason::Exhausted,
                        _ => Reason::Rejected,
                    };
                    warn!(event = %payload.event_id, attempt, status, error = %error, reason = reason.as_str(), "delivery failed; dead-lettering");
                    return self.dead_letter(&d, reason, &error, None, status, body, attempt).await;
                }
            }
        }
    }

    /// Parks a message in the wait queue of its tier, confirmed, then acks it.
    async fn park(&self, d: &Delivery, next_attempt: u32, delay: Duration) -> Result<Handled, BrokerError> {
        let tier = self.route.retry.tier_for(delay);
        let wait = delay.min(tier.mul_f64(1.0 + crate::deliver::retry::JITTER));
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        headers.insert(H_ATTEMPT.into(), AMQPValue::LongInt(next_attempt as i32));
        headers.insert(H_NOT_BEFORE.into(), AMQPValue::LongLongInt((now_ms() + delay.as_millis() as u64) as i64));
        let props: BasicProperties =
            d.properties.clone().with_headers(headers).with_expiration(wait.as_millis().max(1).to_string().into());
        let queue = amqp::retry_queue(&self.route.queue(), tier);
        self.publisher.publish("", &queue, &d.data, props).await?;
        ack(d).await
    }

    #[allow(clippy::too_many_arguments)] // the fields of one dead letter, from two call sites
    async fn dead_letter(
        &self,
        d: &Delivery,
        reason: Reason,
        error: &str,
        details: Option<serde_json::Value>,
        last_status: Option<u16>,
        last_response: Option<&str>,
        attempts: u32,
    ) -> Result<Handled, BrokerError> {
        let mut original_headers = d.properties.headers().clone().unwrap_or_default();
        let mut clean = FieldTable::default();
        for (k, v) in original_headers.inner() {
            if k.as_str() != H_ATTEMPT && k.as_str() != H_NOT_BEFORE && k.as_str() != "x-death" {
                clean.insert(k.clone(), v.clone());
            }
        }
        original_headers = clean;
        let dl = DeadLetter {
            route: &self.route.name,
            reason,
            error,
            details,
            last_status,
            last_response,
            attempts,
            body: &d.data,
            original_headers,
        };
        self.publisher.dead_letter(&dl).await?;
        ack(d).await
    }
}

fn flatten(r: Result<Result<Handled, BrokerError>, tokio::task::JoinError>) -> Result<Handled, String> {
    match r {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("delivery task failed: {e}")),
    }
}

async fn ack(d: &Delivery) -> Result<Handled, BrokerError> {
    d.acker.ack(BasicAckOptions::default()).await?;
    Ok(Handled::Done)
}

/// Now as Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Every header of one attempt: the route's static headers, the signature headers, and
/// `content-type`, `user-agent`, `hookrelay-sequence`, `hookrelay-attempt`, `hookrelay-route`,
/// `traceparent`.
pub fn request_headers(
    route: &Route,
    p: &pipeline::Payload,
    sequence: &str,
    traceparent: &str,
    attempt: u32,
    timestamp: i64,
) -> HeaderMap {
    let mut h = route.headers.clone();
    for (k, v) in route.signer.headers(&p.event_id, timestamp, &p.body) {
        h.insert(k, v);
    }
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(p.content_type));
    h.insert(http::header::USER_AGENT, HeaderValue::from_static(concat!("hookrelay/", env!("CARGO_PKG_VERSION"))));
    h.insert(HeaderName::from_static("hookrelay-sequence"), text(sequence));
    h.insert(HeaderName::from_static("hookrelay-attempt"), HeaderValue::from(attempt));
    h.insert(HeaderName::from_static("hookrelay-route"), text(&route.name));
    h.insert(HeaderName::from_static("traceparent"), text(traceparent));
    h
}

/// A fresh W3C `traceparent`, for events that carry none.
pub fn new_traceparent() -> String {
    format!("00-{:032x}-{:016x}-01", fastrand::u128(1..), fastrand::u64(1..))
}
