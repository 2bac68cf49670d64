//! The embedded broker: RabbitMQ's semantics, as hookrelay uses them, in one SQLite file of its
//! own (`[embedded] path`, default `hookrelay-queue.db`), for running without installing a
//! broker. It is what runs when `hookrelay.toml` has no `[broker]` section.
//!
//! # Why SQLite
//! SQLite, through sqlx, is already in the build (the store's SQLite backend), so the embedded
//! broker adds no crate and no compile time. Its WAL journal gives atomic, crash-safe commits
//! with `synchronous=NORMAL` (a killed process loses nothing committed; `sync = "full"` adds an
//! fsync per commit for power loss), it is one file an operator can inspect with `sqlite3`, and
//! its B-tree indexes give exactly the access paths a queue needs: the head of a queue in
//! sequence order, and the earliest delayed message. redb would add a crate for the same
//! B-tree with fewer tools around it; fjall's LSM tree favours write-heavy key-value loads but
//! turns a queue's delete-after-ack into tombstones to compact. The file is separate from the
//! store, which may be PostgreSQL and shared between replicas, while this file belongs to one
//! process.
//!
//! # Semantics (the conformance suite in `tests/it/broker/conformance.rs` runs the same tests on RabbitMQ)
//! - A topic exchange: routes bind their queue per pattern (`*` one word, `#` any); a publish to
//!   [`Destination::Events`] stores one copy per bound queue in one transaction and returns after
//!   the commit (the "publisher confirm"); with no queue bound it is [`BrokerError::NotRouted`].
//! - Per queue, delivery in publish order, up to `prefetch` unacked messages per consumer. An
//!   ack deletes the message. A consumer closed (or a connection closed, or a process that died)
//!   gives its unacked messages back; they go out again first, in order, marked `redelivered`.
//! - Ordered queues have a single active consumer; a second one waits until the first closes.
//! - [`Broker::publish_delayed`] messages are not delivered before their delay; then they join
//!   the tail of their queue.
//! - Deliveries are counted on disk before a consumer sees the message, so crashes count: past
//!   the delivery limit (limit 3: the fourth delivery is the last) the message moves to
//!   `hookrelay.dead-letters` with `hookrelay-reason = delivery_limit`.
//! - One process owns the file (an exclusive lock on `<file>.lock`); another gets an error
//!   naming the file and the owner's pid. Within the process, [`EmbeddedBroker::shared`] (what
//!   [`super::connect`] uses) opens the file once and hands out a new connection to the same
//!   engine on every call.
//! - Throughput: one task owns the connection and commits everything that arrived while the
//!   previous commit ran in one transaction (group commit); consumers are woken by the engine
//!   when messages arrive and a timer runs for the earliest delayed message: nothing polls.
//!   Acks started without waiting ([`Message::start_ack`], an ordered route's) are grouped
//!   further: they take effect at once in memory and are committed with the next commit that
//!   something else needs (in a stream, the refill of the consumer's prefetch), at the latest
//!   100 ms later (the engine's `ACK_LINGER`), so that a stream of them costs a commit per group,
//!   not per message. A crash before that commit
//!   gives those messages back: delivered again, never lost.
//!   Memory stays bounded with any number of waiting messages: nothing loads a queue, reads are
//!   bounded by free prefetch, and only unacked messages are tracked in memory.
//! - Latency: the log is checkpointed into the file by a second connection beside the commits
//!   (`engine/checkpoint.rs`), so that no publish or ack waits for a checkpoint's fsyncs.

mod engine;
mod lock;

use super::{
    AckFuture, Acker, Broker, BrokerError, Consumer, DEAD_LETTERS, Destination, Headers, Message, RouteTopology,
};
use async_trait::async_trait;
use bytes::Bytes;
use engine::{Delivered, Reply, Request};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// `[embedded] sync`: what a confirmed publish or ack survives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddedSync {
    /// Survives the process being killed at any moment (SIGKILL, OOM, panic); the last commits
    /// may be lost if the machine loses power or the kernel crashes. SQLite `synchronous=NORMAL`
    /// in WAL mode: no fsync per commit.
    #[default]
    Normal,
    /// Also survives power loss: an fsync per commit (SQLite `synchronous=FULL`), shared by
    /// every publish and ack of a group commit.
    Full,
}

/// Where a publish goes, owned.
enum Target {
    /// The topic exchange, by routing key.
    Events(String),
    /// One queue.
    Queue(String),
    /// The dead-letter queue, routing key = route.
    DeadLetters(String),
}

/// The engine behind every connection to one file.
struct Engine {
    path: PathBuf,
    requests: mpsc::UnboundedSender<Request>,
    failed: watch::Receiver<Option<String>>,
    released: watch::Receiver<bool>,
    ids: AtomicU64,
}

impl Engine {
    fn alive(&self) -> bool {
        !self.requests.is_closed() && self.failed.borrow().is_none()
    }

    fn stopped(&self) -> BrokerError {
        let why = self.failed.borrow().clone().unwrap_or_else(|| "it was shut down".into());
        BrokerError::Closed(format!("the embedded broker ({}) stopped: {why}", self.path.display()))
    }

