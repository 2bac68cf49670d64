//! Subscriptions in SQL: every change is one writing transaction that bumps the generation
//! first, makes the change, and appends its audit entry (a refused change rolls back, leaving no
//! audit entry); reads by id, by name, or all.

use super::audit::AuditTrail;
use super::{is_unique_violation, json_column, write_tx};
use crate::store::subscription::{secrets_from_json, secrets_to_json};
use crate::store::{AuditEntry, Conflict, StoreError, SubscriptionRecord};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

/// The subscriptions' SQL, shared by both backends (see the module docs of `backend`).
#[async_trait]
pub(super) trait SubscriptionTable: AuditTrail
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
    /// [`Store::create_subscription`](crate::store::Store::create_subscription).
    async fn create_subscription(
        pool: &Pool<Self>,
        sub: &SubscriptionRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<SubscriptionRecord, StoreError> {
        let mut tx = write_tx(pool).await?;
        Self::bump_generation(&mut tx).await?;
        let inserted = sqlx::query(
            "INSERT INTO subscriptions (id, name, spec, secrets, enabled, disabled_reason, created_at, \
             updated_at, version, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(&sub.id)
        .bind(&sub.name)
        .bind(sub.spec.to_string())
        .bind(secrets_to_json(&sub.secrets))
        .bind(sub.enabled)
        .bind(&sub.disabled_reason)
        .bind(sub.created_at_ms)
        .bind(sub.created_at_ms)
        .bind(&sub.tenant)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                let id_taken = Self::subscription(pool, &sub.id).await?.is_some();
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

    /// [`Store::subscriptions`](crate::store::Store::subscriptions).
    async fn subscriptions(pool: &Pool<Self>) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM subscriptions ORDER BY name").fetch_all(pool).await?;
        rows.iter().map(Self::subscription_row).collect()
    }

    /// [`Store::subscription`](crate::store::Store::subscription).
    async fn subscription(pool: &Pool<Self>, id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1").bind(id).fetch_optional(pool).await?;
        row.as_ref().map(Self::subscription_row).transpose()
    }

    /// [`Store::subscription_by_name`](crate::store::Store::subscription_by_name).
    async fn subscription_by_name(pool: &Pool<Self>, name: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE name = $1").bind(name).fetch_optional(pool).await?;
        row.as_ref().map(Self::subscription_row).transpose()
    }

    /// [`Store::update_subscription`](crate::store::Store::update_subscription).
    async fn update_subscription(
        pool: &Pool<Self>,
        sub: &SubscriptionRecord,
        expected_version: i64,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let mut tx = write_tx(pool).await?;
        Self::bump_generation(&mut tx).await?;
        let updated = sqlx::query(
            "UPDATE subscriptions SET name = $1, spec = $2, secrets = $3, enabled = $4, disabled_reason = $5, \
             updated_at = $6, version = version + 1, tenant = $9 WHERE id = $7 AND version = $8",
        )
        .bind(&sub.name)
        .bind(sub.spec.to_string())
        .bind(secrets_to_json(&sub.secrets))
        .bind(sub.enabled)
        .bind(&sub.disabled_reason)
        .bind(at_ms)
        .bind(&sub.id)
        .bind(expected_version)
        .bind(&sub.tenant)
        .execute(&mut *tx)
        .await;
        let updated = match updated {
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Err(Conflict::NameTaken { name: sub.name.clone() }.into());
            }
            other => other?,
        };
        if Self::rows_affected(&updated) == 0 {
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

    /// [`Store::delete_subscription`](crate::store::Store::delete_subscription).
    async fn delete_subscription(pool: &Pool<Self>, id: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError> {
        let mut tx = write_tx(pool).await?;
        Self::bump_generation(&mut tx).await?;
        let done = sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if Self::rows_affected(&done) == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(a) = audit {
            Self::insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// [`Store::set_subscription_enabled`](crate::store::Store::set_subscription_enabled).
    async fn set_subscription_enabled(
        pool: &Pool<Self>,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        let mut tx = write_tx(pool).await?;
        Self::bump_generation(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE subscriptions SET enabled = $1, disabled_reason = $2, updated_at = $3, version = version + 1 \
             WHERE id = $4 AND enabled <> $5",
        )
        .bind(enabled)
        .bind(if enabled { None } else { reason.map(str::to_string) })
        .bind(at_ms)
        .bind(id)
        .bind(enabled)
        .execute(&mut *tx)
        .await?;
        if Self::rows_affected(&done) == 0 {
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

    /// [`Store::subscriptions_generation`](crate::store::Store::subscriptions_generation).
    async fn subscriptions_generation(pool: &Pool<Self>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM generations WHERE name = 'subscriptions'").fetch_one(pool).await?)
    }

    /// Bumps the subscriptions generation; the first write of every subscription change.
    async fn bump_generation(conn: &mut Self::Connection) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE generations SET value = value + 1 WHERE name = 'subscriptions'")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// One subscription, read inside the change's transaction.
    async fn subscription_in(conn: &mut Self::Connection, id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
        row.as_ref().map(Self::subscription_row).transpose()
    }

    /// A row of `subscriptions`.
    fn subscription_row(row: &Self::Row) -> Result<SubscriptionRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let spec: String = row.try_get("spec")?;
        let secrets: String = row.try_get("secrets")?;
        Ok(SubscriptionRecord {
            spec: json_column(|| format!("the spec of subscription {id:?}"), &spec)?,
            secrets: secrets_from_json(&id, &secrets)?,
            name: row.try_get("name")?,
            enabled: row.try_get("enabled")?,
            disabled_reason: row.try_get("disabled_reason")?,
            tenant: row.try_get("tenant")?,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
            version: row.try_get("version")?,
            id,
        })
    }
}
