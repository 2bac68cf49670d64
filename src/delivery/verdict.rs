//! The delivery decision as a value: how one attempt ended ([`AttemptResult`], classified once by
//! [`AttemptResult::class`]) and what happens to the message next ([`decide`] → [`Verdict`]).
//! Pure: no I/O, no clock, no randomness (the jitter draw is an argument), so every rule is in
//! the table test below. It also owns the words the rest of the crate reports with: the
//! dead-letter [`Reason`] and the attempt's [`AttemptFailure`] label. A leaf: the pipeline,
//! metrics and telemetry import it; it imports only the HTTP types it classifies.
//!
//! The rules (DESIGN.md, "Delivery semantics"):
//! - a 2xx delivers; any other status is a failure, and redirects (3xx) are not followed;
//! - retried while attempts remain: connect errors, timeouts, TLS and other transport failures,
//!   408, 429 and 5xx, never sooner than the receiver's `Retry-After`; in place on an ordered
//!   route (later events wait behind it), parked in the broker's delay otherwise;
//! - dead-lettered at once: any other 4xx (`rejected`), 410 (`gone`), a target the SSRF guard
//!   refused (`blocked`); a retryable failure on the last attempt is `exhausted`.

use super::http::client::{Response, SendError};
use super::http::retry::RetryPolicy;
use std::time::Duration;

/// Why an event ends in the dead letters instead of at its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not a CloudEvent in structured JSON mode.
    Malformed,
    /// Over `[limits] max_event_bytes`.
    TooLarge,
    /// No schema for the type (or the requested version).
    UnknownType,
    /// `data` breaks the schema.
    Schema,
    /// A filter or transform script failed.
    ScriptError,
    /// The receiver answered a permanent 4xx (or a 3xx).
    Rejected,
    /// `410 Gone`: the receiver no longer wants the events.
    Gone,
    /// Every attempt failed with a retryable outcome.
    Exhausted,
    /// The SSRF guard refused the target address.
    Blocked,
    /// The broker gave up on the message (`x-delivery-limit`), e.g. after repeated crashes.
    DeliveryLimit,
}

impl Reason {
    /// Every reason, in the order of their metric series.
    pub const ALL: [Reason; 10] = [
        Self::Malformed,
        Self::TooLarge,
        Self::UnknownType,
        Self::Schema,
        Self::ScriptError,
        Self::Rejected,
        Self::Gone,
        Self::Exhausted,
        Self::Blocked,
        Self::DeliveryLimit,
    ];

    /// The wire name, as in dead-letter headers, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnknownType => "unknown_type",
            Self::Schema => "schema",
            Self::ScriptError => "script_error",
            Self::Rejected => "rejected",
            Self::Gone => "gone",
            Self::Exhausted => "exhausted",
            Self::Blocked => "blocked",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Why one HTTP attempt failed, as a bounded label (the `result` of the attempts metric, the
/// `error.type` of the attempt span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// A 3xx (redirects are not followed).
    Http3xx,
    /// A 4xx other than 429.
    Http4xx,
    /// 429 Too Many Requests.
    Http429,
    /// A 5xx.
    Http5xx,
    /// A status outside 200–599.
    HttpOther,
    /// No complete response within the route's timeout.
    Timeout,
    /// TCP connect or DNS failure.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The SSRF guard refused the target.
    Blocked,
    /// Anything else between sending and the end of the response.
    Other,
}

impl AttemptFailure {
    /// Every value, in label order.
    pub const ALL: [AttemptFailure; 10] = [
        Self::Http3xx,
        Self::Http4xx,
        Self::Http429,
        Self::Http5xx,
        Self::HttpOther,
        Self::Timeout,
        Self::Connect,
        Self::Tls,
        Self::Blocked,
        Self::Other,
    ];

    fn of_status(status: u16) -> Self {
        match status {
            429 => Self::Http429,
            300..=399 => Self::Http3xx,
            400..=499 => Self::Http4xx,
            500..=599 => Self::Http5xx,
            _ => Self::HttpOther,
        }
    }

    fn of_error(e: &SendError) -> Self {
        match e {
            SendError::Blocked(_) => Self::Blocked,
            SendError::Timeout(_) => Self::Timeout,
            SendError::Connect(_) => Self::Connect,
            SendError::Tls(_) => Self::Tls,
            SendError::Other(_) => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http3xx => "http_3xx",
            Self::Http4xx => "http_4xx",
            Self::Http429 => "http_429",
            Self::Http5xx => "http_5xx",
            Self::HttpOther => "http_other",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Blocked => "blocked",
            Self::Other => "other",
        }
    }
}

/// What one attempt's outcome means, before the attempts left are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A 2xx.
    Success,
    /// Worth another attempt.
    Retryable(AttemptFailure),
    /// No later attempt can do better: dead-letter now, for this reason.
    Permanent(AttemptFailure, Reason),
}

