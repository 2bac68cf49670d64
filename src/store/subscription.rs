//! Subscriptions as the store keeps them: API-managed routes, stored generically. The store does
//! not know how a route compiles; it keeps the definition the API accepted (`spec`, JSON without
//! secrets), the signing secrets sealed by [`SecretBox`](super::SecretBox), and the bookkeeping
//! the API needs (enabled, version for optimistic concurrency, times).
//!
//! Every change bumps the subscriptions generation (see
//! [`Store::subscriptions_generation`](super::Store::subscriptions_generation)) in its own
//! transaction, so replicas sharing one PostgreSQL notice changes by polling one cheap value.

use super::StoreError;

/// One signing secret, sealed (encrypted and authenticated with the subscription id as
/// associated data; see [`SecretBox`](super::SecretBox)). Never the plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The blob [`SecretBox::seal`](super::SecretBox::seal) returned.
    pub sealed: Vec<u8>,
    /// When the secret stops being valid (Unix ms): set on an old secret during a rotation's
    /// overlap, `None` on the current one.
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// An API-managed route.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRecord {
    /// Unique, chosen by the API before sealing the secrets (it is their associated data).
    pub id: String,
    /// Unique among subscriptions: it is the route name.
    pub name: String,
    /// The route definition as the API accepted it. No secrets in it.
    pub spec: serde_json::Value,
    /// Signing secrets, newest first; an old one during a rotation carries its expiry.
    pub secrets: Vec<SealedSecret>,
    /// Delivering, or not.
    pub enabled: bool,
    /// Why it was disabled (e.g. the receiver answered `410 Gone`); `None` while enabled.
    pub disabled_reason: Option<String>,
    /// The tenant that owns it, if one does.
    pub tenant: Option<String>,
    /// Created (Unix ms).
    pub created_at_ms: i64,
    /// Last changed (Unix ms).
    pub updated_at_ms: i64,
    /// 1 when created, bumped by every change; pass the version you read as `expected_version`.
    pub version: i64,
}

/// Why a write was refused because of what is already stored. The admin API answers 409.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Another subscription has this name.
    #[error("a subscription named {name:?} already exists: choose another name, or update that one")]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// A subscription with this id exists already.
    #[error("a subscription with id {id:?} already exists: create it with a new id")]
    IdTaken {
        /// The id asked for.
        id: String,
    },
    /// The subscription changed since it was read.
    #[error(
        "subscription {id:?} is at version {current}, not {expected}: it was changed meanwhile; read it again and reapply the change"
    )]
    StaleVersion {
        /// The subscription.
        id: String,
        /// The version the writer had read.
        expected: i64,
        /// The version stored now.
        current: i64,
    },
}

/// The secrets column: JSON, blobs in base64.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecret {
    sealed: String,
    expires_at_ms: Option<i64>,
}

pub(crate) fn secrets_to_json(secrets: &[SealedSecret]) -> String {
    use base64::Engine as _;
    let stored: Vec<StoredSecret> = secrets
        .iter()
        .map(|s| StoredSecret {
            sealed: base64::engine::general_purpose::STANDARD.encode(&s.sealed),
            expires_at_ms: s.expires_at_ms,
        })
        .collect();
    serde_json::to_string(&stored).expect("a list of strings and numbers serializes")
}

pub(crate) fn secrets_from_json(id: &str, json: &str) -> Result<Vec<SealedSecret>, StoreError> {
    use base64::Engine as _;
    let corrupt = |why: String| StoreError::Corrupt { what: format!("the secrets of subscription {id:?}"), why };
    let stored: Vec<StoredSecret> = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    stored
        .into_iter()
        .map(|s| {
            Ok(SealedSecret {
                sealed: base64::engine::general_purpose::STANDARD
                    .decode(&s.sealed)
                    .map_err(|e| corrupt(e.to_string()))?,
                expires_at_ms: s.expires_at_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_through_their_column() {
        let secrets = vec![
            SealedSecret { sealed: vec![1, 2, 3, 255], expires_at_ms: None },
            SealedSecret { sealed: vec![], expires_at_ms: Some(42) },
        ];
        assert_eq!(secrets_from_json("s1", &secrets_to_json(&secrets)).unwrap(), secrets);
        assert!(matches!(secrets_from_json("s1", "[{\"sealed\": \"***\"}]"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn debug_does_not_print_sealed_bytes() {
        let s = SealedSecret { sealed: vec![7; 40], expires_at_ms: None };
        assert_eq!(format!("{s:?}"), "SealedSecret { sealed: <40 bytes>, expires_at_ms: None }");
    }
}
