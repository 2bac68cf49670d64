//! The embedded broker's engine: one task owns the SQLite connection and every queue's state in
//! memory, and applies what connections ask for in batches, one transaction per batch (group
//! commit). A caller's publish, ack or declaration is answered only after its batch committed.
//!
//! Grouped acks ([`crate::broker::Message::start_ack`], what an ordered route's worker sends
//! without waiting) go further: each takes effect in memory at once (the message leaves its
//! consumer's unacked set, so the consumer's prefetch refills as before), and its row is deleted
//! by the next commit anything else needs (a publish, an ack someone waits for, a refill, a
//! declaration), at the latest [`ACK_LINGER`] after the first of them, or once [`ACK_GROUP`] of
//! them wait. A batch of grouped acks alone commits nothing. Their answers go out after that
//! commit, like everyone's. A crash before it leaves their rows in the file: the next run
//! delivers those messages again (an allowed duplicate; every such ack followed its 2xx or its
//! durable dead letter), it never loses one.
//!
//! What lives where:
//! - on disk: queues (with their `ordered` flag, delivery limit and dead-letter routing key),
//!   bindings, and messages (sequence, queue, visible time, deliveries so far, routing key,
//!   message id, headers, body). The sequence is the publish order and the delivery order.
//! - in memory only: who holds which unacked message. A process that dies takes this with it,
//!   which gives every unacked message back; the durable delivery count tells the next run
//!   which messages were delivered before (`redelivered`) and enforces the delivery limit.
//!
//! Per queue, messages go out in sequence order: first those given back by a closed consumer
//! (`returned`, all below the cursor), then those after the cursor (the highest sequence handed
//! out in this run). A delayed message waits with `visible_at` set; when due it gets a new
//! sequence at the tail of its queue, as a RabbitMQ wait queue dead-letters an expired message to
//! the tail of the route queue. Nothing here loads a queue: every read is bounded by a
//! consumer's free prefetch, through the index on (queue, visible time, sequence).
//!
//! The parts: this file has the requests, the engine's state ([`Writer`]) and its loop (take a
//! batch of requests, handle each, write, commit, then answer); `disk.rs` the file (schema,
//! opening and loading it, the transaction and the reads that take messages); `queues.rs`
//! queues, bindings and consumers (declare, close a consumer, resolve a publish to its queues);
//! `dispatch.rs` what goes out (delayed messages made visible, messages pushed to consumers,
//! dead letters past the delivery limit).

mod checkpoint;
mod disk;
mod dispatch;
mod queues;

use self::disk::{Db, json_list};
use super::Target;
use crate::broker::{BrokerError, Headers, now_ms};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

/// Requests taken into one batch at most.
const MAX_BATCH: usize = 1024;

/// How long a grouped ack waits at most for its commit. In a stream something else commits
/// first: the refill of the acking consumer's prefetch (a read that counts deliveries, once half
/// the prefetch is acked), so a group is about half a prefetch, at any speed; this bounds the
/// wait when the stream stops (and what a stopping worker waits for its last acks).
const ACK_LINGER: Duration = Duration::from_millis(100);

/// Grouped acks that make a commit on their own.
const ACK_GROUP: usize = 256;

/// The answer to one request.
pub(super) type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

/// What a connection asks the engine.
pub(super) enum Request {
    /// Creates a queue (or updates its arguments) and adds bindings.
    Declare {
        queue: String,
        ordered: bool,
        delivery_limit: Option<u32>,
        dead_letter_key: String,
        patterns: Vec<String>,
        reply: Reply<()>,
    },
    /// Removes bindings.
    Unbind { queue: String, patterns: Vec<String>, reply: Reply<()> },
    /// Stores a message in every queue the target resolves to.
    Publish {
        to: Target,
        body: Bytes,
        headers: String,
        message_id: Option<String>,
        delay: Option<Duration>,
        reply: Reply<()>,
    },
    /// Removes a message its consumer holds; `grouped` when its commit may wait for others
    /// (the module docs).
    Ack { consumer: u64, seq: i64, grouped: bool, reply: Reply<()> },
    /// Starts pushing a queue's messages to `out`.
    Consume {
        conn: u64,
        consumer: u64,
        queue: String,
        prefetch: usize,
        out: mpsc::UnboundedSender<Result<Delivered, String>>,
        reply: Reply<()>,
    },
    /// Stops a consumer; its unacked messages go back to the queue.
    CloseConsumer { consumer: u64, reply: Option<Reply<()>> },
    /// Stops every consumer of a connection.
    CloseConnection { conn: u64, reply: Option<Reply<()>> },
    /// Ready messages in a queue.
    Depth { queue: String, reply: Reply<u64> },
    /// Consumers of a queue (an ordered queue's waiting ones too).
    Consumers { queue: String, reply: Reply<u32> },
}

