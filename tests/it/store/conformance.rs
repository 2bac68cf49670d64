//! The core of the suite: attempts and deliveries recorded and listed, dead letters indexed,
//! filtered and marked replayed, on both backends, and kept across a reopening; and the URLs no
//! backend takes.

use super::{LEASE, attempt, dead};
use crate::common::PgDatabase;
use hookrelay::store::{self, DeadLetterFilter, DeliveryFilter, Outcome, Pruned, Store, delivery_id};
use std::sync::Arc;

async fn conformance(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
    s.record_attempts(&[
        attempt("erp", "e1", 1, Outcome::Retrying, Some(503), 1_000),
        attempt("erp", "e2", 1, Outcome::Dead, Some(400), 1_500),
    ])
    .await
    .unwrap();
    s.record_attempts(&[attempt("erp", "e1", 2, Outcome::Delivered, Some(200), 2_000)]).await.unwrap();
    s.record_attempts(&[attempt("crm", "e1", 1, Outcome::Delivered, Some(204), 1_200)]).await.unwrap();
    // A late write of an older attempt does not roll a delivery back.
    s.record_attempts(&[attempt("erp", "e1", 1, Outcome::Retrying, Some(503), 1_000)]).await.unwrap();

    let all = s.deliveries(&DeliveryFilter { limit: 50, ..Default::default() }).await.unwrap();
    let order: Vec<(&str, &str)> = all.items.iter().map(|d| (d.route.as_str(), d.event_id.as_str())).collect();
    assert_eq!(order, [("erp", "e1"), ("erp", "e2"), ("crm", "e1")], "newest first");
    assert_eq!(all.next, None);
    let e1 = s.delivery(&delivery_id("erp", "e1")).await.unwrap().unwrap();
    assert_eq!((e1.status, e1.attempts, e1.last_status), (Outcome::Delivered, 2, Some(200)));
    assert_eq!((e1.first_at_ms, e1.last_at_ms), (1_000, 2_000));
    assert!(s.delivery("nope").await.unwrap().is_none());

    let by = |f: DeliveryFilter| {
        let s = s.clone();
        async move { s.deliveries(&DeliveryFilter { limit: 50, ..f }).await.unwrap().items.len() }
    };
    assert_eq!(by(DeliveryFilter { route: Some("erp".into()), ..Default::default() }).await, 2);
    assert_eq!(by(DeliveryFilter { status: Some(Outcome::Dead), ..Default::default() }).await, 1);
    assert_eq!(by(DeliveryFilter { event_type: Some("order.created".into()), ..Default::default() }).await, 0);
    assert_eq!(by(DeliveryFilter { since_ms: Some(1_300), until_ms: Some(2_000), ..Default::default() }).await, 1);

    // Cursor paging walks everything once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            s.deliveries(&DeliveryFilter { limit: 1, cursor: cursor.clone(), ..Default::default() }).await.unwrap();
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, all.items.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
    // One batch holding several attempts of one delivery, out of order, is one row: the latest
    // attempt's state, the highest attempt number, the earliest time.
    s.record_attempts(&[
        attempt("batch", "b1", 3, Outcome::Delivered, Some(200), 3_300),
        attempt("batch", "b1", 1, Outcome::Retrying, Some(503), 3_100),
        attempt("batch", "b1", 2, Outcome::Retrying, Some(502), 3_200),
    ])
    .await
    .unwrap();
    let b1 = s.delivery(&delivery_id("batch", "b1")).await.unwrap().unwrap();
    assert_eq!((b1.status, b1.attempts, b1.last_status), (Outcome::Delivered, 3, Some(200)));
    assert_eq!((b1.first_at_ms, b1.last_at_ms), (3_100, 3_300));
    assert_eq!(s.attempts(&delivery_id("batch", "b1")).await.unwrap().len(), 3);
    assert!(
        s.deliveries(&DeliveryFilter { cursor: Some("garbage".into()), limit: 5, ..Default::default() }).await.is_err()
    );

    // Oldest first, the late write of attempt 1 beside the first one.
    let attempts = s.attempts(&delivery_id("erp", "e1")).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.outcome, a.at_ms)).collect::<Vec<_>>(),
        [(1, Outcome::Retrying, 1_000), (1, Outcome::Retrying, 1_000), (2, Outcome::Delivered, 2_000)]
    );
    assert_eq!(attempts[0].response_body.as_deref(), Some("answer 503"));
    assert_eq!(attempts[2].config_revision, "abc123def456");
    assert_eq!(attempts[2].response_body.as_deref(), Some("answer 200"));
    assert_eq!(attempts[2].request_headers.as_deref(), Some("webhook-id: e1\nhookrelay-attempt: 2\n"));

    // Dead letters: idempotent by id, filtered, replayed once.
    assert!(s.add_dead_letter(&dead("d1", "erp", "rejected", 10)).await.unwrap());
    assert!(!s.add_dead_letter(&dead("d1", "erp", "rejected", 10)).await.unwrap(), "same id twice is one row");
    assert!(s.add_dead_letter(&dead("d2", "erp", "schema", 20)).await.unwrap());
    assert!(s.add_dead_letter(&dead("d3", "crm", "rejected", 30)).await.unwrap());
    let dl = |f: DeadLetterFilter| {
        let s = s.clone();
        async move { s.dead_letters(&DeadLetterFilter { limit: 50, ..f }).await.unwrap().items }
    };
    assert_eq!(dl(Default::default()).await.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d3", "d2", "d1"]);
    assert_eq!(dl(DeadLetterFilter { route: Some("erp".into()), ..Default::default() }).await.len(), 2);
    assert_eq!(dl(DeadLetterFilter { reason: Some("rejected".into()), ..Default::default() }).await.len(), 2);
    let by_event = dl(DeadLetterFilter { event_id: Some("ev-d2".into()), ..Default::default() }).await;
    assert_eq!(by_event.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d2"]);
    assert_eq!(dl(DeadLetterFilter { since_ms: Some(15), until_ms: Some(30), ..Default::default() }).await.len(), 1);
    let page = s.dead_letters(&DeadLetterFilter { limit: 2, ..Default::default() }).await.unwrap();
    let rest =
        s.dead_letters(&DeadLetterFilter { limit: 2, cursor: page.next.clone(), ..Default::default() }).await.unwrap();
    assert_eq!((page.items.len(), rest.items.len(), rest.next), (2, 1, None));
    let got = s.dead_letter("d2").await.unwrap().unwrap();
    assert_eq!((got.body.as_slice(), got.last_status), (br#"{"id":"x"}"#.as_slice(), Some(400)));
    assert_eq!(s.claim_replay(&["d1".into(), "d2".into()], "r1", 90, LEASE).await.unwrap(), ["d1", "d2"]);
    assert_eq!(s.mark_replayed(&["d1".into(), "d2".into()], "r1", 99).await.unwrap(), ["d1", "d2"]);
    assert!(s.claim_replay(&["d1".into()], "r2", 100, LEASE).await.unwrap().is_empty(), "replaying twice is refused");
    assert_eq!(dl(Default::default()).await.len(), 1, "replayed ones are hidden by default");
    assert_eq!(dl(DeadLetterFilter { include_replayed: true, ..Default::default() }).await.len(), 3);
    assert_eq!(s.dead_letter("d1").await.unwrap().unwrap().replayed_at_ms, Some(99));

    // Retention: the attempts before the cut go, and the deliveries whose every attempt went
    // ((erp, e2) at 1 500 and (crm, e1) at 1 200); the others stay, with what is left.
    assert_eq!(s.prune(1_600).await.unwrap(), Pruned { attempts: 4, deliveries: 2 });
    assert_eq!(s.attempts(&delivery_id("erp", "e1")).await.unwrap().len(), 1);
    assert_eq!(s.delivery(&delivery_id("erp", "e1")).await.unwrap().unwrap().attempts, 2, "the delivery is kept whole");
    assert!(s.delivery(&delivery_id("erp", "e2")).await.unwrap().is_none());
    assert!(s.delivery(&delivery_id("crm", "e1")).await.unwrap().is_none());
    assert_eq!(s.deliveries(&DeliveryFilter { limit: 50, ..Default::default() }).await.unwrap().items.len(), 2);
    assert_eq!(s.prune(1_600).await.unwrap(), Pruned::default(), "nothing more to prune");
    assert_eq!(
        s.dead_letters(&DeadLetterFilter { include_replayed: true, limit: 50, ..Default::default() })
            .await
            .unwrap()
            .items
            .len(),
        3,
        "dead letters are not pruned"
    );
}

#[tokio::test]
async fn sqlite_store_conforms_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hookrelay.db").display());
    let s = store::open(&url).await.unwrap();
    assert_eq!(s.backend(), "sqlite");
    conformance(s).await;
    let again = store::open(&url).await.unwrap();
    assert_eq!(
        again
            .dead_letters(&DeadLetterFilter { limit: 10, include_replayed: true, ..Default::default() })
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

#[tokio::test]
async fn postgres_store_conforms_and_survives_reopening() {
    let db = PgDatabase::new().await;
    let s = store::open(&db.url).await.unwrap();
    assert_eq!(s.backend(), "postgres");
    conformance(s).await;
    let again = store::open(&db.url).await.unwrap();
    assert_eq!(
        again
            .dead_letters(&DeadLetterFilter { limit: 10, include_replayed: true, ..Default::default() })
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    drop(again);
    db.drop_it().await;
}

#[tokio::test]
async fn unsupported_store_urls_are_refused() {
    assert!(matches!(store::open("mysql://x").await, Err(store::StoreError::Url(_))));
}
