//! A route's endpoint gate: its circuit breaker and its rate limit ([`super::policy`]), one per
//! route for the life of the process (shared by the route's concurrent deliveries, and kept
//! across reloads and reconnections), consulted before each attempt ([`Gate::admit`]) and fed by
//! each attempt's result ([`Gate::record`]). Only routes with a `[circuit_breaker]` or a
//! `[rate_limit]` ([`Route::gated`]) consult it: the others take no lock and wait for nothing.
//!
//! What an attempt meets, in order:
//! - an open circuit: no attempt; the event is held until the probe time ([`Admission::Hold`]);
//! - a half-open circuit whose probe is under way: the delivery waits in process for the
//!   probe's outcome (at most the probe's lease);
//! - an empty bucket: the delivery waits in process for its token, up to [`MAX_TOKEN_WAIT`];
//!   a token further off (a receiver's `Retry-After`, a rate below one per half minute) holds
//!   the event instead.
//!
//! How the worker holds an event is its business (parked with a not-before time on unordered
//! routes, in place on ordered ones); the gate only says for how long. Waiting is never an
//! attempt. With N replicas each has its own gate: its circuit opens on what it sees, and its
//! rate is `per_second` divided by the consumers of the route's queue, which
//! [`Gate::follow_consumers`] reads from the broker (docs/endpoint-policies.md).

use super::policy::breaker::Wait;
use super::policy::{Breaker, Bucket, Health, HoldReason, State, Ticket};
use super::verdict::{AttemptResult, Class, Reason, Verdict};
use crate::broker::Broker;
use crate::config::{BrokerKind, Route, Snapshot};
use crate::metrics::GateMeter;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The longest a delivery waits in process for its token; beyond, the event is held (on an
/// unordered route: parked, freeing its slot and its unacked message).
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(30);

/// A probe's lease is the route's timeout plus this: an attempt cannot take longer, so a probe
/// whose result has not come by then was lost (its task ended), and another attempt may probe.
const PROBE_MARGIN: Duration = Duration::from_secs(5);

/// How often [`Gate::follow_consumers`] reads the consumers of a rate-limited route's queue.
pub const CONSUMERS_EVERY: Duration = Duration::from_secs(5);

/// What `route`'s endpoint policies do, in words (`hookrelay route test`), as they run on the
/// broker of `snap`: nothing for a route without any.
pub fn describe(route: &Route, snap: &Snapshot) -> Vec<String> {
    let fmt = |d: Duration| humantime::format_duration(d).to_string();
    let mut out = describe_order(route);
    if let Some(cb) = &route.circuit_breaker {
        let open_for = fmt(cb.open_for);
        let held = if route.ordered {
            "its first event is held in place and later ones wait behind it, in order"
        } else {
            "its events are parked with a not-before time"
        };
        out.push(format!(
            "circuit breaker: after {} consecutive retryable failures (5xx, 408, 429, timeout, connect, TLS) no \
             request goes to {} for {open_for}: {held}, not counted as attempts, nothing dead-lettered for it. Then \
             one probe attempt: a success resumes deliveries, a failure holds them {open_for} more. Each replica \
             has its own circuit.",
            cb.failures, route.url
        ));
        if let Some(after) = cb.disable_after {
            out.push(format!(
                "circuit breaker: an endpoint failing continuously for {} disables the subscription, with the reason",
                fmt(after)
            ));
        }
        if route.ordered && snap.broker_kind == BrokerKind::Rabbitmq {
            let timeout = snap.broker.consumer_timeout.0;
            let hold = timeout.mul_f64(5.0 / 6.0);
            let limit = snap.broker.delivery_limit;
            out.push(format!(
                "circuit breaker, ordered on RabbitMQ: a delivery may stay unacked for {} ([broker] consumer_timeout), \
                 so every {} the held event goes back to the head of the queue, which counts one delivery towards \
                 [broker] delivery_limit ({limit}) for it and the events prefetched behind it: an outage longer than \
                 about {} dead-letters them (reason delivery_limit). Raise both limits for longer outages.",
                fmt(timeout),
                fmt(hold),
                fmt(hold * (limit + 1))
            ));
        }
    }
    if let Some(rl) = &route.rate_limit {
        let shared = if route.ordered {
            "an ordered route has one active consumer, which uses the whole rate"
        } else {
            "with N replicas consuming the queue each takes 1/N of it (the broker's consumer count, read every 5s)"
        };
        out.push(format!(
            "rate limit: at most {} attempts start per second (a bucket of {}), retries included; waiting for a token \
             is not an attempt; a 429 with Retry-After pauses the whole route until then; {shared}.",
            rl.per_second, rl.burst
        ));
    }
    out
}

/// What the route's per-key order does, in words: nothing without an `order_key`.
fn describe_order(route: &Route) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(key) = &route.order_key {
        out.push(format!(
            "order: FIFO per `{}` (events without it share one line), up to {} keys at once; a failing key retries \
             in place and holds only its own events",
            key.as_str(),
            route.concurrency
        ));
    }
    if let Some(b) = &route.batch {
        out.push(format!(
            "batch: up to {} events per request, or what has arrived {} after the first: the body is a JSON array of \
             the bodies above, one signature over it, webhook-id derived from the event ids, headers \
             hookrelay-batch-size and hookrelay-event-ids; a retry resends the whole batch, a permanent failure \
             dead-letters each event; {} batches at once",
            b.max_events,
            humantime::format_duration(b.max_wait),
            route.concurrency
        ));
    }
    out
}