/// A message pushed to a consumer.
pub(super) struct Delivered {
    pub(super) seq: i64,
    pub(super) body: Bytes,
    pub(super) headers: Headers,
    pub(super) routing_key: String,
    pub(super) message_id: Option<String>,
    pub(super) redelivered: bool,
}

struct Queue {
    id: i64,
    name: String,
    ordered: bool,
    delivery_limit: Option<i64>,
    dead_letter_key: String,
    patterns: BTreeSet<String>,
    /// Visible messages on disk (ready, returned and held).
    rows: u64,
    /// Of those, delivered and unacked.
    held: u64,
    /// The highest sequence handed out from the tail in this run.
    cursor: i64,
    /// Given back by closed consumers, to go out again first.
    returned: BTreeSet<i64>,
    /// In the order they started; on an ordered queue only the first receives.
    consumers: Vec<u64>,
}

struct ConsumerState {
    conn: u64,
    queue: String,
    prefetch: usize,
    inflight: BTreeSet<i64>,
    out: mpsc::UnboundedSender<Result<Delivered, String>>,
}

/// The engine's state, owned by its task.
pub(super) struct Writer {
    path: String,
    db: Db,
    queues: HashMap<String, Queue>,
    names: HashMap<i64, String>,
    routes: HashMap<String, Arc<[String]>>,
    consumers: HashMap<u64, ConsumerState>,
    next_seq: i64,
    next_due: Option<i64>,
    dirty: BTreeSet<String>,
    /// The batch's new messages, written by one multi-row INSERT after its requests are handled
    /// (nothing in a request reads the messages table, so the batch sees the same rows).
    inserts: Vec<NewRow>,
    /// Acked messages whose rows the next commit deletes (no read takes an acked row meanwhile:
    /// reads take rows past a queue's cursor, or given back, or delayed).
    acked: Vec<i64>,
    /// The answers of grouped acks waiting for that commit, and when the first of them came.
    grouped: Vec<Reply<()>>,
    grouped_since: Option<std::time::Instant>,
}

/// A message to insert: (seq, queue id, visible at, routing key, message id, headers, body).
type NewRow = (i64, i64, i64, Arc<str>, Option<Arc<str>>, Arc<str>, Bytes);

/// Rows per INSERT statement: 7 parameters each, well under SQLite's limit of 32766.
const INSERT_ROWS: usize = 500;

fn db_error(path: &str, e: &sqlx::Error) -> BrokerError {
    BrokerError::Embedded { path: path.to_string(), detail: e.to_string() }
}

