//! The delivery log in SQL: attempts written in batches together with the one row per delivery
//! they update, deliveries listed and read (with the event a delivery kept), a delivery's
//! attempts, and retention ([`Store::prune`](crate::store::Store::prune)).

use super::{Backend, opt_u16, write_tx};
use crate::store::{
    Attempt, Delivery, DeliveryFilter, Outcome, Page, Pruned, StoreError, cursor, delivery_id, parse_cursor,
};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

/// The columns of a delivery in lists (not the event it may keep).
const DELIVERY_COLUMNS: &str =
    "id, route, event_id, event_type, status, attempts, last_status, last_error, first_at, last_at";

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
    /// [`Store::record_attempts`](crate::store::Store::record_attempts): multi-row statements
    /// in one writing transaction, in [`chunks`] of a few fixed sizes, so that each statement's
    /// text is one the connection has prepared before (its statement cache is keyed by the
    /// text): preparing a statement cost about as much as running it.
    async fn record_attempts(pool: &Pool<Self>, batch: &[Attempt]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = write_tx(pool).await?;
        for part in chunks(batch) {
            let mut q = QueryBuilder::<Self>::new(
                "INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, \
                 duration_ms, response_body, request_headers, error, payload, config_version, config_revision, at) ",
            );
            q.push_values(part, |mut b, a| {
                b.push_bind(delivery_id(&a.route, &a.event_id))
                    .push_bind(a.route.clone())
                    .push_bind(a.event_id.clone())
                    .push_bind(a.event_type.clone())
                    .push_bind(i64::from(a.attempt))
                    .push_bind(a.outcome.as_str())
                    .push_bind(a.status.map(i64::from))
                    .push_bind(a.duration_ms as i64)
                    .push_bind(a.response_body.clone())
                    .push_bind(a.request_headers.clone())
                    .push_bind(a.error.clone())
                    .push_bind(a.payload.clone())
                    .push_bind(a.config_version as i64)
                    .push_bind(a.config_revision.clone())
                    .push_bind(a.at_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        // One row per delivery (PostgreSQL refuses to upsert a row twice in one
        // statement), in id order so that concurrent writers lock rows in one order.
        let rows = delivery_rows(batch);
        for part in chunks(&rows) {
            let mut q = QueryBuilder::<Self>::new(
                "INSERT INTO deliveries (id, route, event_id, event_type, status, attempts, last_status, \
                 last_error, first_at, last_at, event) ",
            );
            q.push_values(part, |mut b, row| {
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
        }
        tx.commit().await?;
        Ok(())
    }

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
        let rows = sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY id")
            .bind(delivery_id)
            .fetch_all(pool)
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
        let attempts = sqlx::query("DELETE FROM attempts WHERE at < $1").bind(before_ms).execute(&mut *tx).await?;
        // `last_at` is the latest attempt's time: below the cut, every attempt is gone.
        let deliveries =
            sqlx::query("DELETE FROM deliveries WHERE last_at < $1").bind(before_ms).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Pruned { attempts: Self::rows_affected(&attempts), deliveries: Self::rows_affected(&deliveries) })
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

/// The rows a multi-row statement takes at once: powers of two up to 256 (256 × 15 columns
/// is well under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters). Nine statement
/// texts per table, each prepared once per connection and kept in its statement cache.
const CHUNK_SIZES: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// `items` cut into parts of the [`CHUNK_SIZES`], largest first: a batch of `n` rows takes as
/// many statements as `n` has bits set (plus one per 256).
fn chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|s| *s <= items.len())?;
        let (part, rest) = items.split_at(size);
        items = rest;
        Some(part)
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_the_fixed_sizes() {
        for n in [0usize, 1, 2, 3, 15, 256, 257, 500, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = chunks(&items).collect();
            assert!(parts.iter().all(|p| CHUNK_SIZES.contains(&p.len())), "{n}: {parts:?}");
            assert_eq!(parts.concat(), items, "{n}: every row once, in order");
        }
        assert_eq!(chunks(&[0u8; 15]).map(<[u8]>::len).collect::<Vec<_>>(), [8, 4, 2, 1]);
    }
}
