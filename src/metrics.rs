//! Prometheus metrics: the recorder, the name and meaning of every metric, and one small
//! function per thing the router reports. The admin API serves [`Metrics::render`] at
//! `/metrics`; nothing here listens on a socket.
//!
//! Label values stay bounded: `route` comes from the config (route names), every other label
//! is a fixed enum ([`AttemptFailure`], [`Reason`], [`ReloadResult`], [`ApiRefusal`]). Event ids, URLs and
//! payloads never become labels.
//!
//! The reporting functions are no-ops until [`install`] ran, so library users and tests that
//! never install a recorder pay nothing. A route's worker holds a [`RouteMeter`] (its handles,
//! looked up once), so per-event calls only touch atomics; the functions that take a route name
//! look the handles up in a read-locked map (no allocation after the first call per route).
//!
//! State that must disappear rather than go stale (the config info, and the queue depth of
//! routes that were removed) is kept here and rendered after the recorder's output:
//! the Prometheus recorder has no way to delete a series.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hookrelay_build_info` | gauge (1) | `version` |
//! | `hookrelay_config_info` | gauge (1) | `version`, `revision` |
//! | `hookrelay_config_reloads_total` | counter | `result` = `applied` \| `rejected` |
//! | `hookrelay_config_last_reload_successful` | gauge (0/1) | |
//! | `hookrelay_events_consumed_total` | counter | `route` |
//! | `hookrelay_events_filtered_total` | counter | `route` |
//! | `hookrelay_events_delivered_total` | counter | `route` |
//! | `hookrelay_events_retried_total` | counter | `route` |
//! | `hookrelay_events_dead_lettered_total` | counter | `route`, `reason` |
//! | `hookrelay_delivery_attempts_total` | counter | `route`, `result` |
//! | `hookrelay_delivery_duration_seconds` | histogram | `route` |
//! | `hookrelay_delivery_lag_seconds` | histogram | `route` |
//! | `hookrelay_deliveries_in_flight` | gauge | `route` |
//! | `hookrelay_queue_depth` | gauge | `route` |
//! | `hookrelay_circuit_state` | gauge (0/1) | `route`, `state` |
//! | `hookrelay_circuit_transitions_total` | counter | `route`, `to` |
//! | `hookrelay_events_held_total` | counter | `route`, `reason` |
//! | `hookrelay_rate_limited_waits_total` | counter | `route` |
//! | `hookrelay_rate_limit_per_second` | gauge | `route` |
//! | `hookrelay_api_refused_total` | counter | `reason` = an [`ApiRefusal`] label |
//! | `hookrelay_order_lanes_in_use` | gauge | `route` ([`shape`]) |
//! | `hookrelay_batch_size` | histogram | `route` ([`shape`]) |
//! | `hookrelay_schema_validations_total` | counter | `at` = `ingest` \| `pipeline` |
//!
//! The circuit and rate-limit metrics exist for routes with a `[circuit_breaker]` or a
//! `[rate_limit]` only ([`GateMeter`]).

use crate::delivery::verdict::{AttemptFailure, Reason};
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

mod api;
mod gate;
mod schema;
pub mod shape;
pub use api::{ApiRefusal, api_refused};
pub use gate::GateMeter;
pub use schema::{ValidatedAt, schema_validated};
pub use shape::{BATCH_SIZE, BatchMeter, LanesMeter, ORDER_LANES};

