//! The audit trail in SQL: appending an entry (alone, or inside a subscription change's
//! transaction) and listing entries newest first.

use super::{Backend, json_column};
use crate::store::{AuditEntry, AuditFilter, Page, StoreError, cursor, parse_cursor};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type};

/// The audit trail's SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait AuditTrail: Backend
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
    /// [`Store::append_audit`](crate::store::Store::append_audit).
    async fn append_audit(pool: &Pool<Self>, entry: &AuditEntry) -> Result<bool, StoreError> {
        let mut conn = pool.acquire().await?;
        Ok(Self::insert_audit(&mut conn, entry).await?)
    }

    /// [`Store::audit`](crate::store::Store::audit).
    async fn audit(pool: &Pool<Self>, f: &AuditFilter) -> Result<Page<AuditEntry>, StoreError> {
        let mut q = QueryBuilder::<Self>::new("SELECT * FROM audit WHERE 1 = 1");
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
        let rows = q.build().fetch_all(pool).await?;
        let mut items = rows.iter().map(Self::audit_row).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            let last = items.last().expect("limit is at least 1");
            cursor(last.at_ms, &last.id)
        });
        Ok(Page { items, next })
    }

    /// Inserts `e` on `conn` (a subscription change's transaction, or a connection of its own);
    /// false when an entry with its id is already there.
    async fn insert_audit(conn: &mut Self::Connection, e: &AuditEntry) -> Result<bool, sqlx::Error> {
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
        Ok(Self::rows_affected(&done) == 1)
    }

    /// A row of `audit`.
    fn audit_row(row: &Self::Row) -> Result<AuditEntry, StoreError> {
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
}
