//! An ordered route without an `order_key`: one message at a time, in delivery order, each
//! settled (2xx, durable dead letter, parked) before the next is taken, retries in place, so
//! that later events wait.
//!
//! # Pipelined acks
//! A settled message's ack is started, not waited for ([`StartedAcks`]): the next message,
//! already prefetched, starts at once. On RabbitMQ the `basic.ack` is queued on the route's
//! channel, in order (AMQP answers nothing to an ack; waiting only waited for lapin's connection
//! task to write it); on the embedded broker the ack takes effect in the engine's memory at once
//! and is committed with others, one transaction for a group of them. What keeps the rules:
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
//!   back), every started ack is waited for; closing then gives back only the unsettled
//!   messages, the one in hand first, in order (close, never cancel). Nothing settled is
//!   delivered again because of a stop or a reload.
//! - A crash (SIGKILL, a lost connection) may lose acks not yet taken by the broker: those
//!   messages, the last ones settled, come again, before the rest and in order. Duplicates of
//!   the last events, same `webhook-id`; never a lost one.

use super::{Worker, next};
use crate::broker::{AckFuture, Consumer};
use crate::config::Route;
use crate::delivery::settle::{Settled, StartedAcks};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
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
        let mut acks = FuturesUnordered::new();
        let out = self.one_by_one(consumer, &started, &mut acks).await;
        acks.extend(started.take());
        // Failed: the session reconnects, and the broker gives back whatever it did not take.
        let hand_back = out?;
        while let Some(done) = acks.next().await {
            done.map_err(|e| e.to_string())?;
        }
        Ok(hand_back)
    }

    async fn one_by_one(
        &self,
        consumer: &mut dyn Consumer,
        started: &StartedAcks,
        acks: &mut FuturesUnordered<AckFuture>,
    ) -> Result<bool, String> {
        loop {
            // `biased`: once stopping, no further message is taken, even when one is ready
            // (unbiased, `select!` would pick either and SIGTERM could deliver the whole queue).
            let message = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(false),
                Some(done) = acks.next(), if !acks.is_empty() => {
                    done.map_err(|e| e.to_string())?;
                    continue;
                }
                m = consumer.next() => next(m)?,
            };
            // A panic fails this worker like a failed consumer (the session then reconnects),
            // as it fails a message's task on an unordered route.
            let settled = AssertUnwindSafe(self.handle(message, Some(started))).catch_unwind().await;
            acks.extend(started.take());
            match settled {
                Ok(Ok(Settled::Abandoned)) => return Ok(false),
                Ok(Ok(Settled::HandBack)) => return Ok(true),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("delivery task failed: it panicked".into()),
            }
        }
    }
}