/// `hookrelay_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "hookrelay_build_info";
/// `hookrelay_config_info{version,revision}`: 1 for the config now live.
pub const CONFIG_INFO: &str = "hookrelay_config_info";
/// `hookrelay_config_reloads_total{result}`.
pub const CONFIG_RELOADS: &str = "hookrelay_config_reloads_total";
/// `hookrelay_config_last_reload_successful`: 1 when the last load or reload was applied.
pub const CONFIG_LAST_RELOAD_OK: &str = "hookrelay_config_last_reload_successful";
/// `hookrelay_events_consumed_total{route}`: messages taken from the route's queue for an
/// attempt (a retry's return and a redelivery count again; a message back early from a wait
/// queue and parked again does not). Once settled, consumed = filtered + delivered + retried +
/// dead-lettered by the router, plus, on unordered routes, held ([`EVENTS_HELD`]: parked by an
/// open circuit or a far-off token).
pub const EVENTS_CONSUMED: &str = "hookrelay_events_consumed_total";
/// `hookrelay_events_filtered_total{route}`: events the route's filter dropped.
pub const EVENTS_FILTERED: &str = "hookrelay_events_filtered_total";
/// `hookrelay_events_delivered_total{route}`: events that got a 2xx.
pub const EVENTS_DELIVERED: &str = "hookrelay_events_delivered_total";
/// `hookrelay_events_retried_total{route}`: retries scheduled.
pub const EVENTS_RETRIED: &str = "hookrelay_events_retried_total";
/// `hookrelay_events_dead_lettered_total{route,reason}`.
pub const EVENTS_DEAD_LETTERED: &str = "hookrelay_events_dead_lettered_total";
/// `hookrelay_delivery_attempts_total{route,result}`: every HTTP attempt, `result` = `success`
/// or an [`AttemptFailure`] label.
pub const DELIVERY_ATTEMPTS: &str = "hookrelay_delivery_attempts_total";
/// `hookrelay_delivery_duration_seconds{route}`: request to response of successful attempts.
pub const DELIVERY_DURATION: &str = "hookrelay_delivery_duration_seconds";
/// `hookrelay_delivery_lag_seconds{route}`: the event's `time` to its 2xx.
pub const DELIVERY_LAG: &str = "hookrelay_delivery_lag_seconds";
/// `hookrelay_deliveries_in_flight{route}`.
pub const IN_FLIGHT: &str = "hookrelay_deliveries_in_flight";
/// `hookrelay_queue_depth{route}`: messages ready in the route's queue, polled from the broker.
pub const QUEUE_DEPTH: &str = "hookrelay_queue_depth";
/// `hookrelay_api_refused_total{reason}`: API requests refused before any handler ran, by why
/// (see [`ApiRefusal`]).
pub const API_REFUSED: &str = "hookrelay_api_refused_total";
/// `hookrelay_schema_validations_total{at}`: events' `data` validated against their schema,
/// by where (see [`ValidatedAt`]).
pub const SCHEMA_VALIDATIONS: &str = "hookrelay_schema_validations_total";

/// `hookrelay_circuit_state{route,state}`: 1 for the state the route's circuit is in
/// (`closed`, `open`, `half_open`), 0 for the others.
pub const CIRCUIT_STATE: &str = "hookrelay_circuit_state";
/// `hookrelay_circuit_transitions_total{route,to}`: changes of the route's circuit, by the state
/// entered.
pub const CIRCUIT_TRANSITIONS: &str = "hookrelay_circuit_transitions_total";
/// `hookrelay_events_held_total{route,reason}`: times an event waited without an attempt, parked
/// with a not-before time (unordered routes) or held in place (ordered): `circuit_open`, or
/// `rate_limited` when its token was far off. Not attempts, not retries.
pub const EVENTS_HELD: &str = "hookrelay_events_held_total";
/// `hookrelay_rate_limited_waits_total{route}`: attempts that waited for the route's rate limit
/// (in process, or held).
pub const RATE_LIMITED_WAITS: &str = "hookrelay_rate_limited_waits_total";
/// `hookrelay_rate_limit_per_second{route}`: the rate this process uses: `[rate_limit]
/// per_second` divided by the consumers of the route's queue.
pub const RATE_LIMIT_PER_SECOND: &str = "hookrelay_rate_limit_per_second";

