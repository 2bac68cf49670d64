//! The two sqlx backends. Both run the same SQL (placeholders through `QueryBuilder`, upserts with
//! `ON CONFLICT`, no backend-specific functions), so one macro body serves both and the
//! conformance suite checks that it behaves the same on each.

use super::{
    Attempt, DeadLetter, DeadLetterFilter, Delivery, DeliveryFilter, Outcome, Page, Store, StoreError, cursor,
    delivery_id, parse_cursor,
};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{QueryBuilder, Row, SqlStr};
use std::borrow::Cow;
use std::str::FromStr;

fn migrator(sql: &'static str) -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("delivery log"),
        MigrationType::Simple,
        SqlStr::from_static(sql),
        false,
    )])
}

/// SQLite: one file (`sqlite://hookrelay.db`), created when missing, WAL journal.
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        migrator(include_str!("../../migrations/sqlite/0001_delivery_log.sql")).run(&pool).await?;
        Ok(Self { pool })
    }
}

/// PostgreSQL: shared by several replicas.
pub struct PostgresStore {
    pool: sqlx::PgPool,
}

impl PostgresStore {
    /// Connects and migrates (migrations take an advisory lock, so replicas can start together).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(url).await?;
        migrator(include_str!("../../migrations/postgres/0001_delivery_log.sql")).run(&pool).await?;
        Ok(Self { pool })
    }
}

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $name:literal) => {
        impl $store {
            fn delivery_row(row: &<$db as sqlx::Database>::Row) -> Result<Delivery, sqlx::Error> {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    route: row.try_get("route")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    status: Outcome::parse(&row.try_get::<String, _>("status")?),
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    last_status: opt_u16(row.try_get("last_status")?),
                    last_error: row.try_get("last_error")?,
                    first_at_ms: row.try_get("first_at")?,
                    last_at_ms: row.try_get("last_at")?,
                })
            }

            fn dead_letter_row(row: &<$db as sqlx::Database>::Row) -> Result<DeadLetter, sqlx::Error> {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    route: row.try_get("route")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    reason: row.try_get("reason")?,
                    error: row.try_get("error")?,
                    details: row.try_get("details")?,
                    last_status: opt_u16(row.try_get("last_status")?),
                    last_response: row.try_get("last_response")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    body: row.try_get("body")?,
                    headers: row.try_get("headers")?,
                    dead_at_ms: row.try_get("dead_at")?,
                    replayed_at_ms: row.try_get("replayed_at")?,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn record_attempts(&self, batch: &[Attempt]) -> Result<(), StoreError> {
                if batch.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, \
                     duration_ms, response_body, error, payload, config_version, config_revision, at) ",
                );
                q.push_values(batch, |mut b, a| {
                    b.push_bind(delivery_id(&a.route, &a.event_id))
                        .push_bind(a.route.clone())
                        .push_bind(a.event_id.clone())
                        .push_bind(a.event_type.clone())
                        .push_bind(i64::from(a.attempt))
                        .push_bind(a.outcome.as_str())
                        .push_bind(a.status.map(i64::from))
                        .push_bind(a.duration_ms as i64)
                        .push_bind(a.response_body.clone())
                        .push_bind(a.error.clone())
                        .push_bind(a.payload.clone())
                        .push_bind(a.config_version as i64)
                        .push_bind(a.config_revision.clone())
                        .push_bind(a.at_ms);
                });
                q.build().execute(&mut *tx).await?;
                for a in batch {
                    sqlx::query(
                        "INSERT INTO deliveries (id, route, event_id, event_type, status, attempts, last_status, \
                         last_error, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (id) DO UPDATE SET \
                         status = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.status ELSE deliveries.status END, \
                         last_status = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.last_status ELSE deliveries.last_status END, \
                         last_error = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.last_error ELSE deliveries.last_error END, \
                         attempts = CASE WHEN excluded.attempts > deliveries.attempts THEN excluded.attempts ELSE deliveries.attempts END, \
                         first_at = CASE WHEN excluded.first_at < deliveries.first_at THEN excluded.first_at ELSE deliveries.first_at END, \
                         last_at = CASE WHEN excluded.last_at > deliveries.last_at THEN excluded.last_at ELSE deliveries.last_at END",
                    )
                    .bind(delivery_id(&a.route, &a.event_id))
                    .bind(&a.route)
                    .bind(&a.event_id)
                    .bind(&a.event_type)
                    .bind(a.outcome.as_str())
                    .bind(i64::from(a.attempt))
                    .bind(a.status.map(i64::from))
                    .bind(&a.error)
                    .bind(a.at_ms)
                    .bind(a.at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(&self, f: &DeliveryFilter) -> Result<Page<Delivery>, StoreError> {
                let mut q = QueryBuilder::<$db>::new("SELECT * FROM deliveries WHERE 1 = 1");
                if let Some(r) = &f.route {
                    q.push(" AND route = ").push_bind(r.clone());
                }
                if let Some(s) = f.status {
                    q.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(t) = &f.event_type {
                    q.push(" AND event_type = ").push_bind(t.clone());
                }
                if let Some(s) = f.since_ms {
                    q.push(" AND last_at >= ").push_bind(s);
                }
                if let Some(u) = f.until_ms {
                    q.push(" AND last_at < ").push_bind(u);
                }
                if let Some(c) = &f.cursor {
                    let (at, id) = parse_cursor(c)?;
                    q.push(" AND (last_at < ").push_bind(at).push(" OR (last_at = ").push_bind(at);
                    q.push(" AND id < ").push_bind(id).push("))");
                }
                let limit = f.limit.clamp(1, 1000);
                q.push(" ORDER BY last_at DESC, id DESC LIMIT ").push_bind(i64::from(limit) + 1);
                let rows = q.build().fetch_all(&self.pool).await?;
                let mut items = rows.iter().map(Self::delivery_row).collect::<Result<Vec<_>, _>>()?;
                let next = (items.len() > limit as usize).then(|| {
                    items.truncate(limit as usize);
                    let last = items.last().expect("limit is at least 1");
                    cursor(last.last_at_ms, &last.id)
                });
                Ok(Page { items, next })
            }

            async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
                let row = sqlx::query("SELECT * FROM deliveries WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                Ok(row.as_ref().map(Self::delivery_row).transpose()?)
            }

            async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
                let rows = sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY id")
                    .bind(delivery_id)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    out.push(Attempt {
                        route: row.try_get("route")?,
                        event_id: row.try_get("event_id")?,
                        event_type: row.try_get("event_type")?,
                        attempt: row.try_get::<i64, _>("attempt")? as u32,
                        outcome: Outcome::parse(&row.try_get::<String, _>("outcome")?),
                        status: opt_u16(row.try_get("status")?),
                        duration_ms: row.try_get::<i64, _>("duration_ms")? as u64,
                        response_body: row.try_get("response_body")?,
                        error: row.try_get("error")?,
                        payload: row.try_get("payload")?,
                        config_version: row.try_get::<i64, _>("config_version")? as u64,
                        config_revision: row.try_get("config_revision")?,
                        at_ms: row.try_get("at")?,
                    });
                }
                Ok(out)
            }

            async fn add_dead_letter(&self, dl: &DeadLetter) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO dead_letters (id, route, event_id, event_type, reason, error, details, last_status, \
                     last_response, attempts, body, headers, dead_at, replayed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&dl.id)
                .bind(&dl.route)
                .bind(&dl.event_id)
                .bind(&dl.event_type)
                .bind(&dl.reason)
                .bind(&dl.error)
                .bind(&dl.details)
                .bind(dl.last_status.map(i64::from))
                .bind(&dl.last_response)
                .bind(i64::from(dl.attempts))
                .bind(&dl.body)
                .bind(&dl.headers)
                .bind(dl.dead_at_ms)
                .bind(dl.replayed_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn dead_letters(&self, f: &DeadLetterFilter) -> Result<Page<DeadLetter>, StoreError> {
                let mut q = QueryBuilder::<$db>::new("SELECT * FROM dead_letters WHERE 1 = 1");
                if let Some(r) = &f.route {
                    q.push(" AND route = ").push_bind(r.clone());
                }
                if let Some(r) = &f.reason {
                    q.push(" AND reason = ").push_bind(r.clone());
                }
                if let Some(s) = f.since_ms {
                    q.push(" AND dead_at >= ").push_bind(s);
                }
                if let Some(u) = f.until_ms {
                    q.push(" AND dead_at < ").push_bind(u);
                }
                if !f.include_replayed {
                    q.push(" AND replayed_at IS NULL");
                }
                if let Some(c) = &f.cursor {
                    let (at, id) = parse_cursor(c)?;
                    q.push(" AND (dead_at < ").push_bind(at).push(" OR (dead_at = ").push_bind(at);
                    q.push(" AND id < ").push_bind(id).push("))");
                }
                let limit = f.limit.clamp(1, 1000);
                q.push(" ORDER BY dead_at DESC, id DESC LIMIT ").push_bind(i64::from(limit) + 1);
                let rows = q.build().fetch_all(&self.pool).await?;
                let mut items = rows.iter().map(Self::dead_letter_row).collect::<Result<Vec<_>, _>>()?;
                let next = (items.len() > limit as usize).then(|| {
                    items.truncate(limit as usize);
                    let last = items.last().expect("limit is at least 1");
                    cursor(last.dead_at_ms, &last.id)
                });
                Ok(Page { items, next })
            }

            async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
                let row = sqlx::query("SELECT * FROM dead_letters WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                Ok(row.as_ref().map(Self::dead_letter_row).transpose()?)
            }

            async fn mark_replayed(&self, ids: &[String], at_ms: i64) -> Result<Vec<String>, StoreError> {
                let mut marked = Vec::new();
                let mut tx = self.pool.begin().await?;
                for id in ids {
                    let done = sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2 AND replayed_at IS NULL")
                        .bind(at_ms)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 1 {
                        marked.push(id.clone());
                    }
                }
                tx.commit().await?;
                Ok(marked)
            }

            async fn prune_attempts(&self, before_ms: i64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM attempts WHERE at < $1").bind(before_ms).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }
        }
    };
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
impl_store!(PostgresStore, sqlx::Postgres, "postgres");
