//! A route's worker: the consume loop, and the stages of one message read top to bottom in
//! `Dispatch`: prepare (the pipeline) → attempt → decide → report → settle.
//!
//! Ordered routes (single active consumer) are a plain sequential loop (`ordered`): one
//! message at a time, retried in place, so later events wait, each ack started without waiting
//! for it and the next message's pipeline run while the one in hand is delivered; with an
//! `order_key`, one such line per key (`lanes`). Unordered routes with `[batch]` gather
//! messages into batches (`batch`); other unordered routes run up to `concurrency` messages at
//! once (a semaphore of slots), retried through the broker's delay, so one failing event blocks
//! nothing. Stopping takes no new message, lets the ones in flight settle, then closes the
//! consumer, which gives the unacked ones back in order (never cancel-then-requeue: on a
//! single-active-consumer queue the next consumer would overtake them).
//!
//! Contexts by lifetime, as svix-server's worker does: [`Shared`] for the process (the live
//! config and client, the sequencer, the delivery log, every route's gate), [`Worker`] for one
//! route's consumer, and `Dispatch` for one message (the config and route it read once, when it
//! started).
//!
//! A route with endpoint policies (`[circuit_breaker]`, `[rate_limit]`) asks its [`Gate`]
//! before each attempt and tells it each result; when the gate says "not now", an unordered
//! route parks the event for that long ([`Settle::hold`]), an ordered one waits in place, so
//! that later events stay behind it, and on RabbitMQ hands it back before the broker's consumer
//! timeout ([`Settled::HandBack`]). Routes without them skip all of it.

use super::attempt::{Attempt, Sequencer};
use super::gate::{Admission, Gate, Gates};
use super::http::client::WebhookClient;
use super::settle::{Settle, Settled, StartedAcks};
use super::verdict::{self, AttemptResult, Reason, Verdict};
use crate::broker::{Broker, BrokerError, Consumer, H_TRACEPARENT, Message, now_ms};
use crate::config::{BrokerKind, Origin, Route, Snapshot};
use crate::metrics::{self, RouteMeter};
use crate::pipeline::schema::{H_VALIDATED, is_validated_mark};
use crate::pipeline::{Payload, Prepared, Rejection};
use crate::store::log::AttemptLog;
use crate::store::{Attempt as LoggedAttempt, Outcome};
use crate::telemetry;
use arc_swap::ArcSwap;
use ordered::Ready;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

mod batch;
mod ids;
mod lanes;
mod ordered;
mod schedule;

/// The config now live with the HTTP client built for it: swapped as one by a reload, so that a
/// delivery never pairs a config with another config's client.
pub struct Live {
    /// The config.
    pub snapshot: Arc<Snapshot>,
    /// The client for its `[security]` policy and CA certificates.
    pub client: Arc<WebhookClient>,
}

/// What every worker of the process shares: the live config and client, the sequencer, the
/// delivery log, every route's gate, and where requests to disable a subscription go.
pub struct Shared {
    live: ArcSwap<Live>,
    sequencer: Sequencer,
    log: Option<Arc<AttemptLog>>,
    gates: Gates,
    disables: OnceLock<mpsc::UnboundedSender<Disable>>,
}

/// An API-managed route's subscription is to be disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    /// The subscription's id.
    pub subscription: String,
    /// The route (the subscription's name).
    pub route: String,
    /// Why.
    pub why: DisableReason,
}

/// Why a subscription is to be disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisableReason {
    /// Its receiver answered `410 Gone` to this event.
    Gone {
        /// The event whose delivery got the 410.
        event_id: String,
    },
    /// Its endpoint has failed continuously since then, for its circuit breaker's
    /// `disable_after`.
    Failing {
        /// The first failure of the streak.
        since: SystemTime,
        /// `disable_after`.
        after: Duration,
    },
}

impl Shared {
    /// For a first config, recording attempts in `log` when given.
    pub fn new(snapshot: Snapshot, log: Option<Arc<AttemptLog>>) -> Self {
        let client = Arc::new(WebhookClient::new(snapshot.security, &snapshot.extra_roots));
        Self {
            live: ArcSwap::from_pointee(Live { snapshot: Arc::new(snapshot), client }),
            sequencer: Sequencer::default(),
            log,
            gates: Gates::default(),
            disables: OnceLock::new(),
        }
    }

