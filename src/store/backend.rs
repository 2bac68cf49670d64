//! The two sqlx backends. Both run the same SQL (`$n` placeholders, upserts with `ON CONFLICT`,
//! `RETURNING`, window functions; no backend-specific functions), so one macro body serves both
//! and the conformance suite checks that it behaves the same on each. The only difference is how
//! a writing transaction begins: SQLite takes the write lock up front (`BEGIN IMMEDIATE`, waiting
//! up to the busy timeout) so that concurrent writers queue instead of failing; PostgreSQL relies
//! on row locks (`READ COMMITTED`: a conditional `UPDATE` waits for a concurrent one and then
//! re-checks its condition on the committed row). The one thing only PostgreSQL has is the
//! change feed of [`Store::subscription_changes`] (`LISTEN`, fed by a trigger's `NOTIFY`).

use super::subscription::{secrets_from_json, secrets_to_json};
use super::{
    Attempt, AuditEntry, AuditFilter, Conflict, DeadLetter, DeadLetterFilter, Delivery, DeliveryFilter, Outcome, Page,
    Pruned, RouteStats, SUBSCRIPTIONS_CHANNEL, Store, StoreError, SubscriptionRecord, cursor, delivery_id,
    parse_cursor,
};
use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{QueryBuilder, Row, SqlStr};
use std::borrow::Cow;
use std::collections::HashSet;
use std::str::FromStr;
use tokio::sync::mpsc;
use tracing::warn;

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
        migrator(&[
            ("delivery log", include_str!("../../migrations/sqlite/0001_delivery_log.sql")),
            ("subscriptions audit stats", include_str!("../../migrations/sqlite/0002_subscriptions_audit_stats.sql")),
            ("replay leases", include_str!("../../migrations/sqlite/0003_replay_leases.sql")),
        ])
        .run(&pool)
        .await?;
        Ok(Self { pool })
    }

    /// One process owns a SQLite file: there is nobody else's change to hear of.
    async fn changes(&self) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
        Ok(None)
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
        migrator(&[
            ("delivery log", include_str!("../../migrations/postgres/0001_delivery_log.sql")),
            ("subscriptions audit stats", include_str!("../../migrations/postgres/0002_subscriptions_audit_stats.sql")),
            ("replay leases", include_str!("../../migrations/postgres/0003_replay_leases.sql")),
        ])
        .run(&pool)
        .await?;
        Ok(Self { pool })
    }

    /// `LISTEN`s on [`SUBSCRIPTIONS_CHANNEL`] on a connection of its own (taken from the pool) in a
    /// background task, which wakes the receiver on every notification, and also after the
    /// connection was lost and re-established (what was announced meanwhile is lost); it ends when
    /// the receiver is dropped. Wakes coalesce: a reader that is busy gets one.
    async fn changes(&self) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(SUBSCRIPTIONS_CHANNEL).await?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = listener.try_recv() => next,
                };
                match next {
                    Ok(Some(_)) => failing = false,
                    Ok(None) => warn!("the store's change feed lost its connection and reconnected"),
                    Err(e) => {
                        if !failing {
                            warn!(error = %e, "the store's change feed cannot listen; subscription changes of other replicas arrive by polling until it can");
                        }
                        failing = true;
                    }
                }
                let _ = tx.try_send(());
                if failing {
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}

/// The columns of a delivery in lists (not the event it may keep).
const DELIVERY_COLUMNS: &str =
    "id, route, event_id, event_type, status, attempts, last_status, last_error, first_at, last_at";

/// One delivery's share of a batch of attempts.
struct DeliveryRow<'a> {
    id: String,
    /// The earliest attempt's time.
    first_at: i64,
    /// The highest attempt number.
    attempts: u32,
    /// The latest attempt (the later one in the batch on a tie, as one upsert per attempt in
    /// batch order would have left it).
    latest: &'a Attempt,
    /// The event, if an attempt carries it.
    event: Option<&'a [u8]>,
}

/// A batch of attempts folded into one row per delivery, sorted by delivery id.
fn delivery_rows(batch: &[Attempt]) -> Vec<DeliveryRow<'_>> {
    let mut rows: std::collections::BTreeMap<String, DeliveryRow<'_>> = std::collections::BTreeMap::new();
    for a in batch {
        let id = delivery_id(&a.route, &a.event_id);
        let row = rows.entry(id.clone()).or_insert(DeliveryRow {
            id,
            first_at: a.at_ms,
            attempts: a.attempt,
            latest: a,
            event: None,
        });
        row.first_at = row.first_at.min(a.at_ms);
        row.attempts = row.attempts.max(a.attempt);
        if a.at_ms >= row.latest.at_ms {
            row.latest = a;
        }
        row.event = row.event.or(a.event.as_deref());
    }
    rows.into_values().collect()
}

