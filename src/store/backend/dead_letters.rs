//! Dead letters in SQL: indexing one, listing and reading them, and the replay leases (claim,
//! mark replayed, release), each a chunked `UPDATE … RETURNING id` in one writing transaction.

use super::{Backend, IDS_PER_STATEMENT, distinct, opt_u16, write_tx};
use crate::store::{DeadLetter, DeadLetterFilter, Page, StoreError, cursor, parse_cursor};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};
use std::collections::HashSet;

/// The dead letters' SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait DeadLetterIndex: Backend
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
    /// [`Store::add_dead_letter`](crate::store::Store::add_dead_letter).
    async fn add_dead_letter(pool: &Pool<Self>, dl: &DeadLetter) -> Result<bool, StoreError> {
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
        .execute(pool)
        .await?;
        Ok(Self::rows_affected(&done) == 1)
    }

    /// [`Store::dead_letters`](crate::store::Store::dead_letters).
    async fn dead_letters(pool: &Pool<Self>, f: &DeadLetterFilter) -> Result<Page<DeadLetter>, StoreError> {
        let mut q = QueryBuilder::<Self>::new("SELECT * FROM dead_letters WHERE 1 = 1");
        Self::push_dead_letter_filter(&mut q, f);
        if let Some(c) = &f.cursor {
            let (at, id) = parse_cursor(c)?;
            q.push(" AND (dead_at < ").push_bind(at).push(" OR (dead_at = ").push_bind(at);
            q.push(" AND id < ").push_bind(id).push("))");
        }
        let limit = f.limit.clamp(1, 1000);
        q.push(" ORDER BY dead_at DESC, id DESC LIMIT ").push_bind(i64::from(limit) + 1);
        let rows = q.build().fetch_all(pool).await?;
        let mut items = rows.iter().map(Self::dead_letter_row).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            let last = items.last().expect("limit is at least 1");
            cursor(last.dead_at_ms, &last.id)
        });
        Ok(Page { items, next })
    }

    /// [`Store::dead_letter`](crate::store::Store::dead_letter).
    async fn dead_letter(pool: &Pool<Self>, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query("SELECT * FROM dead_letters WHERE id = $1").bind(id).fetch_optional(pool).await?;
        Ok(row.as_ref().map(Self::dead_letter_row).transpose()?)
    }

    /// [`Store::claim_replay`](crate::store::Store::claim_replay).
    async fn claim_replay(
        pool: &Pool<Self>,
        ids: &[String],
        claim: &str,
        at_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        Self::update_dead_letters(pool, ids, |q| {
            q.push("replay_claim = ").push_bind(claim.to_string());
            q.push(", replay_claimed_at = ").push_bind(at_ms);
            q.push(" WHERE replayed_at IS NULL AND (replay_claimed_at IS NULL OR replay_claimed_at <= ");
            q.push_bind(at_ms.saturating_sub(lease_ms)).push(")");
        })
        .await
    }

    /// [`Store::mark_replayed`](crate::store::Store::mark_replayed).
    async fn mark_replayed(
        pool: &Pool<Self>,
        ids: &[String],
        claim: &str,
        at_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        Self::update_dead_letters(pool, ids, |q| {
            q.push("replayed_at = ").push_bind(at_ms);
            q.push(", replay_claim = NULL, replay_claimed_at = NULL WHERE replay_claim = ");
            q.push_bind(claim.to_string()).push(" AND replayed_at IS NULL");
        })
        .await
    }

    /// [`Store::release_replay`](crate::store::Store::release_replay).
    async fn release_replay(pool: &Pool<Self>, ids: &[String], claim: &str) -> Result<Vec<String>, StoreError> {
        Self::update_dead_letters(pool, ids, |q| {
            q.push("replay_claim = NULL, replay_claimed_at = NULL WHERE replay_claim = ");
            q.push_bind(claim.to_string());
        })
        .await
    }

    /// [`Store::dead_letter_ids`](crate::store::Store::dead_letter_ids).
    async fn dead_letter_ids(pool: &Pool<Self>, f: &DeadLetterFilter, max: u32) -> Result<Vec<String>, StoreError> {
        let mut q = QueryBuilder::<Self>::new("SELECT id FROM dead_letters WHERE 1 = 1");
        Self::push_dead_letter_filter(&mut q, f);
        q.push(" ORDER BY dead_at, id LIMIT ").push_bind(i64::from(max));
        let rows = q.build().fetch_all(pool).await?;
        Ok(rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
    }

    /// [`Store::count_dead_letters`](crate::store::Store::count_dead_letters).
    async fn count_dead_letters(pool: &Pool<Self>, f: &DeadLetterFilter) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<Self>::new("SELECT COUNT(*) AS n FROM dead_letters WHERE 1 = 1");
        Self::push_dead_letter_filter(&mut q, f);
        let row = q.build().fetch_one(pool).await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
    }

    /// Runs `UPDATE dead_letters SET … WHERE … AND id IN (ids) RETURNING id` in one
    /// transaction, a chunk of ids per statement; `set_where` pushes the `SET … WHERE …`
    /// part (ending in a condition). Returns the ids it changed, in the order asked, once each.
    async fn update_dead_letters(
        pool: &Pool<Self>,
        ids: &[String],
        set_where: impl for<'q> Fn(&'q mut QueryBuilder<Self>) + Send,
    ) -> Result<Vec<String>, StoreError> {
        let ids = distinct(ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Sorted, so that concurrent calls lock rows in the same order (no deadlock).
        let mut sorted = ids.clone();
        sorted.sort();
        let mut changed = HashSet::new();
        let mut tx = write_tx(pool).await?;
        for chunk in sorted.chunks(IDS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Self>::new("UPDATE dead_letters SET ");
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

    /// The conditions of a [`DeadLetterFilter`] but its cursor, each ` AND …`.
    fn push_dead_letter_filter(q: &mut QueryBuilder<Self>, f: &DeadLetterFilter) {
        if let Some(r) = &f.route {
            q.push(" AND route = ").push_bind(r.clone());
        }
        if let Some(routes) = &f.routes {
            super::push_routes(q, routes);
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

    /// A row of `dead_letters`.
    fn dead_letter_row(row: &Self::Row) -> Result<DeadLetter, sqlx::Error> {
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
