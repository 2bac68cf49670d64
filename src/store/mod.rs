//! The store: the delivery log (deliveries and their attempts), indexed dead letters, and what
//! the admin API manages. One [`Store`] trait, two backends through sqlx: SQLite (default, one
//! file, zero set-up) and PostgreSQL (several replicas share it). Migrations are embedded and
//! applied when a store is opened. The SQL is shared: both backends run the same statements
//! (see `backend.rs`); only the DDL differs (`migrations/sqlite`, `migrations/postgres`).
//!
//! Times are Unix milliseconds. Nothing here stores plaintext secrets: what must be kept is
//! sealed first by [`SecretBox`] (`sealed.rs`). Payloads only where a route opts in.

mod backend;
pub mod log;
pub mod sealed;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub use backend::{PostgresStore, SqliteStore};
pub use sealed::{SecretBox, SecretError};

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
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The body sent, only for routes that opt in.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    /// `version` of the config that made the attempt.
    pub config_version: u64,
    /// Its revision.
    pub config_revision: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// The id of a route's delivery of an event: stable, URL-safe.
pub fn delivery_id(route: &str, event_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(event_id.as_bytes());
    hex::encode(&h.finalize()[..12])
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
    /// When it was replayed, if it was.
    pub replayed_at_ms: Option<i64>,
}

/// Filters and paging for deliveries, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this route.
    pub route: Option<String>,
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
    /// Only this reason.
    pub reason: Option<String>,
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

/// The store's operations, the same on every backend.
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
    /// Marks dead letters replayed; returns the ids that were not replayed before.
    async fn mark_replayed(&self, ids: &[String], at_ms: i64) -> Result<Vec<String>, StoreError>;
    /// Deletes attempts recorded before `before_ms`; returns how many.
    async fn prune_attempts(&self, before_ms: i64) -> Result<u64, StoreError>;
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