    /// The config and client now live.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The config now live.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load().snapshot.clone()
    }

    /// Makes `snapshot` live; with a new client when `new_client` (its `[security]` or CA file
    /// changed), else with the one now live.
    pub fn swap(&self, snapshot: Arc<Snapshot>, new_client: bool) {
        let client = if new_client {
            Arc::new(WebhookClient::new(snapshot.security, &snapshot.extra_roots))
        } else {
            self.live.load().client.clone()
        };
        self.live.store(Arc::new(Live { snapshot, client }));
    }

    /// The sequencer of every delivery.
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The delivery log, when attempts are recorded.
    pub fn attempt_log(&self) -> Option<&Arc<AttemptLog>> {
        self.log.as_ref()
    }

    /// Every route's circuit breaker and rate limit.
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// The requests to disable a subscription (`410 Gone`, failing for `disable_after`), from
    /// now on; the first caller gets them, later ones `None`. Without a caller they are dropped.
    pub fn disable_reports(&self) -> Option<mpsc::UnboundedReceiver<Disable>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.disables.set(tx).ok().map(|()| rx)
    }

    fn disable(&self, route: &Route, why: DisableReason) {
        if let (Origin::Api { subscription }, Some(tx)) = (&route.origin, self.disables.get()) {
            let _ = tx.send(Disable { subscription: subscription.clone(), route: route.name.clone(), why });
        }
    }
}

/// One route's consumer, for its life (svix's `WorkerContext`).
pub struct Worker {
    shared: Arc<Shared>,
    broker: Arc<dyn Broker>,
    /// Swapped by reloads; each message reads it once, when it starts.
    route: Arc<ArcSwap<Route>>,
    stop: CancellationToken,
    /// The route's metrics (a reload keeps the route's name, so the handles stay right).
    meter: RouteMeter,
    /// The route's circuit breaker and rate limit (consulted when the route has them).
    gate: Arc<Gate>,
}

impl Worker {
    /// A worker for `route` (which reloads may swap) on `broker`, that stops when `stop` is
    /// cancelled.
    pub fn new(
        shared: Arc<Shared>,
        broker: Arc<dyn Broker>,
        route: Arc<ArcSwap<Route>>,
        stop: CancellationToken,
    ) -> Self {
        let (meter, gate) = {
            let r = route.load();
            let gate = shared.gates.of(&r.name);
            gate.start(&r);
            (RouteMeter::new(&r.name), gate)
        };
        Self { shared, broker, route, stop, meter, gate }
    }

    /// Consumes until stopped or the consumer fails (`Err(why)`), then closes the consumer once
    /// every message in flight has settled, which gives the unacked ones back in order. Ordered
    /// or not, and how many at once, are the route's at start: a reload that changes them
    /// starts a new worker.
    pub async fn run(self, mut consumer: Box<dyn Consumer>) -> Result<(), String> {
        let route = self.route.load_full();
        let result = if route.ordered {
            loop {
                let round = match &route.order_key {
                    Some(key) => self.lanes(consumer.as_mut(), key, route.concurrency).await,
                    None => self.sequential(consumer.as_mut()).await,
                };
                match round {
                    Ok(true) => consumer = self.hand_back(consumer, &route).await?,
                    done => break done.map(drop),
                }
            }
        } else {
            // A rate limit is shared by the replicas consuming the queue: follow how many do,
            // while this worker runs.
            let following = self.stop.child_token();
            let _following = following.clone().drop_guard();
            if route.rate_limit.is_some() {
                let follow = self.gate.clone().follow_consumers(self.broker.clone(), self.route.clone(), following);
                tokio::spawn(follow.in_current_span());
            }
            match route.batch {
                Some(batch) => Arc::new(self).batched(consumer.as_mut(), batch, route.concurrency).await,
                None => Arc::new(self).concurrent(consumer.as_mut(), route.concurrency).await,
            }
        };
        consumer.close().await;
        result
    }

