//! The circuit breaker of one route's endpoint, as a state machine:
//!
//! ```text
//!            `failures` consecutive retryable failures
//!   Closed ───────────────────────────────────────────▶ Open ◀───┐
//!     ▲                                                  │       │ the probe failed
//!     │ the probe succeeded                  `open_for`  ▼       │
//!     └──────────────────────────────────────────── HalfOpen ───┘
//!                                            (one probe attempt at a time)
//! ```
//!
//! Attempts ask first ([`Breaker::check`], then [`Breaker::admit`], which hands out a
//! [`Ticket`]) and report how they ended ([`Breaker::record`]). Each state change starts a new
//! epoch; a result whose ticket is from an earlier epoch changes nothing (an attempt that was
//! under way when the circuit opened does not close it again, and one that started before it
//! closed does not count against the new period). A probe whose result never comes (its task
//! ended) gives way to another after a lease (the route's timeout, plus a margin).
//!
//! What counts: a retryable failure ([`Health::Down`]: 5xx, 408, 429, timeouts, connect, TLS
//! and transport errors) counts; any answer that is not one ([`Health::Up`]: a 2xx, and also
//! a 4xx such as 400 or 410, which shows the endpoint is up) ends the streak; an attempt that
//! never reached the endpoint ([`Health::Unknown`]: the SSRF guard refused it) says nothing.

use super::CircuitBreaker;
use std::time::Duration;
use tokio::time::Instant;

/// The circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Attempts go to the endpoint.
    Closed,
    /// No attempt goes to the endpoint until `open_for` has passed.
    Open,
    /// One probe attempt decides.
    HalfOpen,
}

impl State {
    /// Every state, in the order of their metric series.
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    /// The name the API, the metrics and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What an attempt's outcome says about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered (a 2xx, or a status that is not retried).
    Up,
    /// A retryable failure.
    Down,
    /// The attempt never reached it (the SSRF guard refused the address).
    Unknown,
}

/// Leave to make one attempt, from [`Breaker::admit`]; its result goes back through
/// [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    probe: bool,
}

impl Ticket {
    /// Whether the attempt is the half-open circuit's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why no attempt may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The circuit is open: the probe may start at `until`.
    Open {
        /// When the open period ends.
        until: Instant,
    },
    /// The probe is under way: its result decides; if none has come by `until`, another
    /// attempt may probe.
    Probing {
        /// The probe's lease ends.
        until: Instant,
    },
}

/// What [`Breaker::record`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The endpoint has now failed continuously for `disable_after`: reported once per streak.
    pub disable: bool,
}

/// One endpoint's circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    since: Instant,
    epoch: u64,
    consecutive: u32,
    /// The first failure of the current streak.
    failing_since: Option<Instant>,
    /// The streak was reported for `disable_after`.
    disable_reported: bool,
    /// Half-open: when the probe under way started.
    probe_since: Option<Instant>,
}