/// Every route's gate, by route name.
#[derive(Debug, Default)]
pub struct Gates(Mutex<HashMap<String, Arc<Gate>>>);

impl Gates {
    /// The gate of `route`, made on first use.
    pub fn of(&self, route: &str) -> Arc<Gate> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(route.to_string()).or_insert_with(|| Arc::new(Gate::new(route))).clone()
    }

    /// The gate of `route`, if one was made.
    pub fn get(&self, route: &str) -> Option<Arc<Gate>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(route).cloned()
    }

    /// Forgets a removed route's gate: a route of that name added later starts closed and full.
    pub fn forget(&self, route: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
    }
}

/// One route's circuit breaker and rate limit.
#[derive(Debug)]
pub struct Gate {
    route: String,
    created: SystemTime,
    state: Mutex<Inner>,
    /// Rung when the circuit changes or a probe gives way.
    changed: Notify,
    /// Consumers of the route's queue, as last read (at least 1).
    consumers: AtomicU32,
    meter: OnceLock<GateMeter>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The circuit, and when (wall clock) it entered its state.
    breaker: Option<(Breaker, SystemTime)>,
    bucket: Option<Bucket>,
    /// The last `Retry-After` pause ends then.
    paused_until: Option<Instant>,
}

/// What [`Gate::admit`] allows.
#[derive(Debug)]
pub enum Admission {
    /// Attempt now, then [`Gate::record`] the result with this pass.
    Go(Pass),
    /// No attempt for `wait`: hold the event, which is not an attempt.
    Hold {
        /// How long.
        wait: Duration,
        /// Why.
        why: HoldReason,
    },
    /// The route is stopping.
    Stopped,
}

/// Leave for one attempt.
#[derive(Debug)]
pub struct Pass {
    ticket: Option<Ticket>,
}

impl Pass {
    /// Whether the attempt is the half-open circuit's probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.is_some_and(|t| t.is_probe())
    }
}

/// What [`Gate::record`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The verdict to settle: the one given, except that a failed probe never exhausts its
    /// event's attempts (it is retried, and held while the circuit is open).
    pub verdict: Verdict,
    /// The endpoint has failed continuously since then, for the route's `disable_after`.
    pub disable: Option<SystemTime>,
}

/// The circuit as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitView {
    /// Its state.
    pub state: State,
    /// Since when.
    pub since: SystemTime,
    /// Retryable failures in a row.
    pub consecutive_failures: u32,
}

/// The rate limit as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateView {
    /// Consumers of the route's queue sharing the rate.
    pub consumers: u32,
    /// This process's rate.
    pub per_second: f64,
    /// This process's bucket size.
    pub burst: u32,
    /// No attempt before then (a receiver's `Retry-After`), if that is later than now.
    pub paused_until: Option<SystemTime>,
}

enum Step {
    Go(Pass, Option<State>),
    Hold(Duration, HoldReason),
    /// A token comes then.
    Token(Instant),
    /// A probe is under way; its lease ends then.
    Probing(Instant),
}

