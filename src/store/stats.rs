//! Delivery statistics per route over a time window, computed by the database from the recorded
//! attempts (counts with `GROUP BY`, latency percentiles with window functions), never by
//! loading the attempts into memory.

/// The attempts of one time bucket of a series ([`Store::attempt_series`](super::Store::attempt_series)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeriesBucket {
    /// The bucket's start (Unix ms).
    pub start_ms: i64,
    /// Attempts in the bucket.
    pub attempts: u64,
    /// Of which delivered (2xx).
    pub delivered: u64,
}

/// One route's attempts in a window `[since, until)`.
///
/// A route appears only when it has attempts in the window, so `success_rate` and the latencies
/// are always `Some` in what [`Store::stats`](super::Store::stats) returns; they are optional so
/// that the API can show routes without attempts with the same shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteStats {
    /// Route name.
    pub route: String,
    /// Attempts in the window.
    pub attempts: u64,
    /// Attempts answered with a 2xx (outcome `delivered`).
    pub delivered: u64,
    /// Attempts that failed (outcome `retrying` or `dead`).
    pub failed: u64,
    /// Failed attempts after which the event was dead-lettered (outcome `dead`).
    pub dead: u64,
    /// `delivered / attempts`; `None` when there were no attempts.
    pub success_rate: Option<f64>,
    /// Median attempt duration (ms), nearest-rank.
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile of attempt duration (ms), nearest-rank.
    pub latency_p95_ms: Option<u64>,
    /// 99th percentile of attempt duration (ms), nearest-rank.
    pub latency_p99_ms: Option<u64>,
    /// The window's first attempt (Unix ms).
    pub first_at_ms: Option<i64>,
    /// The window's last attempt (Unix ms).
    pub last_at_ms: Option<i64>,
}
