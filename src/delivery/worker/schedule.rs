//! Scheduled delivery: an event whose `deliverat` (a CloudEvent extension, RFC 3339) lies ahead
//! waits for it before its first attempt, durably, through the mechanism the circuit breaker
//! holds events with ([`Settle::hold`]):
//! - unordered routes park it with a not-before time: on RabbitMQ in the route's wait queues (a
//!   wait longer than the longest tier comes back early and is parked again,
//!   [`Settle::early`]), on the embedded broker as a delayed message on disk; either way it
//!   survives a restart, and the wait counts neither as an attempt nor as a retry;
//! - ordered routes hold it in place (later events of its queue, or of its key, wait behind
//!   it), on RabbitMQ handing it back before the consumer timeout, as a held event is.
//!
//! A time in the past goes at once; a wait of a second or less is slept in place (a round trip
//! through the broker would cost more). One more than `[limits] max_schedule_ahead` ahead, which
//! ingest refuses with a 422, is dead-lettered `malformed` when it comes over AMQP: the same
//! events are refused either way (see [`crate::event`]). Only messages whose body names the
//! attribute pay for reading it.

use super::Worker;
use crate::broker::BrokerError;
use crate::config::{BrokerKind, Route, Snapshot};
use crate::delivery::settle::{DeadLetter, Settle, Settled};
use crate::delivery::verdict::Reason;
use crate::event::{DELIVER_AT, parse_time};
use memchr::memmem;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Waits up to this long are slept in place rather than parked.
const IN_PLACE: Duration = Duration::from_secs(1);

/// The `deliverat` of an event body, when it has one that parses (one that does not is refused
/// by the pipeline, as malformed).
pub(super) fn deliver_at(body: &[u8]) -> Option<SystemTime> {
    // Every message pays for this scan: memchr's searcher (built once) instead of comparing
    // every 11-byte window, which cost about 11 instructions per byte of the body.
    static NEEDLE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"deliverat\""));
    NEEDLE.find(body)?;
    let at = crate::delivery::policy::order::scalar_at(body, &[DELIVER_AT.to_string()])?;
    parse_time(&at)
}

impl Worker {
    /// Holds the message of `settle` until its `deliverat`, if it has one ahead: `None` to go
    /// on with its delivery now, else how it settled (parked, handed back, abandoned, or
    /// dead-lettered for lying too far ahead).
    pub(super) async fn hold_scheduled(
        &self,
        settle: &Settle<'_>,
        snap: &Snapshot,
        route: &Route,
    ) -> Option<Result<Settled, BrokerError>> {
        let at = deliver_at(&settle.message.body)?;
        let wait = at.duration_since(SystemTime::now()).ok().filter(|w| !w.is_zero())?;
        let max = snap.limits.max_schedule_ahead.0;
        if wait > max {
            let error = format!(
                "attribute `{DELIVER_AT}` lies more than {} ahead ([limits] max_schedule_ahead)",
                humantime::format_duration(max)
            );
            warn!(reason = "malformed", error = %error, "event refused; dead-lettering");
            let dl = DeadLetter {
                reason: Reason::Malformed,
                error: &error,
                details: None,
                last_status: None,
                last_response: None,
                attempts: settle.attempt() - 1,
            };
            return Some(settle.dead_letter(dl).await);
        }
        debug!(?wait, "scheduled: waiting for deliverat");
        if !route.ordered && wait > IN_PLACE {
            return Some(settle.hold(settle.attempt(), wait).await);
        }
        // In place: a short wait, or an ordered route (whose later events wait behind it), on
        // RabbitMQ for at most 5/6 of the consumer timeout, then handed back.
        let now = Instant::now();
        let limit = (route.ordered && snap.broker_kind == BrokerKind::Rabbitmq)
            .then(|| now + snap.broker.consumer_timeout.0.mul_f64(5.0 / 6.0));
        let until = now + wait;
        let (until, hand_back) = match limit {
            Some(limit) if limit < until => (limit, true),
            _ => (until, false),
        };
        tokio::select! {
            _ = self.stop.cancelled() => Some(Ok(Settled::Abandoned)),
            _ = tokio::time::sleep_until(until) => hand_back.then_some(Ok(Settled::HandBack)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_naming_the_attribute_are_read() {
        assert_eq!(deliver_at(br#"{"id":"1","data":{"n":1}}"#), None);
        assert_eq!(deliver_at(br#"{"id":"1","deliverat":"soon"}"#), None);
        let at = deliver_at(br#"{"id":"1","data":{"deliverat":"x"},"deliverat":"2030-01-01T00:00:00Z"}"#);
        assert_eq!(at, parse_time("2030-01-01T00:00:00Z"));
    }
}
