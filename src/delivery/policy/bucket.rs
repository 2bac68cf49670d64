//! The token bucket of one route's endpoint, kept as GCRA does (the generic cell rate
//! algorithm: one "theoretical arrival time" instead of a token count and a refill timer).
//! A token comes every `1 / rate`; the bucket holds `burst` of them. In any window of length
//! `w`, at most `rate × w + burst` attempts are admitted.
//!
//! Two things a plain limiter lacks, which is why this is written here (governor, the crate
//! for it, has neither): a receiver's `Retry-After` drains the bucket until then
//! ([`Bucket::pause_until`]: no attempt before, and no burst after), and the rate is shared
//! between the replicas consuming the route's queue ([`Bucket::set_share`]: each takes
//! `rate / n` and `burst / n`, rounded up), which changes while it runs.

use super::RateLimit;
use std::time::Duration;
use tokio::time::Instant;

/// One endpoint's bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: RateLimit,
    share: u32,
    /// One token comes every `interval` (this process's share of the rate).
    interval: Duration,
    /// How far `tat` may run ahead of now: `interval × (burst − 1)`.
    tolerance: Duration,
    /// The theoretical arrival time: when the bucket is full again; `None` until first used.
    tat: Option<Instant>,
}

impl Bucket {
    /// A full bucket for `limit`, this process's share being the whole of it.
    pub fn new(limit: RateLimit) -> Self {
        let mut b = Self { limit, share: 1, interval: Duration::ZERO, tolerance: Duration::ZERO, tat: None };
        b.derive();
        b
    }

    /// The settings it runs with.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Among how many consumers the rate is shared (at least 1).
    pub fn share(&self) -> u32 {
        self.share
    }

    /// This process's rate: `per_second / share`.
    pub fn per_second(&self) -> f64 {
        self.limit.per_second / f64::from(self.share)
    }

    /// This process's bucket size: `burst / share`, rounded up, at least 1.
    pub fn burst(&self) -> u32 {
        self.limit.burst.div_ceil(self.share).max(1)
    }

    /// New settings (a reload); what was taken so far still counts.
    pub fn set_limit(&mut self, limit: RateLimit) {
        if self.limit != limit {
            self.limit = limit;
            self.derive();
        }
    }

    /// Shares the rate among `consumers` (0 counts as 1).
    pub fn set_share(&mut self, consumers: u32) {
        let share = consumers.max(1);
        if self.share != share {
            self.share = share;
            self.derive();
        }
    }

    fn derive(&mut self) {
        self.interval = Duration::from_secs_f64(1.0 / self.per_second());
        self.tolerance = self.interval * (self.burst() - 1);
    }

    /// Takes a token at `now`, or says when the next one comes (`Err(at)`, `at > now`).
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        // Checked: a tolerance longer than the time since the clock's origin (a large bucket
        // right after boot) means the bucket is not full yet, and nothing more.
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
        if allowed_at > now {
            return Err(allowed_at);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }

    /// The receiver asked to wait (`429` with `Retry-After`): no token before `until`, and the
    /// bucket empty then, so that attempts resume at the steady rate.
    pub fn pause_until(&mut self, until: Instant) {
        let drained = until + self.tolerance;
        self.tat = Some(self.tat.map_or(drained, |t| t.max(drained)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    /// Takes tokens as soon as each comes, jumping the paused clock to it, until `until`;
    /// returns when each was taken, from the start.
    async fn drain(b: &mut Bucket, until: Duration) -> Vec<Duration> {
        let start = Instant::now();
        let mut taken = Vec::new();
        loop {
            match b.take(Instant::now()) {
                Ok(()) => taken.push(Instant::now() - start),
                Err(at) => {
                    assert!(at > Instant::now());
                    if at - start > until {
                        return taken;
                    }
                    advance(at - Instant::now()).await;
                }
            }
        }
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate() {
        let mut b = Bucket::new(limit(4.0, 3));
        assert_eq!(drain(&mut b, Duration::from_secs(1)).await, ms(&[0, 0, 0, 250, 500, 750, 1000]));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_rate_times_window_plus_burst_in_any_window() {
        let mut b = Bucket::new(limit(10.0, 5));
        let mut taken = drain(&mut b, Duration::from_secs(2)).await;
        // A quiet spell refills the bucket, up to its size only.
        advance(Duration::from_secs(60)).await;
        let restart = taken.last().copied().unwrap() + Duration::from_secs(60);
        taken.extend(drain(&mut b, Duration::from_secs(2)).await.into_iter().map(|t| t + restart));
        for window in [100, 250, 1000, 1500] {
            let w = Duration::from_millis(window);
            let most = (10.0 * w.as_secs_f64()).floor() as usize + 5;
            for (i, start) in taken.iter().enumerate() {
                let within = taken[i..].iter().take_while(|t| **t < *start + w).count();
                assert!(within <= most, "{within} in {w:?} from {start:?} (at most {most})");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_space_tokens_out() {
        let mut b = Bucket::new(limit(0.5, 1));
        assert_eq!(drain(&mut b, Duration::from_secs(5)).await, ms(&[0, 2000, 4000]));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_drains_the_bucket_until_then() {
        let mut b = Bucket::new(limit(10.0, 5));
        b.take(Instant::now()).unwrap();
        let until = Instant::now() + Duration::from_secs(3);
        b.pause_until(until);
        assert_eq!(b.take(Instant::now()), Err(until));
        advance(Duration::from_secs(3)).await;
        assert_eq!(
            drain(&mut b, Duration::from_millis(300)).await,
            ms(&[0, 100, 200, 300]),
            "after the pause: the steady rate, no burst"
        );
        b.pause_until(Instant::now() - Duration::from_secs(1));
        let next = Instant::now() + Duration::from_millis(100);
        assert_eq!(b.take(Instant::now()), Err(next), "a pause in the past shortens nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn shared_between_consumers_each_takes_its_part() {
        let mut b = Bucket::new(limit(10.0, 5));
        b.set_share(4);
        assert_eq!((b.per_second(), b.burst()), (2.5, 2));
        assert_eq!(drain(&mut b, Duration::from_secs(1)).await, ms(&[0, 0, 400, 800]));
        b.set_share(0);
        assert_eq!((b.share(), b.per_second(), b.burst()), (1, 10.0, 5));
        b.set_limit(limit(1.0, 1));
        assert_eq!((b.per_second(), b.burst()), (1.0, 1));
        assert_eq!(RateLimit::default_burst(0.2), 1);
        assert_eq!(RateLimit::default_burst(20.0), 20);
        assert_eq!(RateLimit::default_burst(2.5), 3);
    }
}
