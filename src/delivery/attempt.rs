//! One signed attempt: the request headers (signature, sequence, attempt, route, trace context),
//! the POST through the SSRF-guarded client inside an attempt span, and its [`AttemptResult`].
//! The route workers make every attempt through [`Attempt::send`], and so does
//! `POST /v1/routes/{name}/test`: a test send is a real attempt, minus the queue.

use super::http::client::WebhookClient;
use super::verdict::AttemptResult;
use crate::config::Route;
use crate::pipeline::Payload;
use crate::telemetry;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

/// Router-assigned sequence numbers: a hybrid clock in microseconds since the Unix epoch that
/// never repeats or goes back within a process, and starts above anything an earlier process
/// on a clock-synchronised host assigned (it starts from the current time).
#[derive(Debug, Default)]
pub struct Sequencer(AtomicU64);

impl Sequencer {
    /// The next sequence number: greater than every earlier one.
    pub fn next(&self) -> u64 {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut prev = self.0.load(Ordering::Relaxed);
        loop {
            let n = now.max(prev + 1);
            match self.0.compare_exchange_weak(prev, n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return n,
                Err(p) => prev = p,
            }
        }
    }

    /// The `hookrelay-sequence` of a payload: the producer's `sequence`, else the next number.
    pub fn of(&self, payload: &Payload) -> String {
        payload.sequence.clone().unwrap_or_else(|| self.next().to_string())
    }
}

/// One attempt to deliver a payload on a route.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The route: its URL, timeout, static headers and signer.
    pub route: &'a Route,
    /// What to send.
    pub payload: &'a Payload,
    /// `hookrelay-sequence`: the same on every attempt of the event.
    pub sequence: &'a str,
    /// `hookrelay-attempt`, 1-based.
    pub number: u32,
    /// The trace context the attempt continues when traces are off (with traces on, the attempt
    /// span's own context is sent): the same on every attempt, so that they share a trace.
    pub traceparent: &'a str,
}

impl Attempt<'_> {
    /// Signs and sends the attempt now, inside an attempt span, keeping at most `keep` bytes of
    /// the response body; records the status and failure on the span.
    pub async fn send(&self, client: &WebhookClient, keep: usize) -> AttemptResult {
        let span = telemetry::attempt_span(self.number, &self.route.url);
        let traceparent = telemetry::traceparent(&span, Some(self.traceparent));
        let headers = request_headers(self.route, self.payload, self.sequence, &traceparent, self.number, unix_now());
        let route = self.route;
        let sent = client
            .post(&route.url, headers, self.payload.body.clone(), route.timeout, keep)
            .instrument(span.clone())
            .await;
        let result = AttemptResult(sent);
        telemetry::record_attempt(&span, result.status(), result.failure());
        result
    }
}

/// Now as Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Every header of one attempt: the route's static headers, the signature headers, and
/// `content-type`, `user-agent`, `hookrelay-sequence`, `hookrelay-attempt`, `hookrelay-route`,
/// `traceparent`.
pub fn request_headers(
    route: &Route,
    p: &Payload,
    sequence: &str,
    traceparent: &str,
    attempt: u32,
    timestamp: i64,
) -> HeaderMap {
    // The route's own headers, then the ones every attempt gets (a dozen in all, so the map is
    // made once at its final size).
    let mut h = route.headers.clone();
    h.reserve(ATTEMPT_HEADERS);
    route.signer.insert_headers(&mut h, &p.event_id, timestamp, &p.body);
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(p.content_type));
    h.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    h.insert(HOOKRELAY_SEQUENCE.clone(), text(sequence));
    h.insert(HOOKRELAY_ATTEMPT.clone(), HeaderValue::from(attempt));
    h.insert(HOOKRELAY_ROUTE.clone(), text(&route.name));
    h.insert(TRACEPARENT.clone(), text(traceparent));
    h
}

/// Headers [`request_headers`] adds to the route's: three of signing and six others.
const ATTEMPT_HEADERS: usize = 9;
const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));
static HOOKRELAY_SEQUENCE: HeaderName = HeaderName::from_static("hookrelay-sequence");
static HOOKRELAY_ATTEMPT: HeaderName = HeaderName::from_static("hookrelay-attempt");
static HOOKRELAY_ROUTE: HeaderName = HeaderName::from_static("hookrelay-route");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_only_grow() {
        let s = Sequencer::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let n = s.next();
            assert!(n > last);
            last = n;
        }
    }
}
