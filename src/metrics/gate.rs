//! The metrics of a route's endpoint policies ([`GateMeter`]): its circuit's state and
//! transitions, events held without an attempt, and its rate limit's waits and share. Their
//! names and meaning are with the others, in the parent module.

use super::{CIRCUIT_STATE, CIRCUIT_TRANSITIONS, EVENTS_HELD, RATE_LIMIT_PER_SECOND, RATE_LIMITED_WAITS, handle};
use crate::delivery::policy::{HoldReason, State};
use metrics::{Counter, Gauge};

/// The metrics of one route's endpoint policies (circuit breaker, rate limit), registered when
/// the route first has one: routes without them show none of these series. A no-op when made
/// before [`install`](crate::metrics::install) ran.
#[derive(Debug, Default)]
pub struct GateMeter(Option<GateMetrics>);

#[derive(Debug)]
struct GateMetrics {
    state: [Gauge; 3],
    transitions: [Counter; 3],
    held: [Counter; 2],
    waits: Counter,
    per_second: Gauge,
}

fn state_index(s: State) -> usize {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

fn hold_index(r: HoldReason) -> usize {
    match r {
        HoldReason::CircuitOpen => 0,
        HoldReason::RateLimited => 1,
    }
}

impl GateMeter {
    /// The handles of `route_name`.
    pub fn new(route_name: &str) -> Self {
        handle().map_or(Self(None), |_| {
            let with = |k: &'static str, v: &'static str| [("route", route_name.to_string()), (k, v.to_string())];
            Self(Some(GateMetrics {
                state: State::ALL.map(|s| metrics::gauge!(CIRCUIT_STATE, &with("state", s.as_str()))),
                transitions: State::ALL.map(|s| metrics::counter!(CIRCUIT_TRANSITIONS, &with("to", s.as_str()))),
                held: HoldReason::ALL.map(|r| metrics::counter!(EVENTS_HELD, &with("reason", r.as_str()))),
                waits: metrics::counter!(RATE_LIMITED_WAITS, "route" => route_name.to_string()),
                per_second: metrics::gauge!(RATE_LIMIT_PER_SECOND, "route" => route_name.to_string()),
            }))
        })
    }

    /// The circuit is in `state` (at start, and after a transition: see [`GateMeter::entered`]).
    pub fn circuit(&self, state: State) {
        if let Some(m) = &self.0 {
            for (i, g) in m.state.iter().enumerate() {
                g.set(if i == state_index(state) { 1.0 } else { 0.0 });
            }
        }
    }

    /// The circuit entered `state`.
    pub fn entered(&self, state: State) {
        if let Some(m) = &self.0 {
            m.transitions[state_index(state)].increment(1);
        }
        self.circuit(state);
    }

    /// An event waits without an attempt.
    pub fn held(&self, why: HoldReason) {
        if let Some(m) = &self.0 {
            m.held[hold_index(why)].increment(1);
        }
    }

    /// An attempt waited for a token.
    pub fn rate_waited(&self) {
        if let Some(m) = &self.0 {
            m.waits.increment(1);
        }
    }

    /// The rate this process uses now.
    pub fn rate(&self, per_second: f64) {
        if let Some(m) = &self.0 {
            m.per_second.set(per_second);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_label_has_its_series() {
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(state_index(*s), i);
        }
        for (i, r) in HoldReason::ALL.iter().enumerate() {
            assert_eq!(hold_index(*r), i);
        }
    }
}
