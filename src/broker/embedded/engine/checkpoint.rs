//! The queue file's checkpoints, run beside the engine's commits instead of inside them.
//!
//! In WAL mode a commit appends to the log, and a checkpoint copies the log into the file and
//! syncs both (with `synchronous=NORMAL`, the only fsyncs there are). Left to SQLite, the
//! checkpoint runs inside the commit that takes the log past 1,000 pages, on the engine's one
//! connection: every publish, ack and refill waits for its fsyncs. On a disk that something else
//! is flushing to (the delivery log's own checkpoint writes tens of MiB at once), such an fsync
//! took 100 to 300 ms, the latency tails of docs/performance.md (seventh and eleventh rounds;
//! none with the files on tmpfs).
//!
//! So a connection of its own ([`Checkpoints`], its own sqlx worker thread) runs
//! `PRAGMA wal_checkpoint(PASSIVE)`, which never waits for the writer and which the writer
//! never waits for: after a commit, at most once per [`PACE`]. Under a steady load the writer
//! appends while it copies, so the log is never wholly copied and cannot start over from its
//! beginning; the writer's own automatic checkpoint stays, at [`WRITER_BACKSTOP_PAGES`], to
//! bound it. By then the checkpointer has copied and synced nearly everything, so that
//! checkpoint copies a few pages and syncs little.
//!
//! Nothing about durability changes: the same checkpoints, in the same file, by SQLite.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the checkpointer runs at most, while commits come.
pub(super) const PACE: Duration = Duration::from_millis(200);

/// The log's size in pages at which the writer checkpoints itself (64 MiB of 4 KiB pages, the
/// file's `journal_size_limit`): reached only under a load that never pauses for [`PACE`].
pub(super) const WRITER_BACKSTOP_PAGES: u32 = 16_384;

/// The checkpointer: its task and what wakes it.
pub(super) struct Checkpoints {
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Checkpoints {
    /// Opens the checkpointer's connection to the file `opts` names and starts it.
    pub(super) async fn start(opts: &SqliteConnectOptions, path: String) -> Result<Self, sqlx::Error> {
        let conn = opts.connect().await?;
        let (wake, stop) = (Arc::new(Notify::new()), CancellationToken::new());
        let task = tokio::spawn(run(conn, wake.clone(), stop.clone(), path));
        Ok(Self { wake, stop, task })
    }

    /// A commit appended to the log.
    pub(super) fn committed(&self) {
        self.wake.notify_one();
    }

    /// Stops the checkpointer and waits until its connection is closed.
    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

/// Dropped without [`Checkpoints::stop`] (the engine's task ended some other way), the
/// checkpointer still stops and closes its connection, in its own time.
impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(mut conn: SqliteConnection, wake: Arc<Notify>, stop: CancellationToken, path: String) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.cancelled() => break,
        }
        // Its row (busy, pages in the log, pages copied) tells nothing to act on; a failure
        // leaves the work to the writer's own checkpoint.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
            warn!(path = %path, error = %e, "checkpointing the embedded broker's file");
        }
        tokio::select! {
            _ = tokio::time::sleep(PACE) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Err(e) = conn.close().await {
        warn!(path = %path, error = %e, "closing the embedded broker's checkpointer");
    }
}
