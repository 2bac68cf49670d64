//! The store: everything hookrelay keeps beyond the broker. One [`Store`] trait, two backends
//! through sqlx: SQLite (default, one file, zero set-up) and PostgreSQL (several replicas share
//! it). Both run the same SQL (see `backend/`); only the DDL differs (`migrations/sqlite`,
//! `migrations/postgres`). The migrations are embedded and applied, in order, when a store is
//! opened: `0001_delivery_log`, `0002_subscriptions_audit_stats`, `0003_replay_leases`, then `0004_tenants_portal_links`.
//!
//! What it keeps:
//! - the delivery log: every attempt ([`Attempt`], written in batches by [`log::AttemptLog`]) and
//!   one [`Delivery`] per route and event (with the event itself for routes that log payloads,
//!   [`Store::delivery_event`]); [`Store::stats`] summarises attempts per route ([`RouteStats`]);
//!   [`Store::prune`] drops attempts, and then deliveries, past the retention;
//! - dead letters, indexed from the dead-letter queue, replayed under leases
//!   ([`Store::claim_replay`], [`Store::mark_replayed`], [`Store::release_replay`],
//!   [`Store::dead_letter_ids`]);
//! - subscriptions, the API-managed routes ([`SubscriptionRecord`]), with optimistic concurrency
//!   ([`Conflict`]) and a generation counter that replicas poll to notice changes, and that
//!   PostgreSQL also announces with `NOTIFY` ([`Store::subscription_changes`]);
//! - the audit trail of changes made through the admin API ([`AuditEntry`]);
//! - one-time portal links for tenants ([`PortalLink`], `0004_tenants_portal_links`, which also
//!   gives subscriptions their tenant).
//!
//! Times are Unix milliseconds. Lists are newest first with keyset cursors ([`Page`]).
//!
//! Never plaintext secrets: subscription secrets arrive sealed by [`SecretBox`] (`sealed.rs`,
//! key from `HOOKRELAY_SECRET_KEY`), and the audit trail takes none. Event payloads are kept only
//! where a route opts in.

pub mod audit;
mod backend;
pub mod log;
pub mod portal;
pub mod sealed;
pub mod stats;
pub mod subscription;

use async_trait::async_trait;
use std::sync::Arc;

pub use audit::{AuditEntry, AuditFilter};
pub use backend::{PostgresStore, SqliteStore};
pub use portal::PortalLink;
pub use sealed::{SecretBox, SecretError};
pub use stats::{RouteStats, SeriesBucket};
pub use subscription::{Conflict, SealedSecret, SubscriptionRecord};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("store URL {0:?} is neither sqlite:// nor postgres://")]
    Url(String),
    /// A cursor from a previous page does not parse.
    #[error("invalid cursor {0:?}")]
    Cursor(String),
    /// The write contradicts what is stored (a taken name, a stale version): answer 409.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A stored value does not decode.
    #[error("store: {what} does not decode ({why}): the row was not written by hookrelay or is damaged")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        why: String,
    },
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx: acked.
    Delivered,
    /// Failed; another attempt follows.
    Retrying,
    /// Failed for good: dead-lettered.
    Dead,
}

impl Outcome {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => Self::Retrying,
        }
    }
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// Route name.
    pub route: String,
    /// CloudEvent id.
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// 1-based.
    pub attempt: u32,
    /// What it came to.
    pub outcome: Outcome,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// From sending to the end of the response.
    pub duration_ms: u64,
    /// The start of the response body, capped by `[limits] response_body_bytes`.
    pub response_body: Option<String>,
    /// The request headers sent, one `name: value` line each (see
    /// `delivery::attempt::logged_headers`), credential values masked; only for routes that opt
    /// in (`log_payload`), like the body.
    pub request_headers: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The body sent, only for routes that opt in (`log_payload`).
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    /// The event as the route took it from its queue (the CloudEvent), only for routes that opt
    /// in (`log_payload`). Kept once per delivery, not per attempt, so that the delivery can be
    /// retried whatever its outcome ([`Store::delivery_event`]).
    #[serde(skip)]
    pub event: Option<Vec<u8>>,
    /// `version` of the config that made the attempt.
    pub config_version: u64,
    /// Its revision.
    pub config_revision: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// The id of a route's delivery of an event: stable, URL-safe.