/// Every metric hookrelay exports (histograms by their base name, without `_bucket`, `_sum`,
/// `_count`). The dashboard and alert rules in `examples/` may use only these.
pub const METRICS: &[&str] = &[
    BUILD_INFO,
    CONFIG_INFO,
    CONFIG_RELOADS,
    CONFIG_LAST_RELOAD_OK,
    EVENTS_CONSUMED,
    EVENTS_FILTERED,
    EVENTS_DELIVERED,
    EVENTS_RETRIED,
    EVENTS_DEAD_LETTERED,
    DELIVERY_ATTEMPTS,
    DELIVERY_DURATION,
    DELIVERY_LAG,
    IN_FLIGHT,
    QUEUE_DEPTH,
    CIRCUIT_STATE,
    CIRCUIT_TRANSITIONS,
    EVENTS_HELD,
    RATE_LIMITED_WAITS,
    RATE_LIMIT_PER_SECOND,
    API_REFUSED,
    ORDER_LANES,
    BATCH_SIZE,
    SCHEMA_VALIDATIONS,
];

/// Bucket bounds of [`DELIVERY_DURATION`], in seconds: a webhook answers in milliseconds to
/// the route's timeout (10 s by default).
pub const DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Bucket bounds of [`DELIVERY_LAG`], in seconds: from a prompt delivery up to the hours that
/// the default retry backoff (5 s … 2 h) can add.
pub const LAG_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0,
];

/// The result of a config reload: the `result` label of [`CONFIG_RELOADS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config is live.
    Applied,
    /// The old config keeps running.
    Rejected,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Rejected => "rejected",
        }
    }
}

/// Every dead-letter reason, so that each route shows all of them from 0.
const REASONS: [Reason; 10] = Reason::ALL;

fn reason_index(r: Reason) -> usize {
    // Exhaustive: a new reason fails to compile here until it has a slot in REASONS.
    match r {
        Reason::Malformed => 0,
        Reason::TooLarge => 1,
        Reason::UnknownType => 2,
        Reason::Schema => 3,
        Reason::ScriptError => 4,
        Reason::Rejected => 5,
        Reason::Gone => 6,
        Reason::Exhausted => 7,
        Reason::Blocked => 8,
        Reason::DeliveryLimit => 9,
    }
}

fn failure_index(f: AttemptFailure) -> usize {
    AttemptFailure::ALL.iter().position(|x| *x == f).unwrap_or(AttemptFailure::ALL.len() - 1)
}

/// The handles of one route, registered once.
struct RouteMetrics {
    consumed: Counter,
    filtered: Counter,
    delivered: Counter,
    retried: Counter,
    success: Counter,
    failures: [Counter; AttemptFailure::ALL.len()],
    dead: [Counter; REASONS.len()],
    duration: Histogram,
    lag: Histogram,
    in_flight: Gauge,
}

impl RouteMetrics {
    fn register(route: &str) -> Self {
        let labels = [("route", route.to_string())];
        let with = |k: &'static str, v: &'static str| [("route", route.to_string()), (k, v.to_string())];
        Self {
            consumed: metrics::counter!(EVENTS_CONSUMED, &labels),
            filtered: metrics::counter!(EVENTS_FILTERED, &labels),
            delivered: metrics::counter!(EVENTS_DELIVERED, &labels),
            retried: metrics::counter!(EVENTS_RETRIED, &labels),
            success: metrics::counter!(DELIVERY_ATTEMPTS, &with("result", "success")),
            failures: AttemptFailure::ALL.map(|f| metrics::counter!(DELIVERY_ATTEMPTS, &with("result", f.as_str()))),
            dead: REASONS.map(|r| metrics::counter!(EVENTS_DEAD_LETTERED, &with("reason", r.as_str()))),
            duration: metrics::histogram!(DELIVERY_DURATION, &labels),
            lag: metrics::histogram!(DELIVERY_LAG, &labels),
            in_flight: metrics::gauge!(IN_FLIGHT, &labels),
        }
    }
}

/// What this module renders itself (series that must disappear rather than go stale).
#[derive(Default)]
struct States {
    config: Option<(u64, String)>,
    queue_depth: BTreeMap<String, u64>,
}

