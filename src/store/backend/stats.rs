//! Per-route statistics in SQL: counts and nearest-rank latency percentiles of the attempts in a
//! window, computed by the database with window functions
//! ([`Store::stats`](crate::store::Store::stats)), and attempts per time bucket. The attempts are
//! the earlier ones in `attempts` and each delivery's latest in its row (migration `0006`),
//! each table read through its own time index ([`push_attempts`]).

use super::Backend;
use crate::store::{RouteStats, SeriesBucket, StoreError};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

/// `(… UNION ALL …) AS a`, every attempt made in `[since, until)` as `route, outcome,
/// duration_ms, at`: the earlier ones from `attempts`, the latest ones from `deliveries`;
/// `filter` adds the same condition on `route` to both.
fn push_attempts<DB: Database>(
    q: &mut QueryBuilder<DB>,
    since_ms: i64,
    until_ms: i64,
    filter: impl Fn(&mut QueryBuilder<DB>),
) where
    for<'r> i64: Encode<'r, DB> + Type<DB>,
{
    q.push("(SELECT route, outcome, duration_ms, at FROM attempts WHERE at >= ");
    q.push_bind(since_ms).push(" AND at < ").push_bind(until_ms);
    filter(q);
    q.push(
        " UNION ALL SELECT route, status, last_duration_ms, last_at FROM deliveries \
         WHERE last_attempt IS NOT NULL AND last_at >= ",
    );
    q.push_bind(since_ms).push(" AND last_at < ").push_bind(until_ms);
    filter(q);
    q.push(") AS a");
}

/// The statistics' SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait AttemptStats: Backend
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
    /// [`Store::stats`](crate::store::Store::stats).
    async fn stats(
        pool: &Pool<Self>,
        since_ms: i64,
        until_ms: i64,
        route: Option<&str>,
    ) -> Result<Vec<RouteStats>, StoreError> {
        // Nearest-rank percentiles: among a route's n attempts sorted by duration, the p-th
        // percentile is the one at rank ceil(n * p / 100), in integers (n * p + 99) / 100.
        // The window functions number and count each route's rows inside the database.
        // Rows tied on duration have the same duration: which of them a rank picks does not matter.
        let mut q = QueryBuilder::<Self>::new(
            "WITH w AS (SELECT route, outcome, duration_ms, at, \
             ROW_NUMBER() OVER (PARTITION BY route ORDER BY duration_ms) AS rn, \
             COUNT(*) OVER (PARTITION BY route) AS n \
             FROM ",
        );
        push_attempts(&mut q, since_ms, until_ms, |q| {
            if let Some(r) = route {
                q.push(" AND route = ").push_bind(r.to_string());
            }
        });
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
        let rows = q.build().fetch_all(pool).await?;
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

    /// [`Store::attempt_series`](crate::store::Store::attempt_series): one `GROUP BY` over the
    /// bucket number, `(at - since) / bucket` in integers.
    async fn attempt_series(
        pool: &Pool<Self>,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
        routes: Option<&[String]>,
    ) -> Result<Vec<SeriesBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let mut q = QueryBuilder::<Self>::new("SELECT (at - ");
        q.push_bind(since_ms).push(") / ").push_bind(bucket_ms);
        q.push(
            " AS b, COUNT(*) AS attempts, SUM(CASE WHEN outcome = 'delivered' THEN 1 ELSE 0 END) AS delivered \
             FROM ",
        );
        push_attempts(&mut q, since_ms, until_ms, |q| {
            if let Some(routes) = routes {
                super::push_routes(q, routes);
            }
        });
        q.push(" GROUP BY b ORDER BY b");
        let rows = q.build().fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts = row.try_get::<i64, _>("attempts")?.max(0) as u64;
            let delivered = row.try_get::<i64, _>("delivered")?.max(0) as u64;
            out.push(SeriesBucket {
                start_ms: since_ms + row.try_get::<i64, _>("b")? * bucket_ms,
                attempts,
                delivered,
            });
        }
        Ok(out)
    }
}