pub fn delivery_id(route: &str, event_id: &str) -> String {
    // ring's SHA-256, the implementation the signatures use (`delivery::http::sign`).
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(route.as_bytes());
    h.update(&[0]);
    h.update(event_id.as_bytes());
    // Written byte by byte: `hex::encode` collects `char`s one at a time, about 900
    // instructions for these 24 digits (docs/performance.md, fourteenth round).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(24);
    for b in &h.finish().as_ref()[..12] {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// One route's delivery of one event: the latest state of its attempts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// [`delivery_id`].
    pub id: String,
    /// Route name.
    pub route: String,
    /// CloudEvent id.
    pub event_id: String,
    /// CloudEvent type.
    pub event_type: String,
    /// The outcome of the latest attempt.
    pub status: Outcome,
    /// Attempts so far.
    pub attempts: u32,
    /// Latest HTTP status.
    pub last_status: Option<u16>,
    /// Latest error.
    pub last_error: Option<String>,
    /// First attempt (Unix ms).
    pub first_at_ms: i64,
    /// Latest attempt (Unix ms).
    pub last_at_ms: i64,
}

/// A dead letter, indexed from the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Unique id.
    pub id: String,
    /// Route name.
    pub route: String,
    /// CloudEvent id (empty when the body was not a CloudEvent).
    pub event_id: String,
    /// CloudEvent type (empty when unknown).
    pub event_type: String,
    /// `malformed`, `schema`, `rejected`, `exhausted`, …
    pub reason: String,
    /// The cause.
    pub error: String,
    /// JSON details (schema violation paths).
    pub details: Option<String>,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Start of the last response body.
    pub last_response: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The event as it arrived.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The original message headers, JSON (trace context).
    #[serde(skip)]
    pub headers: String,
    /// When it was dead-lettered (Unix ms).
    pub dead_at_ms: i64,
    /// When it was replayed (republished with a broker confirm), if it was.
    pub replayed_at_ms: Option<i64>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Attempts older than the retention.
    pub attempts: u64,
    /// Deliveries whose every attempt is older than the retention (so none is left).
    pub deliveries: u64,
}

/// Filters and paging for deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only these routes (a tenant's); an empty list matches nothing.
    pub routes: Option<Vec<String>>,
    /// Only this outcome.
    pub status: Option<Outcome>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Latest attempt at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Latest attempt before (Unix ms).
    pub until_ms: Option<i64>,
    /// From a previous page's `next` cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// Filters and paging for dead letters, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only these routes (a tenant's); an empty list matches nothing.
    pub routes: Option<Vec<String>>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only dead letters of this event (by CloudEvent id).
    pub event_id: Option<String>,
    /// Dead at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Dead before (Unix ms).
    pub until_ms: Option<i64>,
    /// Include those already replayed.
    pub include_replayed: bool,
    /// From a previous page's `next` cursor.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: u32,
}

/// A page of results and the cursor of the next one, if there is more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page.
    pub next: Option<String>,
}

/// Encodes a (time, id) position for keyset paging.
pub(crate) fn cursor(at_ms: i64, id: &str) -> String {
    format!("{at_ms}.{id}")
}

pub(crate) fn parse_cursor(c: &str) -> Result<(i64, String), StoreError> {
    let (at, id) = c.split_once('.').ok_or_else(|| StoreError::Cursor(c.to_string()))?;
    Ok((at.parse().map_err(|_| StoreError::Cursor(c.to_string()))?, id.to_string()))
}

/// The PostgreSQL `NOTIFY` channel of subscription changes (see `0003_replay_leases.sql`).
pub const SUBSCRIPTIONS_CHANNEL: &str = "hookrelay_subscriptions";