struct Installed {
    handle: PrometheusHandle,
    routes: RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>,
    states: Mutex<States>,
    reloads: [Counter; 2],
    last_reload_ok: Gauge,
    api_refused: [Counter; ApiRefusal::ALL.len()],
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// The recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another metrics recorder is already the process-wide one.
    #[error("cannot install the Prometheus recorder: {0} (another `metrics` recorder was installed first)")]
    Install(String),
    /// The exporter refused the histogram buckets.
    #[error("cannot configure the Prometheus recorder: {0}")]
    Build(String),
}

/// The installed recorder: renders the Prometheus text format.
#[derive(Clone, Copy)]
pub struct Metrics {
    inner: &'static Installed,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Every metric in the Prometheus text exposition format (serve it with [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = self.inner.handle.render();
        let st = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, revision)) = &st.config {
            family(&mut out, CONFIG_INFO, "The config now live: `version` from hookrelay.toml and the revision hash.");
            let _ = writeln!(out, "{CONFIG_INFO}{{version=\"{version}\",revision=\"{}\"}} 1", escape(revision));
        }
        if !st.queue_depth.is_empty() {
            family(&mut out, QUEUE_DEPTH, "Messages ready in the route's queue, as last read from the broker.");
            for (route, n) in &st.queue_depth {
                let _ = writeln!(out, "{QUEUE_DEPTH}{{route=\"{}\"}} {n}", escape(route));
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n").into()
    } else {
        v.into()
    }
}

/// Installs the Prometheus recorder as the process-wide `metrics` recorder, once; later calls
/// return the same handle. Starts a thread that drains histogram samples every 5 s, so memory
/// stays bounded even when nobody scrapes.
pub fn install() -> Result<Metrics, MetricsError> {
    if let Some(inner) = INSTALLED.get() {
        return Ok(Metrics { inner });
    }
    let _one = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(inner) = INSTALLED.get() {
        return Ok(Metrics { inner });
    }
    let build = |e: metrics_exporter_prometheus::BuildError| MetricsError::Build(e.to_string());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DELIVERY_DURATION.into()), DURATION_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(DELIVERY_LAG.into()), LAG_BUCKETS)
        .map_err(build)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), shape::BATCH_BUCKETS)
        .map_err(build)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Install(e.to_string()))?;
    describe();
    schema::register();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let reloads = [ReloadResult::Applied, ReloadResult::Rejected]
        .map(|r| metrics::counter!(CONFIG_RELOADS, "result" => r.as_str()));
    let inner = INSTALLED.get_or_init(|| Installed {
        handle,
        routes: RwLock::default(),
        states: Mutex::default(),
        reloads,
        last_reload_ok: metrics::gauge!(CONFIG_LAST_RELOAD_OK),
        api_refused: ApiRefusal::ALL.map(|r| metrics::counter!(API_REFUSED, "reason" => r.as_str())),
    });
    let upkeep = inner.handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are drained at each scrape only");
    }
    Ok(Metrics { inner })
}

