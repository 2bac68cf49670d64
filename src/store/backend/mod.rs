//! The two sqlx backends, SQLite and PostgreSQL, as one generic store: [`SqlStore`] over a sqlx
//! database that implements [`Backend`]. Both run the same SQL (`$n` placeholders, upserts with
//! `ON CONFLICT`, `RETURNING`, window functions; no backend-specific functions), written once,
//! generic over the database, and the conformance suite (`tests/it/store/`) checks that it
//! behaves the same on each.
//!
//! The shared SQL is split along the store's parts, one trait of provided methods each:
//! [`DeliveryLog`] (`deliveries.rs`: attempts, deliveries, retention), [`AttemptStats`]
//! (`stats.rs`), [`DeadLetterIndex`] (`dead_letters.rs`: dead letters and replay leases),
//! [`SubscriptionTable`] (`subscriptions.rs`), [`AuditTrail`] (`audit.rs`) and [`PortalLinks`]
//! (`portal.rs`). The [`Store`] impl
//! below only hands each call to them. A backend takes the shared SQL with an empty impl of each
//! trait (`sqlite.rs`, `postgres.rs`); to give one backend its own version of an operation,
//! override that method in its impl, and the other backend keeps the shared one. The delivery
//! log's batch write is the one operation each backend does its own way (`batch.rs`: SQLite's
//! multi-row statements, PostgreSQL's `UNNEST`), so it has no shared version.
//!
//! What differs is in [`Backend`]: how a writing transaction begins (SQLite takes the write lock
//! up front, `BEGIN IMMEDIATE`, waiting up to the busy timeout, so that concurrent writers queue
//! instead of failing; PostgreSQL relies on row locks: under `READ COMMITTED` a conditional
//! `UPDATE` waits for a concurrent one and then re-checks its condition on the committed row),
//! and the change feed of [`Store::subscription_changes`], which only PostgreSQL has (`LISTEN`,
//! fed by a trigger's `NOTIFY`). Opening (connection options, the embedded migrations) is each
//! backend's own `open`.
//!
//! Every trait of shared SQL repeats the same `where` clause: what the SQL needs of the database
//! (executors, the column types it binds and reads). Rust does not carry a trait's `where`
//! clause over to its users (only supertraits; rust-lang/rust#20671), so each generic item
//! states it; a new column type is one more line in each.

mod audit;
mod batch;
mod dead_letters;
mod deliveries;
mod portal;
mod postgres;
mod sqlite;
mod stats;
mod subscriptions;

use self::audit::AuditTrail;
use self::dead_letters::DeadLetterIndex;
use self::deliveries::DeliveryLog;
use self::portal::PortalLinks;
use self::stats::AttemptStats;
use self::subscriptions::SubscriptionTable;
use super::{
    Attempt, AuditEntry, AuditFilter, DeadLetter, DeadLetterFilter, Delivery, DeliveryFilter, Page, PortalLink, Pruned,
    RouteStats, SeriesBucket, Store, StoreError, SubscriptionRecord,
};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, SqlStr, Transaction, Type};
use std::borrow::Cow;
use std::collections::HashSet;
use tokio::sync::mpsc;

/// A store on a sqlx database: [`SqliteStore`] or [`PostgresStore`].
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

/// SQLite: one file (`sqlite://hookrelay.db`), created when missing, WAL journal.
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

/// PostgreSQL: shared by several replicas.
pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// What one backend does its own way; everything else is the shared SQL.
#[async_trait]
pub trait Backend: Database {
    /// [`Store::backend`]: `sqlite` or `postgres`.
    const BACKEND: &'static str;
    /// The statement that begins a transaction that will write.
    const BEGIN_WRITE: &'static str;

    /// The rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// [`Store::subscription_changes`]: a feed of subscription changes made by any process
    /// sharing the database, or `None` where there is none.
    async fn change_feed(pool: &Pool<Self>) -> Result<Option<mpsc::Receiver<()>>, StoreError>;
}

/// A transaction that will write, begun the backend's way ([`Backend::BEGIN_WRITE`]).
async fn write_tx<DB: Backend>(pool: &Pool<DB>) -> Result<Transaction<'static, DB>, sqlx::Error> {
    pool.begin_with(DB::BEGIN_WRITE).await
}

