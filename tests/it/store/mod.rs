//! One conformance suite for every store backend: SQLite (a temp file) and PostgreSQL (a fresh
//! database per test, on the server `HOOKRELAY_TEST_POSTGRES_URL` names). Each part of the suite
//! runs on a store of its own, once per backend: the delivery log and dead letters
//! (`conformance`), subscriptions and their change feed (`subscriptions`), the audit trail
//! (`audit`), retention and statistics (`delivery_log`), replays under a lease (`replays`), and
//! the upgrade of an old database (`migrations`).
//!
//! This module holds what the parts (and `store_batches.rs`, `tokens.rs`) share: the rows they
//! write, and running a part on a fresh store of each backend.

mod audit;
mod conformance;
mod delivery_log;
mod migrations;
mod replays;
mod subscriptions;

use crate::common::PgDatabase;
use hookrelay::store::{self, Attempt, DeadLetter, Outcome, SealedSecret, Store, SubscriptionRecord};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

pub(crate) fn attempt(route: &str, event: &str, n: u32, outcome: Outcome, status: Option<u16>, at_ms: i64) -> Attempt {
    Attempt {
        route: route.into(),
        event_id: event.into(),
        event_type: "order.paid".into(),
        attempt: n,
        outcome,
        status,
        duration_ms: 12,
        response_body: status.map(|s| format!("answer {s}")),
        request_headers: Some(format!("webhook-id: {event}\nhookrelay-attempt: {n}\n")),
        error: (outcome != Outcome::Delivered).then(|| "HTTP 503".to_string()),
        payload: None,
        event: None,
        config_version: 3,
        config_revision: "abc123def456".into(),
        at_ms,
    }
}

pub(crate) fn dead(id: &str, route: &str, reason: &str, at_ms: i64) -> DeadLetter {
    DeadLetter {
        id: id.into(),
        route: route.into(),
        event_id: format!("ev-{id}"),
        event_type: "order.paid".into(),
        reason: reason.into(),
        error: "HTTP 400".into(),
        details: None,
        last_status: Some(400),
        last_response: Some("bad".into()),
        attempts: 1,
        body: br#"{"id":"x"}"#.to_vec(),
        headers: "{}".into(),
        dead_at_ms: at_ms,
        replayed_at_ms: None,
    }
}

/// The replay lease used by these tests (ms).
const LEASE: i64 = 60_000;

/// Runs a part of the suite on a fresh SQLite store.
pub(crate) async fn on_sqlite<F: Future<Output = ()>>(suite: impl FnOnce(Arc<dyn Store>) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let s = store::open(&format!("sqlite://{}", dir.path().join("hookrelay.db").display())).await.unwrap();
    assert_eq!(s.backend(), "sqlite");
    suite(s).await;
}

/// Runs a part of the suite on a fresh PostgreSQL database.
pub(crate) async fn on_postgres<F: Future<Output = ()>>(suite: impl FnOnce(Arc<dyn Store>) -> F) {
    let db = PgDatabase::new().await;
    let s = store::open(&db.url).await.unwrap();
    assert_eq!(s.backend(), "postgres");
    suite(s).await;
    db.drop_it().await;
}

pub(crate) fn subscription(id: &str, name: &str, secrets: Vec<SealedSecret>) -> SubscriptionRecord {
    SubscriptionRecord {
        id: id.into(),
        name: name.into(),
        spec: json!({"events": ["order.*"], "url": format!("https://{name}.example.com/hooks"), "ordered": true}),
        secrets,
        enabled: true,
        disabled_reason: None,
        tenant: None,
        created_at_ms: 1_000,
        // The store sets these two on create, whatever they say.
        updated_at_ms: 0,
        version: 0,
    }
}