    fn send(&self, r: Request) -> Result<(), BrokerError> {
        self.requests.send(r).map_err(|_| self.stopped())
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| self.stopped())?
    }
}

/// An engine this process opened: to hand it out again, or to wait until it let go of the file.
struct Slot {
    engine: Weak<Engine>,
    /// Set for the process-wide instance ([`EmbeddedBroker::shared`]): kept open for good.
    keep: Option<Arc<Engine>>,
    released: watch::Receiver<bool>,
}

static OPEN: LazyLock<tokio::sync::Mutex<HashMap<PathBuf, Slot>>> = LazyLock::new(Default::default);

async fn engine(path: &Path, sync: EmbeddedSync, shared: bool) -> Result<Arc<Engine>, BrokerError> {
    let path = std::path::absolute(path).map_err(|e| BrokerError::Embedded {
        path: path.display().to_string(),
        detail: format!("cannot resolve the path: {e}"),
    })?;
    let mut open = OPEN.lock().await;
    let mut ours = false;
    if let Some(slot) = open.get_mut(&path) {
        if let Some(e) = slot.engine.upgrade().filter(|e| e.alive()) {
            if shared {
                slot.keep = Some(e.clone());
                return Ok(e);
            }
            return Err(BrokerError::Embedded {
                path: path.display().to_string(),
                detail: "already open in this process".into(),
            });
        }
        // The previous engine failed or is stopping: wait until it has let go of the file.
        slot.keep = None;
        let mut released = slot.released.clone();
        let _ = tokio::time::timeout(Duration::from_secs(30), released.wait_for(|r| *r)).await;
        open.remove(&path);
        ours = true;
    }
    let mut tries = 0;
    let lock = loop {
        match lock::acquire(&path)? {
            lock::Acquired::Held(l) => break l,
            // An engine of this process that stopped abruptly (its runtime ended) may still be
            // dropping its lock.
            lock::Acquired::Busy(_) if ours && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lock::Acquired::Busy(e) => return Err(e),
        }
    };
    let writer = engine::Writer::open(&path, sync == EmbeddedSync::Full).await?;
    let (requests, rx) = mpsc::unbounded_channel();
    let (failed_tx, failed) = watch::channel(None);
    let (released_tx, released) = watch::channel(false);
    tokio::spawn(engine::serve(writer, rx, lock, failed_tx, released_tx));
    let e =
        Arc::new(Engine { path: path.clone(), requests, failed, released: released.clone(), ids: AtomicU64::new(1) });
    open.insert(path, Slot { engine: Arc::downgrade(&e), keep: shared.then(|| e.clone()), released });
    Ok(e)
}

/// A connection to an embedded broker. Connections to one file share its engine; closing (or
/// dropping) a connection gives back the unacked messages of its consumers.
pub struct EmbeddedBroker {
    engine: Arc<Engine>,
    conn: u64,
    closed: AtomicBool,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("path", &self.engine.path).field("conn", &self.conn).finish()
    }
}

impl EmbeddedBroker {
    /// Opens the queue file (created when missing) with an engine of its own, and connects to
    /// it. The engine stops, and lets go of the file, when its last connection, consumer and
    /// message are dropped. Fails when another process, or another engine in this one, has it.
    pub async fn open(path: &Path, sync: EmbeddedSync) -> Result<Self, BrokerError> {
        Ok(Self::on(engine(path, sync, false).await?))
    }

    /// Connects to this process's engine for `path`, opening it on the first call; it then stays
    /// open for the life of the process (reopened if it failed). What [`super::connect`] uses.
    pub async fn shared(path: &Path, sync: EmbeddedSync) -> Result<Self, BrokerError> {
        Ok(Self::on(engine(path, sync, true).await?))
    }

    fn on(engine: Arc<Engine>) -> Self {
        let conn = engine.ids.fetch_add(1, Ordering::Relaxed);
        Self { engine, conn, closed: AtomicBool::new(false) }
    }

    /// Another connection to the same engine.
    pub fn connection(&self) -> Self {
        Self::on(self.engine.clone())
    }

    /// Closes this connection and, when it held the engine's last reference, waits until the
    /// engine has closed the file and let go of its lock, so that another process can open it
    /// at once.
    pub async fn shutdown(self) {
        self.close().await;
        let mut released = self.engine.released.clone();
        let last = Arc::strong_count(&self.engine) == 1;
        drop(self);
        if last {
            let _ = released.wait_for(|r| *r).await;
        }
    }

    /// The queue file (absolute).
    pub fn path(&self) -> &Path {
        &self.engine.path
    }

