//! The audit trail: entries appended once, listed newest first, filtered and paged.

use super::{on_postgres, on_sqlite};
use hookrelay::store::{AuditEntry, AuditFilter, Store, StoreError};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

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

#[tokio::test]
async fn sqlite_audit_trail_conforms() {
    on_sqlite(audit_trail_conforms).await;
}

#[tokio::test]
async fn postgres_audit_trail_conforms() {
    on_postgres(audit_trail_conforms).await;
}
