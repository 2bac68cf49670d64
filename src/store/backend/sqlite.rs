//! SQLite: opening a file (created when missing, WAL journal, migrated before the pool opens
//! with the delivery log's statements prepared on each connection) and what SQLite does its own
//! way: `BEGIN IMMEDIATE`, and the delivery log's batch writes (`batch.rs`: multi-row statements
//! of a few fixed sizes). It runs the rest of the shared SQL as it is.

use super::{
    Attempt, AttemptStats, AuditTrail, Backend, DeadLetterIndex, DeliveryLog, PortalLinks, SqlStore, StoreError,
    SubscriptionTable, migrator,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};
use std::str::FromStr;
use tokio::sync::mpsc;

/// The pool's connections: the delivery log's writer, and readers for the API beside it (WAL).
const CONNECTIONS: u32 = 4;

impl SqlStore<Sqlite> {
    /// Opens (creating when missing) and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // The delivery log's writes, measured with `cargo bench --bench store -- --batches
            // 400 --size 500` (user + system CPU per attempt, docs/performance.md): 58 µs with
            // SQLite's defaults, 46 µs with the statement journals of its multi-row inserts in
            // memory instead of a temporary file, 43 µs with a checkpoint every 10,000 WAL pages
            // (about 40 MiB) instead of 1,000, fewer fsyncs and pages written once per
            // checkpoint, and 38 µs with an 8 MiB page cache instead of 2 MiB, fewer pages read
            // back from the file.
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", "10000")
            .pragma("cache_size", "-8192")
            // SQLite's default, said here because the delivery log's trigger (migration 0006)
            // updates the row it fires on, and must not fire again for that update.
            .pragma("recursive_triggers", "off")
            .busy_timeout(std::time::Duration::from_secs(10));
        // Migrated through a connection of its own, kept open until the pool is (an in-memory
        // database lives as long as a connection to it).
        let migrating = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
        migrator(&[
            ("delivery log", include_str!("../../../migrations/sqlite/0001_delivery_log.sql")),
            (
                "subscriptions audit stats",
                include_str!("../../../migrations/sqlite/0002_subscriptions_audit_stats.sql"),
            ),
            ("replay leases", include_str!("../../../migrations/sqlite/0003_replay_leases.sql")),
            ("tenants portal links", include_str!("../../../migrations/sqlite/0004_tenants_portal_links.sql")),
            ("attempt request headers", include_str!("../../../migrations/sqlite/0005_attempt_request_headers.sql")),
            (
                "latest attempt in deliveries",
                include_str!("../../../migrations/sqlite/0006_latest_attempt_in_deliveries.sql"),
            ),
        ])
        .run(&migrating)
        .await?;
        // The pool opens once the tables exist, all its connections at once, each with the
        // delivery log's statements prepared (`batch::prepare`, every text): the first
        // batches do not wait for SQLite to compile their `INSERT`s, and instruction counts per
        // event (docs/performance.md) do not depend on which batch sizes a run happened to reach.
        // No ping before each acquire: the file is local, and a ping is a round trip to the
        // connection's worker thread that tells nothing the next statement would not.
        let pool = SqlitePoolOptions::new()
            .max_connections(CONNECTIONS)
            .min_connections(CONNECTIONS)
            .test_before_acquire(false)
            .after_connect(|conn, _| Box::pin(super::batch::prepare(conn)))
            .connect_with(opts)
            .await?;
        migrating.close().await;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Backend for Sqlite {
    const BACKEND: &'static str = "sqlite";
    /// Takes the write lock up front (waiting up to the busy timeout), so that concurrent
    /// writers queue instead of failing when a deferred transaction tries to upgrade its lock.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// One process owns a SQLite file: there is nobody else's change to hear of.
    async fn change_feed(_: &Pool<Self>) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
        Ok(None)
    }
}

#[async_trait]
impl DeliveryLog for Sqlite {
    async fn record_attempts(pool: &Pool<Self>, batch: &[Attempt]) -> Result<(), StoreError> {
        super::batch::sqlite(pool, batch).await
    }
}
impl AttemptStats for Sqlite {}
impl DeadLetterIndex for Sqlite {}
impl SubscriptionTable for Sqlite {}
impl AuditTrail for Sqlite {}
impl PortalLinks for Sqlite {}