impl Breaker {
    /// A closed circuit, since `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Closed,
            since: now,
            epoch: 0,
            consecutive: 0,
            failing_since: None,
            disable_reported: false,
            probe_since: None,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Retryable failures in a row, up to now (the ones that opened the circuit and its failed
    /// probes included); 0 after a success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// When the current streak of failures began, if one runs.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// Whether an attempt may start at `now`, changing nothing; `lease` is how long a probe may
    /// go without a result before another attempt may probe.
    pub fn check(&self, cfg: &CircuitBreaker, now: Instant, lease: Duration) -> Result<(), Wait> {
        match self.state {
            State::Closed => Ok(()),
            State::Open => {
                let until = self.since + cfg.open_for;
                if now >= until { Ok(()) } else { Err(Wait::Open { until }) }
            }
            State::HalfOpen => match self.probe_since {
                Some(p) if now < p + lease => Err(Wait::Probing { until: p + lease }),
                _ => Ok(()),
            },
        }
    }

    /// Admits an attempt at `now`, which [`Breaker::check`] allowed: an open circuit whose
    /// period is over turns half-open, and the attempt is its probe.
    pub fn admit(&mut self, now: Instant) -> Ticket {
        match self.state {
            State::Closed => Ticket { epoch: self.epoch, probe: false },
            State::Open | State::HalfOpen => {
                if self.state == State::Open {
                    self.enter(State::HalfOpen, now);
                }
                self.probe_since = Some(now);
                Ticket { epoch: self.epoch, probe: true }
            }
        }
    }

    /// The result of the attempt `ticket` admitted, at `now`.
    pub fn record(&mut self, cfg: &CircuitBreaker, ticket: Ticket, health: Health, now: Instant) -> Recorded {
        if ticket.epoch != self.epoch {
            return Recorded::default();
        }
        match (self.state, health) {
            (State::Open, _) => {}
            (_, Health::Unknown) => {
                if ticket.probe {
                    self.probe_since = None;
                }
            }
            (State::Closed, Health::Up) => self.healthy(),
            (State::HalfOpen, Health::Up) => {
                self.enter(State::Closed, now);
                self.healthy();
            }
            (State::Closed | State::HalfOpen, Health::Down) => {
                self.consecutive = self.consecutive.saturating_add(1);
                self.failing_since.get_or_insert(now);
                if self.state == State::HalfOpen || self.consecutive >= cfg.failures {
                    self.enter(State::Open, now);
                }
            }
        }
        let disable = match (cfg.disable_after, self.failing_since) {
            (Some(after), Some(since)) if !self.disable_reported && now.duration_since(since) >= after => {
                self.disable_reported = true;
                true
            }
            _ => false,
        };
        Recorded { disable }
    }

    fn healthy(&mut self) {
        self.consecutive = 0;
        self.failing_since = None;
        self.disable_reported = false;
    }

    fn enter(&mut self, state: State, now: Instant) {
        self.state = state;
        self.since = now;
        self.epoch += 1;
        self.probe_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const LEASE: Duration = Duration::from_secs(11);

    fn cfg(failures: u32, open_for_secs: u64) -> CircuitBreaker {
        CircuitBreaker { failures, open_for: Duration::from_secs(open_for_secs), disable_after: None }
    }

    /// An attempt at the current (virtual) time, which must be admitted, ending with `health`.
    fn attempt(b: &mut Breaker, cfg: &CircuitBreaker, health: Health) -> Ticket {
        let now = Instant::now();
        assert_eq!(b.check(cfg, now, LEASE), Ok(()), "admitted in state {:?}", b.state());
        let t = b.admit(now);
        b.record(cfg, t, health, now);
        t
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_failures_in_a_row_waits_then_one_probe_closes_it() {
        let c = cfg(3, 30);
        let mut b = Breaker::new(Instant::now());
        attempt(&mut b, &c, Health::Down);
        attempt(&mut b, &c, Health::Down);
        attempt(&mut b, &c, Health::Up);
        assert_eq!((b.state(), b.consecutive_failures()), (State::Closed, 0), "a success ends the streak");
        for _ in 0..2 {
            attempt(&mut b, &c, Health::Down);
        }
        assert_eq!(b.state(), State::Closed);
        let opened = Instant::now();
        attempt(&mut b, &c, Health::Down);
        assert_eq!((b.state(), b.since(), b.consecutive_failures()), (State::Open, opened, 3));

        advance(Duration::from_secs(29)).await;
        let until = opened + Duration::from_secs(30);
        assert_eq!(b.check(&c, Instant::now(), LEASE), Err(Wait::Open { until }), "no attempt while open");

        advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(b.check(&c, now, LEASE), Ok(()));
        let probe = b.admit(now);
        assert!(probe.is_probe());
        assert_eq!((b.state(), b.since()), (State::HalfOpen, now));
        assert_eq!(b.check(&c, now, LEASE), Err(Wait::Probing { until: now + LEASE }), "one probe at a time");

        advance(Duration::from_millis(200)).await;
        b.record(&c, probe, Health::Up, Instant::now());
        assert_eq!((b.state(), b.consecutive_failures()), (State::Closed, 0));
        assert!(!attempt(&mut b, &c, Health::Up).is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_a_whole_period() {
        let c = cfg(1, 10);
        let mut b = Breaker::new(Instant::now());
        attempt(&mut b, &c, Health::Down);
        assert_eq!(b.state(), State::Open, "failures = 1 opens on the first failure");
        advance(Duration::from_secs(10)).await;
        let reopened = Instant::now();
        assert!(attempt(&mut b, &c, Health::Down).is_probe());
        assert_eq!((b.state(), b.since(), b.consecutive_failures()), (State::Open, reopened, 2));
        advance(Duration::from_secs(9)).await;
        assert_eq!(b.check(&c, Instant::now(), LEASE), Err(Wait::Open { until: reopened + Duration::from_secs(10) }));
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_of_an_earlier_period_change_nothing() {
        let c = cfg(2, 5);
        let mut b = Breaker::new(Instant::now());
        let now = Instant::now();
        // Three attempts under way at once while closed.
        let (t1, t2, t3) = (b.admit(now), b.admit(now), b.admit(now));
        b.record(&c, t1, Health::Down, now);
        b.record(&c, t2, Health::Down, now);
        assert_eq!(b.state(), State::Open);
        b.record(&c, t3, Health::Up, now);
        assert_eq!((b.state(), b.consecutive_failures()), (State::Open, 2), "a success from before the opening");

        advance(Duration::from_secs(5)).await;
        let probe = b.admit(Instant::now());
        b.record(&c, t3, Health::Down, Instant::now());
        assert_eq!(b.state(), State::HalfOpen, "a failure from before the opening does not reopen");
        b.record(&c, probe, Health::Up, Instant::now());
        assert_eq!(b.state(), State::Closed);
        b.record(&c, t1, Health::Down, Instant::now());
        assert_eq!(b.consecutive_failures(), 0, "nor does it count in the new period");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_without_a_result_gives_way_after_its_lease_and_an_unknown_one_at_once() {
        let c = cfg(1, 1);
        let mut b = Breaker::new(Instant::now());
        attempt(&mut b, &c, Health::Down);
        advance(Duration::from_secs(1)).await;
        let lost = b.admit(Instant::now());
        advance(LEASE - Duration::from_millis(1)).await;
        assert!(matches!(b.check(&c, Instant::now(), LEASE), Err(Wait::Probing { .. })));
        advance(Duration::from_millis(1)).await;
        assert_eq!(b.check(&c, Instant::now(), LEASE), Ok(()), "the lease is over: another attempt probes");
        let second = b.admit(Instant::now());
        assert_eq!(b.state(), State::HalfOpen);
        b.record(&c, second, Health::Unknown, Instant::now());
        assert_eq!(b.check(&c, Instant::now(), LEASE), Ok(()), "a probe that never reached the endpoint");
        b.record(&c, lost, Health::Up, Instant::now());
        assert_eq!(b.state(), State::Closed, "the first probe's result, late but of this period, still counts");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_continuously_for_disable_after_is_reported_once_per_streak() {
        let c = CircuitBreaker { disable_after: Some(Duration::from_secs(60)), ..cfg(2, 20) };
        let mut b = Breaker::new(Instant::now());
        let started = Instant::now();
        attempt(&mut b, &c, Health::Down);
        attempt(&mut b, &c, Health::Down);
        assert_eq!(b.failing_since(), Some(started));
        let mut reports = Vec::new();
        for _ in 0..6 {
            advance(Duration::from_secs(20)).await;
            let now = Instant::now();
            let probe = b.admit(now);
            reports.push(b.record(&c, probe, Health::Down, now).disable);
        }
        assert_eq!(reports, [false, false, true, false, false, false], "at 60 s of failing, once");
        advance(Duration::from_secs(20)).await;
        let probe = b.admit(Instant::now());
        b.record(&c, probe, Health::Up, Instant::now());
        assert_eq!(b.failing_since(), None, "a success ends the streak, and the next one is reported again");
        let without = cfg(1, 1);
        let mut b = Breaker::new(Instant::now());
        attempt(&mut b, &without, Health::Down);
        advance(Duration::from_secs(10 * 24 * 3600)).await;
        let probe = b.admit(Instant::now());
        assert!(!b.record(&without, probe, Health::Down, Instant::now()).disable, "no disable_after: never");
    }
}
