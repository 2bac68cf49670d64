//! Batches (`[batch]`, unordered routes): the worker gathers up to `max_events` messages, or
//! what has arrived `max_wait` after the first, and delivers them in one request.
//!
//! - Each message goes through its own steps first, as alone: back early from a wait queue
//!   (parked again), a `deliverat` ahead (held), the pipeline (filtered: acked; refused:
//!   dead-lettered). What is left is the batch, in the order the queue gave it.
//! - The body is a JSON array whose elements are exactly the bodies unbatched deliveries would
//!   send, in that order; one signature covers the whole body. `webhook-id` is derived from the
//!   event ids (`batch_` and 32 hex digits of their SHA-256), so it is the same on every attempt
//!   of the same batch; `hookrelay-batch-size` is the event count and `hookrelay-event-ids` the
//!   ids, space-separated (an id has no space).
//! - A 2xx acks every event of the batch. A retryable failure retries the batch as a whole, in
//!   place (its messages stay unacked, as an ordered route's retry does, so that a retry sends
//!   the same events under the same `webhook-id`); once attempts are exhausted, or on a
//!   permanent failure, each event is dead-lettered with the response. Nothing is acked before
//!   that.
//! - Up to `concurrency` batches are in flight at once; the route's circuit breaker and rate
//!   limit see one attempt per batch request (a held batch parks each of its events).

use super::{Dispatch, Worker, next};
use crate::broker::{BrokerError, Consumer, H_TRACEPARENT, Message};
use crate::config::{Route, Snapshot};
use crate::delivery::attempt::Attempt;
use crate::delivery::gate::Admission;
use crate::delivery::http::client::WebhookClient;
use crate::delivery::policy::Batch;
use crate::delivery::settle::{Settle, Settled};
use crate::delivery::verdict::{self, Verdict};
use crate::metrics::{self, BatchMeter};
use crate::pipeline::schema::{H_VALIDATED, is_validated_mark};
use crate::pipeline::{BodyFormat, Payload, Prepared};
use crate::telemetry;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, warn};

/// `hookrelay-batch-size`: the events in the batch.
static BATCH_SIZE: HeaderName = HeaderName::from_static("hookrelay-batch-size");
/// `hookrelay-event-ids`: the ids of the batch's events, space-separated, in body order.
static EVENT_IDS: HeaderName = HeaderName::from_static("hookrelay-event-ids");

/// The `webhook-id` of a batch of these event ids: the same for the same events in the same
/// order, whatever the attempt.
fn batch_id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    let digest = hex::encode(h.finalize());
    format!("batch_{}", &digest[..32])
}

/// The body of a batch: the JSON array of `bodies`, in order, each as it is.
fn array_body<'a>(bodies: impl IntoIterator<Item = &'a [u8]> + Clone) -> Bytes {
    let len: usize = bodies.clone().into_iter().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 2);
    out.push(b'[');
    for (i, b) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.push(b']');
    Bytes::from(out)
}