    /// A free slot of `slots`, then the next message, for the unordered loops (single messages
    /// and batches); `None` once the worker is stopping. The stop is polled first in both waits,
    /// so that a stopping worker takes no further message.
    async fn slot_and_message(
        &self,
        slots: &Arc<Semaphore>,
        consumer: &mut dyn Consumer,
    ) -> Option<(OwnedSemaphorePermit, Result<Message, String>)> {
        let permit = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return None,
            p = slots.clone().acquire_owned() => p.expect("never closed"),
        };
        let message = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return None,
            m = consumer.next() => m,
        };
        Some((permit, next(message)))
    }

    /// Unordered: up to `concurrency` messages at once, each in a task of its own.
    async fn concurrent(self: Arc<Self>, consumer: &mut dyn Consumer, concurrency: usize) -> Result<(), String> {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut inflight: JoinSet<Result<Settled, BrokerError>> = JoinSet::new();
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
            let Some((permit, message)) = self.slot_and_message(&slots, consumer).await else { break };
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let w = self.clone();
            // Boxed: the task then moves a pointer, not the several KiB of an event's future
            // (spawning copied it about seven times, 3k instructions per event under callgrind).
            inflight.spawn(
                Box::pin(async move {
                    let out = w.handle(message, None, None).await;
                    drop(permit);
                    out
                })
                .in_current_span(),
            );
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = flatten(done) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// One message, from the broker to settled; its ack left in `started` when given, else
    /// awaited. `ready`: its pipeline, already run (`Worker::prepare_ahead`); used when the
    /// config and route it ran under are still the live ones, else run again.
    async fn handle(
        &self,
        message: Message,
        started: Option<&StartedAcks>,
        ready: Option<Ready>,
    ) -> Result<Settled, BrokerError> {
        let live = self.shared.live();
        let route = self.route.load_full();
        let ready = ready.filter(|r| Arc::ptr_eq(&r.live, &live) && Arc::ptr_eq(&r.route, &route));
        let settle = Settle {
            broker: self.broker.as_ref(),
            route: &route,
            message: &message,
            meter: &self.meter,
            stop: &self.stop,
            started,
        };
        if let Some(rest) = settle.early() {
            // Not counted as consumed: the event has not come back for its attempt yet.
            return settle.park_again(rest).await;
        }
        if let Some(held) = self.hold_scheduled(&settle, &live.snapshot, &route).await {
            return held;
        }
        self.meter.consumed();
        let _busy = self.meter.in_flight();
        let dispatch = Dispatch {
            worker: self,
            snap: &live.snapshot,
            client: &live.client,
            route: &route,
            message: &message,
            attempt: settle.attempt(),
            // The producer's trace context: the message header (AMQP producers and the ingest
            // API) wins over the event's `traceparent` extension.
            header_tp: message.headers.str(H_TRACEPARENT).and_then(telemetry::checked_traceparent),
            settle,
            ready: ready.map(|r| r.prepared),
        };
        dispatch.run().await
    }
}

/// Whether the ingest API validated the event of `message` under this config already (its
/// mark), so that it is not validated again.
fn validated(snap: &Snapshot, message: &Message) -> bool {
    message.headers.str(H_VALIDATED).is_some_and(|m| is_validated_mark(m, &snap.revision))
}

/// The pipeline (decode, validate, filter, transform, render) of `body` on `route`: scripted
/// routes on the script pool once their scripts outrun an async worker's allowance.
async fn pipeline(
    snap: &Arc<Snapshot>,
    route: &Arc<Route>,
    body: bytes::Bytes,
    validated: bool,
) -> Result<Prepared, Rejection> {
    snap.prepare(route, body, validated, || metrics::schema_validated(metrics::ValidatedAt::Pipeline)).await
}

fn next(m: Option<Result<Message, BrokerError>>) -> Result<Message, String> {
    match m {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(format!("consumer failed: {e}")),
        None => Err("consumer closed by the broker".into()),
    }
}

fn flatten(r: Result<Result<Settled, BrokerError>, tokio::task::JoinError>) -> Result<Settled, String> {
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("delivery task failed: {e}")),
    }
}

/// One message's delivery (svix's `DispatchContext`): the config, client and route it read when
/// it started (a reload applies to the messages that start after it), and its settlement.
struct Dispatch<'a> {
    worker: &'a Worker,
    snap: &'a Arc<Snapshot>,
    client: &'a WebhookClient,
    route: &'a Arc<Route>,
    message: &'a Message,
    /// The attempt it comes for (1, or the next after a park).
    attempt: u32,
    header_tp: Option<&'a str>,
    settle: Settle<'a>,
    /// Its pipeline's result, when it ran ahead under the same config and route.
    ready: Option<Result<Prepared, Rejection>>,
}

