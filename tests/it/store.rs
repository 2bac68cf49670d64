//! One conformance suite for every store backend: SQLite (a temp file) and PostgreSQL (a fresh
//! database per test, on the server `HOOKRELAY_TEST_POSTGRES_URL` names). Each part of the suite
//! runs on a store of its own, once per backend.

use crate::common::PgDatabase;
use hookrelay::store::{
    self, Attempt, AuditEntry, AuditFilter, Conflict, DeadLetter, DeadLetterFilter, DeliveryFilter, Outcome, Pruned,
    SealedSecret, SecretBox, Store, StoreError, SubscriptionRecord, delivery_id,
};
use serde_json::json;
use std::collections::HashSet;
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

    let attempts = s.attempts(&delivery_id("erp", "e1")).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.outcome)).collect::<Vec<_>>(),
        [(1, Outcome::Retrying), (2, Outcome::Delivered), (1, Outcome::Retrying)]
    );
    assert_eq!(attempts[1].config_revision, "abc123def456");
    assert_eq!(attempts[1].response_body.as_deref(), Some("answer 200"));
    assert_eq!(attempts[1].request_headers.as_deref(), Some("webhook-id: e1\nhookrelay-attempt: 2\n"));

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

/// The replay lease used by these tests (ms).
const LEASE: i64 = 60_000;

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

