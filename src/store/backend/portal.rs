//! One-time portal links in SQL: stored by the hash of their nonce, used once with a conditional
//! `UPDATE … RETURNING` (two concurrent uses: the row lock lets one of them through), pruned
//! after expiry with the delivery log.

use super::Backend;
use crate::store::{PortalLink, StoreError};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

/// The portal links' SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait PortalLinks: Backend
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
    /// [`Store::create_portal_link`](crate::store::Store::create_portal_link).
    async fn create_portal_link(pool: &Pool<Self>, link: &PortalLink) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portal_links (nonce_hash, tenant, scope, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.nonce_hash)
        .bind(&link.tenant)
        .bind(&link.scope)
        .bind(&link.created_by)
        .bind(link.created_at_ms)
        .bind(link.expires_at_ms)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// [`Store::use_portal_link`](crate::store::Store::use_portal_link).
    async fn use_portal_link(
        pool: &Pool<Self>,
        nonce_hash: &str,
        at_ms: i64,
    ) -> Result<Option<PortalLink>, StoreError> {
        let row = sqlx::query(
            "UPDATE portal_links SET used_at = $1 WHERE nonce_hash = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING nonce_hash, tenant, scope, created_by, created_at, expires_at",
        )
        .bind(at_ms)
        .bind(nonce_hash)
        .bind(at_ms)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PortalLink {
            nonce_hash: row.try_get("nonce_hash")?,
            tenant: row.try_get("tenant")?,
            scope: row.try_get("scope")?,
            created_by: row.try_get("created_by")?,
            created_at_ms: row.try_get("created_at")?,
            expires_at_ms: row.try_get("expires_at")?,
        }))
    }

    /// Deletes the links that expired before `before_ms` (used or not).
    async fn prune_portal_links(pool: &Pool<Self>, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM portal_links WHERE expires_at < $1").bind(before_ms).execute(pool).await?;
        Ok(Self::rows_affected(&done))
    }
}
