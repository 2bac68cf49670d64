//! PostgreSQL: connecting (migrations under an advisory lock, so replicas can start together)
//! and what PostgreSQL does its own way: plain `BEGIN` (`READ COMMITTED`, row locks), the
//! change feed of subscriptions (`LISTEN`) and the delivery log's batch writes (`batch.rs`: one
//! `UNNEST` statement per table for any batch size). It runs the rest of the shared SQL as it is.

use super::{
    Attempt, AttemptStats, AuditTrail, Backend, DeadLetterIndex, DeliveryLog, PortalLinks, SqlStore, StoreError,
    SubscriptionTable, migrator,
};
use crate::store::SUBSCRIPTIONS_CHANNEL;
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Pool, Postgres};
use tokio::sync::mpsc;
use tracing::warn;

impl SqlStore<Postgres> {
    /// Connects and migrates (migrations take an advisory lock, so replicas can start together).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        migrator(&[
            ("delivery log", include_str!("../../../migrations/postgres/0001_delivery_log.sql")),
            (
                "subscriptions audit stats",
                include_str!("../../../migrations/postgres/0002_subscriptions_audit_stats.sql"),
            ),
            ("replay leases", include_str!("../../../migrations/postgres/0003_replay_leases.sql")),
            ("tenants portal links", include_str!("../../../migrations/postgres/0004_tenants_portal_links.sql")),
            ("attempt request headers", include_str!("../../../migrations/postgres/0005_attempt_request_headers.sql")),
            (
                "latest attempt in deliveries",
                include_str!("../../../migrations/postgres/0006_latest_attempt_in_deliveries.sql"),
            ),
        ])
        .run(&pool)
        .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Backend for Postgres {
    const BACKEND: &'static str = "postgres";
    /// `READ COMMITTED`: a conditional `UPDATE` waits for a concurrent one on the same row, then
    /// re-checks its condition on the committed row.
    const BEGIN_WRITE: &'static str = "BEGIN";

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// `LISTEN`s on [`SUBSCRIPTIONS_CHANNEL`] on a connection of its own (taken from the pool) in a
    /// background task, which wakes the receiver on every notification, and also after the
    /// connection was lost and re-established (what was announced meanwhile is lost); it ends when
    /// the receiver is dropped. Wakes coalesce: a reader that is busy gets one.
    async fn change_feed(pool: &Pool<Self>) -> Result<Option<mpsc::Receiver<()>>, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
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

#[async_trait]
impl DeliveryLog for Postgres {
    async fn record_attempts(pool: &Pool<Self>, batch: &[Attempt]) -> Result<(), StoreError> {
        super::batch::postgres(pool, batch).await
    }
}
impl AttemptStats for Postgres {}
impl DeadLetterIndex for Postgres {}
impl SubscriptionTable for Postgres {}
impl AuditTrail for Postgres {}
impl PortalLinks for Postgres {}
