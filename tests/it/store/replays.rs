//! Replays of dead letters under a lease: claims that exclude each other, marks and releases, and
//! an expired claim taken over.

use super::{LEASE, dead, on_postgres, on_sqlite};
use hookrelay::store::{DeadLetterFilter, Store};
use std::sync::Arc;

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

#[tokio::test]
async fn sqlite_expired_replay_leases_are_taken_over() {
    on_sqlite(expired_replay_leases_are_taken_over).await;
}

#[tokio::test]
async fn postgres_expired_replay_leases_are_taken_over() {
    on_postgres(expired_replay_leases_are_taken_over).await;
}

#[tokio::test]
async fn sqlite_dead_letter_replay_claims_conform() {
    on_sqlite(dead_letter_replay_claims_conform).await;
}

#[tokio::test]
async fn postgres_dead_letter_replay_claims_conform() {
    on_postgres(dead_letter_replay_claims_conform).await;
}