/// How one signed attempt ended: the receiver's response, or why none came.
#[derive(Debug, Clone)]
pub struct AttemptResult(pub Result<Response, SendError>);

impl AttemptResult {
    /// The one classification of an attempt; every report (log, metrics, span) and [`decide`]
    /// read it.
    pub fn class(&self) -> Class {
        match &self.0 {
            Ok(r) => match r.status {
                200..=299 => Class::Success,
                408 | 429 | 500..=599 => Class::Retryable(AttemptFailure::of_status(r.status)),
                410 => Class::Permanent(AttemptFailure::Http4xx, Reason::Gone),
                s => Class::Permanent(AttemptFailure::of_status(s), Reason::Rejected),
            },
            Err(SendError::Blocked(_)) => Class::Permanent(AttemptFailure::Blocked, Reason::Blocked),
            Err(e) => Class::Retryable(AttemptFailure::of_error(e)),
        }
    }

    /// Why it failed; `None` for a 2xx.
    pub fn failure(&self) -> Option<AttemptFailure> {
        match self.class() {
            Class::Success => None,
            Class::Retryable(f) | Class::Permanent(f, _) => Some(f),
        }
    }

    /// The response, when one came.
    pub fn response(&self) -> Option<&Response> {
        self.0.as_ref().ok()
    }

    /// The response's status, when one came.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status)
    }

    /// From sending to the end of the response; zero when none came.
    pub fn duration(&self) -> Duration {
        self.response().map_or(Duration::ZERO, |r| r.duration)
    }

    /// The failure as the delivery log and the dead letter state it: `HTTP <status>`, or the
    /// error of a request that got no response.
    pub fn error(&self) -> String {
        match &self.0 {
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        }
    }
}

/// What happens to the message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: ack.
    Delivered,
    /// Ordered route: wait this long holding the message, then attempt again.
    RetryInPlace(Duration),
    /// Unordered route: park the message in the broker's delay for this long, then ack it.
    Park(Duration),
    /// Store a dead letter for this reason, then ack.
    DeadLetter(Reason),
}

