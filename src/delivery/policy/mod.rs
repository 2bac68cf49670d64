//! Endpoint policies as values: a route's `[circuit_breaker]` and `[rate_limit]` settings, the
//! circuit breaker's state machine ([`breaker`]) and the token bucket ([`bucket`]); and the
//! values of its delivery shape: its `order_key` ([`order`]) and `[batch]` ([`Batch`]). Pure: no
//! I/O, no clock of their own (every call takes `now`, a [`tokio::time::Instant`], so the tests
//! drive them with `tokio::time::pause()`), no locks. A leaf, like [`super::http`]: the route
//! compiler in [`crate::config`] builds the settings, and [`super::gate`] keeps one breaker and
//! one bucket per route behind a lock and consults them around each attempt.

pub mod breaker;
pub mod bucket;
pub mod order;

pub use breaker::{Breaker, Health, State, Ticket};
pub use bucket::Bucket;
pub use order::OrderKey;

/// `[batch]` of an unordered route: up to `max_events` events in one request, sent once that
/// many have gathered or `max_wait` after the first (docs/delivery-shapes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Events in one request at most (at least 1).
    pub max_events: usize,
    /// How long the first event of a batch waits for more (above zero).
    pub max_wait: Duration,
}

/// Default `[batch] max_events`.
pub const DEFAULT_BATCH_EVENTS: usize = 50;
/// Default `[batch] max_wait`.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(500);

use std::time::Duration;

/// `[circuit_breaker]` of a route: after `failures` consecutive retryable failures (5xx, 408,
/// 429, timeouts, connect and TLS errors) no request goes to the endpoint for `open_for`; then
/// one probe attempt decides: a success closes the circuit, a failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Consecutive retryable failures that open the circuit (at least 1).
    pub failures: u32,
    /// How long it stays open before the probe (above zero).
    pub open_for: Duration,
    /// API subscriptions only: after failing continuously for this long, the subscription is
    /// disabled (as a `410 Gone` does). `None` on file routes, which cannot be disabled.
    pub disable_after: Option<Duration>,
}

/// Default `disable_after` of a subscription with a circuit breaker: 5 days, as Svix does.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// `[rate_limit]` of a route: attempts started per second towards its endpoint, through a token
/// bucket of `burst` tokens (retries included; waiting for a token is not an attempt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Attempts started per second, above zero (fractions allowed: 0.5 is one every 2 s).
    pub per_second: f64,
    /// The bucket's size: attempts that may start at once after a quiet period (at least 1).
    pub burst: u32,
}

/// Why a delivery waits without an attempt: the `reason` of the held-events metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// The route's circuit is open.
    CircuitOpen,
    /// The route's next token is far off (a low rate, or a receiver's `Retry-After`).
    RateLimited,
}

impl HoldReason {
    /// Every reason, in the order of their metric series.
    pub const ALL: [HoldReason; 2] = [HoldReason::CircuitOpen, HoldReason::RateLimited];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl RateLimit {
    /// The default `burst`: `per_second`, rounded up, at least 1.
    pub fn default_burst(per_second: f64) -> u32 {
        (per_second.ceil() as u32).max(1)
    }
}
