//! Per-key lanes: an ordered route with an `order_key` ([`OrderKey`]). The route's
//! single-active consumer feeds the messages to one lane per
//! key; a lane delivers its key's events one at a time, each settled (2xx, durable dead letter,
//! or parked) before the key's next starts, and retries in place, so that a failing key holds
//! only its own events. Up to `concurrency` lanes run at once; keys waiting for a slot take
//! turns, first come first served.
//!
//! Stopping takes no new message and lets the lanes settle what they hold (a retry in place is
//! abandoned unacked); closing the consumer then gives back every unacked message in queue
//! order, which keeps each key's order for the next consumer. A lane whose event must be handed
//! back (held in place as long as RabbitMQ allows, [`Settled::HandBack`]) stops every lane of
//! this round: their unfinished events go back with it, in order, and the worker consumes again.
//!
//! # Why lanes
//! The queue keeps one single-active consumer, on both brokers, and the lanes live in its
//! process. Order through a consumer failover is what the single-active consumer already gives:
//! when the active replica goes, the broker hands every unacked message to the next one, in
//! queue order, so within a key the first unfinished event still goes first. Partitions
//! (RabbitMQ's consistent-hash exchange into N queues, one consumer each) would need a failover
//! per partition, a partition count that a config change cannot alter without reshuffling keys
//! (breaking order while both layouts drain), and one stuck key would still block its whole
//! partition. Lanes give every key its own line, follow a reload, and run the same on the
//! embedded broker.
//!
//! - Acks: a key's event is acked only after its own 2xx or durable dead letter, so acks arrive
//!   out of queue order across keys; each acks one message (never `multiple = true`, which would
//!   ack another key's unfinished events).
//! - Prefetch (at least `concurrency`, [`crate::config::Route::prefetch`]) bounds how far past a
//!   stuck key the others go: a key retrying in place keeps its events unacked, and once they
//!   fill the window no new message reaches the other keys (docs/delivery-shapes.md).
//! - `hookrelay-sequence` grows per key: a lane starts a key's event only after the previous
//!   one settled, and the router's sequence is a clock that never goes back.
//! - One replica delivers the route; the others stand by as waiting consumers.

use super::{Worker, next};
use crate::broker::{BrokerError, Consumer, Message};
use crate::delivery::policy::OrderKey;
use crate::delivery::settle::Settled;
use crate::metrics::LanesMeter;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::task::JoinSet;
use tracing::Instrument;

/// The messages of the keys not running now, and which keys take the next free slot.
#[derive(Default)]
struct Waiting {
    /// Per key, its messages not started yet, in queue order.
    messages: HashMap<String, VecDeque<Message>>,
    /// Keys with waiting messages and no running lane, in the order they became ready.
    ready: VecDeque<String>,
    /// Keys with a lane running now.
    running: HashSet<String>,
}

impl Waiting {
    fn push(&mut self, key: String, message: Message) {
        let queued = self.messages.entry(key.clone()).or_default();
        queued.push_back(message);
        if queued.len() == 1 && !self.running.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The next key to run and its next message, when a slot is free.
    fn start(&mut self, slots: usize) -> Option<(String, Message)> {
        if self.running.len() >= slots {
            return None;
        }
        let key = self.ready.pop_front()?;
        let queued = self.messages.get_mut(&key).expect("a ready key has messages");
        let message = queued.pop_front().expect("a ready key has messages");
        if queued.is_empty() {
            self.messages.remove(&key);
        }
        self.running.insert(key.clone());
        Some((key, message))
    }

    /// `key`'s lane settled its message: it waits for a slot again if it has more.
    fn done(&mut self, key: String) {
        self.running.remove(&key);
        if self.messages.contains_key(&key) {
            self.ready.push_back(key);
        }
    }
}

type Lane = (String, Result<Settled, BrokerError>);

/// A lane's end: its key and how its message settled, or why it failed (a panic fails the
/// round, as it fails a message's task on an unordered route).
fn ended(done: Result<Lane, tokio::task::JoinError>) -> Result<(String, Settled), String> {
    match done {
        Ok((k, Ok(settled))) => Ok((k, settled)),
        Ok((_, Err(e))) => Err(e.to_string()),
        Err(e) => Err(format!("delivery task failed: {e}")),
    }
}

impl Worker {
    /// One round of lanes on `consumer`, until stopped (`Ok(false)`), a lane's event is to be
    /// handed back (`Ok(true)`), or the consumer or a lane fails.
    pub(super) async fn lanes(
        &self,
        consumer: &mut dyn Consumer,
        key: &OrderKey,
        concurrency: usize,
    ) -> Result<bool, String> {
        // The lanes of this round stop with the route, or when one of them hands back.
        let round = Arc::new(Worker {
            shared: self.shared.clone(),
            broker: self.broker.clone(),
            route: self.route.clone(),
            stop: self.stop.child_token(),
            meter: self.meter.clone(),
            gate: self.gate.clone(),
        });
        let meter = LanesMeter::new(&self.route.load().name);
        let mut waiting = Waiting::default();
        let mut lanes: JoinSet<Lane> = JoinSet::new();
        let mut result = Ok(false);
        loop {
            while let Some((k, message)) = waiting.start(concurrency) {
                let w = round.clone();
                lanes.spawn(
                    async move {
                        let out = w.handle(message, None, None).await;
                        (k, out)
                    }
                    .in_current_span(),
                );
            }
            meter.in_use(waiting.running.len());
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                Some(done) = lanes.join_next(), if !lanes.is_empty() => {
                    match ended(done) {
                        Ok((_, Settled::HandBack)) => {
                            result = Ok(true);
                            break;
                        }
                        Ok((_, Settled::Abandoned)) => break,
                        Ok((k, _)) => waiting.done(k),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                m = consumer.next() => match next(m) {
                    Ok(m) => waiting.push(key.of(&m.body), m),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
            }
        }
        // Whatever ended the round ends every lane of it: what they hold goes back unacked,
        // in order, when the consumer closes.
        round.stop.cancel();
        while let Some(done) = lanes.join_next().await {
            if let Err(e) = ended(done) {
                result = result.and(Err(e));
            }
        }
        meter.in_use(0);
        result
    }
}
