//! One signed attempt: the request headers (signature, sequence, attempt, route, trace context),
//! the POST through the SSRF-guarded client inside an attempt span, and its [`AttemptResult`].
//! The route workers make every attempt through [`Attempt::send`], and so does
//! `POST /v1/routes/{name}/test`: a test send is a real attempt, minus the queue. What the
//! delivery log keeps of the headers sent is [`logged_headers`].

use super::http::client::WebhookClient;
use super::http::sign::HeaderValues;
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
        payload.sequence.clone().unwrap_or_else(|| itoa::Buffer::new().format(self.next()).to_owned())
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
    /// span's own context is sent): the same on every attempt, so that they share a trace. A
    /// valid one, sent as it is: checked by `telemetry::checked_traceparent` or made by
    /// `telemetry::new_traceparent`.
    pub traceparent: &'a str,
    /// Headers of this kind of delivery besides the usual ones (a batch's size and event ids).
    pub extra: &'a [(HeaderName, HeaderValue)],
}

impl Attempt<'_> {
    /// Signs and sends the attempt now, inside an attempt span, keeping at most `keep` bytes of
    /// the response body; records the status and failure on the span.
    pub async fn send(&self, client: &WebhookClient, keep: usize) -> AttemptResult {
        self.exchange(client, keep, None).await
    }

    /// [`Attempt::send`], also giving the request headers sent, as the delivery log keeps them
    /// ([`logged_headers`]).
    pub async fn send_logged(&self, client: &WebhookClient, keep: usize) -> (AttemptResult, String) {
        let mut logged = String::new();
        let result = self.exchange(client, keep, Some(&mut logged)).await;
        (result, logged)
    }

    async fn exchange(&self, client: &WebhookClient, keep: usize, logged: Option<&mut String>) -> AttemptResult {
        let span = telemetry::attempt_span(self.number, &self.route.url);
        let traceparent = telemetry::traceparent_ref(&span, self.traceparent);
        let mut headers =
            request_headers(self.route, self.payload, self.sequence, &traceparent, self.number, unix_now());
        for (name, value) in self.extra {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(logged) = logged {
            *logged = logged_headers(&headers);
        }
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
    // made once at its final size), their values written into one buffer: with the map, two
    // allocations per attempt besides the body.
    let mut h = HeaderMap::with_capacity(route.headers.len() + ATTEMPT_HEADERS);
    for (name, value) in &route.headers {
        h.append(name.clone(), value.clone());
    }
    let room = route.signer.values_len(&p.event_id) + sequence.len() + 10 + route.name.len() + traceparent.len();
    let mut values = HeaderValues::with_capacity(room);
    route.signer.insert_headers(&mut h, &mut values, &p.event_id, timestamp, &p.body);
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(p.content_type));
    h.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    h.insert(HOOKRELAY_SEQUENCE.clone(), values.text(sequence));
    h.insert(HOOKRELAY_ATTEMPT.clone(), values.number(attempt));
    h.insert(HOOKRELAY_ROUTE.clone(), values.text(&route.name));
    h.insert(TRACEPARENT.clone(), values.text(traceparent));
    h
}

/// What the delivery log keeps of an attempt's request headers: one `name: value` line each, in
/// the map's order, with the value of every header marked sensitive (a static header whose name
/// says it is a credential, see `config::route::is_credential`) replaced by `<masked>`. The
/// signature stays: it is an HMAC of this one body, not the secret. One allocation and a copy,
/// on the worker; the log writes it in its batch.
pub fn logged_headers(headers: &HeaderMap) -> String {
    let mut out = String::with_capacity(LOGGED_HEADERS_CAPACITY);
    for (name, value) in headers {
        out.push_str(name.as_str());
        out.push_str(": ");
        if value.is_sensitive() {
            out.push_str(MASKED);
        } else {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        out.push('\n');
    }
    out
}

/// What stands in a sensitive header's value in the delivery log.
pub const MASKED: &str = "<masked>";
/// The usual size of [`logged_headers`]: a dozen headers, the signature and trace context the
/// longest.
const LOGGED_HEADERS_CAPACITY: usize = 512;

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
    fn logged_headers_keep_every_line_as_sent_and_mask_sensitive_values() {
        let mut h = HeaderMap::new();
        let mut secret = HeaderValue::from_static("Bearer s3cret");
        secret.set_sensitive(true);
        h.insert(http::header::AUTHORIZATION, secret);
        h.insert(HeaderName::from_static("x-tenant"), HeaderValue::from_static("acme"));
        h.insert(HeaderName::from_static("webhook-signature"), HeaderValue::from_static("v1,abc="));
        h.insert(HeaderName::from_static("x-latin"), HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let logged = logged_headers(&h);
        assert_eq!(
            logged,
            "authorization: <masked>\nx-tenant: acme\nwebhook-signature: v1,abc=\nx-latin: caf\u{fffd}\n"
        );
    }

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