fn secret_box() -> SecretBox {
    SecretBox::from_env_value(&SecretBox::generate_key().unwrap()).unwrap()
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

fn conflict(r: Result<impl std::fmt::Debug, StoreError>) -> Conflict {
    match r {
        Err(StoreError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn audit_ids(s: &Arc<dyn Store>, target: &str) -> Vec<String> {
    let f = AuditFilter { target: Some(target.into()), limit: 100, ..Default::default() };
    s.audit(&f).await.unwrap().items.into_iter().map(|e| e.id).collect()
}

async fn subscriptions_conform(s: Arc<dyn Store>) {
    let key = secret_box();
    let generation = || {
        let s = s.clone();
        async move { s.subscriptions_generation().await.unwrap() }
    };
    assert!(s.subscriptions().await.unwrap().is_empty());
    let g0 = generation().await;

    // Create: stored with version 1, its secret sealed for its id, the audit entry beside it.
    let first = SealedSecret { sealed: key.seal(b"whsec_first", "sub-b").unwrap(), expires_at_ms: None };
    let created_entry = AuditEntry::new(1_000, "ops", "subscription.create", "sub-b", json!({"name": "billing"}));
    let b = s
        .create_subscription(&subscription("sub-b", "billing", vec![first.clone()]), Some(&created_entry))
        .await
        .unwrap();
    assert_eq!((b.version, b.created_at_ms, b.updated_at_ms), (1, 1_000, 1_000));
    let g1 = generation().await;
    assert_ne!(g1, g0, "a create moves the generation");
    assert_eq!(s.subscription("sub-b").await.unwrap().as_ref(), Some(&b), "read back as returned");
    assert_eq!(s.subscription_by_name("billing").await.unwrap().as_ref(), Some(&b));
    assert_eq!(b.secrets.len(), 1);
    assert_eq!(b.secrets[0], first);
    assert_eq!(key.open(&b.secrets[0].sealed, &b.id).unwrap(), b"whsec_first");
    assert!(key.open(&b.secrets[0].sealed, "sub-a").is_err(), "a sealed secret moved to another record does not open");
    assert_eq!(audit_ids(&s, "sub-b").await, std::slice::from_ref(&created_entry.id));

    s.create_subscription(&subscription("sub-a", "alerts", vec![]), None).await.unwrap();
    s.create_subscription(&subscription("sub-c", "CRM", vec![]), None).await.unwrap();
    let names: Vec<String> = s.subscriptions().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["CRM", "alerts", "billing"], "ordered by name, byte order on both backends");
    assert!(s.subscription("nope").await.unwrap().is_none());
    assert!(s.subscription_by_name("nope").await.unwrap().is_none());

    // A taken name or id is a conflict, changes nothing, and leaves no audit entry.
    let g = generation().await;
    let refused = AuditEntry::new(1_100, "ops", "subscription.create", "sub-x", json!({}));
    let c = conflict(s.create_subscription(&subscription("sub-x", "billing", vec![]), Some(&refused)).await);
    assert_eq!(c, Conflict::NameTaken { name: "billing".into() });
    assert_eq!(
        c.to_string(),
        "a subscription named \"billing\" already exists: choose another name, or update that one"
    );
    assert_eq!(
        conflict(s.create_subscription(&subscription("sub-b", "other", vec![]), None).await),
        Conflict::IdTaken { id: "sub-b".into() }
    );
    assert_eq!(generation().await, g, "refused writes do not move the generation");
    assert!(audit_ids(&s, "sub-x").await.is_empty(), "a refused change leaves no audit entry");
    assert!(s.subscription("sub-x").await.unwrap().is_none());

    // Update (a secret rotation: the new secret first, the old one until its expiry).
    let second = SealedSecret { sealed: key.seal(b"whsec_second", "sub-b").unwrap(), expires_at_ms: None };
    let old = SealedSecret { expires_at_ms: Some(90_000), ..first.clone() };
    let rotated = SubscriptionRecord { secrets: vec![second.clone(), old.clone()], ..b.clone() };
    let rotate_entry = AuditEntry::new(2_000, "ops", "subscription.rotate_secret", "sub-b", json!({"overlap": "24h"}));
    let b2 = s.update_subscription(&rotated, 1, 2_000, Some(&rotate_entry)).await.unwrap().unwrap();
    assert_eq!((b2.version, b2.created_at_ms, b2.updated_at_ms), (2, 1_000, 2_000));
    assert_eq!(b2.secrets, [second, old]);
    assert_eq!(s.subscription("sub-b").await.unwrap(), Some(b2.clone()));
    let g2 = generation().await;
    assert_ne!(g2, g);

    // A stale version, a taken name, an unknown id: refused, nothing changes.
    let stale = SubscriptionRecord { spec: json!({"url": "https://late.example.com"}), ..b.clone() };
    let c = conflict(s.update_subscription(&stale, 1, 2_500, None).await);
    assert_eq!(c, Conflict::StaleVersion { id: "sub-b".into(), expected: 1, current: 2 });
    assert!(c.to_string().contains("is at version 2, not 1"), "{c}");
    let renamed = SubscriptionRecord { name: "alerts".into(), ..b2.clone() };
    assert_eq!(
        conflict(s.update_subscription(&renamed, 2, 2_500, None).await),
        Conflict::NameTaken { name: "alerts".into() }
    );
    let ghost = SubscriptionRecord { id: "ghost".into(), ..b2.clone() };
    assert_eq!(s.update_subscription(&ghost, 2, 2_500, None).await.unwrap(), None);
    assert_eq!(generation().await, g2);
    assert_eq!(s.subscription("sub-b").await.unwrap(), Some(b2.clone()));

    // A rename to a free name and a new spec.
    let spec = json!({"events": ["invoice.*"], "url": "https://billing.example.com/v2", "timeout": "5s"});
    let b3 = s
        .update_subscription(
            &SubscriptionRecord { name: "billing-v2".into(), spec: spec.clone(), ..b2 },
            2,
            3_000,
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b3.name.as_str(), &b3.spec, b3.version), ("billing-v2", &spec, 3));
    assert!(s.subscription_by_name("billing").await.unwrap().is_none());
    assert_eq!(s.subscription_by_name("billing-v2").await.unwrap(), Some(b3.clone()));

    // Disable (410 Gone), again (no change), enable.
    let g3 = generation().await;
    let off = s.set_subscription_enabled("sub-b", false, Some("410 Gone"), 4_000, None).await.unwrap().unwrap();
    assert_eq!(
        (off.enabled, off.disabled_reason.as_deref(), off.version, off.updated_at_ms),
        (false, Some("410 Gone"), 4, 4_000)
    );
    let g4 = generation().await;
    assert_ne!(g4, g3);
    let again = s.set_subscription_enabled("sub-b", false, Some("410 Gone again"), 4_100, None).await.unwrap().unwrap();
    assert_eq!(again, off, "disabling a disabled subscription changes nothing");
    assert_eq!(generation().await, g4);
    let enable_entry = AuditEntry::new(5_000, "ops", "subscription.enable", "sub-b", json!({}));
    let on =
        s.set_subscription_enabled("sub-b", true, Some("ignored"), 5_000, Some(&enable_entry)).await.unwrap().unwrap();
    assert_eq!((on.enabled, on.disabled_reason, on.version), (true, None, 5));
    assert_eq!(s.set_subscription_enabled("ghost", false, Some("x"), 5_000, None).await.unwrap(), None);

    // Delete.
    let delete_entry = AuditEntry::new(6_000, "ops", "subscription.delete", "sub-b", json!({}));
    let g5 = generation().await;
    assert!(s.delete_subscription("sub-b", Some(&delete_entry)).await.unwrap());
    let g6 = generation().await;
    assert_ne!(g6, g5);
    assert!(!s.delete_subscription("sub-b", Some(&delete_entry)).await.unwrap(), "gone already");
    assert_eq!(generation().await, g6);
    assert!(s.subscription("sub-b").await.unwrap().is_none());
    assert_eq!(s.subscriptions().await.unwrap().len(), 2);
    assert_eq!(
        audit_ids(&s, "sub-b").await,
        [delete_entry.id, enable_entry.id, rotate_entry.id, created_entry.id],
        "the audit entries written with their changes, newest first"
    );
}

async fn concurrent_writers_conflict_cleanly(s: Arc<dyn Store>) {
    for round in 0..8 {
        let g = s.subscriptions_generation().await.unwrap();

        // Two creates of one name: one wins, the other is a name conflict.
        let name = format!("race-{round}");
        let create = |id: String| {
            let (s, name) = (s.clone(), name.clone());
            tokio::spawn(async move { s.create_subscription(&subscription(&id, &name, vec![]), None).await })
        };
        let (x, y) = (create(format!("x-{round}")), create(format!("y-{round}")));
        let results = [x.await.unwrap(), y.await.unwrap()];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
        let loser = results.into_iter().find(|r| r.is_err()).unwrap();
        assert_eq!(conflict(loser), Conflict::NameTaken { name: name.clone() });

        // Two updates from the same version: one wins, the other is told the version moved.
        let id = format!("u-{round}");
        let base = s.create_subscription(&subscription(&id, &format!("upd-{round}"), vec![]), None).await.unwrap();
        let update = |url: &'static str| {
            let s = s.clone();
            let change = SubscriptionRecord { spec: json!({ "url": url }), ..base.clone() };
            tokio::spawn(async move { s.update_subscription(&change, 1, 2_000, None).await })
        };
        let (x, y) = (update("https://x.example.com"), update("https://y.example.com"));
        let results = [x.await.unwrap(), y.await.unwrap()];
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0].clone().unwrap();
        assert_eq!(winner.version, 2);
        assert_eq!(s.subscription(&id).await.unwrap(), Some(winner), "the winner's change is what is stored");
        let loser = results.into_iter().find(|r| r.is_err()).unwrap();
        assert_eq!(conflict(loser), Conflict::StaleVersion { id: id.clone(), expected: 1, current: 2 });

        // Exactly the three successful changes moved the generation.
        assert_eq!(s.subscriptions_generation().await.unwrap(), g + 3, "round {round}");

        // Two claims of the same dead letters (in opposite orders): each id is claimed once.
        let route = format!("claims-{round}");
        let ids: Vec<String> = (0..60).map(|i| format!("{route}-{i:02}")).collect();
        for (i, id) in ids.iter().enumerate() {
            s.add_dead_letter(&dead(id, &route, "rejected", i as i64)).await.unwrap();
        }
        let claim = |ids: Vec<String>, claim_name: &'static str| {
            let s = s.clone();
            tokio::spawn(async move { s.claim_replay(&ids, claim_name, 99, LEASE).await.unwrap() })
        };
        let reversed: Vec<String> = ids.iter().rev().cloned().collect();
        let (a, b) = (claim(ids.clone(), "a"), claim(reversed, "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let a: HashSet<String> = a.into_iter().collect();
        let b: HashSet<String> = b.into_iter().collect();
        assert!(a.is_disjoint(&b), "round {round}: claimed twice: {:?}", a.intersection(&b).collect::<Vec<_>>());
        assert_eq!(a.union(&b).cloned().collect::<HashSet<_>>(), ids.iter().cloned().collect(), "round {round}");
    }
}

async fn audit_trail_conforms(s: Arc<dyn Store>) {
    let entries = [
        AuditEntry::new(100, "ops", "subscription.create", "sub-1", json!({"name": "erp"})),
        AuditEntry::new(200, "ops", "subscription.update", "sub-1", json!({"fields": ["url"]})),
        AuditEntry::new(200, "ci", "dead_letter.replay", "erp", json!({"ids": 3, "filter": {"reason": "rejected"}})),
        AuditEntry::new(300, "ci", "subscription.delete", "sub-1", json!(null)),
    ];
    for e in &entries {
        assert!(s.append_audit(e).await.unwrap());
    }
    assert!(!s.append_audit(&entries[0]).await.unwrap(), "the same entry twice is one");

    let list = |f: AuditFilter| {
        let s = s.clone();
        async move { s.audit(&AuditFilter { limit: 50, ..f }).await.unwrap() }
    };
    let all = list(Default::default()).await;
    assert_eq!(all.next, None);
    assert_eq!(all.items.len(), 4);
    assert_eq!(all.items[0], entries[3], "newest first, read back whole");
    assert_eq!(all.items[3], entries[0]);
    let at_200: HashSet<&str> = all.items[1..3].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(at_200, HashSet::from([entries[1].id.as_str(), entries[2].id.as_str()]));
    assert_eq!(all.items.iter().find(|e| e.id == entries[2].id).unwrap().details, entries[2].details);

    let ids = |p: hookrelay::store::Page<AuditEntry>| p.items.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(list(AuditFilter { action: Some("subscription.update".into()), ..Default::default() }).await),
        [entries[1].id.clone()]
    );
    assert_eq!(list(AuditFilter { target: Some("sub-1".into()), ..Default::default() }).await.items.len(), 3);
    assert_eq!(list(AuditFilter { actor: Some("ci".into()), ..Default::default() }).await.items.len(), 2);
    assert_eq!(
        list(AuditFilter { since_ms: Some(200), until_ms: Some(300), ..Default::default() }).await.items.len(),
        2
    );
    assert!(list(AuditFilter { action: Some("nope".into()), ..Default::default() }).await.items.is_empty());

    // Keyset paging walks everything once, in order, ties at 200 included.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.audit(&AuditFilter { limit: 1, cursor: cursor.clone(), ..Default::default() }).await.unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids(all));
    assert!(matches!(
        s.audit(&AuditFilter { cursor: Some("garbage".into()), limit: 5, ..Default::default() }).await,
        Err(StoreError::Cursor(_))
    ));
}