impl Dispatch<'_> {
    async fn run(mut self) -> Result<Settled, BrokerError> {
        // The pipeline runs before the span is made, so that the event's own `traceparent` can
        // still become the span's parent.
        let prepared = match self.ready.take() {
            Some(prepared) => prepared,
            None => {
                pipeline(self.snap, self.route, self.message.body.clone(), validated(self.snap, self.message)).await
            }
        };
        match prepared {
            // The event span up front for traces, debug lines and a gate (which logs); else
            // only once an attempt fails, for the lines that report it (`deliver`).
            Ok(Prepared::Deliver(payload)) if self.route.gated() || telemetry::event_span_up_front() => {
                self.deliver(&payload, false).instrument(self.event_span(&payload)).await
            }
            Ok(Prepared::Deliver(payload)) => self.deliver(&payload, true).await,
            Ok(Prepared::Filtered) => {
                self.worker.meter.filtered();
                let ack = async {
                    debug!("filtered out");
                    self.settle.ack().await
                };
                if telemetry::event_span_up_front() {
                    ack.instrument(telemetry::event_span(&self.route.name, self.header_tp)).await
                } else {
                    ack.await
                }
            }
            Err(rejection) => self.refuse(rejection).await,
        }
    }

    /// The span of a decoded event: its parent the first valid of the message's and the event's
    /// `traceparent`.
    fn event_span(&self, p: &Payload) -> tracing::Span {
        let traceparents = [self.header_tp, p.traceparent.as_deref()];
        telemetry::decoded_event_span(&self.route.name, traceparents, &p.event_id, &p.event_type)
    }

    /// The attempts of one event, inside its span, or, when `late_span`, making the span only
    /// for a failed attempt's report and settlement (an ungated route without traces or debug
    /// lines). On a gated route ([`Route::gated`]) each attempt asks the route's [`Gate`] first
    /// (which may hold the event without an attempt) and tells it the result.
    async fn deliver(&self, payload: &Payload, late_span: bool) -> Result<Settled, BrokerError> {
        let sequence = self.worker.shared.sequencer.of(payload);
        // With traces off, every attempt sends the producer's traceparent, or one made once for
        // this event, so that all attempts share a trace.
        let incoming: Cow<'_, str> =
            match self.header_tp.or_else(|| payload.traceparent.as_deref().and_then(telemetry::checked_traceparent)) {
                Some(tp) => Cow::Borrowed(tp),
                None => Cow::Owned(telemetry::new_traceparent()),
            };
        let keep = self.snap.limits.response_body_bytes;
        let gate = self.route.gated().then_some(&self.worker.gate);
        let began = gate.map(|_| Instant::now());
        let mut number = self.attempt;
        loop {
            let pass = match gate {
                None => None,
                Some(gate) => match gate.admit(self.route, &self.worker.stop).await {
                    Admission::Go(pass) => Some(pass),
                    Admission::Stopped => return Ok(Settled::Abandoned),
                    Admission::Hold { wait, .. } if self.route.ordered => {
                        match self.hold_in_place(wait, began.unwrap_or_else(Instant::now)).await {
                            Settled::Again => continue,
                            settled => return Ok(settled),
                        }
                    }
                    Admission::Hold { wait, .. } => return self.settle.hold(number, wait).await,
                },
            };
            // Numbered on across replays; the retry budget (`number`) counts from the replay.
            let shown = self.settle.attempts_before() + number;
            let attempt = Attempt {
                route: self.route,
                payload,
                sequence: &sequence,
                number: shown,
                traceparent: &incoming,
                extra: &[],
            };
            // The headers sent go into the delivery log with the body, where the route keeps
            // bodies: rendering and storing them costs about 4,500 instructions per attempt
            // (docs/operations.md, "Delivery log and store"), too much to pay on every route.
            let (result, headers) = if self.route.log_payload && self.worker.shared.log.is_some() {
                let (result, headers) = attempt.send_logged(self.client, keep).await;
                (result, Some(headers))
            } else {
                (attempt.send(self.client, keep).await, None)
            };
            let jitter = fastrand::f64();
            let mut verdict = verdict::decide(&result, &self.route.retry, number, self.route.ordered, jitter);
            if let (Some(gate), Some(pass)) = (gate, pass) {
                let recorded = gate.record(self.route, pass, &result, number, verdict, jitter);
                verdict = recorded.verdict;
                if let (Some(since), Some(cb)) = (recorded.disable, self.route.circuit_breaker) {
                    let after = cb.disable_after.unwrap_or_default();
                    warn!(?after, "the endpoint has failed continuously for disable_after: disabling the subscription");
                    self.worker.shared.disable(self.route, DisableReason::Failing { since, after });
                }
            }
            let settled = if late_span && result.failure().is_some() {
                let span = self.event_span(payload);
                span.in_scope(|| self.report(payload, shown, &result, headers, verdict));
                self.settle.verdict(verdict, &result, number).instrument(span).await?
            } else {
                self.report(payload, shown, &result, headers, verdict);
                self.settle.verdict(verdict, &result, number).await?
            };
            match settled {
                Settled::Again => number += 1,
                settled => return Ok(settled),
            }
        }
    }

    /// An ordered route's event that may not be attempted for `wait`: held in place, later
    /// events behind it. `Again` to ask the gate again; `Abandoned` when the route stops;
    /// `HandBack` when, on RabbitMQ, the delivery (taken at `began`, or earlier) would go
    /// unacked past 5/6 of `[broker] consumer_timeout`, after which the broker would close the
    /// channel itself.
    async fn hold_in_place(&self, wait: Duration, began: Instant) -> Settled {
        let limit = (self.snap.broker_kind == BrokerKind::Rabbitmq)
            .then(|| began + self.snap.broker.consumer_timeout.0.mul_f64(5.0 / 6.0));
        let until = Instant::now() + wait;
        let (until, hand_back) = match limit {
            Some(limit) if limit < until => (limit, true),
            _ => (until, false),
        };
        tokio::select! {
            _ = self.worker.stop.cancelled() => Settled::Abandoned,
            _ = tokio::time::sleep_until(until) => if hand_back { Settled::HandBack } else { Settled::Again },
        }
    }

    /// What one attempt tells the delivery log, the metrics, the log and, for a `410 Gone` on
    /// an API-managed route, the subscriptions.
    fn report(
        &self,
        payload: &Payload,
        attempt: u32,
        result: &AttemptResult,
        request_headers: Option<String>,
        verdict: Verdict,
    ) {
        let (route, snap, meter) = (self.route, self.snap, &self.worker.meter);
        let (status, ms) = (result.status(), result.duration().as_millis() as u64);
        let error = result.failure().map(|_| result.error());
        if let Some(log) = &self.worker.shared.log {
            log.record(LoggedAttempt {
                route: route.name.clone(),
                event_id: payload.event_id.clone(),
                event_type: payload.event_type.clone(),
                attempt,
                outcome: match verdict {
                    Verdict::Delivered => Outcome::Delivered,
                    Verdict::RetryInPlace(_) | Verdict::Park(_) => Outcome::Retrying,
                    Verdict::DeadLetter(_) => Outcome::Dead,
                },
                status,
                duration_ms: ms,
                response_body: result.response().map(|r| r.body.clone()),
                request_headers,
                error: error.clone(),
                payload: route.log_payload.then(|| payload.body.to_vec()),
                event: route.log_payload.then(|| self.message.body.to_vec()),
                config_version: snap.version,
                config_revision: snap.revision.clone(),
                at_ms: now_ms() as i64,
            });
        }
        let (Some(failure), Some(error)) = (result.failure(), error) else {
            meter.delivered(result.duration(), payload.time.and_then(metrics::lag));
            debug!(revision = %snap.revision, attempt, status, ms, "delivered");
            return;
        };
        meter.attempt_failed(failure);
        match verdict {
            Verdict::Delivered => {}
            Verdict::RetryInPlace(delay) | Verdict::Park(delay) => {
                warn!(revision = %snap.revision, attempt, status, reason = failure.as_str(), error = %error, retry_in = ?delay, "delivery failed; will retry");
            }
            Verdict::DeadLetter(reason) => {
                warn!(revision = %snap.revision, attempt, status, reason = reason.as_str(), failure = failure.as_str(), error = %error, "delivery failed; dead-lettering");
                if reason == Reason::Gone {
                    self.worker.shared.disable(route, DisableReason::Gone { event_id: payload.event_id.clone() });
                }
            }
        }
    }
}
