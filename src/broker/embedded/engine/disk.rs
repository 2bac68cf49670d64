//! The engine's file: the schema, opening the file and loading the queues, bindings and counts
//! it holds, and the one writing connection with its lazily opened batch transaction ([`Db`]),
//! including the reads that take messages for consumers (each counts the delivery on disk in
//! the same statement), beside the connection that checkpoints it (`checkpoint.rs`).

use super::checkpoint::{Checkpoints, WRITER_BACKSTOP_PAGES};
use super::{Queue, Writer, db_error};
use crate::broker::{BrokerError, DEAD_LETTERS};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tracing::info;

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

/// A message as read to go out.
pub(super) struct StoredRow {
    pub(super) seq: i64,
    /// Deliveries before this one.
    pub(super) deliveries: i64,
    pub(super) routing_key: String,
    pub(super) message_id: Option<String>,
    pub(super) headers: String,
    pub(super) body: Vec<u8>,
}

/// The SQLite connection, with a transaction opened lazily by the first write of a batch, and
/// the checkpointer its commits wake.
pub(super) struct Db {
    pub(super) conn: SqliteConnection,
    in_tx: bool,
    checkpoints: Checkpoints,
}

impl Db {
    pub(super) async fn tx(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if !self.in_tx {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut self.conn).await?;
            self.in_tx = true;
        }
        Ok(&mut self.conn)
    }

    /// Whether the batch wrote anything yet (its transaction is open).
    pub(super) fn in_tx(&self) -> bool {
        self.in_tx
    }

    pub(super) async fn commit(&mut self) -> Result<(), sqlx::Error> {
        if self.in_tx {
            self.in_tx = false;
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            self.checkpoints.committed();
        }
        Ok(())
    }

    /// Stops the checkpointer, then closes the connection (the last one to the file, which
    /// checkpoints the log).
    pub(super) async fn close(self) -> Result<(), sqlx::Error> {
        self.checkpoints.stop().await;
        self.conn.close().await
    }

    pub(super) async fn rollback(&mut self) {
        if self.in_tx {
            self.in_tx = false;
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
    }

    /// Takes up to `limit` messages after `cursor` from the head of a queue, counting the
    /// delivery in the same statement (deliveries are counted before a consumer sees a message,
    /// so a crash while handling it counts).
    pub(super) async fn take_next(
        &mut self,
        queue_id: i64,
        cursor: i64,
        limit: usize,
    ) -> Result<Vec<StoredRow>, sqlx::Error> {
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
    pub(super) async fn take_seqs(&mut self, seqs: &[i64]) -> Result<Vec<StoredRow>, sqlx::Error> {
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

/// A list of sequences as a JSON array, for `json_each`.
pub(super) fn json_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into())
}

impl Writer {
    /// Opens (creating when missing) the queue file and loads queues, bindings and counts.
    pub(in crate::broker::embedded) async fn open(
        path: &std::path::Path,
        full_sync: bool,
    ) -> Result<Self, BrokerError> {
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
            // Checkpoints run on a connection of their own (`checkpoint.rs`); the writer's
            // is the backstop.
            .pragma("wal_autocheckpoint", WRITER_BACKSTOP_PAGES.to_string())
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
        let checkpoints = Checkpoints::start(&opts, shown.clone()).await.map_err(err)?;
        info!(path = %shown, queues = queues.len(), messages = total, delayed = next_due.is_some(), "embedded broker open");
        Ok(Self {
            path: shown,
            db: Db { conn, in_tx: false, checkpoints },
            queues,
            names,
            routes: HashMap::new(),
            consumers: HashMap::new(),
            next_seq: max.unwrap_or(0) + 1,
            next_due,
            dirty: BTreeSet::new(),
            inserts: Vec::new(),
            acked: Vec::new(),
            grouped: Vec::new(),
            grouped_since: None,
        })
    }
}