fn timed(route: &str, i: usize, outcome: Outcome, duration_ms: u64, at_ms: i64) -> Attempt {
    let status = match outcome {
        Outcome::Delivered => Some(200),
        _ => Some(503),
    };
    Attempt { duration_ms, ..attempt(route, &format!("{route}-{i}"), 1, outcome, status, at_ms) }
}

async fn stats_compute_percentiles_in_sql(s: Arc<dyn Store>) {
    let mut batch = Vec::new();
    // alpha: 100 attempts lasting 1..=100 ms, recorded in a scrambled order (37 is coprime to
    // 100): 80 delivered, 15 retried, 5 dead. Nearest rank: p50 = 50, p95 = 95, p99 = 99.
    for i in 0..100 {
        let outcome = match i {
            0..80 => Outcome::Delivered,
            80..95 => Outcome::Retrying,
            _ => Outcome::Dead,
        };
        batch.push(timed("alpha", i, outcome, (i as u64 * 37) % 100 + 1, 10_000 + i as i64));
    }
    // Outside the window [10_000, 20_000): would change alpha's counts and its p99 if counted.
    batch.push(timed("alpha", 900, Outcome::Delivered, 100_000, 9_999));
    batch.push(timed("alpha", 901, Outcome::Delivered, 100_000, 20_000));
    batch.push(timed("delta", 0, Outcome::Delivered, 5, 25_000));
    // beta: 20 attempts lasting 5, 10, … 100 ms: p50 = 10th = 50, p95 = 19th = 95, p99 = 20th = 100.
    for i in 0..20 {
        batch.push(timed("beta", i, Outcome::Delivered, ((i as u64 * 7) % 20 + 1) * 5, 15_000 + i as i64));
    }
    // gamma: one dead attempt.
    batch.push(timed("gamma", 0, Outcome::Dead, 7, 12_345));
    s.record_attempts(&batch).await.unwrap();

    let stats = s.stats(10_000, 20_000, None).await.unwrap();
    let routes: Vec<&str> = stats.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, ["alpha", "beta", "gamma"], "only routes with attempts in the window, by name");
    let alpha = &stats[0];
    assert_eq!((alpha.attempts, alpha.delivered, alpha.failed, alpha.dead), (100, 80, 20, 5));
    assert_eq!(alpha.success_rate, Some(0.8));
    assert_eq!((alpha.latency_p50_ms, alpha.latency_p95_ms, alpha.latency_p99_ms), (Some(50), Some(95), Some(99)));
    assert_eq!((alpha.first_at_ms, alpha.last_at_ms), (Some(10_000), Some(10_099)));
    let beta = &stats[1];
    assert_eq!((beta.attempts, beta.delivered, beta.failed, beta.dead, beta.success_rate), (20, 20, 0, 0, Some(1.0)));
    assert_eq!((beta.latency_p50_ms, beta.latency_p95_ms, beta.latency_p99_ms), (Some(50), Some(95), Some(100)));
    let gamma = &stats[2];
    assert_eq!(
        (gamma.attempts, gamma.delivered, gamma.failed, gamma.dead, gamma.success_rate),
        (1, 0, 1, 1, Some(0.0))
    );
    assert_eq!((gamma.latency_p50_ms, gamma.latency_p95_ms, gamma.latency_p99_ms), (Some(7), Some(7), Some(7)));
    assert_eq!((gamma.first_at_ms, gamma.last_at_ms), (Some(12_345), Some(12_345)));

    assert_eq!(s.stats(10_000, 20_000, Some("beta")).await.unwrap(), std::slice::from_ref(beta), "one route");
    assert!(s.stats(10_000, 20_000, Some("delta")).await.unwrap().is_empty());
    assert!(s.stats(30_000, 40_000, None).await.unwrap().is_empty());
    // A wider window takes the outliers in: 102 attempts, p99 = the 101st = 100 000 ms.
    let wide = s.stats(0, 30_000, Some("alpha")).await.unwrap();
    assert_eq!((wide[0].attempts, wide[0].latency_p99_ms, wide[0].latency_p50_ms), (102, Some(100_000), Some(51)));
}

