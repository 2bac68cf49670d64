//! A database written by the first release (migration `0001`), upgraded to the latest on opening,
//! on both backends.

use super::{LEASE, subscription};
use crate::common::PgDatabase;
use hookrelay::store::{self, AuditEntry, Outcome, Store, delivery_id};
use serde_json::json;
use std::sync::Arc;

/// What a database looked like before `0002`: the first migration, applied the way the store
/// that shipped it applied it, and a few rows.
fn migration_0001(sql: &'static str) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
        1,
        "delivery log".into(),
        sqlx::migrate::MigrationType::Simple,
        sqlx::SqlStr::from_static(sql),
        false,
    )])
}

fn rows_0001(bytes: &str) -> String {
    format!(
        "INSERT INTO dead_letters (id, route, event_id, event_type, reason, error, details, last_status, \
         last_response, attempts, body, headers, dead_at, replayed_at) \
         VALUES ('old-dl', 'erp', 'ev-1', 'order.paid', 'rejected', 'HTTP 400', NULL, 400, 'bad', 1, {bytes}, '{{}}', 50, NULL); \
         INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms, \
         response_body, error, payload, config_version, config_revision, at) \
         VALUES ('{id}', 'erp', 'ev-1', 'order.paid', 1, 'delivered', 200, 42, NULL, NULL, NULL, 3, 'abc', 1000); \
         INSERT INTO deliveries (id, route, event_id, event_type, status, attempts, last_status, last_error, first_at, last_at) \
         VALUES ('{id}', 'erp', 'ev-1', 'order.paid', 'delivered', 1, 200, NULL, 1000, 1000); \
         INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms, \
         response_body, error, payload, config_version, config_revision, at) \
         VALUES ('{id2}', 'erp', 'ev-2', 'order.paid', 2, 'delivered', 200, 20, 'ok', NULL, NULL, 3, 'abc', 1200), \
         ('{id2}', 'erp', 'ev-2', 'order.paid', 1, 'retrying', 503, 10, 'busy', 'HTTP 503', NULL, 3, 'abc', 1100); \
         INSERT INTO deliveries (id, route, event_id, event_type, status, attempts, last_status, last_error, first_at, last_at) \
         VALUES ('{id2}', 'erp', 'ev-2', 'order.paid', 'delivered', 2, 200, NULL, 1100, 1200);",
        id = delivery_id("erp", "ev-1"),
        id2 = delivery_id("erp", "ev-2"),
    )
}

/// The store opened on a database at `0001`: upgraded to the latest (`0006`), old rows intact, new
/// parts working (`0004` is checked in `tokens.rs`).
async fn upgraded_from_0001(s: Arc<dyn Store>) {
    let old = s.dead_letter("old-dl").await.unwrap().unwrap();
    assert_eq!((old.body.as_slice(), old.reason.as_str(), old.dead_at_ms), (b"{}".as_slice(), "rejected", 50));
    assert_eq!(s.delivery(&delivery_id("erp", "ev-1")).await.unwrap().unwrap().status, Outcome::Delivered);
    // Three attempts of two deliveries (10, 20 and 42 ms), whichever table each now lives in.
    let stats = s.stats(0, 2_000, None).await.unwrap();
    assert_eq!((stats[0].route.as_str(), stats[0].attempts, stats[0].delivered), ("erp", 3, 2));
    assert_eq!((stats[0].latency_p50_ms, stats[0].latency_p99_ms), (Some(20), Some(42)));
    assert_eq!(s.subscriptions_generation().await.unwrap(), 0);
    s.create_subscription(&subscription("sub-1", "erp-api", vec![]), None).await.unwrap();
    assert_eq!(s.subscriptions_generation().await.unwrap(), 1);
    assert!(s.append_audit(&AuditEntry::new(1, "ops", "subscription.create", "sub-1", json!({}))).await.unwrap());
    assert_eq!(s.dead_letter_ids(&Default::default(), 10).await.unwrap(), ["old-dl"]);
    // 0003: an old dead letter replays under a lease; an old delivery has no event kept.
    assert_eq!(s.claim_replay(&["old-dl".into()], "r", 2_000, LEASE).await.unwrap(), ["old-dl"]);
    assert_eq!(s.mark_replayed(&["old-dl".into()], "r", 2_001).await.unwrap(), ["old-dl"]);
    assert_eq!(s.delivery_event(&delivery_id("erp", "ev-1")).await.unwrap(), None);
    // 0005: an old attempt has no request headers recorded.
    let old_attempts = s.attempts(&delivery_id("erp", "ev-1")).await.unwrap();
    assert_eq!((old_attempts.len(), old_attempts[0].request_headers.as_deref()), (1, None));
    // 0006: a delivery's latest attempt moved into its row, the earlier one stayed; both are
    // listed, oldest first, and a new attempt moves the latest along.
    let ev2 = delivery_id("erp", "ev-2");
    let listed = |s: Arc<dyn Store>| {
        let ev2 = ev2.clone();
        async move {
            let all = s.attempts(&ev2).await.unwrap();
            all.iter().map(|a| (a.attempt, a.outcome, a.duration_ms, a.response_body.clone())).collect::<Vec<_>>()
        }
    };
    let busy = (1, Outcome::Retrying, 10, Some("busy".to_string()));
    let ok = (2, Outcome::Delivered, 20, Some("ok".to_string()));
    assert_eq!(listed(s.clone()).await, [busy.clone(), ok.clone()]);
    s.record_attempts(&[super::attempt("erp", "ev-2", 3, Outcome::Dead, Some(410), 1_300)]).await.unwrap();
    let dead = (3, Outcome::Dead, 12, Some("answer 410".to_string()));
    assert_eq!(listed(s.clone()).await, [busy, ok, dead]);
    let d = s.delivery(&ev2).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts, d.first_at_ms, d.last_at_ms), (Outcome::Dead, 3, 1_100, 1_300));
}

#[tokio::test]
async fn sqlite_store_upgrades_from_0001() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hookrelay.db").display());
    let opts = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    migration_0001(include_str!("../../../migrations/sqlite/0001_delivery_log.sql")).run(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows_0001("X'7b7d'"))).execute(&pool).await.unwrap();

    upgraded_from_0001(store::open(&url).await.unwrap()).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    // Opening again finds them applied, with the checksums it knows.
    assert_eq!(store::open(&url).await.unwrap().subscriptions().await.unwrap().len(), 1);
    pool.close().await;
}

#[tokio::test]
async fn postgres_store_upgrades_from_0001() {
    let db = PgDatabase::new().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    migration_0001(include_str!("../../../migrations/postgres/0001_delivery_log.sql")).run(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows_0001("'\\x7b7d'::bytea"))).execute(&pool).await.unwrap();

    upgraded_from_0001(store::open(&db.url).await.unwrap()).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    assert_eq!(store::open(&db.url).await.unwrap().subscriptions().await.unwrap().len(), 1);
    pool.close().await;
    db.drop_it().await;
}
