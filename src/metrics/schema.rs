//! Schema validations ([`schema_validated`]), counted where they run: the ingest API and the
//! router's pipeline, so that an event POSTed and delivered shows one validation, not two. The
//! metric's name and meaning are with the others, in the parent module.

use super::SCHEMA_VALIDATIONS;
use metrics::Counter;
use std::sync::OnceLock;

/// Where an event's `data` was validated: the `at` label of [`SCHEMA_VALIDATIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatedAt {
    /// `POST /v1/events`, before the publish.
    Ingest,
    /// The router's pipeline, before a delivery.
    Pipeline,
}

impl ValidatedAt {
    /// Every value, in label order.
    pub const ALL: [ValidatedAt; 2] = [Self::Ingest, Self::Pipeline];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Pipeline => "pipeline",
        }
    }
}

static COUNTERS: OnceLock<[Counter; 2]> = OnceLock::new();

/// Registers the series (shown from 0), once the recorder is installed.
pub(super) fn register() {
    COUNTERS.get_or_init(|| ValidatedAt::ALL.map(|a| metrics::counter!(SCHEMA_VALIDATIONS, "at" => a.as_str())));
}

/// One event's `data` was validated against its schema.
pub fn schema_validated(at: ValidatedAt) {
    if let Some(counters) = COUNTERS.get() {
        // `ALL` is in declaration order, so the discriminant is the index.
        counters[at as usize].increment(1);
    }
}
