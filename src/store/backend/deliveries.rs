//! The delivery log in SQL: attempts written in batches together with the one row per delivery
//! they update (each backend its own way, `batch.rs`), deliveries listed and read (with the event
//! a delivery kept), a delivery's attempts (the earlier ones in `attempts`, the latest in its
//! row: migration `0006`), and retention ([`Store::prune`](crate::store::Store::prune)).

use super::{Backend, opt_u16, write_tx};
use crate::store::{Attempt, Delivery, DeliveryFilter, Outcome, Page, Pruned, StoreError, cursor, parse_cursor};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

/// The columns of a delivery in lists (not the event it may keep).
const DELIVERY_COLUMNS: &str =
    "id, route, event_id, event_type, status, attempts, last_status, last_error, first_at, last_at";

/// A delivery's attempts, oldest first: the earlier ones from `attempts`, then the latest from
/// its row (none for a row migrated without any attempt left).
const ATTEMPTS_OF_DELIVERY: &str = "SELECT route, event_id, event_type, attempt, outcome, status, duration_ms, \
     response_body, request_headers, error, payload, config_version, config_revision, at, 0 AS latest, id AS n \
     FROM attempts WHERE delivery_id = $1 \
     UNION ALL SELECT route, event_id, event_type, last_attempt, status, last_status, last_duration_ms, \
     last_response_body, last_request_headers, last_error, last_payload, last_config_version, last_config_revision, \
     last_at, 1, 0 FROM deliveries WHERE id = $1 AND last_attempt IS NOT NULL \
     ORDER BY at, latest, n";

/// The delivery log's SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait DeliveryLog: Backend
where
    Self::Arguments: IntoArguments<Self>,
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    for<'a> &'a str: ColumnIndex<Self::Row> + Encode<'a, Self> + Type<Self>,
    usize: ColumnIndex<Self::Row>,
    for<'r> String: Encode<'r, Self> + Decode<'r, Self> + Type<Self>,
    for<'r> i64: Encode<'r, Self> + Decode<'r, Self> + Type<Self>,
    for<'r> bool: Encode<'r, Self> + Decode<'r, Self> + Type<Self>,
    for<'r> Vec<u8>: Encode<'r, Self> + Decode<'r, Self> + Type<Self>,
    for<'r> Option<String>: Encode<'r, Self>,
    for<'r> Option<i64>: Encode<'r, Self>,
    for<'r> Option<Vec<u8>>: Encode<'r, Self>,
{
    /// [`Store::record_attempts`](crate::store::Store::record_attempts): every attempt
    /// inserted and every delivery upserted in one writing transaction, each backend its own way
    /// (`batch.rs`: SQLite's multi-row statements, PostgreSQL's `UNNEST`).
    async fn record_attempts(pool: &Pool<Self>, batch: &[Attempt]) -> Result<(), StoreError>;

    /// [`Store::deliveries`](crate::store::Store::deliveries).
    async fn deliveries(pool: &Pool<Self>, f: &DeliveryFilter) -> Result<Page<Delivery>, StoreError> {
        let mut q = QueryBuilder::<Self>::new(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"));
        if let Some(r) = &f.route {
            q.push(" AND route = ").push_bind(r.clone());
        }
        if let Some(routes) = &f.routes {
            super::push_routes(&mut q, routes);
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
        let rows = q.build().fetch_all(pool).await?;
        let mut items = rows.iter().map(Self::delivery_row).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            let last = items.last().expect("limit is at least 1");
            cursor(last.last_at_ms, &last.id)
        });
        Ok(Page { items, next })
    }

    /// [`Store::delivery`](crate::store::Store::delivery).
    async fn delivery(pool: &Pool<Self>, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1")))
            .bind(id)
            .fetch_optional(pool)
            .await?;
        Ok(row.as_ref().map(Self::delivery_row).transpose()?)
    }

    /// [`Store::delivery_event`](crate::store::Store::delivery_event).
    async fn delivery_event(pool: &Pool<Self>, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let event: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT event FROM deliveries WHERE id = $1").bind(id).fetch_optional(pool).await?;
        Ok(event.flatten())
    }

    /// [`Store::attempts`](crate::store::Store::attempts).
    async fn attempts(pool: &Pool<Self>, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(ATTEMPTS_OF_DELIVERY).bind(delivery_id).fetch_all(pool).await?;
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
                request_headers: row.try_get("request_headers")?,
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

    /// [`Store::prune`](crate::store::Store::prune), in one writing transaction.
    async fn prune(pool: &Pool<Self>, before_ms: i64) -> Result<Pruned, StoreError> {
        let mut tx = write_tx(pool).await?;
        let earlier = sqlx::query("DELETE FROM attempts WHERE at < $1").bind(before_ms).execute(&mut *tx).await?;
        // `last_at` is the latest attempt's time: below the cut, every attempt is gone, the
        // latest with its row.
        let latest: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE last_at < $1 AND last_attempt IS NOT NULL")
                .bind(before_ms)
                .fetch_one(&mut *tx)
                .await?;
        let deliveries =
            sqlx::query("DELETE FROM deliveries WHERE last_at < $1").bind(before_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Pruned {
            attempts: Self::rows_affected(&earlier) + latest.max(0) as u64,
            deliveries: Self::rows_affected(&deliveries),
        })
    }

    /// A row of `deliveries` (the [`DELIVERY_COLUMNS`]).
    fn delivery_row(row: &Self::Row) -> Result<Delivery, sqlx::Error> {
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
}
