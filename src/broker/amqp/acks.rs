//! A RabbitMQ consumer's acks, sent in groups: one `basic.ack` frame for many settled messages.
//!
//! Each `basic.ack` is a frame that lapin hands from task to task and writes with a system call
//! of its own, and that the broker then processes: one per event was about a fifth of the
//! router's CPU, and a good part of the broker's. So acking a message ([`AmqpAcker`]) only marks
//! it settled in its consumer's [`AckWindow`], which holds every message the consumer handed out
//! and has not acked, in delivery order, and returns at once; the window's task sends the acks:
//!
//! - one `basic.ack` with `multiple` through the last message of the settled prefix (the
//!   messages handed out first, all settled), which acks them all;
//! - once that prefix holds a quarter of the prefetch (at most [`ACK_EVERY`]); once every
//!   message handed out is settled (the route is idle, or the prefetch waits for these acks);
//!   [`ACK_LINGER`] after a message settled and was not acked; and before the consumer closes;
//! - a message settled behind one still in hand (unordered routes and lanes settle out of
//!   order: one slow receiver, one retry waiting in place), at the linger or at the close, is
//!   acked on its own, so that a slow delivery holds no other message's ack (nor the prefetch
//!   it takes) for longer than the linger;
//! - each round of acks ends before the next starts: lapin sends every ack from a task of its
//!   own, so two may go out in either order, and the broker refuses an ack of a message that an
//!   ack through a later one took already (`PRECONDITION_FAILED - unknown delivery tag`, which
//!   closes the channel).
//!
//! What stays true: a message is acked only after the worker settled it (its 2xx, its confirmed
//! park or dead letter, its filter); closing the consumer (a stop, a reload, a hand-back) sends
//! every settled message's ack, then waits [`CLOSE_GRACE`] for the queue to apply them, before
//! the channel closes, so a stop repeats nothing; a crash (SIGKILL, a lost connection) may lose
//! the acks not sent yet, and those messages, settled in the last [`ACK_LINGER`] or the last
//! group, come again: duplicates, never a lost event. A failed ack fails every later one on the
//! consumer (the session reconnects, and the broker gives back whatever it did not take).

