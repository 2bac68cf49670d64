//! The route compiler, one for both sources of routes: route files (`routes/<name>.toml`, see
//! `route_files`) and API subscriptions ([`crate::subscriptions`]). Each source turns
//! what it holds into a [`Definition`] (reading its script files or inline sources, its secrets,
//! its digest) and reports problems at its own places (a file's line and column, a
//! subscription's field); this module checks every value against the same limits, fills in the
//! same defaults, and builds the [`Route`]. A route's tenant is one of those values: checked
//! here, and compiled with `[tenants] attribute` into the [`TenantScope`] its pipeline starts
//! with.

use super::{Origin, Route};
use crate::broker::topic;
use crate::delivery::http::guard::Policy;
use crate::delivery::http::retry::RetryPolicy;
use crate::delivery::http::sign::Signer;
use crate::delivery::policy::OrderKey;
use crate::delivery::policy::{Batch, CircuitBreaker, RateLimit};
use crate::pipeline::condition::{Condition, Loc};
use crate::pipeline::redact::RedactPath;
use crate::pipeline::script::Script;
use crate::pipeline::{BodyFormat, Steps};
use crate::tenant::{TenantScope, TenantsFile};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// A route name: 1 to this many characters of `A-Z a-z 0-9 - _ .` (it names the route's queue).
pub const NAME_MAX_LEN: usize = 200;
/// Deliveries at once on an unordered route.
pub const CONCURRENCY: RangeInclusive<usize> = 1..=10_000;
/// Attempts in all, the first included.
pub const MAX_ATTEMPTS: RangeInclusive<u32> = 1..=1_000;
/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deliveries at once on an unordered route.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default attempts in all.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// `[circuit_breaker] failures`: consecutive retryable failures that open the circuit.
pub const BREAKER_FAILURES: RangeInclusive<u32> = 1..=10_000;
/// Default `[circuit_breaker] failures`.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Longest `[circuit_breaker] open_for`.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Default `[circuit_breaker] open_for`.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// Highest `[rate_limit] per_second`.
pub const MAX_PER_SECOND: f64 = 100_000.0;
/// `[rate_limit] burst`.
pub const BURST: RangeInclusive<u32> = 1..=100_000;

/// `[batch] max_events`.
pub const BATCH_EVENTS: RangeInclusive<usize> = 1..=1_000;
/// Longest `[batch] max_wait`.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(60);

/// Default waits before attempt 2, 3, …: 5s, 30s, 2m, 10m, 30m, 1h, 2h.
pub fn default_backoff() -> Vec<Duration> {
    [5, 30, 120, 600, 1800, 3600, 7200].map(Duration::from_secs).to_vec()
}

/// Whether a static header's value is a credential, by its name (lowercase): `authorization`,
/// `proxy-authorization`, `cookie`, `x-api-key` and the like. Such values are marked sensitive
/// at load ([`HeaderValue::set_sensitive`]): the delivery log keeps them masked, and HTTP/2
/// would never index them.
pub fn is_credential(name: &str) -> bool {
    const WORDS: [&str; 9] =
        ["auth", "cookie", "token", "secret", "password", "passwd", "credential", "session", "key"];
    WORDS.iter().any(|w| name.contains(w))
}

