//! The embedded broker's engine: one task owns the SQLite connection and every queue's state in
//! memory, and applies what connections ask for in batches, one transaction per batch (group
//! commit). A caller's publish, ack or declaration is answered only after its batch committed.
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

use super::Target;
use crate::broker::{
    BrokerError, DEAD_LETTERS, H_DEAD_AT, H_ERROR, H_NOT_BEFORE, H_REASON, H_ROUTE, Headers, now_ms, topic,
};
use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// Requests taken into one batch at most.
const MAX_BATCH: usize = 1024;
/// Delayed messages made visible per batch at most.
const PROMOTE_CHUNK: i64 = 512;
/// Routing keys whose bound queues are remembered.
const ROUTE_CACHE: usize = 4096;
/// The schema this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ordered INTEGER NOT NULL,
    delivery_limit INTEGER,
    dead_letter_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    queue_id INTEGER NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (queue_id, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    queue_id INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue_id, visible_at, seq);
CREATE INDEX IF NOT EXISTS messages_delayed ON messages (visible_at) WHERE visible_at > 0;
";

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
    /// Removes a message its consumer holds.
    Ack { consumer: u64, seq: i64, reply: Reply<()> },
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

struct StoredRow {
    seq: i64,
    deliveries: i64,
    routing_key: String,
    message_id: Option<String>,
    headers: String,
    body: Vec<u8>,
}

/// The SQLite connection, with a transaction opened lazily by the first write of a batch.
struct Db {
    conn: SqliteConnection,
    in_tx: bool,
}

impl Db {
    async fn tx(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if !self.in_tx {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut self.conn).await?;
            self.in_tx = true;
        }
        Ok(&mut self.conn)
    }

    async fn commit(&mut self) -> Result<(), sqlx::Error> {
        if self.in_tx {
            self.in_tx = false;
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn rollback(&mut self) {
        if self.in_tx {
            self.in_tx = false;
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
    }

    /// Takes up to `limit` messages after `cursor` from the head of a queue, counting the
    /// delivery in the same statement (deliveries are counted before a consumer sees a message,
    /// so a crash while handling it counts).
    async fn take_next(&mut self, queue_id: i64, cursor: i64, limit: usize) -> Result<Vec<StoredRow>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE messages SET deliveries = deliveries + 1 WHERE seq IN (SELECT seq FROM messages \
             WHERE queue_id = ?1 AND visible_at = 0 AND seq > ?2 ORDER BY seq LIMIT ?3) \
             RETURNING seq, deliveries - 1, routing_key, message_id, headers, body",
        )
        .bind(queue_id)
        .bind(cursor)
        .bind(limit as i64)
        .fetch_all(self.tx().await?)
        .await?;
        sorted(&rows)
    }

    /// Takes messages by sequence (those given back), counting the delivery.
    async fn take_seqs(&mut self, seqs: &[i64]) -> Result<Vec<StoredRow>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE messages SET deliveries = deliveries + 1 WHERE seq IN (SELECT value FROM json_each(?1)) \
             RETURNING seq, deliveries - 1, routing_key, message_id, headers, body",
        )
        .bind(json_list(seqs))
        .fetch_all(self.tx().await?)
        .await?;
        sorted(&rows)
    }
}

/// `RETURNING` rows come in no particular order.
fn sorted(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<StoredRow>, sqlx::Error> {
    let mut out = rows.iter().map(stored_row).collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

fn stored_row(r: &sqlx::sqlite::SqliteRow) -> Result<StoredRow, sqlx::Error> {
    Ok(StoredRow {
        seq: r.try_get(0)?,
        deliveries: r.try_get(1)?,
        routing_key: r.try_get(2)?,
        message_id: r.try_get(3)?,
        headers: r.try_get(4)?,
        body: r.try_get(5)?,
    })
}

fn json_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into())
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
}

/// A message to insert: (seq, queue id, visible at, routing key, message id, headers, body).
type NewRow = (i64, i64, i64, Arc<str>, Option<Arc<str>>, Arc<str>, Bytes);

