//! An ordered route without an `order_key`: one message at a time, in delivery order, each
//! settled (2xx, durable dead letter, parked) before the next is taken, retries in place, so
//! that later events wait.
//!
//! # Pipelined acks
//! A settled message's ack is started, not waited for ([`StartedAcks`]): the next message,
//! already prefetched, starts at once. On RabbitMQ the ack goes to the consumer's window (below);
//! on the embedded broker it takes effect in the engine's memory at once and is committed with
//! others, one transaction for a group of them. What keeps the rules:
//!
//! - An ack is started only once its message's fate is settled: a 2xx, a confirmed dead letter
//!   or park, a filter that dropped it. Order comes from one message at a time, not from the
//!   acks, whose order does not matter to either broker.
//! - Prefetch is the route's `[broker] prefetch` (default 64), well above 1, so that the next
//!   message is already here when one settles; prefetched messages wait, unacked and in order,
//!   behind the one in hand, including one retried in place.
//! - The acks' ends are collected as they come; a failed ack fails the worker, as an awaited one
//!   did (the session reconnects, and the broker gives back what it did not take).
//! - Before the consumer closes (the route stops, a reload, SIGTERM, or a held event is handed
//!   back), every started ack is waited for, and the RabbitMQ consumer's close sends what its
//!   window holds; closing then gives back only the unsettled
//!   messages, the one in hand first, in order (close, never cancel). Nothing settled is
//!   delivered again because of a stop or a reload.
//! - A crash (SIGKILL, a lost connection) may lose acks not yet taken by the broker: those
//!   messages, the last ones settled, come again, before the rest and in order. Duplicates of
//!   the last events, same `webhook-id`; never a lost one.
//!
//! # Acks in groups (RabbitMQ)
//! On RabbitMQ a started ack only marks its message settled in the consumer's window, which
//! sends one `basic.ack` through the last of several settled messages (`multiple`): once a
//! quarter of the prefetch (at most 32) is settled, when nothing else is in hand (the queue ran
//! dry, or the prefetch waits for these acks), 20 ms after a message settled while the next
//! one takes its time (a slow receiver, a retry waiting in place), and before the consumer
//! closes (`broker::amqp::acks`). A crash repeats at most the messages of one group and the
//! one in hand.
//!
//! # The next message prepared ahead
//! While the message in hand is delivered (its request out, the receiver answering, a retry
//! waiting), the next one is taken from the prefetch and its pipeline runs (decode, validate,
//! filter, transform, render: [`Worker::prepare_ahead`]), so that the receiver's time is not
//! lost to it: one at a time, an ordered route otherwise pays the pipeline and the round trip
//! one after the other. That message is neither attempted nor acked before the one in hand
//! settles; it is only out of the prefetch buffer, which the broker cannot tell apart:
//!
//! - stopping, a hand-back or a failure leave it unacked, and closing gives it back after the
//!   one in hand, in order, as any prefetched message;
//! - a reload before its turn makes it run its pipeline again, under the new config (its
//!   attempts read the config when they start, as every message's do);
//! - a message that may wait before its attempt (one parked, one with a `deliverat`) is not
//!   prepared ahead: its pipeline runs in its turn.

use super::{Live, Worker, next, pipeline, schedule, validated};
use crate::broker::{AckFuture, Consumer, H_NOT_BEFORE, Message};
use crate::config::Route;
use crate::delivery::settle::{Settled, StartedAcks};
use crate::pipeline::{Prepared, Rejection};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tracing::info;

impl Worker {
    /// Closes `consumer`, which gives back the event an ordered route held in place (first, in
    /// order), and consumes the queue again.
    pub(super) async fn hand_back(
        &self,
        consumer: Box<dyn Consumer>,
        route: &Route,
    ) -> Result<Box<dyn Consumer>, String> {
        consumer.close().await;
        info!("held event handed back to the queue before the broker's consumer timeout; consuming again");
        let prefetch = route.prefetch(self.shared.snapshot().broker.prefetch);
        self.broker.consume(&route.queue(), prefetch).await.map_err(|e| format!("consuming again failed: {e}"))
    }

    /// Ordered: one message at a time, each settled before the next is taken, acks pipelined.
    /// `Ok(true)` when the message in hand is to be handed back ([`Settled::HandBack`]). On `Ok`,
    /// every ack started has ended, so that the consumer can be closed.
    pub(super) async fn sequential(&self, consumer: &mut dyn Consumer) -> Result<bool, String> {
        let started = StartedAcks::default();
        let mut ends = FuturesUnordered::new();
        // Failed: the session reconnects, and the broker gives back whatever it did not take.
        let hand_back = self.one_by_one(consumer, &started, &mut ends).await?;
        ends.extend(started.take());
        while let Some(done) = ends.next().await {
            done.map_err(|e| e.to_string())?;
        }
        Ok(hand_back)
    }