/// A value of a route definition, as problems name it: each source maps it to its own place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// `name`.
    Name,
    /// The `events` list as a whole.
    Events,
    /// The `i`-th event pattern.
    Event(usize),
    /// `url`.
    Url,
    /// `timeout`.
    Timeout,
    /// `concurrency`.
    Concurrency,
    /// `retry.max_attempts` (`max_attempts` on a subscription).
    MaxAttempts,
    /// `retry.backoff` as a whole (`backoff` on a subscription).
    Backoff,
    /// The `i`-th backoff step.
    BackoffStep(usize),
    /// The `i`-th redaction path.
    Redact(usize),
    /// A static header's name.
    HeaderName(&'a str),
    /// A static header's value.
    HeaderValue(&'a str),
    /// `tenant`.
    Tenant,
    /// `circuit_breaker.failures`.
    BreakerFailures,
    /// `circuit_breaker.open_for`.
    BreakerOpenFor,
    /// `circuit_breaker.disable_after`.
    BreakerDisableAfter,
    /// `rate_limit.per_second`.
    RatePerSecond,
    /// `rate_limit.burst`.
    RateBurst,
    /// A place inside a declarative `filter` (empty: the filter as a whole).
    Filter(&'a [Loc]),
    /// `order_key`.
    OrderKey,
    /// `[batch]` as a whole.
    Batch,
    /// `batch.max_events`.
    BatchMaxEvents,
    /// `batch.max_wait`.
    BatchMaxWait,
}

impl Field<'_> {
    /// The key a route file writes, for messages about a value (`None` where the message names
    /// the value itself).
    pub fn file_key(self) -> Option<&'static str> {
        match self {
            Self::Events => Some("events"),
            Self::Timeout => Some("timeout"),
            Self::Concurrency => Some("concurrency"),
            Self::MaxAttempts => Some("retry.max_attempts"),
            Self::Backoff | Self::BackoffStep(_) => Some("retry.backoff"),
            Self::BreakerFailures => Some("circuit_breaker.failures"),
            Self::BreakerOpenFor => Some("circuit_breaker.open_for"),
            Self::BreakerDisableAfter => Some("circuit_breaker.disable_after"),
            Self::RatePerSecond => Some("rate_limit.per_second"),
            Self::RateBurst => Some("rate_limit.burst"),
            Self::OrderKey => Some("order_key"),
            Self::Batch => Some("batch"),
            Self::BatchMaxEvents => Some("batch.max_events"),
            Self::BatchMaxWait => Some("batch.max_wait"),
            _ => None,
        }
    }

    /// The field of a subscription definition.
    pub fn api_field(self) -> String {
        match self {
            Self::Name => "name".into(),
            Self::Events => "events".into(),
            Self::Event(i) => format!("events[{i}]"),
            Self::Url => "url".into(),
            Self::Timeout => "timeout".into(),
            Self::Concurrency => "concurrency".into(),
            Self::MaxAttempts => "max_attempts".into(),
            Self::Backoff => "backoff".into(),
            Self::BackoffStep(i) => format!("backoff[{i}]"),
            Self::Redact(i) => format!("redact[{i}]"),
            Self::HeaderName(k) | Self::HeaderValue(k) => format!("headers.{k}"),
            Self::Tenant => "tenant".into(),
            Self::BreakerFailures => "circuit_breaker.failures".into(),
            Self::BreakerOpenFor => "circuit_breaker.open_for".into(),
            Self::BreakerDisableAfter => "circuit_breaker.disable_after".into(),
            Self::RatePerSecond => "rate_limit.per_second".into(),
            Self::RateBurst => "rate_limit.burst".into(),
            Self::Filter(at) => crate::pipeline::condition::loc_text(at),
            Self::OrderKey => "order_key".into(),
            Self::Batch => "batch".into(),
            Self::BatchMaxEvents => "batch.max_events".into(),
            Self::BatchMaxWait => "batch.max_wait".into(),
        }
    }
}