impl Writer {
    /// Serves requests until every sender is gone (`Ok`) or the database fails (`Err(why)`).
    pub(super) async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Request>) -> Result<(), String> {
        let mut open = true;
        while open {
            let mut batch = Vec::new();
            let now = now_ms() as i64;
            let due_now = self.next_due.is_some_and(|d| d <= now);
            let linger = self.linger_left();
            if self.dirty.is_empty() && !due_now && linger != Some(Duration::ZERO) {
                let due = self.next_due.map(|d| Duration::from_millis((d - now).max(0) as u64));
                let wait = match (due, linger) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => batch.push(r),
                        // The last batch commits what grouped acks wait for.
                        None => open = false,
                    },
                    _ = sleep_opt(wait) => {}
                }
            }
            while open && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.batch(batch, !open).await.map_err(|e| format!("{}: {e}", self.path))?;
        }
        Ok(())
    }

    /// How long grouped acks may still wait for their commit (zero: commit now), if any wait.
    fn linger_left(&self) -> Option<Duration> {
        self.grouped_since.map(|since| ACK_LINGER.saturating_sub(since.elapsed()))
    }

    /// Tells every consumer the engine failed, and drops them.
    pub(super) fn fail_consumers(&mut self, why: &str) {
        for (_, c) in self.consumers.drain() {
            let _ = c.out.send(Err(why.to_string()));
        }
    }

    /// Closes the connection (checkpointing the log).
    pub(super) async fn close(self) {
        if let Err(e) = self.db.close().await {
            warn!(path = %self.path, error = %e, "closing the embedded broker's file");
        }
    }

    /// Handles a batch of requests, then commits, unless the batch held grouped acks alone and
    /// those may wait (`last`: nothing may wait, the engine is stopping).
    async fn batch(&mut self, batch: Vec<Request>, last: bool) -> Result<(), sqlx::Error> {
        let mut done: Vec<Reply<()>> = Vec::new();
        let mut outbox: Vec<(u64, Delivered)> = Vec::new();
        let result = async {
            let mut others = false;
            for req in batch {
                others |= !matches!(req, Request::Ack { grouped: true, .. });
                self.handle(req, &mut done).await?;
            }
            let inserts = std::mem::take(&mut self.inserts);
            for chunk in inserts.chunks(INSERT_ROWS) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO messages (seq, queue_id, visible_at, deliveries, routing_key, message_id, headers, body) ",
                );
                q.push_values(chunk, |mut b, (seq, queue, visible_at, key, id, headers, body)| {
                    b.push_bind(*seq)
                        .push_bind(*queue)
                        .push_bind(*visible_at)
                        .push_bind(0i64)
                        .push_bind(key.to_string())
                        .push_bind(id.as_deref().map(str::to_string))
                        .push_bind(headers.to_string())
                        .push_bind(body.to_vec());
                });
                q.build().execute(self.db.tx().await?).await?;
            }
            self.promote().await?;
            self.push(&mut outbox).await?;
            let commit = last
                || others
                || self.db.in_tx()
                || self.grouped.len() >= ACK_GROUP
                || self.linger_left() == Some(Duration::ZERO);
            if !commit {
                return Ok(false);
            }
            if !self.acked.is_empty() {
                sqlx::query("DELETE FROM messages WHERE seq IN (SELECT value FROM json_each(?1))")
                    .bind(json_list(&self.acked))
                    .execute(self.db.tx().await?)
                    .await?;
                self.acked.clear();
            }
            self.db.commit().await?;
            Ok(true)
        }
        .await;
        match result {
            // Grouped acks alone: nothing written, nothing to answer or send yet.
            Ok(false) => Ok(()),
            Ok(true) => {
                self.grouped_since = None;
                for r in done.into_iter().chain(self.grouped.drain(..)) {
                    let _ = r.send(Ok(()));
                }
                for (consumer, d) in outbox {
                    if let Some(c) = self.consumers.get(&consumer) {
                        let _ = c.out.send(Ok(d));
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.db.rollback().await;
                self.inserts.clear();
                self.acked.clear();
                self.grouped_since = None;
                for r in done.into_iter().chain(self.grouped.drain(..)) {
                    let _ = r.send(Err(db_error(&self.path, &e)));
                }
                Err(e)
            }
        }
    }

    async fn handle(&mut self, req: Request, done: &mut Vec<Reply<()>>) -> Result<(), sqlx::Error> {
        match req {
            Request::Declare { queue, ordered, delivery_limit, dead_letter_key, patterns, reply } => {
                self.declare(&queue, ordered, delivery_limit.map(i64::from), &dead_letter_key, &patterns).await?;
                done.push(reply);
            }
            Request::Unbind { queue, patterns, reply } => {
                if let Some(q) = self.queues.get_mut(&queue) {
                    for p in patterns {
                        if q.patterns.remove(&p) {
                            sqlx::query("DELETE FROM bindings WHERE queue_id = ?1 AND pattern = ?2")
                                .bind(q.id)
                                .bind(p)
                                .execute(self.db.tx().await?)
                                .await?;
                        }
                    }
                    self.routes.clear();
                }
                done.push(reply);
            }
            Request::Publish { to, body, headers, message_id, delay, reply } => {
                let (queues, routing_key) = match self.resolve(&to) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let visible_at = match delay {
                    Some(d) => (now_ms() + d.as_millis() as u64).max(1) as i64,
                    None => 0,
                };
                let key: Arc<str> = routing_key.as_str().into();
                let id: Option<Arc<str>> = message_id.as_deref().map(Into::into);
                let headers: Arc<str> = headers.as_str().into();
                for name in queues.iter() {
                    let Some(q) = self.queues.get_mut(name) else { continue };
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.inserts.push((seq, q.id, visible_at, key.clone(), id.clone(), headers.clone(), body.clone()));
                    if visible_at == 0 {
                        q.rows += 1;
                        self.dirty.insert(q.name.clone());
                    } else {
                        self.next_due = Some(self.next_due.map_or(visible_at, |d| d.min(visible_at)));
                    }
                }
                done.push(reply);
            }
            Request::Ack { consumer, seq, grouped, reply } => {
                let held = self.consumers.get_mut(&consumer).is_some_and(|c| c.inflight.remove(&seq));
                if !held {
                    let _ = reply.send(Err(BrokerError::Closed(
                        "the message is no longer held by this consumer (acked already, or given back to its queue \
                         when the consumer closed)"
                            .into(),
                    )));
                    return Ok(());
                }
                if let Some(q) = self.consumers.get(&consumer).and_then(|c| self.queues.get_mut(&c.queue)) {
                    q.rows -= 1;
                    q.held -= 1;
                    self.dirty.insert(q.name.clone());
                }
                self.acked.push(seq);
                if grouped {
                    self.grouped_since.get_or_insert_with(std::time::Instant::now);
                    self.grouped.push(reply);
                } else {
                    done.push(reply);
                }
            }
            Request::Consume { conn, consumer, queue, prefetch, out, reply } => {
                let Some(q) = self.queues.get_mut(&queue) else {
                    let _ = reply.send(Err(BrokerError::NoQueue(queue)));
                    return Ok(());
                };
                q.consumers.push(consumer);
                self.dirty.insert(queue.clone());
                self.consumers
                    .insert(consumer, ConsumerState { conn, queue, prefetch, inflight: BTreeSet::new(), out });
                let _ = reply.send(Ok(()));
            }
            Request::CloseConsumer { consumer, reply } => {
                self.close_consumer(consumer);
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Request::CloseConnection { conn, reply } => {
                let ids: Vec<u64> = self.consumers.iter().filter(|(_, c)| c.conn == conn).map(|(id, _)| *id).collect();
                for id in ids {
                    self.close_consumer(id);
                }
                if let Some(r) = reply {
                    let _ = r.send(Ok(()));
                }
            }
            Request::Depth { queue, reply } => {
                let depth = self.queues.get(&queue).map(|q| q.rows - q.held).ok_or(BrokerError::NoQueue(queue));
                let _ = reply.send(depth);
            }
            Request::Consumers { queue, reply } => {
                let n = self.queues.get(&queue).map(|q| q.consumers.len() as u32).ok_or(BrokerError::NoQueue(queue));
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Runs the engine until every connection is gone or the database fails, then releases the
/// file: `failed` carries the reason of a failure, `released` flips once the lock is dropped.
pub(super) async fn serve(
    mut writer: Writer,
    mut rx: mpsc::UnboundedReceiver<Request>,
    lock: super::lock::QueueLock,
    failed: watch::Sender<Option<String>>,
    released: watch::Sender<bool>,
) {
    if let Err(why) = writer.run(&mut rx).await {
        tracing::error!(error = %why, "the embedded broker failed; connections will reopen it");
        writer.fail_consumers(&why);
        let _ = failed.send(Some(why));
    }
    drop(rx);
    writer.close().await;
    drop(lock);
    let _ = released.send(true);
}
