//! Subscriptions in the store: create, update and delete under optimistic versions (conflicts
//! that say what they are), sealed secrets, the generation counter, concurrent writers, the audit
//! entry of each change, and PostgreSQL's change feed to other processes (SQLite has none).

use super::{LEASE, dead, on_postgres, on_sqlite, subscription};
use crate::common::PgDatabase;
use hookrelay::store::{
    self, AuditEntry, AuditFilter, Conflict, SealedSecret, SecretBox, Store, StoreError, SubscriptionRecord,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

fn secret_box() -> SecretBox {
    SecretBox::from_env_value(&SecretBox::generate_key().unwrap()).unwrap()
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