/// The installed recorder, if [`install`] ran.
pub fn handle() -> Option<Metrics> {
    INSTALLED.get().map(|inner| Metrics { inner })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    shape::describe();
    describe_gauge!(BUILD_INFO, "hookrelay's version; always 1.");
    describe_counter!(CONFIG_RELOADS, Unit::Count, "Config reloads (SIGHUP, file watch, API) by result.");
    describe_gauge!(
        CONFIG_LAST_RELOAD_OK,
        "1 when the last config load or reload was applied, 0 when it was rejected."
    );
    describe_counter!(
        EVENTS_CONSUMED,
        Unit::Count,
        "Messages taken from the route's queue for an attempt (retries and redeliveries included)."
    );
    describe_counter!(EVENTS_FILTERED, Unit::Count, "Events the route's filter dropped (acked, nothing sent).");
    describe_counter!(EVENTS_DELIVERED, Unit::Count, "Events delivered: the receiver answered 2xx.");
    describe_counter!(EVENTS_RETRIED, Unit::Count, "Retries scheduled after a retryable failure.");
    describe_counter!(EVENTS_DEAD_LETTERED, Unit::Count, "Events dead-lettered, by reason.");
    describe_counter!(DELIVERY_ATTEMPTS, Unit::Count, "HTTP delivery attempts by result: success or why it failed.");
    describe_histogram!(DELIVERY_DURATION, Unit::Seconds, "Request to response time of successful delivery attempts.");
    describe_histogram!(DELIVERY_LAG, Unit::Seconds, "From the event's `time` attribute to its 2xx, retries included.");
    describe_gauge!(IN_FLIGHT, "Deliveries in progress on the route.");
    describe_gauge!(CIRCUIT_STATE, "1 for the state the route's circuit breaker is in, 0 for the others.");
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        Unit::Count,
        "Changes of the route's circuit breaker, by the state entered."
    );
    describe_counter!(
        EVENTS_HELD,
        Unit::Count,
        "Times an event waited without an attempt: its circuit open, or its rate limit's token far off."
    );
    describe_counter!(RATE_LIMITED_WAITS, Unit::Count, "Attempts that waited for the route's rate limit.");
    describe_gauge!(RATE_LIMIT_PER_SECOND, "The rate limit this process uses: per_second over the queue's consumers.");
    describe_counter!(
        API_REFUSED,
        Unit::Count,
        "API requests refused before any handler ran: caller address, key address, Host, cross-site, content type."
    );
    describe_counter!(
        SCHEMA_VALIDATIONS,
        Unit::Count,
        "Events' data validated against their schema, at ingest or in the pipeline."
    );
}

fn route(name: &str) -> Option<Arc<RouteMetrics>> {
    let inst = INSTALLED.get()?;
    if let Some(m) = inst.routes.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Some(m.clone());
    }
    let mut routes = inst.routes.write().unwrap_or_else(|p| p.into_inner());
    Some(routes.entry(name.into()).or_insert_with(|| Arc::new(RouteMetrics::register(name))).clone())
}

/// One route's metric handles, looked up once: a route's worker holds one for its life, so that
/// its per-event calls only touch atomics. A no-op when made before [`install`] ran.
#[derive(Clone, Default)]
pub struct RouteMeter(Option<Arc<RouteMetrics>>);

impl std::fmt::Debug for RouteMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteMeter").field(&self.0.is_some()).finish()
    }
}

impl RouteMeter {
    /// The handles of `route_name` (registered on first use).
    pub fn new(route_name: &str) -> Self {
        Self(route(route_name))
    }

    /// A message was taken from the route's queue. Call once per message, before the pipeline.
    pub fn consumed(&self) {
        if let Some(m) = &self.0 {
            m.consumed.increment(1);
        }
    }

    /// The route's filter dropped the event.
    pub fn filtered(&self) {
        if let Some(m) = &self.0 {
            m.filtered.increment(1);
        }
    }

    /// The receiver answered 2xx after `latency` (request to response); `lag` is the time since
    /// the event's `time` attribute (see [`lag`]), when it has one.
    pub fn delivered(&self, latency: Duration, lag: Option<Duration>) {
        if let Some(m) = &self.0 {
            m.delivered.increment(1);
            m.success.increment(1);
            m.duration.record(latency.as_secs_f64());
            if let Some(lag) = lag {
                m.lag.record(lag.as_secs_f64());
            }
        }
    }

    /// One HTTP attempt failed.
    pub fn attempt_failed(&self, failure: AttemptFailure) {
        if let Some(m) = &self.0 {
            m.failures[failure_index(failure)].increment(1);
        }
    }

    /// A retry was scheduled (in place on an ordered route, through a wait queue otherwise).
    pub fn retried(&self) {
        if let Some(m) = &self.0 {
            m.retried.increment(1);
        }
    }

