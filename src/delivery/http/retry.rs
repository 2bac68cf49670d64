//! Timing the next attempt: a route's retry policy, its backoff with jitter, its wait-queue
//! tiers, and `Retry-After`. Pure functions, tested with fixed values. Which outcomes are
//! retried is decided in [`crate::delivery::verdict`].

use std::time::{Duration, SystemTime};

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before attempt 2, 3, …; the last value repeats.
    pub backoff: Vec<Duration>,
}

/// The longest `Retry-After` honoured; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Jitter adds up to this fraction to each backoff step: as much as a wait queue holds past its
/// tier, so that a jittered step waits in one pass.
pub const JITTER: f64 = crate::broker::TIER_SPREAD;

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), given the receiver's `Retry-After`
    /// and a jitter draw in `[0, 1)`. The result is never below `Retry-After` (capped at
    /// [`MAX_RETRY_AFTER`]).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let idx = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        let base = self.backoff.get(idx).copied().unwrap_or(Duration::from_secs(1));
        let jittered = base.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// Whether another attempt follows failed attempt `attempt`.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The distinct base delays, sorted: one wait queue per tier on unordered routes.
    pub fn tiers(&self) -> Vec<Duration> {
        let mut t = self.backoff.clone();
        t.sort();
        t.dedup();
        t
    }

    /// The tier a delay waits in: the smallest tier that holds it with its jitter, else the
    /// largest. Messages in one tier wait roughly alike, so head-of-line waits stay short.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        let tiers = self.tiers();
        tiers
            .iter()
            .copied()
            .find(|t| t.mul_f64(1.0 + JITTER) >= delay)
            .or_else(|| tiers.last().copied())
            .unwrap_or(delay)
    }
}

/// Parses `Retry-After`: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 4, backoff: vec![Duration::from_secs(5), Duration::from_secs(30)] }
    }

    #[test]
    fn backoff_steps_repeat_the_last_and_add_bounded_jitter() {
        let p = policy();
        assert_eq!(p.delay(1, None, 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(6));
        assert_eq!(p.delay(2, None, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(7, None, 0.5), Duration::from_secs(33));
        assert!(p.may_retry(3) && !p.may_retry(4));
    }

    #[test]
    fn retry_after_is_a_floor_with_a_cap() {
        let p = policy();
        assert_eq!(p.delay(1, Some(Duration::from_secs(120)), 0.0), Duration::from_secs(120));
        assert_eq!(p.delay(1, Some(Duration::from_secs(1)), 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, Some(Duration::from_secs(99_999)), 0.0), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn delays_map_to_tiers() {
        let p = policy();
        assert_eq!(p.tier_for(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(p.tier_for(Duration::from_secs(6)), Duration::from_secs(5));
        assert_eq!(p.tier_for(Duration::from_secs(7)), Duration::from_secs(30));
        assert_eq!(p.tier_for(Duration::from_secs(3600)), Duration::from_secs(30));
    }
}