/// A route as a source defines it, before its values are checked. Scripts come compiled (each
/// source has its own way to find them), the signer built (`None` when the source already
/// reported why it could not be).
#[derive(Debug)]
pub struct Definition<'a> {
    /// The route name.
    pub name: &'a str,
    /// Event types and topic patterns.
    pub events: Vec<&'a str>,
    /// The receiver, as written.
    pub url: &'a str,
    /// Strict FIFO.
    pub ordered: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Deliveries at once (unordered), keys at once (ordered with an `order_key`).
    pub concurrency: usize,
    /// FIFO per key (ordered routes), as written.
    pub order_key: Option<&'a str>,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Waits between attempts; the last repeats.
    pub backoff: Vec<Duration>,
    /// `fn filter(event)`, checked to be defined.
    pub filter: Option<Arc<Script>>,
    /// A declarative filter (`filter` written as a table), as written.
    pub condition: Option<&'a serde_json::Value>,
    /// `fn transform(event)`, checked to be defined.
    pub transform: Option<Arc<Script>>,
    /// Paths removed before sending, as written.
    pub redact: Vec<&'a str>,
    /// The body's shape.
    pub format: BodyFormat,
    /// Static headers, as written.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Keep sent bodies and request headers in the delivery log.
    pub log_payload: bool,
    /// How requests are signed.
    pub signer: Option<Signer>,
    /// The tenant that owns the route, as written.
    pub tenant: Option<&'a str>,
    /// `[circuit_breaker]`, as written (`disable_after` with the source's default).
    pub circuit_breaker: Option<CircuitBreaker>,
    /// `[rate_limit]`, as written (`burst` with its default).
    pub rate_limit: Option<RateLimit>,
    /// `[batch]`, as written (with its defaults).
    pub batch: Option<Batch>,
    /// Tells a reload whether the route changed.
    pub digest: String,
    /// Where it is defined.
    pub origin: Origin,
}