/// The store's operations, the same on every backend (the conformance suite in
/// `tests/it/store/` holds both to it).
#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Reachable?
    async fn ping(&self) -> Result<(), StoreError>;
    /// Records a batch of attempts and updates their deliveries, in one transaction.
    async fn record_attempts(&self, batch: &[Attempt]) -> Result<(), StoreError>;
    /// Deliveries, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Page<Delivery>, StoreError>;
    /// One delivery.
    async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// A delivery's attempts, oldest first.
    async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError>;
    /// Indexes a dead letter; false when one with its id is already there.
    async fn add_dead_letter(&self, dl: &DeadLetter) -> Result<bool, StoreError>;
    /// Dead letters, newest first.
    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Page<DeadLetter>, StoreError>;
    /// One dead letter.
    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError>;
    /// Claims dead letters for replay under a lease: each of `ids` that is not replayed and not
    /// claimed since `at_ms - lease_ms` (a claim that old belongs to a replay that crashed or
    /// stalled, and is taken over) gets the claim `claim` at `at_ms`. Returns, in the order asked
    /// and once each, the ids claimed. Concurrent calls claim each id once while its lease runs.
    ///
    /// Replay is "claim, republish, then [`mark_replayed`](Self::mark_replayed)" (after the
    /// broker's confirm); a republish that failed ends its claim with
    /// [`release_replay`](Self::release_replay). A crash in between leaves a claim that expires,
    /// never a dead letter marked replayed that was not republished.
    async fn claim_replay(
        &self,
        ids: &[String],
        claim: &str,
        at_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// Marks replayed, at `at_ms`, the dead letters of `ids` that `claim` still holds, and ends
    /// the claim; returns the ids marked, in the order asked, once each. An id whose lease was
    /// taken over meanwhile is left to the replay that took it.
    async fn mark_replayed(&self, ids: &[String], claim: &str, at_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Ends `claim` on `ids` without marking them (their republish failed), so that they can be
    /// replayed again at once; returns the ids released, in the order asked, once each.
    async fn release_replay(&self, ids: &[String], claim: &str) -> Result<Vec<String>, StoreError>;
    /// The ids of the dead letters `filter` matches (route, reason, time; not replayed unless
    /// `include_replayed`), **oldest first** (the order to republish in), at most `max`. For bulk
    /// replay by filter; `filter.cursor` and `filter.limit` are ignored.
    async fn dead_letter_ids(&self, filter: &DeadLetterFilter, max: u32) -> Result<Vec<String>, StoreError>;
    /// How many dead letters `filter` matches (its cursor and limit are ignored).
    async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError>;
    /// The event a delivery kept (see [`Attempt::event`]): `None` when there is no such delivery
    /// or its route does not log payloads.
    async fn delivery_event(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Retention, in one transaction: deletes the attempts recorded before `before_ms`, and the
    /// deliveries whose latest attempt is before it (so they have no attempt left), with the
    /// events they kept, and the portal links that expired before it. Dead letters stay until
    /// they are replayed or removed.
    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError>;
    /// Per-route statistics of the attempts made in `[since_ms, until_ms)`, all routes or one,
    /// ordered by route name; routes without attempts in the window are absent.
    async fn stats(&self, since_ms: i64, until_ms: i64, route: Option<&str>) -> Result<Vec<RouteStats>, StoreError>;

    /// The attempts of `[since_ms, until_ms)` in buckets of `bucket_ms` (all routes, or only
    /// `routes`), oldest first; buckets without attempts are absent.
    async fn attempt_series(
        &self,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
        routes: Option<&[String]>,
    ) -> Result<Vec<SeriesBucket>, StoreError>;

    /// Stores a one-time portal link.
    async fn create_portal_link(&self, link: &PortalLink) -> Result<(), StoreError>;
    /// Accepts the link whose nonce hashes to `nonce_hash`, once: marks it used at `at_ms` and
    /// returns it, if it exists, was not used, and has not expired at `at_ms`; `None` otherwise
    /// (also for the second of two concurrent uses).
    async fn use_portal_link(&self, nonce_hash: &str, at_ms: i64) -> Result<Option<PortalLink>, StoreError>;

    /// Subscription writes are transactions: the change, the generation bump and the optional
    /// `audit` entry commit together or not at all (a refused write leaves no audit entry).
    ///
    /// Stores a new subscription, with `version` 1 and `updated_at_ms = created_at_ms` whatever
    /// `sub` says, and `audit` (if any) in the same transaction; returns it as stored. A name or
    /// id already taken is [`Conflict::NameTaken`] / [`Conflict::IdTaken`].
    async fn create_subscription(
        &self,
        sub: &SubscriptionRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<SubscriptionRecord, StoreError>;
    /// All subscriptions, ordered by name.
    async fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// One subscription by id.
    async fn subscription(&self, id: &str) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// One subscription by name (its route name).
    async fn subscription_by_name(&self, name: &str) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// Replaces the name, spec, secrets, enabled and disabled reason of subscription `sub.id` if
    /// its stored version is still `expected_version`; bumps the version, sets `updated_at_ms`
    /// to `at_ms`, writes `audit` in the same transaction, and returns the record as stored.
    /// `None` when there is no such subscription; [`Conflict::StaleVersion`] when it changed
    /// meanwhile; [`Conflict::NameTaken`] when the new name is another's. `sub.version`,
    /// `created_at_ms` and `updated_at_ms` are not read.
    async fn update_subscription(
        &self,
        sub: &SubscriptionRecord,
        expected_version: i64,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// Deletes a subscription (and writes `audit` in the same transaction); false (and no audit
    /// entry) when there was none.
    async fn delete_subscription(&self, id: &str, audit: Option<&AuditEntry>) -> Result<bool, StoreError>;
    /// Enables a subscription (clearing its disabled reason; `reason` is ignored) or disables it
    /// with a reason, whatever its version (the router disables on `410 Gone`); bumps the version
    /// and the generation like any change and writes `audit` with it. When the subscription is
    /// already in that state nothing changes (the first reason stays, no audit entry) and it is
    /// returned as it is. `None` when there is no such subscription.
    async fn set_subscription_enabled(
        &self,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
        at_ms: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// A number that changes with every subscription change (bumped in the change's transaction).
    /// One cheap read: replicas sharing a database poll it and reload subscriptions when it moves.
    async fn subscriptions_generation(&self) -> Result<i64, StoreError>;
    /// A feed that wakes its reader soon after any process commits a subscription change, so
    /// that replicas sharing the database apply it promptly instead of at their next poll: on
    /// PostgreSQL, `LISTEN` on the channel the generation's `NOTIFY` trigger announces to
    /// ([`SUBSCRIPTIONS_CHANNEL`]). A wake means "read the generation", not "it moved": one is
    /// also sent after the listening connection was lost and re-established (notifications may
    /// have been missed meanwhile). `None` where there is no such thing (SQLite: one process);
    /// readers keep polling [`subscriptions_generation`](Self::subscriptions_generation) as a
    /// fallback either way. The feed ends its listening task when the receiver is dropped.
    async fn subscription_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, StoreError>;

    /// Appends to the audit trail; false when an entry with its id is already there. Never pass
    /// secrets (see [`AuditEntry`]).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<bool, StoreError>;
    /// The audit trail, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Page<AuditEntry>, StoreError>;
}

/// Opens the store a URL names (`sqlite://path`, `sqlite::memory:`, `postgres://…`) and
/// applies the migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::Url(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::delivery_id;

    #[test]
    fn delivery_ids_stay_what_they_were() {
        // The first 12 bytes of SHA-256("orders-erp\0<event id>") in hex, computed apart
        // (Python's hashlib): ids already in stores and in URLs must not change.
        assert_eq!(delivery_id("orders-erp", "0191f3a2-7c1e-7b3a-9f2d-000000000042"), "a3f66e895252c16f761e9145");
        assert_ne!(delivery_id("ab", "c"), delivery_id("a", "bc"), "the route and the event id are kept apart");
    }
}