    async fn one_by_one(
        &self,
        consumer: &mut dyn Consumer,
        started: &StartedAcks,
        ends: &mut FuturesUnordered<AckFuture>,
    ) -> Result<bool, String> {
        // The next message, taken while the one before it was delivered, and its pipeline.
        let mut ahead: Option<Ahead> = None;
        // The consumer failed while a message was in hand: that message settles first.
        let mut failed = None;
        loop {
            let (message, ready) = match ahead.take() {
                // `biased` below: once stopping, no further message is taken, even when one
                // is ready (unbiased, `select!` would pick either and SIGTERM could deliver the
                // whole queue). One taken ahead stays unacked, and closing gives it back.
                Some(_) if self.stop.is_cancelled() => return Ok(false),
                Some(Ahead { message, pipeline: AheadPipeline::Running(running) }) => (message, Some(running.await)),
                Some(Ahead { message, pipeline: AheadPipeline::Done(ready) }) => (message, Some(ready)),
                Some(Ahead { message, pipeline: AheadPipeline::InTurn }) => (message, None),
                None => {
                    tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return Ok(false),
                        Some(done) = ends.next(), if !ends.is_empty() => {
                            done.map_err(|e| e.to_string())?;
                            continue;
                        }
                        m = consumer.next() => (next(m)?, None),
                    }
                }
            };
            // A panic fails this worker like a failed consumer (the session then reconnects),
            // as it fails a message's task on an unordered route.
            let handling = AssertUnwindSafe(self.handle(message, Some(started), ready)).catch_unwind();
            let mut handling = std::pin::pin!(handling);
            // While it is delivered, the next message is taken (it is prefetched already) and
            // its pipeline runs: the receiver's time is not lost to it. It is neither attempted
            // nor acked before this one settles.
            let settled = loop {
                let taking = ahead.is_none() && failed.is_none() && !self.stop.is_cancelled();
                let running = match ahead.as_mut().map(|a| &mut a.pipeline) {
                    Some(AheadPipeline::Running(running)) => Some(running),
                    _ => None,
                };
                tokio::select! {
                    biased;
                    settled = &mut handling => break settled,
                    ready = async { running.expect("checked").await }, if running.is_some() => {
                        if let Some(a) = ahead.as_mut() {
                            a.pipeline = AheadPipeline::Done(ready);
                        }
                    }
                    m = consumer.next(), if taking => match next(m) {
                        Ok(message) => {
                            let pipeline = match self.prepare_ahead(&message) {
                                Some(running) => AheadPipeline::Running(running),
                                None => AheadPipeline::InTurn,
                            };
                            ahead = Some(Ahead { message, pipeline });
                        }
                        Err(e) => failed = Some(e),
                    },
                }
            };
            ends.extend(started.take());
            match settled {
                Ok(Ok(Settled::Abandoned)) => return Ok(false),
                Ok(Ok(Settled::HandBack)) => return Ok(true),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("delivery task failed: it panicked".into()),
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
}

impl Worker {
    /// The pipeline of `message`, to run ahead of its turn while the message before it is
    /// delivered, under the config and route live now: `None` for a message that may wait
    /// before its attempt (parked, or with a `deliverat`), whose pipeline runs in its turn.
    fn prepare_ahead(&self, message: &Message) -> Option<BoxFuture<'static, Ready>> {
        if message.headers.u64(H_NOT_BEFORE).is_some() || schedule::deliver_at(&message.body).is_some() {
            return None;
        }
        let (live, route) = (self.shared.live(), self.route.load_full());
        let validated = validated(&live.snapshot, message);
        let body = message.body.clone();
        Some(Box::pin(async move {
            let prepared = pipeline(&live.snapshot, &route, body, validated).await;
            Ready { live, route, prepared }
        }))
    }
}

/// A message's pipeline, run ahead of its turn ([`Worker::prepare_ahead`]): the config and
/// client and the route it ran under, and what it gave.
pub(super) struct Ready {
    pub(super) live: Arc<Live>,
    pub(super) route: Arc<Route>,
    pub(super) prepared: Result<Prepared, Rejection>,
}

/// The message after the one in hand, taken while that one was delivered, and its pipeline.
struct Ahead {
    message: Message,
    pipeline: AheadPipeline,
}

/// Where the pipeline of the message taken ahead is ([`Worker::prepare_ahead`]).
enum AheadPipeline {
    /// Running, while the message in hand is delivered.
    Running(BoxFuture<'static, Ready>),
    /// Done.
    Done(Ready),
    /// Not run ahead: it runs in its turn (a message that may wait before its attempt).
    InTurn,
}