async fn dead_letter_replay_claims_conform(s: Arc<dyn Store>) {
    for (i, id) in ["d1", "d2", "d3", "d4", "d5"].iter().enumerate() {
        let reason = if i % 2 == 0 { "rejected" } else { "exhausted" };
        s.add_dead_letter(&dead(id, "erp", reason, 10 * (i as i64 + 1))).await.unwrap();
    }
    s.add_dead_letter(&dead("c1", "crm", "rejected", 15)).await.unwrap();
    let erp = DeadLetterFilter { route: Some("erp".into()), ..Default::default() };
    let ids = |f: DeadLetterFilter, max: u32| {
        let s = s.clone();
        async move { s.dead_letter_ids(&f, max).await.unwrap() }
    };
    assert_eq!(ids(erp.clone(), 100).await, ["d1", "d2", "d3", "d4", "d5"], "oldest first");
    assert_eq!(ids(erp.clone(), 2).await, ["d1", "d2"], "capped");
    assert_eq!(ids(Default::default(), 100).await, ["d1", "c1", "d2", "d3", "d4", "d5"]);
    assert_eq!(ids(DeadLetterFilter { reason: Some("rejected".into()), ..erp.clone() }, 100).await, ["d1", "d3", "d5"]);
    assert_eq!(
        ids(DeadLetterFilter { since_ms: Some(20), until_ms: Some(40), ..erp.clone() }, 100).await,
        ["d2", "d3"]
    );
    // Paging fields do not narrow it.
    assert_eq!(ids(DeadLetterFilter { limit: 1, cursor: Some("garbage".into()), ..erp.clone() }, 100).await.len(), 5);

    // Claims: once each, repeats and unknown ids ignored, in the order asked. A claim is not a
    // replay: the dead letters stay unreplayed until marked.
    let claimed =
        s.claim_replay(&["d4".into(), "d2".into(), "d4".into(), "nope".into()], "r1", 99, LEASE).await.unwrap();
    assert_eq!(claimed, ["d4", "d2"]);
    assert_eq!(s.dead_letter("d4").await.unwrap().unwrap().replayed_at_ms, None, "claimed, not replayed");
    assert!(s.claim_replay(&["d2".into()], "r2", 100, LEASE).await.unwrap().is_empty(), "the lease holds");

    // A failed republish releases its claim; only what that claim holds is released.
    assert!(s.release_replay(&["d4".into()], "r2").await.unwrap().is_empty(), "another replay's claim");
    assert_eq!(s.release_replay(&["d1".into(), "d4".into(), "nope".into()], "r1").await.unwrap(), ["d4"]);
    assert_eq!(
        s.claim_replay(&["d4".into()], "r3", 120, LEASE).await.unwrap(),
        ["d4"],
        "released, it can be claimed again"
    );
    // Marked replayed once republished; only by the claim that holds it.
    assert!(s.mark_replayed(&["d4".into()], "r1", 130).await.unwrap().is_empty(), "r1 no longer holds d4");
    assert_eq!(s.mark_replayed(&["d2".into(), "d4".into()], "r1", 130).await.unwrap(), ["d2"]);
    assert_eq!(s.mark_replayed(&["d4".into()], "r3", 140).await.unwrap(), ["d4"]);
    assert_eq!(s.dead_letter("d2").await.unwrap().unwrap().replayed_at_ms, Some(130));
    assert_eq!(s.dead_letter("d4").await.unwrap().unwrap().replayed_at_ms, Some(140));
    assert_eq!(ids(erp.clone(), 100).await, ["d1", "d3", "d5"], "replayed ones are left out");
    assert_eq!(ids(DeadLetterFilter { include_replayed: true, ..erp.clone() }, 100).await.len(), 5);
    assert!(s.claim_replay(&["d2".into()], "r4", 1_000_000, LEASE).await.unwrap().is_empty(), "replayed is for good");
    assert!(s.release_replay(&[], "r1").await.unwrap().is_empty());
    assert!(s.mark_replayed(&[], "r1", 1).await.unwrap().is_empty());
    assert!(s.claim_replay(&[], "r1", 1, LEASE).await.unwrap().is_empty());

    // More ids than one statement binds.
    let bulk: Vec<String> = (0..1_001).map(|i| format!("bulk-{i:04}")).collect();
    for (i, id) in bulk.iter().enumerate() {
        s.add_dead_letter(&dead(id, "bulk", "exhausted", 1_000 + i as i64)).await.unwrap();
    }
    let by_filter = ids(DeadLetterFilter { route: Some("bulk".into()), ..Default::default() }, 5_000).await;
    assert_eq!(by_filter, bulk);
    let reversed: Vec<String> = bulk.iter().rev().cloned().collect();
    assert_eq!(
        s.claim_replay(&reversed, "bulk", 200, LEASE).await.unwrap(),
        reversed,
        "all claimed, in the order asked"
    );
    assert!(s.claim_replay(&bulk, "other", 201, LEASE).await.unwrap().is_empty());
    assert_eq!(s.release_replay(&bulk, "bulk").await.unwrap(), bulk);
    assert_eq!(s.claim_replay(&bulk, "again", 202, LEASE).await.unwrap(), bulk);
    assert_eq!(s.mark_replayed(&reversed, "again", 203).await.unwrap(), reversed);
}

