//! The audit trail: one entry for every change made through the admin API (who, what, on what,
//! when), listed newest first with the same keyset cursor paging as the other lists.
//!
//! Never give the store a secret here: no signing secret, no API key, no sealed blob, not even
//! in `details`. Entries are kept in plain text and shown to anyone who may read the trail.

/// One change made through the admin API.
///
/// **No secrets in any field.** Name a secret ("secret rotated", its expiry) but never include
/// it, sealed or not; likewise name API keys, never their value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Unique; [`AuditEntry::new`] makes a UUID.
    pub id: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who: the name of the API key that made the change (or `hookrelay` for the router itself,
    /// e.g. disabling a subscription after a `410 Gone`).
    pub actor: String,
    /// What, as `<resource>.<verb>`: `subscription.create`, `subscription.rotate_secret`,
    /// `dead_letter.replay`, …
    pub action: String,
    /// On what: a subscription id, a route name, a dead-letter id, …
    pub target: String,
    /// Anything else worth keeping (changed fields, counts). No secrets.
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry with a fresh UUID as its id.
    pub fn new(
        at_ms: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details,
        }
    }
}

/// Filters and paging for the audit trail, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// At or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Before (Unix ms).
    pub until_ms: Option<i64>,
    /// From a previous page's `next` cursor.
    pub cursor: Option<String>,
    /// Page size (1 to 1000).
    pub limit: u32,
}