    fn check(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed(format!(
                "this connection to the embedded broker ({}) was closed",
                self.engine.path.display()
            )));
        }
        Ok(())
    }

    async fn publish_to(
        &self,
        to: Target,
        body: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
        delay: Option<Duration>,
    ) -> Result<(), BrokerError> {
        self.check()?;
        let headers = serde_json::to_string(&headers.0).unwrap_or_else(|_| "{}".into());
        let (body, message_id) = (Bytes::copy_from_slice(body), message_id.map(str::to_string));
        self.engine.call(|reply| Request::Publish { to, body, headers, message_id, delay, reply }).await
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.engine.send(Request::CloseConnection { conn: self.conn, reply: None });
        }
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn declare_base(&self) -> Result<(), BrokerError> {
        self.check()?;
        // The dead-letter queue exists from the moment the file does; this checks the engine runs.
        self.engine
            .call(|reply| Request::Declare {
                queue: DEAD_LETTERS.into(),
                ordered: false,
                delivery_limit: None,
                dead_letter_key: String::new(),
                patterns: Vec::new(),
                reply,
            })
            .await
    }

    async fn declare_route(&self, t: &RouteTopology<'_>) -> Result<(), BrokerError> {
        self.check()?;
        // Delays need no wait queues here: `t.tiers` is RabbitMQ's concern.
        self.engine
            .call(|reply| Request::Declare {
                queue: t.queue.to_string(),
                ordered: t.ordered,
                delivery_limit: Some(t.delivery_limit),
                dead_letter_key: t.name.to_string(),
                patterns: t.patterns.to_vec(),
                reply,
            })
            .await
    }

    async fn unbind(&self, queue: &str, patterns: &[String]) -> Result<(), BrokerError> {
        self.check()?;
        if patterns.is_empty() {
            return Ok(());
        }
        let (queue, patterns) = (queue.to_string(), patterns.to_vec());
        self.engine.call(|reply| Request::Unbind { queue, patterns, reply }).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        self.check()?;
        let consumer = self.engine.ids.fetch_add(1, Ordering::Relaxed);
        let (out, rx) = mpsc::unbounded_channel();
        // AMQP's prefetch 0 means "no limit"; a bound keeps memory bounded all the same.
        let prefetch = if prefetch == 0 { usize::from(u16::MAX) } else { usize::from(prefetch) };
        let queue = queue.to_string();
        let conn = self.conn;
        self.engine.call(|reply| Request::Consume { conn, consumer, queue, prefetch, out, reply }).await?;
        Ok(Box::new(EmbeddedConsumer { engine: self.engine.clone(), id: consumer, rx, closed: false }))
    }

    async fn publish(
        &self,
        to: Destination<'_>,
        body: &[u8],
        headers: &Headers,
        message_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let to = match to {
            Destination::Events { routing_key } => Target::Events(routing_key.to_string()),
            Destination::Queue(q) => Target::Queue(q.to_string()),
            Destination::DeadLetters { route } => Target::DeadLetters(route.to_string()),
        };
        self.publish_to(to, body, headers, message_id, None).await
    }

    async fn publish_delayed(
        &self,
        queue: &str,
        _tier: Duration,
        body: &[u8],
        headers: &Headers,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.publish_to(Target::Queue(queue.to_string()), body, headers, None, Some(delay)).await
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, BrokerError> {
        self.check()?;
        let queue = queue.to_string();
        self.engine.call(|reply| Request::Depth { queue, reply }).await
    }

    async fn consumer_count(&self, queue: &str) -> Result<u32, BrokerError> {
        self.check()?;
        let queue = queue.to_string();
        self.engine.call(|reply| Request::Consumers { queue, reply }).await
    }

    async fn lost(&self) -> String {
        let mut failed = self.engine.failed.clone();
        match failed.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => self.engine.stopped().to_string(),
        }
    }

    async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let conn = self.conn;
            let _ = self.engine.call(|reply| Request::CloseConnection { conn, reply: Some(reply) }).await;
        }
    }
}

struct EmbeddedConsumer {
    engine: Arc<Engine>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Result<Delivered, String>>,
    closed: bool,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Option<Result<Message, BrokerError>> {
        match self.rx.recv().await? {
            Ok(d) => {
                let acker = EmbeddedAcker { engine: self.engine.clone(), consumer: self.id, seq: d.seq };
                Some(Ok(Message::new(d.body, d.headers, d.routing_key, d.message_id, d.redelivered, Box::new(acker))))
            }
            Err(why) => Some(Err(BrokerError::Closed(why))),
        }
    }

    async fn close(mut self: Box<Self>) {
        self.closed = true;
        let consumer = self.id;
        let _ = self.engine.call(|reply| Request::CloseConsumer { consumer, reply: Some(reply) }).await;
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.engine.send(Request::CloseConsumer { consumer: self.id, reply: None });
        }
    }
}

struct EmbeddedAcker {
    engine: Arc<Engine>,
    consumer: u64,
    seq: i64,
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        let (consumer, seq) = (self.consumer, self.seq);
        self.engine.call(|reply| Request::Ack { consumer, seq, grouped: false, reply }).await
    }

    fn start_ack(&self) -> AckFuture {
        let (consumer, seq) = (self.consumer, self.seq);
        let (reply, rx) = oneshot::channel();
        let sent = self.engine.send(Request::Ack { consumer, seq, grouped: true, reply });
        let engine = self.engine.clone();
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| engine.stopped())?
        })
    }
}