impl Worker {
    /// Unordered with `[batch]`: gathers batches and delivers up to `concurrency` at once.
    pub(super) async fn batched(
        self: Arc<Self>,
        consumer: &mut dyn Consumer,
        batch: Batch,
        concurrency: usize,
    ) -> Result<(), String> {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut inflight: JoinSet<Result<(), BrokerError>> = JoinSet::new();
        let mut result = Ok(());
        loop {
            while let Some(done) = inflight.try_join_next() {
                if let Err(e) = ended(done) {
                    result = Err(e);
                }
            }
            if result.is_err() {
                break;
            }
            let Some((permit, first)) = self.slot_and_message(&slots, consumer).await else { break };
            let mut messages = match first {
                Ok(m) => vec![m],
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let deadline = Instant::now() + batch.max_wait;
            while messages.len() < batch.max_events {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    m = consumer.next() => match next(m) {
                        Ok(m) => messages.push(m),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    },
                }
            }
            let w = self.clone();
            inflight.spawn(
                async move {
                    let out = w.deliver_batch(messages).await;
                    drop(permit);
                    out
                }
                .in_current_span(),
            );
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = ended(done) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// One gathered batch, from the broker to settled.
    async fn deliver_batch(&self, messages: Vec<Message>) -> Result<(), BrokerError> {
        let live = self.shared.live();
        let route = self.route.load_full();
        let (snap, client) = (&live.snapshot, &live.client);
        let settle_of = |message| settle(self, &route, message);
        let dispatch_of = |message| dispatch(self, snap, client, &route, message);
        // Each message's own steps (on the script pool when the route runs scripts); what is
        // left makes the batch.
        let mut ready: Vec<(&Message, Payload)> = Vec::with_capacity(messages.len());
        for message in &messages {
            let settle = settle_of(message);
            if let Some(rest) = settle.early() {
                settle.park_again(rest).await?;
                continue;
            }
            if let Some(held) = self.hold_scheduled(&settle, snap, &route).await {
                held?;
                continue;
            }
            self.meter.consumed();
            let validated = message.headers.str(H_VALIDATED).is_some_and(|m| is_validated_mark(m, &snap.revision));
            let counted = || metrics::schema_validated(metrics::ValidatedAt::Pipeline);
            match snap.prepare(&route, message.body.clone(), validated, counted).await {
                Ok(Prepared::Deliver(payload)) => ready.push((message, payload)),
                Ok(Prepared::Filtered) => {
                    self.meter.filtered();
                    settle.ack().await?;
                }
                Err(rejection) => {
                    dispatch_of(message).refuse(rejection).await?;
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let _busy: Vec<_> = ready.iter().map(|_| self.meter.in_flight()).collect();
        let id = batch_id(ready.iter().map(|(_, p)| p.event_id.as_str()));
        let ids: Vec<&str> = ready.iter().map(|(_, p)| p.event_id.as_str()).collect();
        let body = Payload {
            event_id: id.clone(),
            event_type: "batch".into(),
            body: array_body(ready.iter().map(|(_, p)| p.body.as_ref())),
            content_type: match route.steps.format {
                BodyFormat::Cloudevents => "application/cloudevents-batch+json",
                _ => "application/json",
            },
            sequence: None,
            traceparent: None,
            time: None,
        };
        let extra = [
            (BATCH_SIZE.clone(), HeaderValue::from(ready.len())),
            (EVENT_IDS.clone(), HeaderValue::from_str(&ids.join(" ")).unwrap_or(HeaderValue::from_static(""))),
        ];
        let sequence = self.shared.sequencer.next().to_string();
        let traceparent = telemetry::new_traceparent();
        let sizes = BatchMeter::new(&route.name);
        let keep = snap.limits.response_body_bytes;
        let gate = route.gated().then_some(&self.gate);
        // Every event of a batch came for the same attempt count in practice (batches retry in
        // place); the first one's is the batch's.
        let mut number = settle_of(ready[0].0).attempt();
        let span = tracing::info_span!("batch", route = %route.name, webhook_id = %id, events = ready.len());
        async {
            loop {
                let pass = match gate {
                    None => None,
                    Some(gate) => match gate.admit(&route, &self.stop).await {
                        Admission::Go(pass) => Some(pass),
                        Admission::Stopped => return Ok(()),
                        Admission::Hold { wait, .. } => {
                            for (message, _) in &ready {
                                settle_of(message).hold(number, wait).await?;
                            }
                            return Ok(());
                        }
                    },
                };
                let attempt = Attempt {
                    route: &route,
                    payload: &body,
                    sequence: &sequence,
                    number,
                    traceparent: &traceparent,
                    extra: &extra,
                };
                sizes.sent(ready.len());
                let result = attempt.send(client, keep).await;
                let jitter = fastrand::f64();
                // Retried in place, as an ordered route's event is: the batch stays whole.
                let mut verdict = verdict::decide(&result, &route.retry, number, true, jitter);
                if let (Some(gate), Some(pass)) = (gate, pass) {
                    verdict = gate.record(&route, pass, &result, number, verdict, jitter).verdict;
                }
                for (message, payload) in &ready {
                    dispatch_of(message).report(payload, number, &result, None, verdict);
                }
                match verdict {
                    Verdict::RetryInPlace(delay) | Verdict::Park(delay) => {
                        for _ in &ready {
                            self.meter.retried();
                        }
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => number += 1,
                        }
                    }
                    Verdict::Delivered | Verdict::DeadLetter(_) => {
                        if let Verdict::DeadLetter(reason) = verdict {
                            warn!(
                                reason = reason.as_str(),
                                events = ready.len(),
                                "batch failed; dead-lettering each event"
                            );
                        } else {
                            debug!(events = ready.len(), "batch delivered");
                        }
                        for (message, _) in &ready {
                            let settled = settle_of(message).verdict(verdict, &result, number).await?;
                            debug_assert_eq!(settled, Settled::Done);
                        }
                        return Ok(());
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn settle<'a>(w: &'a Worker, route: &'a Route, message: &'a Message) -> Settle<'a> {
    Settle { broker: w.broker.as_ref(), route, message, meter: &w.meter, stop: &w.stop, started: None }
}

fn dispatch<'a>(
    worker: &'a Worker,
    snap: &'a Arc<Snapshot>,
    client: &'a WebhookClient,
    route: &'a Arc<Route>,
    message: &'a Message,
) -> Dispatch<'a> {
    let settle = settle(worker, route, message);
    Dispatch {
        worker,
        snap,
        client,
        route,
        message,
        attempt: settle.attempt(),
        header_tp: message.headers.str(H_TRACEPARENT).and_then(telemetry::checked_traceparent),
        settle,
        ready: None,
    }
}

fn ended(done: Result<Result<(), BrokerError>, tokio::task::JoinError>) -> Result<(), String> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("delivery task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_the_array_of_the_bodies_and_its_id_follows_its_events() {
        let body = array_body([&b"{\"a\":1}"[..], b"[2]", b"\"x\""]);
        assert_eq!(&body[..], b"[{\"a\":1},[2],\"x\"]");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(3));
        let id = batch_id(["e-1", "e-2"]);
        assert_eq!(id, batch_id(["e-1", "e-2"]), "stable");
        assert_ne!(id, batch_id(["e-2", "e-1"]));
        assert_ne!(batch_id(["e-1e", "-2"]), batch_id(["e-1", "e-2"]));
        assert!(id.starts_with("batch_") && id.len() == 38, "{id}");
    }
}