/// The verdict on attempt `attempt` (1-based) of a route with retry `policy`, given a jitter draw
/// in `[0, 1)` for the backoff.
pub fn decide(result: &AttemptResult, policy: &RetryPolicy, attempt: u32, ordered: bool, jitter: f64) -> Verdict {
    match result.class() {
        Class::Success => Verdict::Delivered,
        Class::Retryable(_) if policy.may_retry(attempt) => {
            let delay = policy.delay(attempt, result.response().and_then(|r| r.retry_after), jitter);
            if ordered { Verdict::RetryInPlace(delay) } else { Verdict::Park(delay) }
        }
        Class::Retryable(_) => Verdict::DeadLetter(Reason::Exhausted),
        Class::Permanent(_, reason) => Verdict::DeadLetter(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::http::guard::Blocked;

    fn response(status: u16, retry_after: Option<u64>) -> AttemptResult {
        AttemptResult(Ok(Response {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: String::new(),
            duration: Duration::from_millis(3),
        }))
    }

    fn error(e: SendError) -> AttemptResult {
        AttemptResult(Err(e))
    }

    #[test]
    fn every_outcome_on_ordered_and_unordered_routes() {
        use Verdict::*;
        let s = Duration::from_secs;
        let policy = RetryPolicy { max_attempts: 3, backoff: vec![s(5), s(30)] };
        let blocked = || error(SendError::Blocked(Blocked::Forbidden("169.254.169.254".parse().unwrap())));
        // (what happened, attempt, verdict on an unordered route, failure label); an ordered
        // route gets the same verdict with RetryInPlace for Park.
        let table: Vec<(&str, AttemptResult, u32, Verdict, Option<AttemptFailure>)> = vec![
            ("200", response(200, None), 1, Delivered, None),
            ("204 on the last attempt", response(204, None), 3, Delivered, None),
            ("299", response(299, None), 1, Delivered, None),
            (
                "301: redirects are not followed",
                response(301, None),
                1,
                DeadLetter(Reason::Rejected),
                Some(AttemptFailure::Http3xx),
            ),
            ("302", response(302, None), 1, DeadLetter(Reason::Rejected), Some(AttemptFailure::Http3xx)),
            ("408", response(408, None), 1, Park(s(5)), Some(AttemptFailure::Http4xx)),
            ("410", response(410, None), 1, DeadLetter(Reason::Gone), Some(AttemptFailure::Http4xx)),
            ("429 without Retry-After", response(429, None), 1, Park(s(5)), Some(AttemptFailure::Http429)),
            ("429 with a longer Retry-After", response(429, Some(120)), 1, Park(s(120)), Some(AttemptFailure::Http429)),
            ("429 with a shorter Retry-After", response(429, Some(1)), 2, Park(s(30)), Some(AttemptFailure::Http429)),
            ("400", response(400, None), 1, DeadLetter(Reason::Rejected), Some(AttemptFailure::Http4xx)),
            ("401", response(401, None), 1, DeadLetter(Reason::Rejected), Some(AttemptFailure::Http4xx)),
            ("404", response(404, None), 1, DeadLetter(Reason::Rejected), Some(AttemptFailure::Http4xx)),
            ("422", response(422, None), 2, DeadLetter(Reason::Rejected), Some(AttemptFailure::Http4xx)),
            ("500", response(500, None), 1, Park(s(5)), Some(AttemptFailure::Http5xx)),
            ("503 with Retry-After", response(503, Some(60)), 2, Park(s(60)), Some(AttemptFailure::Http5xx)),
            ("599", response(599, None), 2, Park(s(30)), Some(AttemptFailure::Http5xx)),
            ("101", response(101, None), 1, DeadLetter(Reason::Rejected), Some(AttemptFailure::HttpOther)),
            ("timeout", error(SendError::Timeout(s(10))), 1, Park(s(5)), Some(AttemptFailure::Timeout)),
            (
                "connect error",
                error(SendError::Connect("refused".into())),
                2,
                Park(s(30)),
                Some(AttemptFailure::Connect),
            ),
            (
                "TLS handshake",
                error(SendError::Tls("bad certificate".into())),
                1,
                Park(s(5)),
                Some(AttemptFailure::Tls),
            ),
            (
                "other transport error",
                error(SendError::Other("reset".into())),
                1,
                Park(s(5)),
                Some(AttemptFailure::Other),
            ),
            ("blocked address", blocked(), 1, DeadLetter(Reason::Blocked), Some(AttemptFailure::Blocked)),
            (
                "blocked address on the last attempt",
                blocked(),
                3,
                DeadLetter(Reason::Blocked),
                Some(AttemptFailure::Blocked),
            ),
            (
                "500 on the last attempt",
                response(500, None),
                3,
                DeadLetter(Reason::Exhausted),
                Some(AttemptFailure::Http5xx),
            ),
            (
                "429 on the last attempt",
                response(429, Some(5)),
                3,
                DeadLetter(Reason::Exhausted),
                Some(AttemptFailure::Http429),
            ),
            (
                "timeout past the last attempt",
                error(SendError::Timeout(s(1))),
                4,
                DeadLetter(Reason::Exhausted),
                Some(AttemptFailure::Timeout),
            ),
            (
                "connect error on the last attempt",
                error(SendError::Connect("refused".into())),
                3,
                DeadLetter(Reason::Exhausted),
                Some(AttemptFailure::Connect),
            ),
            (
                "410 on the last attempt",
                response(410, None),
                3,
                DeadLetter(Reason::Gone),
                Some(AttemptFailure::Http4xx),
            ),
        ];
        for (case, result, attempt, unordered, failure) in table {
            assert_eq!(decide(&result, &policy, attempt, false, 0.0), unordered, "{case}, unordered");
            let ordered = match unordered {
                Park(d) => RetryInPlace(d),
                v => v,
            };
            assert_eq!(decide(&result, &policy, attempt, true, 0.0), ordered, "{case}, ordered");
            assert_eq!(result.failure(), failure, "{case}: failure label");
        }
    }

    #[test]
    fn jitter_lengthens_the_wait_within_its_bound_and_never_shortens_retry_after() {
        let policy = RetryPolicy { max_attempts: 5, backoff: vec![Duration::from_secs(10)] };
        assert_eq!(decide(&response(503, None), &policy, 1, false, 0.5), Verdict::Park(Duration::from_secs(11)));
        assert_eq!(decide(&response(503, None), &policy, 1, true, 1.0), Verdict::RetryInPlace(Duration::from_secs(12)));
        assert_eq!(
            decide(&response(429, Some(3600)), &policy, 1, false, 1.0),
            Verdict::Park(Duration::from_secs(3600)),
            "Retry-After beyond the jittered backoff is honoured as is"
        );
    }

    #[test]
    fn the_log_text_names_the_status_or_the_error() {
        assert_eq!(response(503, None).error(), "HTTP 503");
        assert_eq!(error(SendError::Timeout(Duration::from_secs(2))).error(), "no response within 2s");
        assert_eq!(response(200, None).duration(), Duration::from_millis(3));
        assert_eq!(error(SendError::Connect("x".into())).duration(), Duration::ZERO);
        assert_eq!(response(201, None).status(), Some(201));
    }
}
