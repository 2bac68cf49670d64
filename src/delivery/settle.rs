//! Settling a message: executing a [`Verdict`] against the broker. This is the only code that
//! acks a route message, and it acks only after the message's fate is durable:
//!
//! - delivered (a 2xx) or filtered out: ack;
//! - parked for a later attempt (unordered routes): a confirmed publish into the broker's delay,
//!   with the next attempt number and a not-before time, then ack;
//! - retried in place (ordered routes): no ack; wait, holding the message (later events wait
//!   behind it), and let the worker attempt again; a route that stops meanwhile abandons the
//!   message unacked, and the broker gives it back, in order, when the consumer closes;
//! - dead-lettered: a confirmed publish to the dead-letter queue (the original body, the
//!   producer's headers, the why as `hookrelay-*` headers), then ack. The dead-letter indexer
//!   ([`crate::runtime`]) stores it and acks it on its own queue.
//!
//! - held (an endpoint policy said "not now": the route's circuit is open, its rate limit's next
//!   token is far off): parked like a retry, but for the attempt it came for, so that nothing
//!   counts it ([`Settle::hold`]); on an ordered route the worker holds it in place instead, and
//!   hands it back ([`Settled::HandBack`]) before RabbitMQ's consumer timeout would.
//!
//! A scheduled event (its `deliverat` ahead) is held the same way, before its first attempt
//! (the worker's `schedule` module).
//!
//! Every ack above follows what it settles (the 2xx, the confirmed publish). An ordered route's
//! worker does not wait for it to complete before it takes the next message ([`StartedAcks`]):
//! the ack is started, in order, and its end is collected later. On RabbitMQ every ack goes
//! through its consumer's window, which sends one `basic.ack` for a group of settled messages
//! (`broker::amqp::acks`). Order does not depend on it (one message at a time does that), and a
//! crash before the broker took an ack gives those messages back, to be delivered again: never
//! lost.

use super::verdict::{AttemptResult, Reason, Verdict};
use crate::broker::AckFuture;
use crate::broker::{
    Broker, BrokerError, Destination, H_ATTEMPT, H_ATTEMPTS_BEFORE, H_DEAD_AT, H_DETAILS, H_ERROR, H_LAST_RESPONSE,
    H_LAST_STATUS, H_NOT_BEFORE, H_REASON, H_ROUTE, Headers, Message, now_ms,
};
use crate::config::Route;
use crate::metrics::RouteMeter;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The headers hookrelay and the broker put on a message for their own use: never carried over
/// when a message is parked again or dead-lettered (each sets its own attempt count anew).
pub const INTERNAL_HEADERS: [&str; 3] = [H_ATTEMPT, H_NOT_BEFORE, "x-death"];

/// A message back from a wait queue this much (or less) before its not-before time goes on:
/// timers are not that exact, and a second round trip would cost more than the wait.
const EARLY_SLACK_MS: u64 = 50;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acked: delivered, filtered, parked for a later attempt, or dead-lettered.
    Done,
    /// Not acked: attempt it again now, in place (an ordered route's retry, after its wait).
    Again,
    /// Left unacked because the route is stopping: the broker gives it back on close.
    Abandoned,
    /// Left unacked to be handed back now: an ordered route held it in place (its circuit
    /// open) for as long as RabbitMQ lets a delivery go unacked. The worker closes its
    /// consumer, which gives it back first, in order, and consumes again.
    HandBack,
}

/// What a dead letter says, besides the message itself.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Why.
    pub reason: Reason,
    /// The cause, human-readable.
    pub error: &'a str,
    /// Schema violations and the like.
    pub details: Option<serde_json::Value>,
    /// The last HTTP status.
    pub last_status: Option<u16>,
    /// The start of the last response body.
    pub last_response: Option<&'a str>,
    /// Attempts made.
    pub attempts: u32,
}

/// One message on its way out of a route's worker, with what settling it needs.
pub struct Settle<'a> {
    /// The broker the message came from.
    pub broker: &'a dyn Broker,
    /// The route, as the message's delivery read it.
    pub route: &'a Route,
    /// The message.
    pub message: &'a Message,
    /// The route's metrics.
    pub meter: &'a RouteMeter,
    /// Cancelled when the route stops.
    pub stop: &'a CancellationToken,
    /// Where acks go when the worker does not wait for them; `None`: each ack is awaited.
    pub started: Option<&'a StartedAcks>,
}

/// Acks started ([`Message::start_ack`](crate::broker::Message::start_ack)) that nobody waited
/// for yet: [`Settle::ack`] puts them here when its worker pipelines acks, and the worker takes
/// them ([`StartedAcks::take`]) to learn how they ended, and waits for all of them before it
/// closes its consumer (so that nothing it settled comes back).
#[derive(Default)]
pub struct StartedAcks {
    started: Mutex<Vec<AckFuture>>,
}

impl StartedAcks {
    fn push(&self, ack: AckFuture) {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
    }