/// Rows per INSERT statement: 7 parameters each, well under SQLite's limit of 32766.
const INSERT_ROWS: usize = 500;

fn db_error(path: &str, e: &sqlx::Error) -> BrokerError {
    BrokerError::Embedded { path: path.to_string(), detail: e.to_string() }
}

impl Writer {
    /// Opens (creating when missing) the queue file and loads queues, bindings and counts.
    pub(super) async fn open(path: &std::path::Path, full_sync: bool) -> Result<Self, BrokerError> {
        let shown = path.display().to_string();
        let err = |e: sqlx::Error| db_error(&shown, &e);
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL: a commit is one append to the log; readers (sqlite3 on the file) do not block it.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a killed process (the log is in the OS's hands once
            // written); FULL adds an fsync per commit for power loss.
            .synchronous(if full_sync { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            // Keep the log file from growing without bound after a burst.
            .pragma("journal_size_limit", "67108864")
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let mut conn = SqliteConnection::connect_with(&opts).await.map_err(err)?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut conn).await.map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(BrokerError::Embedded {
                path: shown,
                detail: format!(
                    "written by a newer hookrelay (schema {version}; this one knows {SCHEMA_VERSION}): run that \
                     version, or let it drain and start from a new file"
                ),
            });
        }
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await.map_err(err)?;
        sqlx::query("PRAGMA user_version = 1").execute(&mut conn).await.map_err(err)?;
        sqlx::query(
            "INSERT OR IGNORE INTO queues (name, ordered, delivery_limit, dead_letter_key) VALUES (?1, 0, NULL, '')",
        )
        .bind(DEAD_LETTERS)
        .execute(&mut conn)
        .await
        .map_err(err)?;

        let mut queues = HashMap::new();
        let mut names = HashMap::new();
        for r in sqlx::query("SELECT id, name, ordered, delivery_limit, dead_letter_key FROM queues")
            .fetch_all(&mut conn)
            .await
            .map_err(err)?
        {
            let q = Queue {
                id: r.try_get(0).map_err(err)?,
                name: r.try_get(1).map_err(err)?,
                ordered: r.try_get::<i64, _>(2).map_err(err)? != 0,
                delivery_limit: r.try_get(3).map_err(err)?,
                dead_letter_key: r.try_get(4).map_err(err)?,
                patterns: BTreeSet::new(),
                rows: 0,
                held: 0,
                cursor: 0,
                returned: BTreeSet::new(),
                consumers: Vec::new(),
            };
            names.insert(q.id, q.name.clone());
            queues.insert(q.name.clone(), q);
        }
        for r in sqlx::query("SELECT queue_id, pattern FROM bindings").fetch_all(&mut conn).await.map_err(err)? {
            let id: i64 = r.try_get(0).map_err(err)?;
            if let Some(q) = names.get(&id).and_then(|n| queues.get_mut(n)) {
                q.patterns.insert(r.try_get(1).map_err(err)?);
            }
        }
        let mut total = 0;
        for r in sqlx::query("SELECT queue_id, COUNT(*) FROM messages WHERE visible_at = 0 GROUP BY queue_id")
            .fetch_all(&mut conn)
            .await
            .map_err(err)?
        {
            let id: i64 = r.try_get(0).map_err(err)?;
            let n: i64 = r.try_get(1).map_err(err)?;
            total += n;
            if let Some(q) = names.get(&id).and_then(|n| queues.get_mut(n)) {
                q.rows = n as u64;
            }
        }
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM messages").fetch_one(&mut conn).await.map_err(err)?;
        let next_due: Option<i64> = sqlx::query_scalar("SELECT MIN(visible_at) FROM messages WHERE visible_at > 0")
            .fetch_one(&mut conn)
            .await
            .map_err(err)?;
        info!(path = %shown, queues = queues.len(), messages = total, delayed = next_due.is_some(), "embedded broker open");
        Ok(Self {
            path: shown,
            db: Db { conn, in_tx: false },
            queues,
            names,
            routes: HashMap::new(),
            consumers: HashMap::new(),
            next_seq: max.unwrap_or(0) + 1,
            next_due,
            dirty: BTreeSet::new(),
            inserts: Vec::new(),
        })
    }

    /// Serves requests until every sender is gone (`Ok`) or the database fails (`Err(why)`).
    pub(super) async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Request>) -> Result<(), String> {
        let mut open = true;
        while open {
            let mut batch = Vec::new();
            let now = now_ms() as i64;
            let due_now = self.next_due.is_some_and(|d| d <= now);
            if self.dirty.is_empty() && !due_now {
                let wait = self.next_due.map(|d| Duration::from_millis((d - now).max(0) as u64));
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => batch.push(r),
                        None => break,
                    },
                    _ = sleep_opt(wait) => {}
                }
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.batch(batch).await.map_err(|e| format!("{}: {e}", self.path))?;
        }
        Ok(())
    }

    /// Tells every consumer the engine failed, and drops them.
    pub(super) fn fail_consumers(&mut self, why: &str) {
        for (_, c) in self.consumers.drain() {
            let _ = c.out.send(Err(why.to_string()));
        }
    }

    /// Closes the connection (checkpointing the log).
    pub(super) async fn close(self) {
        if let Err(e) = self.db.conn.close().await {
            warn!(path = %self.path, error = %e, "closing the embedded broker's file");
        }
    }

    async fn batch(&mut self, batch: Vec<Request>) -> Result<(), sqlx::Error> {
        let mut done: Vec<Reply<()>> = Vec::new();
        let mut outbox: Vec<(u64, Delivered)> = Vec::new();
        let result = async {
            let mut acked = Vec::new();
            for req in batch {
                self.handle(req, &mut done, &mut acked).await?;
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
            if !acked.is_empty() {
                sqlx::query("DELETE FROM messages WHERE seq IN (SELECT value FROM json_each(?1))")
                    .bind(json_list(&acked))
                    .execute(self.db.tx().await?)
                    .await?;
            }
            self.promote().await?;
            self.push(&mut outbox).await?;
            self.db.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                for r in done {
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
                for r in done {
                    let _ = r.send(Err(db_error(&self.path, &e)));
                }
                Err(e)
            }
        }
    }

    async fn handle(
        &mut self,
        req: Request,
        done: &mut Vec<Reply<()>>,
        acked: &mut Vec<i64>,
    ) -> Result<(), sqlx::Error> {
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
            Request::Ack { consumer, seq, reply } => {
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
                acked.push(seq);
                done.push(reply);
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
        }
        Ok(())
    }

    fn close_consumer(&mut self, consumer: u64) {
        let Some(c) = self.consumers.remove(&consumer) else { return };
        if let Some(q) = self.queues.get_mut(&c.queue) {
            q.held -= c.inflight.len() as u64;
            q.returned.extend(c.inflight);
            q.consumers.retain(|id| *id != consumer);
            self.dirty.insert(c.queue);
        }
    }

    async fn declare(
        &mut self,
        name: &str,
        ordered: bool,
        delivery_limit: Option<i64>,
        dead_letter_key: &str,
        patterns: &[String],
    ) -> Result<(), sqlx::Error> {
        match self.queues.get_mut(name) {
            Some(q) => {
                if q.ordered != ordered || q.delivery_limit != delivery_limit || q.dead_letter_key != dead_letter_key {
                    // Unlike a RabbitMQ queue, this one can change its arguments in place: the
                    // router refuses to flip `ordered` on a reload, so this happens at a start.
                    info!(queue = name, ordered, ?delivery_limit, was_ordered = q.ordered, "queue arguments updated");
                    sqlx::query(
                        "UPDATE queues SET ordered = ?2, delivery_limit = ?3, dead_letter_key = ?4 WHERE id = ?1",
                    )
                    .bind(q.id)
                    .bind(ordered)
                    .bind(delivery_limit)
                    .bind(dead_letter_key)
                    .execute(self.db.tx().await?)
                    .await?;
                    q.ordered = ordered;
                    q.delivery_limit = delivery_limit;
                    q.dead_letter_key = dead_letter_key.to_string();
                    self.dirty.insert(name.to_string());
                }
            }
            None => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO queues (name, ordered, delivery_limit, dead_letter_key) VALUES (?1, ?2, ?3, ?4) \
                     RETURNING id",
                )
                .bind(name)
                .bind(ordered)
                .bind(delivery_limit)
                .bind(dead_letter_key)
                .fetch_one(self.db.tx().await?)
                .await?;
                self.names.insert(id, name.to_string());
                self.queues.insert(
                    name.to_string(),
                    Queue {
                        id,
                        name: name.to_string(),
                        ordered,
                        delivery_limit,
                        dead_letter_key: dead_letter_key.to_string(),
                        patterns: BTreeSet::new(),
                        rows: 0,
                        held: 0,
                        cursor: 0,
                        returned: BTreeSet::new(),
                        consumers: Vec::new(),
                    },
                );
            }
        }
        let Some(q) = self.queues.get_mut(name) else { return Ok(()) };
        for p in patterns {
            if q.patterns.insert(p.clone()) {
                sqlx::query("INSERT OR IGNORE INTO bindings (queue_id, pattern) VALUES (?1, ?2)")
                    .bind(q.id)
                    .bind(p)
                    .execute(self.db.tx().await?)
                    .await?;
                self.routes.clear();
            }
        }
        Ok(())
    }

    /// The queues a publish goes to, and the routing key it keeps.
    fn resolve(&mut self, to: &Target) -> Result<(Arc<[String]>, String), BrokerError> {
        match to {
            Target::Events(key) => {
                if let Some(qs) = self.routes.get(key) {
                    return Ok((qs.clone(), key.clone()));
                }
                let mut qs: Vec<String> = self
                    .queues
                    .values()
                    .filter(|q| q.patterns.iter().any(|p| topic::matches(p, key)))
                    .map(|q| q.name.clone())
                    .collect();
                if qs.is_empty() {
                    return Err(BrokerError::NotRouted(format!("no queue is bound to routing key {key:?}")));
                }
                qs.sort();
                let qs: Arc<[String]> = qs.into();
                if self.routes.len() >= ROUTE_CACHE {
                    self.routes.clear();
                }
                self.routes.insert(key.clone(), qs.clone());
                Ok((qs, key.clone()))
            }
            Target::Queue(q) => {
                if !self.queues.contains_key(q) {
                    return Err(BrokerError::NotRouted(format!("queue {q} does not exist")));
                }
                Ok((Arc::from(vec![q.clone()]), q.clone()))
            }
            Target::DeadLetters(route) => Ok((Arc::from(vec![DEAD_LETTERS.to_string()]), route.clone())),
        }
    }

    /// Makes due delayed messages visible at the tail of their queues.
    async fn promote(&mut self) -> Result<(), sqlx::Error> {
        let now = now_ms() as i64;
        if self.next_due.is_none_or(|d| d > now) {
            return Ok(());
        }
        let due = sqlx::query(
            "SELECT seq, queue_id FROM messages WHERE visible_at > 0 AND visible_at <= ?1 \
             ORDER BY visible_at, seq LIMIT ?2",
        )
        .bind(now)
        .bind(PROMOTE_CHUNK)
        .fetch_all(self.db.tx().await?)
        .await?;
        for r in &due {
            let (old, queue_id): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            let seq = self.next_seq;
            self.next_seq += 1;
            sqlx::query("UPDATE messages SET seq = ?1, visible_at = 0 WHERE seq = ?2")
                .bind(seq)
                .bind(old)
                .execute(self.db.tx().await?)
                .await?;
            if let Some(q) = self.names.get(&queue_id).and_then(|n| self.queues.get_mut(n)) {
                q.rows += 1;
                self.dirty.insert(q.name.clone());
            }
        }
        self.next_due = sqlx::query_scalar("SELECT MIN(visible_at) FROM messages WHERE visible_at > 0")
            .fetch_one(self.db.tx().await?)
            .await?;
        Ok(())
    }

    /// Hands messages to consumers with free prefetch, on every queue something happened to.
    async fn push(&mut self, outbox: &mut Vec<(u64, Delivered)>) -> Result<(), sqlx::Error> {
        let dirty = std::mem::take(&mut self.dirty);
        for name in dirty {
            let Some(q) = self.queues.get(&name) else { continue };
            let takers: Vec<u64> =
                if q.ordered { q.consumers.first().copied().into_iter().collect() } else { q.consumers.clone() };
            let mut tail_done = false;
            for consumer in takers {
                while let Some(c) = self.consumers.get(&consumer) {
                    let credit = c.prefetch.saturating_sub(c.inflight.len());
                    // A consumer that still has work is refilled once half its prefetch is
                    // free: one read for many acks instead of one per ack.
                    if credit == 0 || (!c.inflight.is_empty() && credit < (c.prefetch / 2).max(1)) {
                        break;
                    }
                    let Some(q) = self.queues.get_mut(&name) else { break };
                    let rows = if !q.returned.is_empty() {
                        let seqs: Vec<i64> = q.returned.iter().take(credit).copied().collect();
                        for s in &seqs {
                            q.returned.remove(s);
                        }
                        self.db.take_seqs(&seqs).await?
                    } else if !tail_done {
                        let (id, cursor) = (q.id, q.cursor);
                        let rows = self.db.take_next(id, cursor, credit).await?;
                        tail_done = rows.len() < credit;
                        if let (Some(last), Some(q)) = (rows.last(), self.queues.get_mut(&name)) {
                            q.cursor = q.cursor.max(last.seq);
                        }
                        rows
                    } else {
                        break;
                    };
                    for row in rows {
                        let Some(q) = self.queues.get_mut(&name) else { break };
                        if q.delivery_limit.is_some_and(|limit| row.deliveries > limit) {
                            self.dead_letter_over_limit(&name, row).await?;
                            continue;
                        }
                        q.held += 1;
                        let Some(c) = self.consumers.get_mut(&consumer) else { break };
                        c.inflight.insert(row.seq);
                        let headers = serde_json::from_str(&row.headers).map(Headers).unwrap_or_default();
                        outbox.push((
                            consumer,
                            Delivered {
                                seq: row.seq,
                                body: Bytes::from(row.body),
                                headers,
                                routing_key: row.routing_key,
                                message_id: row.message_id,
                                redelivered: row.deliveries > 0,
                            },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves a message delivered more often than its queue allows to the dead-letter queue, as
    /// RabbitMQ does with `x-delivery-limit`, saying why in `hookrelay-*` headers.
    async fn dead_letter_over_limit(&mut self, queue: &str, row: StoredRow) -> Result<(), sqlx::Error> {
        let Some(q) = self.queues.get_mut(queue) else { return Ok(()) };
        let limit = q.delivery_limit.unwrap_or_default();
        let mut h = serde_json::from_str(&row.headers).map(Headers).unwrap_or_default();
        h.remove(H_NOT_BEFORE);
        h.set(H_ROUTE, q.dead_letter_key.as_str());
        h.set(H_REASON, "delivery_limit");
        h.set(
            H_ERROR,
            format!(
                "delivered {} times without an ack (the delivery limit of queue {queue} is {limit}): the router \
                 crashed or stopped while handling it each time",
                row.deliveries
            ),
        );
        h.set(H_DEAD_AT, now_ms());
        warn!(queue, deliveries = row.deliveries, limit, "delivery limit reached; dead-lettering");
        q.rows -= 1;
        let route = q.dead_letter_key.clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        let dl = self.queues.get(DEAD_LETTERS).map(|d| d.id).unwrap_or_default();
        sqlx::query(
            "UPDATE messages SET seq = ?1, queue_id = ?2, routing_key = ?3, headers = ?4, deliveries = 0, \
             message_id = ?5 WHERE seq = ?6",
        )
        .bind(seq)
        .bind(dl)
        .bind(route)
        .bind(serde_json::to_string(&h.0).unwrap_or_else(|_| "{}".into()))
        // A dead letter of its own: the store indexes dead letters by message id.
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(row.seq)
        .execute(self.db.tx().await?)
        .await?;
        if let Some(d) = self.queues.get_mut(DEAD_LETTERS) {
            d.rows += 1;
        }
        self.dirty.insert(DEAD_LETTERS.to_string());
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