/// A replay that crashed between its claim and its publish (or stalled past the lease) leaves a
/// claim that expires: the dead letter is not marked replayed, the next replay takes it over
/// once the lease is over, and the stale claim can no longer mark or release it.
async fn expired_replay_leases_are_taken_over(s: Arc<dyn Store>) {
    for (i, id) in ["x1", "x2", "x3"].iter().enumerate() {
        s.add_dead_letter(&dead(id, "erp", "rejected", i as i64)).await.unwrap();
    }
    let all: Vec<String> = vec!["x1".into(), "x2".into(), "x3".into()];
    assert_eq!(s.claim_replay(&all, "crashed", 10_000, LEASE).await.unwrap(), all);
    // The crashed replay never republished nor marked anything: nothing shows as replayed.
    let unreplayed = s.dead_letter_ids(&DeadLetterFilter { route: Some("erp".into()), ..Default::default() }, 10).await;
    assert_eq!(unreplayed.unwrap(), all, "claimed is not replayed");
    // While the lease runs, nobody else takes them (up to its last millisecond).
    assert!(s.claim_replay(&all, "early", 10_000 + LEASE - 1, LEASE).await.unwrap().is_empty());
    // Once it is over, the next replay does.
    let late = 10_000 + LEASE;
    assert_eq!(s.claim_replay(&all[..2], "next", late, LEASE).await.unwrap(), &all[..2]);
    assert!(s.mark_replayed(&all[..2], "crashed", late + 1).await.unwrap().is_empty(), "the stale claim marks nothing");
    assert!(s.release_replay(&all[..2], "crashed").await.unwrap().is_empty(), "nor releases what it lost");
    assert_eq!(s.mark_replayed(&all[..2], "next", late + 2).await.unwrap(), &all[..2]);
    assert_eq!(s.dead_letter("x1").await.unwrap().unwrap().replayed_at_ms, Some(late + 2));
    // x3's lease is over too, but nobody took it over: its stale claim may still end it.
    assert_eq!(s.mark_replayed(&all[2..], "crashed", late + 3).await.unwrap(), &all[2..]);
    assert!(s.claim_replay(&all, "after", late * 10, LEASE).await.unwrap().is_empty(), "all replayed, once each");
}