    /// The acks started since the last call.
    pub fn take(&self) -> Vec<AckFuture> {
        std::mem::take(&mut *self.started.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Settle<'_> {
    /// The attempt the message comes back for: 1 on its first delivery, then what a park set.
    /// Counted from the replay or API retry that published it, for the retry budget; the
    /// attempts before it are [`Settle::attempts_before`].
    pub fn attempt(&self) -> u32 {
        self.message.headers.u64(H_ATTEMPT).unwrap_or(1).max(1) as u32
    }

    /// Attempts the delivery made before a replay or an API retry published this message again
    /// (0 on a first publish): attempt `n` of the message is the delivery's attempt
    /// `attempts_before() + n`, as the receiver, the delivery log and the dead letter number it.
    pub fn attempts_before(&self) -> u32 {
        self.message.headers.u64(H_ATTEMPTS_BEFORE).unwrap_or(0).min(u64::from(u32::MAX / 2)) as u32
    }

    /// When the message came back from a wait queue before its not-before time (a wait queue
    /// caps its wait at the tier): how much longer it has to wait.
    pub fn early(&self) -> Option<Duration> {
        let not_before = self.message.headers.u64(H_NOT_BEFORE)?;
        let now = now_ms();
        (not_before > now + EARLY_SLACK_MS).then(|| Duration::from_millis(not_before - now))
    }

    /// Parks a message that came back early ([`Settle::early`]) for the rest of its wait, with
    /// the attempt it carries: not an attempt, not a retry.
    pub async fn park_again(&self, rest: Duration) -> Result<Settled, BrokerError> {
        let attempt = self.message.headers.u64(H_ATTEMPT).unwrap_or(1) as u32;
        self.park(attempt, rest).await
    }

    /// Holds the message for `delay` without an attempt (its route's circuit is open, or its
    /// rate limit's next token is far off): parked for `attempt`, the attempt it came for, so
    /// that it counts neither as an attempt nor as a retry, then acked.
    pub async fn hold(&self, attempt: u32, delay: Duration) -> Result<Settled, BrokerError> {
        self.park(attempt, delay).await
    }

    /// Acks: the message was delivered or filtered out (or its fate is durable elsewhere).
    /// With [`Settle::started`], starts the ack and leaves its end to the worker.
    pub async fn ack(&self) -> Result<Settled, BrokerError> {
        match self.started {
            Some(started) => started.push(self.message.start_ack()),
            None => self.message.ack().await?,
        }
        Ok(Settled::Done)
    }

    /// Executes the verdict on attempt `attempt`, whose result was `result`.
    pub async fn verdict(
        &self,
        verdict: Verdict,
        result: &AttemptResult,
        attempt: u32,
    ) -> Result<Settled, BrokerError> {
        match verdict {
            Verdict::Delivered => self.ack().await,
            Verdict::RetryInPlace(delay) => {
                self.meter.retried();
                tokio::select! {
                    _ = self.stop.cancelled() => Ok(Settled::Abandoned),
                    _ = tokio::time::sleep(delay) => Ok(Settled::Again),
                }
            }
            Verdict::Park(delay) => {
                let parked = self.park(attempt + 1, delay).await?;
                self.meter.retried();
                Ok(parked)
            }
            Verdict::DeadLetter(reason) => {
                let error = result.error();
                let response = result.response();
                self.dead_letter(DeadLetter {
                    reason,
                    error: &error,
                    details: None,
                    last_status: response.map(|r| r.status),
                    last_response: response.map(|r| r.body.as_str()),
                    attempts: attempt,
                })
                .await
            }
        }
    }

    /// Parks the message for attempt `next_attempt` after `delay` (a confirmed publish into the
    /// broker's delay, in the route's wait-queue tier for it), then acks it.
    pub async fn park(&self, next_attempt: u32, delay: Duration) -> Result<Settled, BrokerError> {
        let mut headers = forwarded(&self.message.headers);
        headers.set(H_ATTEMPT, next_attempt);
        headers.set(H_NOT_BEFORE, now_ms() + delay.as_millis() as u64);
        let tier = self.route.retry.tier_for(delay);
        self.broker.publish_delayed(&self.route.queue(), tier, &self.message.body, &headers, delay).await?;
        self.ack().await
    }

    /// Stores a dead letter durably (published with a confirm to the dead-letter queue: the
    /// original body untouched, the producer's headers kept, the why added as `hookrelay-*`
    /// headers), then acks the message.
    pub async fn dead_letter(&self, dl: DeadLetter<'_>) -> Result<Settled, BrokerError> {
        let route = self.route.name.as_str();
        let mut h = forwarded(&self.message.headers);
        h.set(H_ROUTE, route);
        h.set(H_REASON, dl.reason.as_str());
        h.set(H_ERROR, truncate(dl.error, 2048));
        if let Some(d) = &dl.details {
            h.set(H_DETAILS, truncate(&d.to_string(), 8192));
        }
        if let Some(s) = dl.last_status {
            h.set(H_LAST_STATUS, s);
        }
        if let Some(b) = dl.last_response {
            h.set(H_LAST_RESPONSE, b);
        }
        // The delivery's attempts in all, replays included.
        h.set(H_ATTEMPT, self.attempts_before() + dl.attempts);
        h.set(H_DEAD_AT, now_ms());
        let id = uuid::Uuid::new_v4().to_string();
        self.broker.publish(Destination::DeadLetters { route }, &self.message.body, &h, Some(&id)).await?;
        self.meter.dead_lettered(dl.reason);
        self.ack().await
    }
}

/// The message's headers without [`INTERNAL_HEADERS`].
fn forwarded(headers: &Headers) -> Headers {
    let mut h = headers.clone();
    for internal in INTERNAL_HEADERS {
        h.remove(internal);
    }
    h
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_headers_are_not_carried_over() {
        let mut h = Headers::default();
        for (k, v) in [(H_ATTEMPT, "3"), (H_NOT_BEFORE, "1"), ("x-death", "[]"), ("traceparent", "00-x"), ("a", "b")] {
            h.set(k, v);
        }
        let kept: Vec<String> = forwarded(&h).0.into_keys().collect();
        assert_eq!(kept, ["a", "traceparent"]);
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