/// The embedded migrations of one backend, applied in order. Never edit one that has shipped:
/// databases record its checksum. Add the next one instead.
fn migrator(migrations: &[(&'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        (1..)
            .zip(migrations)
            .map(|(version, &(description, sql))| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// How many ids one `IN (…)` list binds (well under both backends' limits).
const IDS_PER_STATEMENT: usize = 500;

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

fn json_column(what: impl FnOnce() -> String, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { what: what(), why: e.to_string() })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// ` AND route IN (…)` for a filter's list of routes (an empty list matches nothing).
fn push_routes<DB: Database>(q: &mut sqlx::QueryBuilder<DB>, routes: &[String])
where
    for<'r> String: Encode<'r, DB> + Type<DB>,
{
    if routes.is_empty() {
        q.push(" AND 1 = 0");
        return;
    }
    q.push(" AND route IN (");
    let mut list = q.separated(", ");
    for r in routes {
        list.push_bind(r.clone());
    }
    q.push(")");
}

/// `ids` without repeats, in their first order.
fn distinct(ids: &[String]) -> Vec<&String> {
    let mut seen = HashSet::new();
    ids.iter().filter(|id| seen.insert(id.as_str())).collect()
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend + DeliveryLog + AttemptStats + DeadLetterIndex + SubscriptionTable + AuditTrail + PortalLinks,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> String: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> i64: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> bool: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Encode<'r, DB> + Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Encode<'r, DB>,
    for<'r> Option<i64>: Encode<'r, DB>,
    for<'r> Option<Vec<u8>>: Encode<'r, DB>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_attempts(&self, batch: &[Attempt]) -> Result<(), StoreError> {
        DB::record_attempts(&self.pool, batch).await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Page<Delivery>, StoreError> {
        DB::deliveries(&self.pool, filter).await
    }

    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        DB::delivery(&self.pool, id).await
    }

    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        DB::attempts(&self.pool, delivery_id).await
    }

    async fn add_dead_letter(&self, dl: &DeadLetter) -> Result<bool, StoreError> {
        DB::add_dead_letter(&self.pool, dl).await
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Page<DeadLetter>, StoreError> {
        DB::dead_letters(&self.pool, filter).await
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        DB::dead_letter(&self.pool, id).await
    }

    async fn claim_replay(
        &self,
        ids: &[String],
        claim: &str,
        at_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        DB::claim_replay(&self.pool, ids, claim, at_ms, lease_ms).await
    }

    async fn mark_replayed(&self, ids: &[String], claim: &str, at_ms: i64) -> Result<Vec<String>, StoreError> {
        DB::mark_replayed(&self.pool, ids, claim, at_ms).await
    }

    async fn release_replay(&self, ids: &[String], claim: &str) -> Result<Vec<String>, StoreError> {
        DB::release_replay(&self.pool, ids, claim).await
    }

    async fn dead_letter_ids(&self, filter: &DeadLetterFilter, max: u32) -> Result<Vec<String>, StoreError> {
        DB::dead_letter_ids(&self.pool, filter, max).await
    }

    async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        DB::count_dead_letters(&self.pool, filter).await
    }

    async fn delivery_event(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        DB::delivery_event(&self.pool, id).await
    }

    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        let pruned = DB::prune(&self.pool, before_ms).await?;
        DB::prune_portal_links(&self.pool, before_ms).await?;
        Ok(pruned)
    }

    async fn stats(&self, since_ms: i64, until_ms: i64, route: Option<&str>) -> Result<Vec<RouteStats>, StoreError> {
        DB::stats(&self.pool, since_ms, until_ms, route).await
    }

    async fn attempt_series(
        &self,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
        routes: Option<&[String]>,
    ) -> Result<Vec<SeriesBucket>, StoreError> {
        DB::attempt_series(&self.pool, since_ms, until_ms, bucket_ms, routes).await
    }

    async fn create_portal_link(&self, link: &PortalLink) -> Result<(), StoreError> {
        DB::create_portal_link(&self.pool, link).await
    }

    async fn use_portal_link(&self, nonce_hash: &str, at_ms: i64) -> Result<Option<PortalLink>, StoreError> {
        DB::use_portal_link(&self.pool, nonce_hash, at_ms).await
    }

    async fn create_subscription(
        &self,
        sub: &SubscriptionRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<SubscriptionRecord, StoreError> {
        DB::create_subscription(&self.pool, sub, audit).await
    }

    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        DB::subscriptions(&self.pool).await
    }

    async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        DB::subscription(&self.pool, id).await
    }

    async fn subscription_by_name(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        DB::subscription_by_name(&self.pool, name).await
    }

    async fn update_subscription(
        &self,
        sub: &SubscriptionRecord,
        expected_version: i64,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        DB::update_subscription(&self.pool, sub, expected_version, at_ms, audit).await
    }

    async fn delete_subscription(&self, id: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError> {
        DB::delete_subscription(&self.pool, id, audit).await
    }

    async fn set_subscription_enabled(
        &self,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        DB::set_subscription_enabled(&self.pool, id, enabled, reason, at_ms, audit).await
    }

    async fn subscriptions_generation(&self) -> Result<i64, StoreError> {
        DB::subscriptions_generation(&self.pool).await
    }

    async fn subscription_changes(&self) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
        DB::change_feed(&self.pool).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<bool, StoreError> {
        DB::append_audit(&self.pool, entry).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>, StoreError> {
        DB::audit(&self.pool, filter).await
    }
}