/// Routes that log payloads keep the event once per delivery (for a retry) and the body sent per
/// attempt; routes that do not, keep neither. Retention prunes attempts, and a delivery only
/// with its last attempt.
async fn delivery_log_keeps_events_and_prunes(s: Arc<dyn Store>) {
    let kept = |n: u32, outcome: Outcome, status: Option<u16>, at_ms: i64| Attempt {
        payload: Some(br#"{"type":"order.paid","data":{"n":1}}"#.to_vec()),
        event: Some(br#"{"id":"k1","type":"order.paid"}"#.to_vec()),
        ..attempt("kept", "k1", n, outcome, status, at_ms)
    };
    s.record_attempts(&[kept(1, Outcome::Retrying, Some(503), 1_000)]).await.unwrap();
    s.record_attempts(&[attempt("plain", "p1", 1, Outcome::Delivered, Some(200), 1_100)]).await.unwrap();
    // A later attempt without the event (the route stopped logging payloads) does not erase it.
    s.record_attempts(&[Attempt { event: None, ..kept(2, Outcome::Delivered, Some(200), 5_000) }]).await.unwrap();
    let (k1, p1) = (delivery_id("kept", "k1"), delivery_id("plain", "p1"));
    assert_eq!(s.delivery_event(&k1).await.unwrap().as_deref(), Some(br#"{"id":"k1","type":"order.paid"}"#.as_slice()));
    assert_eq!(s.delivery_event(&p1).await.unwrap(), None, "a route without log_payload keeps no event");
    assert_eq!(s.delivery_event("nope").await.unwrap(), None);
    let attempts = s.attempts(&k1).await.unwrap();
    assert_eq!(attempts[0].payload.as_deref(), Some(br#"{"type":"order.paid","data":{"n":1}}"#.as_slice()));
    assert_eq!(attempts[0].event, None, "the event is kept once, with its delivery");
    assert_eq!(s.attempts(&p1).await.unwrap()[0].payload, None, "a route without log_payload keeps no body");
    // Lists do not carry events.
    assert_eq!(s.deliveries(&DeliveryFilter { limit: 10, ..Default::default() }).await.unwrap().items.len(), 2);

    assert_eq!(s.prune(2_000).await.unwrap(), Pruned { attempts: 2, deliveries: 1 });
    assert!(s.delivery(&p1).await.unwrap().is_none(), "its only attempt is gone, and so is it");
    let k = s.delivery(&k1).await.unwrap().unwrap();
    assert_eq!((k.status, k.attempts), (Outcome::Delivered, 2), "a delivery with an attempt left stays whole");
    assert_eq!(s.attempts(&k1).await.unwrap().len(), 1);
    assert!(s.delivery_event(&k1).await.unwrap().is_some());
    assert_eq!(s.prune(5_001).await.unwrap(), Pruned { attempts: 1, deliveries: 1 });
    assert!(s.delivery(&k1).await.unwrap().is_none());
    assert_eq!(s.delivery_event(&k1).await.unwrap(), None, "its event goes with it");
}

#[tokio::test]
async fn sqlite_expired_replay_leases_are_taken_over() {
    on_sqlite(expired_replay_leases_are_taken_over).await;
}

#[tokio::test]
async fn postgres_expired_replay_leases_are_taken_over() {
    on_postgres(expired_replay_leases_are_taken_over).await;
}

#[tokio::test]
async fn sqlite_delivery_log_keeps_events_and_prunes() {
    on_sqlite(delivery_log_keeps_events_and_prunes).await;
}

#[tokio::test]
async fn postgres_delivery_log_keeps_events_and_prunes() {
    on_postgres(delivery_log_keeps_events_and_prunes).await;
}

/// Waits (generously) for a wake of a change feed.
async fn woke(feed: &mut tokio::sync::mpsc::Receiver<()>) -> bool {
    matches!(tokio::time::timeout(std::time::Duration::from_secs(60), feed.recv()).await, Ok(Some(())))
}

/// PostgreSQL announces every subscription change to every process that listens (another pool
/// here, as another replica would be): the feed wakes without any poll.
#[tokio::test]
async fn postgres_announces_subscription_changes_to_other_processes() {
    let db = PgDatabase::new().await;
    let (a, b) = (store::open(&db.url).await.unwrap(), store::open(&db.url).await.unwrap());
    let mut feed = a.subscription_changes().await.unwrap().expect("PostgreSQL has a change feed");

    let g = a.subscriptions_generation().await.unwrap();
    b.create_subscription(&subscription("sub-1", "erp", vec![]), None).await.unwrap();
    assert!(woke(&mut feed).await, "no notification of a create made through another pool");
    assert_eq!(a.subscriptions_generation().await.unwrap(), g + 1);
    b.delete_subscription("sub-1", None).await.unwrap();
    assert!(woke(&mut feed).await, "no notification of a delete made through another pool");
    assert_eq!(a.subscriptions_generation().await.unwrap(), g + 2);
    // A refused change commits nothing and announces nothing; the feed has nothing pending.
    assert!(b.update_subscription(&subscription("ghost", "x", vec![]), 1, 1, None).await.unwrap().is_none());
    assert!(feed.try_recv().is_err(), "a change that was not made was announced");
    drop((feed, a, b));
    db.drop_it().await;
}

#[tokio::test]
async fn sqlite_has_no_change_feed() {
    on_sqlite(|s| async move { assert!(s.subscription_changes().await.unwrap().is_none()) }).await;
}

#[tokio::test]
async fn sqlite_subscriptions_conform() {
    on_sqlite(subscriptions_conform).await;
}

#[tokio::test]
async fn postgres_subscriptions_conform() {
    on_postgres(subscriptions_conform).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_writers_conflict_cleanly() {
    on_sqlite(concurrent_writers_conflict_cleanly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_writers_conflict_cleanly() {
    on_postgres(concurrent_writers_conflict_cleanly).await;
}

#[tokio::test]
async fn sqlite_audit_trail_conforms() {
    on_sqlite(audit_trail_conforms).await;
}

#[tokio::test]
async fn postgres_audit_trail_conforms() {
    on_postgres(audit_trail_conforms).await;
}

#[tokio::test]
async fn sqlite_stats_compute_percentiles_in_sql() {
    on_sqlite(stats_compute_percentiles_in_sql).await;
}

#[tokio::test]
async fn postgres_stats_compute_percentiles_in_sql() {
    on_postgres(stats_compute_percentiles_in_sql).await;
}

#[tokio::test]
async fn sqlite_dead_letter_replay_claims_conform() {
    on_sqlite(dead_letter_replay_claims_conform).await;
}

#[tokio::test]
async fn postgres_dead_letter_replay_claims_conform() {
    on_postgres(dead_letter_replay_claims_conform).await;
}

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
         VALUES ('{id}', 'erp', 'ev-1', 'order.paid', 'delivered', 1, 200, NULL, 1000, 1000);",
        id = delivery_id("erp", "ev-1"),
    )
}

/// The store opened on a database at `0001`: upgraded to the latest (`0005`), old rows intact, new
/// parts working (`0004` is checked in `tokens.rs`).
async fn upgraded_from_0001(s: Arc<dyn Store>) {
    let old = s.dead_letter("old-dl").await.unwrap().unwrap();
    assert_eq!((old.body.as_slice(), old.reason.as_str(), old.dead_at_ms), (b"{}".as_slice(), "rejected", 50));
    assert_eq!(s.delivery(&delivery_id("erp", "ev-1")).await.unwrap().unwrap().status, Outcome::Delivered);
    let stats = s.stats(0, 2_000, None).await.unwrap();
    assert_eq!((stats[0].route.as_str(), stats[0].attempts, stats[0].latency_p50_ms), ("erp", 1, Some(42)));
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
}

#[tokio::test]
async fn sqlite_store_upgrades_from_0001() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hookrelay.db").display());
    let opts = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    migration_0001(include_str!("../../migrations/sqlite/0001_delivery_log.sql")).run(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows_0001("X'7b7d'"))).execute(&pool).await.unwrap();

    upgraded_from_0001(store::open(&url).await.unwrap()).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    // Opening again finds them applied, with the checksums it knows.
    assert_eq!(store::open(&url).await.unwrap().subscriptions().await.unwrap().len(), 1);
    pool.close().await;
}

#[tokio::test]
async fn postgres_store_upgrades_from_0001() {
    let db = PgDatabase::new().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    migration_0001(include_str!("../../migrations/postgres/0001_delivery_log.sql")).run(&pool).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(rows_0001("'\\x7b7d'::bytea"))).execute(&pool).await.unwrap();

    upgraded_from_0001(store::open(&db.url).await.unwrap()).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(store::open(&db.url).await.unwrap().subscriptions().await.unwrap().len(), 1);
    pool.close().await;
    db.drop_it().await;
}