fn opt_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

fn json_column(what: impl FnOnce() -> String, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { what: what(), why: e.to_string() })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `ids` without repeats, in their first order.
fn distinct(ids: &[String]) -> Vec<&String> {
    let mut seen = HashSet::new();
    ids.iter().filter(|id| seen.insert(id.as_str())).collect()
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $name:literal, $begin_write:literal) => {
        impl $store {
            /// A transaction that will write.
            async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                self.pool.begin_with($begin_write).await
            }

            fn subscription_row(row: &<$db as sqlx::Database>::Row) -> Result<SubscriptionRecord, StoreError> {
                let id: String = row.try_get("id")?;
                let spec: String = row.try_get("spec")?;
                let secrets: String = row.try_get("secrets")?;
                Ok(SubscriptionRecord {
                    spec: json_column(|| format!("the spec of subscription {id:?}"), &spec)?,
                    secrets: secrets_from_json(&id, &secrets)?,
                    name: row.try_get("name")?,
                    enabled: row.try_get("enabled")?,
                    disabled_reason: row.try_get("disabled_reason")?,
                    created_at_ms: row.try_get("created_at")?,
                    updated_at_ms: row.try_get("updated_at")?,
                    version: row.try_get("version")?,
                    id,
                })
            }

            fn audit_row(row: &<$db as sqlx::Database>::Row) -> Result<AuditEntry, StoreError> {
                let id: String = row.try_get("id")?;
                let details: String = row.try_get("details")?;
                Ok(AuditEntry {
                    details: json_column(|| format!("the details of audit entry {id:?}"), &details)?,
                    at_ms: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    id,
                })
            }

            /// Bumps the subscriptions generation; the first write of every subscription change.
            async fn bump_generation(conn: &mut <$db as sqlx::Database>::Connection) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE generations SET value = value + 1 WHERE name = 'subscriptions'")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn insert_audit(
                conn: &mut <$db as sqlx::Database>::Connection,
                e: &AuditEntry,
            ) -> Result<bool, sqlx::Error> {
                let done = sqlx::query(
                    "INSERT INTO audit (id, at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&e.id)
                .bind(e.at_ms)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(e.details.to_string())
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn subscription_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
            ) -> Result<Option<SubscriptionRecord>, StoreError> {
                let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
                row.as_ref().map(Self::subscription_row).transpose()
            }

            fn push_dead_letter_filter(q: &mut QueryBuilder<$db>, f: &DeadLetterFilter) {
                if let Some(r) = &f.route {
                    q.push(" AND route = ").push_bind(r.clone());
                }
                if let Some(r) = &f.reason {
                    q.push(" AND reason = ").push_bind(r.clone());
                }
                if let Some(e) = &f.event_id {
                    q.push(" AND event_id = ").push_bind(e.clone());
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
            }

            /// Runs `UPDATE dead_letters SET … WHERE … AND id IN (ids) RETURNING id` in one
            /// transaction, a chunk of ids per statement; `set_where` pushes the `SET … WHERE …`
            /// part (ending in a condition). Returns the ids it changed, in the order asked, once each.
            async fn update_dead_letters(
                &self,
                ids: &[String],
                set_where: impl Fn(&mut QueryBuilder<$db>),
            ) -> Result<Vec<String>, StoreError> {
                let ids = distinct(ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // Sorted, so that concurrent calls lock rows in the same order (no deadlock).
                let mut sorted = ids.clone();
                sorted.sort();
                let mut changed = HashSet::new();
                let mut tx = self.write_tx().await?;
                for chunk in sorted.chunks(IDS_PER_STATEMENT) {
                    let mut q = QueryBuilder::<$db>::new("UPDATE dead_letters SET ");
                    set_where(&mut q);
                    q.push(" AND id IN (");
                    let mut list = q.separated(", ");
                    for id in chunk {
                        list.push_bind((*id).clone());
                    }
                    q.push(") RETURNING id");
                    for row in q.build().fetch_all(&mut *tx).await? {
                        changed.insert(row.try_get::<String, _>("id")?);
                    }
                }
                tx.commit().await?;
                Ok(ids.into_iter().filter(|id| changed.contains(id.as_str())).cloned().collect())
            }

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
                let mut tx = self.write_tx().await?;
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
                // One row per delivery (PostgreSQL refuses to upsert a row twice in one
                // statement), in id order so that concurrent writers lock rows in one order.
                let rows = delivery_rows(batch);
                let mut q = QueryBuilder::<$db>::new(
                    "INSERT INTO deliveries (id, route, event_id, event_type, status, attempts, last_status, \
                     last_error, first_at, last_at, event) ",
                );
                q.push_values(&rows, |mut b, row| {
                    let a = row.latest;
                    b.push_bind(row.id.clone())
                        .push_bind(a.route.clone())
                        .push_bind(a.event_id.clone())
                        .push_bind(a.event_type.clone())
                        .push_bind(a.outcome.as_str())
                        .push_bind(i64::from(row.attempts))
                        .push_bind(a.status.map(i64::from))
                        .push_bind(a.error.clone())
                        .push_bind(row.first_at)
                        .push_bind(a.at_ms)
                        .push_bind(row.event.map(<[u8]>::to_vec));
                });
                q.push(
                    " ON CONFLICT (id) DO UPDATE SET \
                     status = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.status ELSE deliveries.status END, \
                     last_status = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.last_status ELSE deliveries.last_status END, \
                     last_error = CASE WHEN excluded.last_at >= deliveries.last_at THEN excluded.last_error ELSE deliveries.last_error END, \
                     attempts = CASE WHEN excluded.attempts > deliveries.attempts THEN excluded.attempts ELSE deliveries.attempts END, \
                     first_at = CASE WHEN excluded.first_at < deliveries.first_at THEN excluded.first_at ELSE deliveries.first_at END, \
                     last_at = CASE WHEN excluded.last_at > deliveries.last_at THEN excluded.last_at ELSE deliveries.last_at END, \
                     event = COALESCE(excluded.event, deliveries.event)",
                );
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries(&self, f: &DeliveryFilter) -> Result<Page<Delivery>, StoreError> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"));
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
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::delivery_row).transpose()?)
            }

            async fn delivery_event(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let event: Option<Option<Vec<u8>>> = sqlx::query_scalar("SELECT event FROM deliveries WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(event.flatten())
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
                        event: None,
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
                Self::push_dead_letter_filter(&mut q, f);
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

            async fn claim_replay(
                &self,
                ids: &[String],
                claim: &str,
                at_ms: i64,
                lease_ms: i64,
            ) -> Result<Vec<String>, StoreError> {
                self.update_dead_letters(ids, |q| {
                    q.push("replay_claim = ").push_bind(claim.to_string());
                    q.push(", replay_claimed_at = ").push_bind(at_ms);
                    q.push(" WHERE replayed_at IS NULL AND (replay_claimed_at IS NULL OR replay_claimed_at <= ");
                    q.push_bind(at_ms.saturating_sub(lease_ms)).push(")");
                })
                .await
            }

            async fn mark_replayed(&self, ids: &[String], claim: &str, at_ms: i64) -> Result<Vec<String>, StoreError> {
                self.update_dead_letters(ids, |q| {
                    q.push("replayed_at = ").push_bind(at_ms);
                    q.push(", replay_claim = NULL, replay_claimed_at = NULL WHERE replay_claim = ");
                    q.push_bind(claim.to_string()).push(" AND replayed_at IS NULL");
                })
                .await
            }

            async fn release_replay(&self, ids: &[String], claim: &str) -> Result<Vec<String>, StoreError> {
                self.update_dead_letters(ids, |q| {
                    q.push("replay_claim = NULL, replay_claimed_at = NULL WHERE replay_claim = ");
                    q.push_bind(claim.to_string());
                })
                .await
            }

            async fn dead_letter_ids(&self, f: &DeadLetterFilter, max: u32) -> Result<Vec<String>, StoreError> {
                let mut q = QueryBuilder::<$db>::new("SELECT id FROM dead_letters WHERE 1 = 1");
                Self::push_dead_letter_filter(&mut q, f);
                q.push(" ORDER BY dead_at, id LIMIT ").push_bind(i64::from(max));
                let rows = q.build().fetch_all(&self.pool).await?;
                Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
            }

            async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
                let mut tx = self.write_tx().await?;
                let attempts = sqlx::query("DELETE FROM attempts WHERE at < $1").bind(before_ms).execute(&mut *tx).await?;
                // `last_at` is the latest attempt's time: below the cut, every attempt is gone.
                let deliveries =
                    sqlx::query("DELETE FROM deliveries WHERE last_at < $1").bind(before_ms).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(Pruned { attempts: attempts.rows_affected(), deliveries: deliveries.rows_affected() })
            }

            async fn stats(&self, since_ms: i64, until_ms: i64, route: Option<&str>) -> Result<Vec<RouteStats>, StoreError> {
                // Nearest-rank percentiles: among a route's n attempts sorted by duration, the p-th
                // percentile is the one at rank ceil(n * p / 100), in integers (n * p + 99) / 100.
                // The window functions number and count each route's rows inside the database.
                let mut q = QueryBuilder::<$db>::new(
                    "WITH w AS (SELECT route, outcome, duration_ms, at, \
                     ROW_NUMBER() OVER (PARTITION BY route ORDER BY duration_ms, id) AS rn, \
                     COUNT(*) OVER (PARTITION BY route) AS n \
                     FROM attempts WHERE at >= ",
                );
                q.push_bind(since_ms).push(" AND at < ").push_bind(until_ms);
                if let Some(r) = route {
                    q.push(" AND route = ").push_bind(r.to_string());
                }
                q.push(
                    ") SELECT route, COUNT(*) AS attempts, \
                     SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END) AS delivered, \
                     SUM(CASE WHEN outcome = 'dead' THEN 1 ELSE 0 END) AS dead, \
                     MIN(CASE WHEN rn = (n * 50 + 99) / 100 THEN duration_ms END) AS p50, \
                     MIN(CASE WHEN rn = (n * 95 + 99) / 100 THEN duration_ms END) AS p95, \
                     MIN(CASE WHEN rn = (n * 99 + 99) / 100 THEN duration_ms END) AS p99, \
                     MIN(at) AS first_at, MAX(at) AS last_at \
                     FROM w GROUP BY route",
                );
                let rows = q.build().fetch_all(&self.pool).await?;
                let ms = |v: Option<i64>| v.map(|v| v.max(0) as u64);
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let attempts = row.try_get::<i64, _>("attempts")?.max(0) as u64;
                    let delivered = row.try_get::<i64, _>("delivered")?.max(0) as u64;
                    out.push(RouteStats {
                        route: row.try_get("route")?,
                        attempts,
                        delivered,
                        failed: attempts - delivered,
                        dead: row.try_get::<i64, _>("dead")?.max(0) as u64,
                        success_rate: (attempts > 0).then(|| delivered as f64 / attempts as f64),
                        latency_p50_ms: ms(row.try_get("p50")?),
                        latency_p95_ms: ms(row.try_get("p95")?),
                        latency_p99_ms: ms(row.try_get("p99")?),
                        first_at_ms: row.try_get("first_at")?,
                        last_at_ms: row.try_get("last_at")?,
                    });
                }
                // Byte order on both backends (PostgreSQL's collation might sort otherwise).
                out.sort_by(|a, b| a.route.cmp(&b.route));
                Ok(out)
            }

            async fn create_subscription(
                &self,
                sub: &SubscriptionRecord,
                audit: Option<&AuditEntry>,
            ) -> Result<SubscriptionRecord, StoreError> {
                let mut tx = self.write_tx().await?;
                Self::bump_generation(&mut tx).await?;
                let inserted = sqlx::query(
                    "INSERT INTO subscriptions (id, name, spec, secrets, enabled, disabled_reason, created_at, \
                     updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)",
                )
                .bind(&sub.id)
                .bind(&sub.name)
                .bind(sub.spec.to_string())
                .bind(secrets_to_json(&sub.secrets))
                .bind(sub.enabled)
                .bind(&sub.disabled_reason)
                .bind(sub.created_at_ms)
                .bind(sub.created_at_ms)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => {
                        tx.rollback().await?;
                        let id_taken = self.subscription(&sub.id).await?.is_some();
                        return Err(if id_taken {
                            Conflict::IdTaken { id: sub.id.clone() }
                        } else {
                            Conflict::NameTaken { name: sub.name.clone() }
                        }
                        .into());
                    }
                    other => other?,
                };
                if let Some(a) = audit {
                    Self::insert_audit(&mut tx, a).await?;
                }
                tx.commit().await?;
                Ok(SubscriptionRecord { version: 1, updated_at_ms: sub.created_at_ms, ..sub.clone() })
            }

            async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM subscriptions ORDER BY name").fetch_all(&self.pool).await?;
                rows.iter().map(Self::subscription_row).collect()
            }

            async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
                let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::subscription_row).transpose()
            }

            async fn subscription_by_name(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
                let row =
                    sqlx::query("SELECT * FROM subscriptions WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::subscription_row).transpose()
            }

            async fn update_subscription(
                &self,
                sub: &SubscriptionRecord,
                expected_version: i64,
                at_ms: i64,
                audit: Option<&AuditEntry>,
            ) -> Result<Option<SubscriptionRecord>, StoreError> {
                let mut tx = self.write_tx().await?;
                Self::bump_generation(&mut tx).await?;
                let updated = sqlx::query(
                    "UPDATE subscriptions SET name = $1, spec = $2, secrets = $3, enabled = $4, disabled_reason = $5, \
                     updated_at = $6, version = version + 1 WHERE id = $7 AND version = $8",
                )
                .bind(&sub.name)
                .bind(sub.spec.to_string())
                .bind(secrets_to_json(&sub.secrets))
                .bind(sub.enabled)
                .bind(&sub.disabled_reason)
                .bind(at_ms)
                .bind(&sub.id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await;
                let updated = match updated {
                    Err(e) if is_unique_violation(&e) => {
                        tx.rollback().await?;
                        return Err(Conflict::NameTaken { name: sub.name.clone() }.into());
                    }
                    other => other?,
                };
                if updated.rows_affected() == 0 {
                    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM subscriptions WHERE id = $1")
                        .bind(&sub.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    return match current {
                        None => Ok(None),
                        Some(current) => {
                            Err(Conflict::StaleVersion { id: sub.id.clone(), expected: expected_version, current }.into())
                        }
                    };
                }
                if let Some(a) = audit {
                    Self::insert_audit(&mut tx, a).await?;
                }
                let stored = Self::subscription_in(&mut tx, &sub.id).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn delete_subscription(&self, id: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError> {
                let mut tx = self.write_tx().await?;
                Self::bump_generation(&mut tx).await?;
                let done = sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(id).execute(&mut *tx).await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                if let Some(a) = audit {
                    Self::insert_audit(&mut tx, a).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn set_subscription_enabled(
                &self,
                id: &str,
                enabled: bool,
                reason: Option<&str>,
                at_ms: i64,
                audit: Option<&AuditEntry>,
            ) -> Result<Option<SubscriptionRecord>, StoreError> {
                let mut tx = self.write_tx().await?;
                Self::bump_generation(&mut tx).await?;
                let done = sqlx::query(
                    "UPDATE subscriptions SET enabled = $1, disabled_reason = $2, updated_at = $3, version = version + 1 \
                     WHERE id = $4 AND enabled <> $5",
                )
                .bind(enabled)
                .bind(if enabled { None } else { reason })
                .bind(at_ms)
                .bind(id)
                .bind(enabled)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    // Absent, or already in that state: nothing changes (no version, no generation).
                    let stored = Self::subscription_in(&mut tx, id).await?;
                    tx.rollback().await?;
                    return Ok(stored);
                }
                if let Some(a) = audit {
                    Self::insert_audit(&mut tx, a).await?;
                }
                let stored = Self::subscription_in(&mut tx, id).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn subscriptions_generation(&self) -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar("SELECT value FROM generations WHERE name = 'subscriptions'")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn subscription_changes(&self) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
                self.changes().await
            }

            async fn append_audit(&self, entry: &AuditEntry) -> Result<bool, StoreError> {
                let mut conn = self.pool.acquire().await?;
                Ok(Self::insert_audit(&mut conn, entry).await?)
            }

            async fn audit(&self, f: &AuditFilter) -> Result<Page<AuditEntry>, StoreError> {
                let mut q = QueryBuilder::<$db>::new("SELECT * FROM audit WHERE 1 = 1");
                if let Some(a) = &f.actor {
                    q.push(" AND actor = ").push_bind(a.clone());
                }
                if let Some(a) = &f.action {
                    q.push(" AND action = ").push_bind(a.clone());
                }
                if let Some(t) = &f.target {
                    q.push(" AND target = ").push_bind(t.clone());
                }
                if let Some(s) = f.since_ms {
                    q.push(" AND at >= ").push_bind(s);
                }
                if let Some(u) = f.until_ms {
                    q.push(" AND at < ").push_bind(u);
                }
                if let Some(c) = &f.cursor {
                    let (at, id) = parse_cursor(c)?;
                    q.push(" AND (at < ").push_bind(at).push(" OR (at = ").push_bind(at);
                    q.push(" AND id < ").push_bind(id).push("))");
                }
                let limit = f.limit.clamp(1, 1000);
                q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(i64::from(limit) + 1);
                let rows = q.build().fetch_all(&self.pool).await?;
                let mut items = rows.iter().map(Self::audit_row).collect::<Result<Vec<_>, _>>()?;
                let next = (items.len() > limit as usize).then(|| {
                    items.truncate(limit as usize);
                    let last = items.last().expect("limit is at least 1");
                    cursor(last.at_ms, &last.id)
                });
                Ok(Page { items, next })
            }
        }
    };
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite", "BEGIN IMMEDIATE");
impl_store!(PostgresStore, sqlx::Postgres, "postgres", "BEGIN");
