//! The delivery log's batch writes on both backends (SQLite in parts of a few fixed sizes,
//! PostgreSQL in one `UNNEST` statement per table): a batch of any size writes every attempt once
//! and every delivery once, with its latest outcome, and a write abandoned part-way leaves its
//! batch whole or absent and the store working.

use crate::store::{attempt, on_postgres, on_sqlite};
use hookrelay::store::{DeliveryFilter, Outcome, Store, delivery_id};
use std::sync::Arc;

/// 300 deliveries, each with a failed attempt and then a delivered one, in one batch of 600
/// (on SQLite, nine parts of 64, then 16 and 8), then 3 more attempts in a second batch.
async fn batches_of_any_size_write_every_row_once(s: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for i in 0..300 {
        let event = format!("e-{i}");
        batch.push(attempt("big", &event, 1, Outcome::Retrying, Some(503), 1_000 + i));
        batch.push(attempt("big", &event, 2, Outcome::Delivered, Some(200), 2_000 + i));
    }
    s.record_attempts(&batch).await.unwrap();
    s.record_attempts(&[
        attempt("big", "e-0", 3, Outcome::Delivered, Some(200), 9_000),
        attempt("small", "s-1", 1, Outcome::Dead, Some(400), 9_001),
        attempt("small", "s-2", 1, Outcome::Delivered, Some(200), 9_002),
    ])
    .await
    .unwrap();
    let mut listed = Vec::new();
    let mut filter = DeliveryFilter { limit: 1000, route: Some("big".into()), ..Default::default() };
    loop {
        let page = s.deliveries(&filter).await.unwrap();
        listed.extend(page.items);
        match page.next {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed.len(), 300, "one delivery per event");
    assert!(listed.iter().all(|d| d.status == Outcome::Delivered && d.last_status == Some(200)));
    let d = s.delivery(&delivery_id("big", "e-7")).await.unwrap().unwrap();
    assert_eq!((d.attempts, d.first_at_ms, d.last_at_ms), (2, 1_007, 2_007));
    let attempts = s.attempts(&delivery_id("big", "e-299")).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(s.attempts(&delivery_id("big", "e-0")).await.unwrap().len(), 3);
    let small = s.delivery(&delivery_id("small", "s-1")).await.unwrap().unwrap();
    assert_eq!((small.status, small.last_status), (Outcome::Dead, Some(400)));
}

#[tokio::test]
async fn sqlite_batches_of_any_size_write_every_row_once() {
    on_sqlite(batches_of_any_size_write_every_row_once).await;
}

#[tokio::test]
async fn postgres_batches_of_any_size_write_every_row_once() {
    on_postgres(batches_of_any_size_write_every_row_once).await;
}

/// A write abandoned part-way (its future dropped, as a shutdown or a timeout would) leaves
/// nothing half-written and no transaction open: each batch is there whole or not at all, and
/// the store takes the next batch and answers as before. Where each write is cut off varies
/// from run to run; what is asserted holds wherever it is.
async fn abandoned_writes_leave_whole_batches_and_a_working_store(s: Arc<dyn Store>) {
    for t in 0..12u64 {
        let route = format!("cut-{t}");
        let batch: Vec<_> =
            (0..300).map(|i| attempt(&route, &format!("e-{i}"), 1, Outcome::Delivered, Some(200), 1_000 + i)).collect();
        let write = s.record_attempts(&batch);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(t * t * 100), write).await;
    }
    s.record_attempts(&[attempt("after", "a-1", 1, Outcome::Delivered, Some(200), 5_000)]).await.unwrap();
    for t in 0..12 {
        let route = format!("cut-{t}");
        let filter = DeliveryFilter { limit: 1000, route: Some(route.clone()), ..Default::default() };
        let listed = s.deliveries(&filter).await.unwrap().items.len();
        assert!(listed == 0 || listed == 300, "{route}: {listed} of 300 deliveries: a batch was half-written");
        if listed == 300 {
            assert_eq!(s.attempts(&delivery_id(&route, "e-299")).await.unwrap().len(), 1);
        }
    }
    let after = s.delivery(&delivery_id("after", "a-1")).await.unwrap().unwrap();
    assert_eq!((after.status, after.attempts), (Outcome::Delivered, 1));
}

#[tokio::test]
async fn sqlite_abandoned_writes_leave_whole_batches_and_a_working_store() {
    on_sqlite(abandoned_writes_leave_whole_batches_and_a_working_store).await;
}

#[tokio::test]
async fn postgres_abandoned_writes_leave_whole_batches_and_a_working_store() {
    on_postgres(abandoned_writes_leave_whole_batches_and_a_working_store).await;
}