    /// An event was dead-lettered (after its dead letter was confirmed).
    pub fn dead_lettered(&self, reason: Reason) {
        if let Some(m) = &self.0 {
            m.dead[reason_index(reason)].increment(1);
        }
    }

    /// Counts a delivery as in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        InFlight(self.0.as_ref().map(|m| {
            m.in_flight.increment(1.0);
            m.in_flight.clone()
        }))
    }
}

/// A message was taken from the route's queue (see [`RouteMeter::consumed`]).
pub fn consumed(route_name: &str) {
    RouteMeter::new(route_name).consumed();
}

/// The route's filter dropped the event (see [`RouteMeter::filtered`]).
pub fn filtered(route_name: &str) {
    RouteMeter::new(route_name).filtered();
}

/// The receiver answered 2xx (see [`RouteMeter::delivered`]).
pub fn delivered(route_name: &str, latency: Duration, lag: Option<Duration>) {
    RouteMeter::new(route_name).delivered(latency, lag);
}

/// One HTTP attempt failed (see [`RouteMeter::attempt_failed`]).
pub fn attempt_failed(route_name: &str, failure: AttemptFailure) {
    RouteMeter::new(route_name).attempt_failed(failure);
}

/// A retry was scheduled (see [`RouteMeter::retried`]).
pub fn retried(route_name: &str) {
    RouteMeter::new(route_name).retried();
}

/// An event was dead-lettered, after its dead letter was confirmed (see
/// [`RouteMeter::dead_lettered`]).
pub fn dead_lettered(route_name: &str, reason: Reason) {
    RouteMeter::new(route_name).dead_lettered(reason);
}

/// One delivery in progress: [`IN_FLIGHT`] counts it until this is dropped.
#[derive(Debug)]
#[must_use = "the delivery counts as in flight only while this lives"]
pub struct InFlight(Option<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.decrement(1.0);
        }
    }
}

/// Counts a delivery as in flight until the returned guard is dropped (see
/// [`RouteMeter::in_flight`]).
pub fn in_flight(route_name: &str) -> InFlight {
    RouteMeter::new(route_name).in_flight()
}

/// Messages ready in the route's queue, as just read from the broker (a periodic poll, never
/// per event).
pub fn queue_depth(route_name: &str, ready: u64) {
    if let Some(inst) = INSTALLED.get() {
        inst.states.lock().unwrap_or_else(|p| p.into_inner()).queue_depth.insert(route_name.to_string(), ready);
    }
}

/// The route was removed by a reload: its queue depth is no longer shown
/// (its counters stay, as Prometheus expects of counters).
pub fn route_removed(route_name: &str) {
    if let Some(inst) = INSTALLED.get() {
        let mut st = inst.states.lock().unwrap_or_else(|p| p.into_inner());
        st.queue_depth.remove(route_name);
    }
}

/// A config is live (at start and after every applied reload): [`CONFIG_INFO`] shows this
/// version and revision only.
pub fn config_loaded(version: u64, revision: &str) {
    if let Some(inst) = INSTALLED.get() {
        inst.states.lock().unwrap_or_else(|p| p.into_inner()).config = Some((version, revision.to_string()));
        inst.last_reload_ok.set(1.0);
    }
}

/// A reload finished. Call [`config_loaded`] too when it was applied.
pub fn reload(result: ReloadResult) {
    if let Some(inst) = INSTALLED.get() {
        let i = match result {
            ReloadResult::Applied => 0,
            ReloadResult::Rejected => 1,
        };
        inst.reloads[i].increment(1);
        inst.last_reload_ok.set(if result == ReloadResult::Applied { 1.0 } else { 0.0 });
    }
}

/// Time since `time` (an event's `time`, see [`crate::event::parse_time`]): `None` when it lies in
/// the future (clock skew between producer and router).
pub fn lag(time: SystemTime) -> Option<Duration> {
    SystemTime::now().duration_since(time).ok()
}

#[cfg(test)]
mod tests;