impl Gate {
    fn new(route: &str) -> Self {
        Self {
            route: route.to_string(),
            created: SystemTime::now(),
            state: Mutex::default(),
            changed: Notify::new(),
            consumers: AtomicU32::new(1),
            meter: OnceLock::new(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meter(&self) -> &GateMeter {
        self.meter.get_or_init(|| GateMeter::new(&self.route))
    }

    /// Shows the route's policies in the metrics from the start (a worker starting calls it).
    pub fn start(&self, route: &Route) {
        if !route.gated() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner();
        if route.circuit_breaker.is_some() {
            let (b, _) = inner.breaker.get_or_insert_with(|| (Breaker::new(now), SystemTime::now()));
            self.meter().circuit(b.state());
        }
        if let Some(limit) = route.rate_limit {
            let bucket = inner.bucket.get_or_insert_with(|| Bucket::new(limit));
            bucket.set_limit(limit);
            self.meter().rate(bucket.per_second());
        }
    }

    /// Whether an attempt of `route` (as its delivery read it) may start: at once, after a wait
    /// in process (cancelled by `stop`), or not before the [`Admission::Hold`]'s wait.
    pub async fn admit(&self, route: &Route, stop: &CancellationToken) -> Admission {
        let asked = Instant::now();
        let mut waited = false;
        loop {
            // Registered before looking, so that a change right after the look still wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let step = self.step(route, now);
            let until = match step {
                Step::Go(pass, entered) => {
                    if let Some(state) = entered {
                        self.entered(state, route);
                    }
                    if waited {
                        self.meter().rate_waited();
                    }
                    return Admission::Go(pass);
                }
                Step::Hold(wait, why) => return self.hold(wait, why, waited),
                Step::Token(at) if at.duration_since(asked) > MAX_TOKEN_WAIT => {
                    return self.hold(at - now, HoldReason::RateLimited, true);
                }
                Step::Token(at) => {
                    waited = true;
                    at
                }
                Step::Probing(until) => until,
            };
            tokio::select! {
                _ = stop.cancelled() => return Admission::Stopped,
                _ = tokio::time::sleep_until(until) => {}
                _ = &mut changed => {}
            }
        }
    }

    fn hold(&self, wait: Duration, why: HoldReason, waited: bool) -> Admission {
        if waited || why == HoldReason::RateLimited {
            self.meter().rate_waited();
        }
        self.meter().held(why);
        debug!(reason = why.as_str(), ?wait, "held without an attempt");
        Admission::Hold { wait, why }
    }

    /// One look, under the lock: the circuit first (an open circuit takes no token), then the
    /// bucket, then the circuit's leave (which turns a circuit whose open period is over
    /// half-open, this attempt being its probe).
    fn step(&self, route: &Route, now: Instant) -> Step {
        let mut inner = self.inner();
        let inner = &mut *inner;
        match &route.circuit_breaker {
            Some(cfg) => {
                let (b, _) = inner.breaker.get_or_insert_with(|| (Breaker::new(now), SystemTime::now()));
                match b.check(cfg, now, route.timeout + PROBE_MARGIN) {
                    Ok(()) => {}
                    Err(Wait::Open { until }) => return Step::Hold(until - now, HoldReason::CircuitOpen),
                    Err(Wait::Probing { until }) => return Step::Probing(until),
                }
            }
            None => {
                // The breaker was removed by a reload: its state gauge must not stay "open".
                if inner.breaker.take().is_some() {
                    self.meter().circuit(State::Closed);
                }
            }
        }
        match route.rate_limit {
            Some(limit) => {
                let bucket = inner.bucket.get_or_insert_with(|| Bucket::new(limit));
                bucket.set_limit(limit);
                bucket.set_share(self.consumers.load(Ordering::Relaxed));
                if let Err(at) = bucket.take(now) {
                    return Step::Token(at);
                }
            }
            None => inner.bucket = None,
        }
        let mut entered = None;
        let ticket = inner.breaker.as_mut().map(|(b, since)| {
            let before = b.state();
            let ticket = b.admit(now);
            if b.state() != before {
                *since = SystemTime::now();
                entered = Some(b.state());
            }
            ticket
        });
        Step::Go(Pass { ticket }, entered)
    }

    /// Feeds attempt `attempt` of `route`, admitted by `pass`, into the circuit (and a `429`'s
    /// `Retry-After` into the bucket), and returns the verdict to settle: `verdict`, unless the
    /// attempt was a probe that failed on the event's last attempt, which is retried instead
    /// (after its backoff, drawn with `jitter`): a long outage holds events, it does not use
    /// them up.
    pub fn record(
        &self,
        route: &Route,
        pass: Pass,
        result: &AttemptResult,
        attempt: u32,
        verdict: Verdict,
        jitter: f64,
    ) -> Recorded {
        let now = Instant::now();
        let class = result.class();
        let retry_after = result.response().and_then(|r| r.retry_after);
        let mut entered = None;
        let mut disable = None;
        {
            let mut inner = self.inner();
            let inner = &mut *inner;
            if let (Some(bucket), Some(wait), Some(429)) = (&mut inner.bucket, retry_after, result.status()) {
                let until = now + wait.min(super::http::retry::MAX_RETRY_AFTER);
                bucket.pause_until(until);
                inner.paused_until = Some(inner.paused_until.map_or(until, |p| p.max(until)));
                info!(retry_after = ?wait, "the receiver answered 429 with Retry-After: the whole route waits");
            }
            if let (Some(cfg), Some((b, since)), Some(ticket)) =
                (&route.circuit_breaker, &mut inner.breaker, pass.ticket)
            {
                let health = match class {
                    Class::Success => Health::Up,
                    Class::Retryable(_) => Health::Down,
                    Class::Permanent(_, Reason::Blocked) => Health::Unknown,
                    Class::Permanent(..) => Health::Up,
                };
                let before = b.state();
                if b.record(cfg, ticket, health, now).disable {
                    let failing = b.failing_since().map_or(Duration::ZERO, |f| now.duration_since(f));
                    disable = Some(SystemTime::now() - failing);
                }
                if b.state() != before {
                    *since = SystemTime::now();
                    entered = Some((b.state(), b.consecutive_failures()));
                }
            }
        }
        if pass.is_probe() {
            // The probe's outcome: whoever waits for it looks again.
            self.changed.notify_waiters();
        }
        if let Some((state, failures)) = entered {
            self.entered_after(state, route, failures, pass.is_probe());
        }
        let verdict = match verdict {
            Verdict::DeadLetter(Reason::Exhausted) if pass.is_probe() => {
                let delay = route.retry.delay(attempt, retry_after, jitter);
                if route.ordered { Verdict::RetryInPlace(delay) } else { Verdict::Park(delay) }
            }
            v => v,
        };
        Recorded { verdict, disable }
    }

    fn entered(&self, state: State, route: &Route) {
        self.entered_after(state, route, 0, false);
    }

    fn entered_after(&self, state: State, route: &Route, failures: u32, probe: bool) {
        self.meter().entered(state);
        let open_for = route.circuit_breaker.map(|c| c.open_for).unwrap_or_default();
        match state {
            State::Open if probe => warn!(
                consecutive_failures = failures,
                ?open_for,
                "circuit opened again: the probe failed; no request goes to the endpoint until the next probe"
            ),
            State::Open => warn!(
                consecutive_failures = failures,
                ?open_for,
                "circuit opened: no request goes to the endpoint until a probe; its events wait"
            ),
            State::HalfOpen => info!("circuit half-open: one probe attempt"),
            State::Closed => info!("circuit closed: the probe succeeded; deliveries resume"),
        }
    }

    /// The circuit, when `route` has a breaker.
    pub fn circuit(&self, route: &Route) -> Option<CircuitView> {
        route.circuit_breaker?;
        let inner = self.inner();
        Some(match &inner.breaker {
            Some((b, since)) => {
                CircuitView { state: b.state(), since: *since, consecutive_failures: b.consecutive_failures() }
            }
            None => CircuitView { state: State::Closed, since: self.created, consecutive_failures: 0 },
        })
    }

    /// The rate limit, when `route` has one.
    pub fn rate(&self, route: &Route) -> Option<RateView> {
        let limit = route.rate_limit?;
        let consumers = self.consumers.load(Ordering::Relaxed).max(1);
        let inner = self.inner();
        let mut bucket = inner.bucket.clone().unwrap_or_else(|| Bucket::new(limit));
        bucket.set_limit(limit);
        bucket.set_share(consumers);
        let now = Instant::now();
        let paused_until = inner.paused_until.filter(|p| *p > now).map(|p| SystemTime::now() + p.duration_since(now));
        Some(RateView { consumers, per_second: bucket.per_second(), burst: bucket.burst(), paused_until })
    }

    /// Shares the rate among `n` consumers of the route's queue.
    pub fn set_consumers(&self, n: u32) {
        let n = n.max(1);
        if self.consumers.swap(n, Ordering::Relaxed) != n {
            let mut inner = self.inner();
            if let Some(bucket) = &mut inner.bucket {
                bucket.set_share(n);
                self.meter().rate(bucket.per_second());
                info!(consumers = n, per_second = bucket.per_second(), "rate limit shared among the queue's consumers");
            }
        }
    }

    /// Reads, every [`CONSUMERS_EVERY`] until `stop`, how many consumers the route's queue has
    /// (one per replica running the route), while the route (as reloads swap it) has a rate
    /// limit; its rate is shared among them. For unordered routes only: an ordered route has
    /// one active consumer, which uses the whole rate.
    pub async fn follow_consumers(
        self: Arc<Self>,
        broker: Arc<dyn Broker>,
        route: Arc<ArcSwap<Route>>,
        stop: CancellationToken,
    ) {
        let mut every = tokio::time::interval(CONSUMERS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let r = route.load_full();
            if r.rate_limit.is_none() || r.ordered {
                continue;
            }
            let queue = r.queue();
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                n = broker.consumer_count(&queue) => n,
            };
            match read {
                Ok(n) => self.set_consumers(n),
                Err(e) => debug!(error = %e, "cannot read the consumers of the route's queue"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