/// Checks every value of `def` against the limits and `security`, reporting each problem to
/// `report` (all of them, not only the first), and builds the route when there is none; its
/// tenant is matched on `tenants.attribute`.
pub fn compile(
    def: Definition<'_>,
    security: Policy,
    tenants: &TenantsFile,
    report: &mut dyn FnMut(Field<'_>, String),
) -> Option<Route> {
    let mut ok = true;
    let mut problem = |field: Field<'_>, message: String| {
        ok = false;
        report(field, message);
    };
    let name = def.name;
    if name.is_empty()
        || name.len() > NAME_MAX_LEN
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problem(
            Field::Name,
            format!("route name {name:?} must be 1 to {NAME_MAX_LEN} characters of A-Z a-z 0-9 - _ ."),
        );
    }
    if def.events.is_empty() {
        problem(Field::Events, "must name at least one event type or pattern".into());
    }
    for (i, pattern) in def.events.iter().enumerate() {
        if let Err(m) = topic::valid_pattern(pattern) {
            problem(Field::Event(i), m);
        }
    }
    let url = match def.url.parse::<Uri>() {
        Ok(u) if u.host().is_some() => match security.check_url(&u) {
            // A host written as numbers is sent as the dotted address it names.
            Ok(()) => Some(crate::delivery::http::guard::canonical(u)),
            Err(e) => {
                problem(Field::Url, e.to_string());
                None
            }
        },
        _ => {
            problem(Field::Url, format!("{:?} is not an absolute URL", def.url));
            None
        }
    };
    if def.timeout.is_zero() {
        problem(Field::Timeout, "must be more than zero".into());
    }
    if !CONCURRENCY.contains(&def.concurrency) {
        problem(Field::Concurrency, format!("must be at least 1 and at most {}", CONCURRENCY.end()));
    }
    if !MAX_ATTEMPTS.contains(&def.max_attempts) {
        problem(Field::MaxAttempts, format!("must be at least 1 and at most {}", MAX_ATTEMPTS.end()));
    }
    let backoff_rule = "must list at least one duration, none of them zero";
    if def.backoff.is_empty() {
        problem(Field::Backoff, backoff_rule.into());
    }
    if let Some(i) = def.backoff.iter().position(Duration::is_zero) {
        problem(Field::BackoffStep(i), backoff_rule.into());
    }
    let mut redact = Vec::new();
    for (i, path) in def.redact.iter().enumerate() {
        match RedactPath::parse(path) {
            Ok(r) => redact.push(r),
            Err(m) => problem(Field::Redact(i), m),
        }
    }
    let condition = def.condition.and_then(|v| match Condition::compile(v) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            problem(Field::Filter(&e.at), e.message);
            None
        }
    });
    let mut headers = HeaderMap::new();
    for (k, v) in &def.headers {
        match (HeaderName::try_from(*k), HeaderValue::try_from(*v)) {
            (Ok(k), Ok(mut v)) => {
                v.set_sensitive(is_credential(k.as_str()));
                headers.insert(k, v);
            }
            (Err(_), _) => problem(Field::HeaderName(k), format!("{k:?} is not a valid HTTP header name")),
            (_, Err(_)) => problem(
                Field::HeaderValue(k),
                format!("the value of header {k:?} is not a valid HTTP header value (control characters?)"),
            ),
        }
    }
    if let Some(cb) = &def.circuit_breaker {
        if !BREAKER_FAILURES.contains(&cb.failures) {
            problem(Field::BreakerFailures, format!("must be at least 1 and at most {}", BREAKER_FAILURES.end()));
        }
        if cb.open_for.is_zero() || cb.open_for > MAX_OPEN_FOR {
            problem(Field::BreakerOpenFor, "must be more than zero and at most 1 day".into());
        }
        match (cb.disable_after, &def.origin) {
            (Some(_), Origin::File { .. }) => problem(
                Field::BreakerDisableAfter,
                "applies to API subscriptions only: a file route cannot be disabled (a receiver's 410 Gone \
                 dead-letters its events instead)"
                    .into(),
            ),
            (Some(d), Origin::Api { .. }) if d.is_zero() => {
                problem(Field::BreakerDisableAfter, "must be more than zero".into())
            }
            _ => {}
        }
    }
    if let Some(rl) = &def.rate_limit {
        if !(rl.per_second > 0.0 && rl.per_second <= MAX_PER_SECOND) {
            problem(Field::RatePerSecond, format!("must be more than zero and at most {MAX_PER_SECOND}"));
        }
        if !BURST.contains(&rl.burst) {
            problem(Field::RateBurst, format!("must be at least 1 and at most {}", BURST.end()));
        }
    }
    let order_key = match def.order_key.map(OrderKey::parse) {
        Some(Ok(_)) if !def.ordered => {
            problem(Field::OrderKey, "needs `ordered = true` (it orders each key's events)".into());
            None
        }
        Some(Ok(k)) => Some(k),
        Some(Err(m)) => {
            problem(Field::OrderKey, m);
            None
        }
        None => None,
    };
    if let Some(b) = &def.batch {
        if def.ordered {
            problem(
                Field::Batch,
                "applies to unordered routes only: a batch is delivered as a whole, and its events would no longer \
                 go one at a time in order"
                    .into(),
            );
        }
        if !BATCH_EVENTS.contains(&b.max_events) {
            problem(Field::BatchMaxEvents, format!("must be at least 1 and at most {}", BATCH_EVENTS.end()));
        }
        if b.max_wait.is_zero() || b.max_wait > MAX_BATCH_WAIT {
            problem(Field::BatchMaxWait, "must be more than zero and at most 1 minute".into());
        }
    }
    if let Some(Err(m)) = def.tenant.map(crate::tenant::check_id) {
        problem(Field::Tenant, m);
    }
    let tenant = TenantScope::new(&tenants.attribute, def.tenant);
    let (Some(url), Some(signer), true) = (url, def.signer, ok) else { return None };
    // The tenant check depends on `[tenants] attribute` too, which is outside the definition.
    let digest = match tenant.tenant() {
        None => def.digest,
        Some(_) => hex::encode(Sha256::new().chain_update(def.digest).chain_update(tenant.digest_input()).finalize()),
    };
    Some(Route {
        name: name.to_string(),
        events: def.events.iter().map(|e| e.to_string()).collect(),
        url,
        ordered: def.ordered,
        timeout: def.timeout,
        concurrency: def.concurrency,
        order_key,
        steps: Steps { tenant, condition, filter: def.filter, transform: def.transform, redact, format: def.format },
        headers,
        log_payload: def.log_payload,
        signer,
        retry: RetryPolicy { max_attempts: def.max_attempts, backoff: def.backoff },
        circuit_breaker: def.circuit_breaker,
        rate_limit: def.rate_limit,
        batch: def.batch,
        digest,
        origin: def.origin,
    })
}

#[cfg(test)]
mod tests;