use crate::broker::{AckFuture, Acker, BrokerError};
use async_trait::async_trait;
use lapin::options::BasicAckOptions;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most settled messages one `basic.ack` waits for (a quarter of the prefetch, when that is
/// less): one frame, and one write, for this many.
const ACK_EVERY: usize = 32;

/// The longest a settled message's ack waits for others to go with it.
const ACK_LINGER: Duration = Duration::from_millis(20);

/// How long a closing consumer waits after its last acks before its channel closes, for the
/// broker's queue to apply them (see [`AckWindow::run`]).
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The messages a consumer handed out and has not acked, and the task that acks them.
pub(super) struct AckWindow {
    state: Mutex<State>,
    /// Wakes the task: the first message settled (to arm the linger), a full group, every
    /// message settled, closing.
    wake: Notify,
    /// A settled prefix this long is acked at once.
    every: usize,
}

#[derive(Default)]
struct State {
    /// Handed out, not acked yet, in delivery order (delivery tags rise on a channel).
    out: VecDeque<Out>,
    /// How many of `out` are settled.
    settled: usize,
    /// How many of `out`, from its front, are settled.
    prefix: usize,
    /// Since when the oldest settled message of `out` waits for its ack.
    waiting_since: Option<Instant>,
    /// An ack failed: why. Every later ack fails with it.
    failed: Option<String>,
    /// The consumer is closing: ack everything settled, then end.
    closing: bool,
}

struct Out {
    tag: u64,
    acker: lapin::Acker,
    settled: bool,
}

/// One round of acks: through the end of the settled prefix, and each settled message behind
/// a message still in hand.
#[derive(Default)]
struct Round {
    through: Option<lapin::Acker>,
    each: Vec<lapin::Acker>,
}

impl AckWindow {
    /// The window of a consumer whose prefetch is `prefetch`, and its task, which ends once
    /// [`AckWindow::close`] is called.
    pub(super) fn start(prefetch: u16) -> (Arc<Self>, JoinHandle<()>) {
        let window = Arc::new(Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            every: usize::from(prefetch / 4).clamp(1, ACK_EVERY),
        });
        let task = tokio::spawn(window.clone().run());
        (window, task)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer hands out the message `tag`, which `acker` acks.
    pub(super) fn handed_out(&self, tag: u64, acker: lapin::Acker) {
        self.state().out.push_back(Out { tag, acker, settled: false });
    }

    /// Message `tag` is settled: it is acked in the next round.
    fn settle(&self, tag: u64) -> Result<(), BrokerError> {
        let mut s = self.state();
        if let Some(why) = &s.failed {
            return Err(BrokerError::Closed(format!("an earlier ack on this consumer failed: {why}")));
        }
        let Ok(at) = s.out.binary_search_by_key(&tag, |o| o.tag) else { return Ok(()) };
        if std::mem::replace(&mut s.out[at].settled, true) {
            return Ok(());
        }
        s.settled += 1;
        let before = s.prefix;
        while s.out.get(s.prefix).is_some_and(|o| o.settled) {
            s.prefix += 1;
        }
        let first = s.settled == 1;
        if first {
            s.waiting_since = Some(Instant::now());
        }
        let wake = first || (before < self.every && s.prefix >= self.every) || s.settled == s.out.len();
        drop(s);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Acks every settled message, then ends the task; waits for both.
    pub(super) async fn close(&self, task: JoinHandle<()>) {
        self.closing();
        let _ = task.await;
    }

    /// Tells the task to ack every settled message and end, without waiting for it.
    pub(super) fn closing(&self) {
        self.state().closing = true;
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        // When the last acks were sent.
        let mut last_sent: Option<Instant> = None;
        loop {
            let (round, closing) = self.next_round().await;
            let sent = !round.is_empty();
            if let Err(e) = round.send().await {
                let mut s = self.state();
                s.failed = Some(e.to_string());
                return;
            }
            if sent {
                last_sent = Some(Instant::now());
            }
            if closing {
                // A quorum queue applies an ack once its log has committed it, and gives back
                // what a closed channel held when it learns of the close, which can come first:
                // closing at once gave back a few acked messages under load. Whichever round
                // sent the last acks, the channel closes no sooner than the grace after it.
                if let Some(at) = last_sent {
                    tokio::time::sleep_until(at + CLOSE_GRACE).await;
                }
                return;
            }
        }
    }

    /// Waits until acks are due, and takes them: `closing` when the consumer closes and this is
    /// the last round.
    async fn next_round(&self) -> (Round, bool) {
        loop {
            let since = {
                let mut s = self.state();
                if s.closing {
                    return (s.take(true), true);
                }
                if s.prefix >= self.every || (s.settled > 0 && s.settled == s.out.len()) {
                    return (s.take(false), false);
                }
                if s.waiting_since.is_some_and(|t| t.elapsed() >= ACK_LINGER) {
                    return (s.take(true), false);
                }
                s.waiting_since
            };
            match since {
                None => self.wake.notified().await,
                Some(t) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(t + ACK_LINGER) => {}
                    }
                }
            }
        }
    }
}

impl State {
    /// The settled prefix, and with `all` every other settled message too.
    fn take(&mut self, all: bool) -> Round {
        let mut round = Round::default();
        for o in self.out.drain(..self.prefix) {
            round.through = Some(o.acker);
        }
        self.settled -= self.prefix;
        self.prefix = 0;
        if all && self.settled > 0 {
            let each = &mut round.each;
            self.out.retain(|o| {
                if o.settled {
                    each.push(o.acker.clone());
                }
                !o.settled
            });
            self.settled = 0;
        }
        // Those left settled (behind one in hand) wait one more linger at most.
        self.waiting_since = (self.settled > 0).then(Instant::now);
        round
    }
}

impl Round {
    fn is_empty(&self) -> bool {
        self.through.is_none() && self.each.is_empty()
    }

    /// Sends the round's acks and waits until lapin wrote them all.
    async fn send(self) -> Result<(), lapin::Error> {
        if let Some(through) = self.through {
            through.ack(BasicAckOptions { multiple: true }).await?;
        }
        let each = self.each.iter().map(|a| a.ack(BasicAckOptions::default()));
        for done in futures_util::future::join_all(each).await {
            done?;
        }
        Ok(())
    }
}

/// Acks one message of a consumer through its [`AckWindow`].
pub(super) struct AmqpAcker {
    pub(super) window: Arc<AckWindow>,
    pub(super) tag: u64,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.window.settle(self.tag)
    }

    fn start_ack(&self) -> AckFuture {
        Box::pin(std::future::ready(self.window.settle(self.tag)))
    }
}
