//! The router: one consumer per route, and the at-least-once rules, which live here and nowhere
//! else. A message is acked only after a 2xx, after its dead letter is confirmed by the broker,
//! after a filter dropped it, or after its retry is confirmed into a wait queue.
//!
//! Ordered routes (single active consumer) handle one message at a time and retry in place, so
//! later events wait. Unordered routes run up to `concurrency` deliveries at once and retry
//! through the wait queues, so one failing event blocks nothing.
//!
//! Shutdown (SIGTERM/SIGINT): stop taking messages, let in-flight deliveries finish and ack
//! within the grace period, then close the connection, which returns every unacked message to
//! its queue in order. Consumers are never cancelled while holding unacked messages: on a
//! single-active-consumer queue that would let the next consumer overtake them.
//!
//! Observability: each worker reports through its route's [`metrics::RouteMeter`] (consumed,
//! filtered, each attempt's result, delivered with latency and lag, retried, dead-lettered by
//! reason, in flight); each message runs in an event span and each HTTP attempt in an attempt
//! span ([`telemetry`]), whose context is the `traceparent` the receiver gets. Queue depths are
//! polled from the broker every 15 s, never per event. Logs name the route, event, attempt,
//! status and reason of every failure, never the payload.

use crate::broker::dead_letters::{self, DeadLetter};
use crate::broker::{
    Broker, BrokerError, Consumer, H_ATTEMPT, H_NOT_BEFORE, H_TRACEPARENT, Message, RouteTopology, now_ms,
};
use crate::config::{Route, Snapshot};
use crate::delivery::attempt::{Attempt as Send, Sequencer};
use crate::delivery::http::client::WebhookClient;
use crate::delivery::verdict::{self, Reason, Verdict};
use crate::metrics::{self, ReloadResult};
use crate::pipeline::{self, Payload, Prepared, Rejection};
use crate::store::log::AttemptLog;
use crate::store::{Attempt, Outcome, Store};
use crate::telemetry;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// The outcome of a reload, as the log, the API and the metrics report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new config is live.
    Applied {
        /// `version` of the new config.
        version: u64,
        /// Its revision.
        revision: String,
        /// Routes that started.
        added: Vec<String>,
        /// Routes that stopped (after their in-flight deliveries).
        removed: Vec<String>,
        /// Routes whose files changed; their new config applies to deliveries that start now.
        changed: Vec<String>,
    },
    /// The old config keeps running.
    Rejected {
        /// Every reason, `file:line:col: message` where there is a place.
        errors: Vec<String>,
    },
}

/// Reload counters and the last outcome, for the log, the API and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads rejected since start.
    pub rejected: u64,
    /// The last outcome.
    pub last: Option<ReloadOutcome>,
    /// The errors of the last rejected reload, kept until one is applied.
    pub last_error: Option<Vec<String>>,
}

struct ReloadRequest {
    snapshot: Arc<Snapshot>,
    reply: oneshot::Sender<ReloadOutcome>,
}

/// The running router: the live config snapshot (swapped atomically on reload), the HTTP
/// client, the sequencer, and the link to the current broker session.
pub struct Router {
    store: Option<Arc<dyn Store>>,
    log: Option<Arc<AttemptLog>>,
    live: ArcSwap<Snapshot>,
    client: ArcSwap<WebhookClient>,
    sequencer: Sequencer,
    session: std::sync::Mutex<Option<mpsc::Sender<ReloadRequest>>>,
    broker: std::sync::RwLock<Option<Arc<dyn Broker>>>,
    status: std::sync::Mutex<ReloadStatus>,
    reloading: tokio::sync::Mutex<()>,
    gone: mpsc::UnboundedSender<Gone>,
    gone_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Gone>>>,
}

/// A receiver answered `410 Gone` on an API-managed route: the subscription is to be disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// The subscription's id.
    pub subscription: String,
    /// The route (the subscription's name).
    pub route: String,
    /// The event whose delivery got the 410.
    pub event_id: String,
}

impl Router {
    /// A router for an initial, valid config, recording attempts in `log` and indexing dead
    /// letters into `store` when given.
    pub fn new(snapshot: Snapshot, store: Option<(Arc<dyn Store>, Arc<AttemptLog>)>) -> Arc<Self> {
        let (store, log) = store.map_or((None, None), |(s, l)| (Some(s), Some(l)));
        let (gone, gone_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            store,
            log,
            client: ArcSwap::from_pointee(WebhookClient::new(snapshot.security, &snapshot.extra_roots)),
            live: ArcSwap::from_pointee(snapshot),
            sequencer: Sequencer::default(),
            session: std::sync::Mutex::new(None),
            broker: std::sync::RwLock::new(None),
            status: std::sync::Mutex::new(ReloadStatus::default()),
            reloading: tokio::sync::Mutex::new(()),
            gone,
            gone_rx: std::sync::Mutex::new(Some(gone_rx)),
        })
    }

    /// The config now live.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// The broker connection now live, if there is one (for publishing from the API).
    pub fn broker(&self) -> Option<Arc<dyn Broker>> {
        self.broker.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The webhook client now live (for test sends from the API).
    pub fn client(&self) -> Arc<WebhookClient> {
        self.client.load_full()
    }

    /// The sequencer of every delivery (for test sends from the API).
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The delivery log, when the router records attempts.
    pub fn attempt_log(&self) -> Option<&Arc<AttemptLog>> {
        self.log.as_ref()
    }

    /// The stream of `410 Gone` answers on API-managed routes; the first caller takes it.
    pub fn take_gone(&self) -> Option<mpsc::UnboundedReceiver<Gone>> {
        self.gone_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Reload counters and the last outcome.
    pub fn reload_status(&self) -> ReloadStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a config that failed to load: the old one keeps running.
    pub fn reject(&self, errors: Vec<String>) -> ReloadOutcome {
        let outcome = ReloadOutcome::Rejected { errors };
        self.record(&outcome);
        outcome
    }

    fn record(&self, outcome: &ReloadOutcome) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            ReloadOutcome::Applied { version, revision, added, removed, changed } => {
                st.applied += 1;
                st.last_error = None;
                info!(version, %revision, ?added, ?removed, ?changed, "config reloaded");
                metrics::reload(ReloadResult::Applied);
                metrics::config_loaded(*version, revision);
                for name in removed {
                    metrics::route_removed(name);
                }
            }
            ReloadOutcome::Rejected { errors } => {
                metrics::reload(ReloadResult::Rejected);
                st.rejected += 1;
                st.last_error = Some(errors.clone());
                for e in errors {
                    error!("reload rejected: {e}");
                }
                let old = self.live.load();
                warn!(version = old.version, revision = %old.revision, "the previous config keeps running");
            }
        }
        st.last = Some(outcome.clone());
    }

    /// Applies a new config loaded from disk, with the running API-managed routes merged in:
    /// checked against the running one, its topology declared before anything running is
    /// touched, then swapped in atomically.
    pub async fn reload(&self, new: Snapshot) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let api = api_routes(&self.live.load());
        let outcome = match new.with_api_routes(&api) {
            Ok(merged) => self.apply(merged).await,
            Err(errors) => ReloadOutcome::Rejected { errors },
        };
        self.record(&outcome);
        outcome
    }

    /// Replaces the API-managed routes (subscriptions) through the same machinery as a reload.
    /// The file config is unchanged; the outcome is logged as `subscriptions applied`.
    pub async fn set_api_routes(&self, api: Vec<Arc<Route>>) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = match self.live.load().with_api_routes(&api) {
            Ok(merged) => self.apply(merged).await,
            Err(errors) => ReloadOutcome::Rejected { errors },
        };
        match &outcome {
            ReloadOutcome::Applied { added, removed, changed, .. } => {
                if !(added.is_empty() && removed.is_empty() && changed.is_empty()) {
                    info!(?added, ?removed, ?changed, "subscriptions applied");
                }
                for name in removed {
                    metrics::route_removed(name);
                }
            }
            ReloadOutcome::Rejected { errors } => {
                for e in errors {
                    error!("subscriptions not applied: {e}");
                }
            }
        }
        outcome
    }

    async fn apply(&self, new: Snapshot) -> ReloadOutcome {
        let new = Arc::new(new);
        let refusals = refusals(&self.live.load(), &new);
        if !refusals.is_empty() {
            return ReloadOutcome::Rejected { errors: refusals };
        }
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let via_session = match session {
            Some(tx) => {
                let (reply, answer) = oneshot::channel();
                match tx.send(ReloadRequest { snapshot: new.clone(), reply }).await {
                    Ok(()) => answer.await.ok(),
                    Err(_) => None,
                }
            }
            None => None,
        };
        // Without a live session the topology is declared when the next one starts.
        via_session.unwrap_or_else(|| self.swap(new))
    }

    fn swap(&self, new: Arc<Snapshot>) -> ReloadOutcome {
        let old = self.live.load_full();
        if old.security != new.security || old.extra_roots != new.extra_roots {
            self.client.store(Arc::new(WebhookClient::new(new.security, &new.extra_roots)));
        }
        let names = |s: &Snapshot| s.routes.iter().map(|r| r.name.clone()).collect::<std::collections::BTreeSet<_>>();
        let (before, after) = (names(&old), names(&new));
        let changed = new
            .routes
            .iter()
            .filter(|r| old.route(&r.name).is_some_and(|o| o.digest != r.digest))
            .map(|r| r.name.clone())
            .collect();
        let outcome = ReloadOutcome::Applied {
            version: new.version,
            revision: new.revision.clone(),
            added: after.difference(&before).cloned().collect(),
            removed: before.difference(&after).cloned().collect(),
            changed,
        };
        self.live.store(new);
        outcome
    }

    /// Runs until `shutdown` is cancelled, reconnecting to RabbitMQ with backoff.
    ///
    /// A route whose queue cannot be declared as configured (RabbitMQ refuses to change a
    /// queue's arguments in place) is reported and left stopped while the other routes run; the
    /// process stays up rather than exiting into a restart loop that could not fix it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let s = self.snapshot();
        info!(version = s.version, revision = %s.revision, routes = s.routes.len(), "config loaded");
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let s = self.snapshot();
            let name = format!("hookrelay {} pid {}", env!("CARGO_PKG_VERSION"), std::process::id());
            match crate::broker::connect(&s.broker, &s.broker_kind, &name).await {
                Ok(broker) => {
                    backoff = Duration::from_millis(500);
                    if let Err(why) = self.session(broker, &shutdown).await {
                        warn!(error = %why, "connection to the broker lost; reconnecting");
                    }
                }
                Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot connect to the broker"),
            }
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff.mul_f64(1.0 + fastrand::f64() * 0.2)) => {}
            }
            backoff = (backoff * 2).min(s.broker.reconnect_max.0);
        }
        info!("stopped");
    }

    /// One connection's life: declare, consume, apply reloads, and wind down on shutdown or
    /// loss (`Err(why)`).
    async fn session(self: &Arc<Self>, broker: Arc<dyn Broker>, shutdown: &CancellationToken) -> Result<(), String> {
        let snap = self.snapshot();
        broker.declare_base().await.map_err(|e| e.to_string())?;
        let mut s = Session {
            router: self.clone(),
            broker,
            running: BTreeMap::new(),
            retiring: JoinSet::new(),
            lost: CancellationToken::new(),
            lost_why: Arc::default(),
            indexer: None,
            indexer_stop: CancellationToken::new(),
        };
        if let Some(store) = &self.store {
            let (lost, why, stop) = (s.lost.clone(), s.lost_why.clone(), s.indexer_stop.clone());
            let (store, broker) = (store.clone(), s.broker.clone());
            s.indexer = Some(tokio::spawn(async move {
                if let Err(e) = dead_letters::index(broker, store, stop).await {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = e;
                    lost.cancel();
                }
            }));
        }
        let mut failed = Vec::new();
        let declared = s.declare_all(&snap, &snap.routes).await;
        for (route, result) in declared {
            match result {
                Ok(()) => s.consume(&snap, route.clone()).await.map_err(|e| e.to_string())?,
                Err(e @ BrokerError::Mismatch { .. }) => {
                    error!(route = %route.name, error = %e, "route not started");
                    failed.push(format!("{}: {e}", route.name));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if !failed.is_empty() {
            error!(not_started = failed.len(), "some routes are not running: {}", failed.join("; "));
        }
        for r in &snap.routes {
            // Where webhooks go, without what a URL may carry that is secret (user info, query).
            let target = format!(
                "{}://{}{}{}",
                r.url.scheme_str().unwrap_or("https"),
                r.url.host().unwrap_or_default(),
                r.url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                r.url.path()
            );
            info!(route = %r.name, %target, ordered = r.ordered, events = ?r.events, "route");
        }
        info!(routes = s.running.len(), broker = s.broker.kind(), "consuming");
        let depths_stop = CancellationToken::new();
        tokio::spawn(poll_queue_depths(self.clone(), s.broker.clone(), depths_stop.clone()));
        let (tx, mut requests) = mpsc::channel::<ReloadRequest>(1);
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        *self.broker.write().unwrap_or_else(|p| p.into_inner()) = Some(s.broker.clone());

        let broker = s.broker.clone();
        let conn_lost = broker.lost();
        tokio::pin!(conn_lost);
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break None,
                _ = s.lost.cancelled() => break Some(s.lost_why.lock().unwrap_or_else(|p| p.into_inner()).clone()),
                why = &mut conn_lost => break Some(why),
                Some(req) = requests.recv() => {
                    let out = s.apply(req.snapshot).await;
                    let _ = req.reply.send(out);
                }
                Some(_) = s.retiring.join_next(), if !s.retiring.is_empty() => {}
            }
        };
        depths_stop.cancel();
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.broker.write().unwrap_or_else(|p| p.into_inner()) = None;
        s.wind_down().await;
        match outcome {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }
}

/// How often the routes' queue depths are read from the broker.
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(15);

/// Reads the depth of every configured route's queue from the broker now and then every
/// [`QUEUE_DEPTH_EVERY`], for [`metrics::queue_depth`] (routes that did not start included: a
/// queue that grows because nobody consumes it is what the metric is for). Never per event;
/// not at all when no metrics recorder is installed.
async fn poll_queue_depths(router: Arc<Router>, broker: Arc<dyn Broker>, stop: CancellationToken) {
    if metrics::handle().is_none() {
        return;
    }
    let mut every = tokio::time::interval(QUEUE_DEPTH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let routes: Vec<(String, String)> =
            router.snapshot().routes.iter().map(|r| (r.name.clone(), r.queue())).collect();
        let read = futures_util::stream::iter(routes)
            .map(|(name, queue)| {
                let broker = broker.clone();
                async move { (name, broker.queue_depth(&queue).await) }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>();
        let depths = tokio::select! {
            _ = stop.cancelled() => return,
            d = read => d,
        };
        // A reload may have removed a route meanwhile: its depth is not shown again.
        let live = router.snapshot();
        for (name, depth) in depths {
            match depth {
                Ok(n) if live.route(&name).is_some() => metrics::queue_depth(&name, n),
                Ok(_) => {}
                Err(e) => debug!(route = %name, error = %e, "cannot read the queue depth"),
            }
        }
    }
}

/// The API-managed routes of a snapshot.
fn api_routes(s: &Snapshot) -> Vec<Arc<Route>> {
    s.routes.iter().filter(|r| matches!(r.origin, crate::config::Origin::Api { .. })).cloned().collect()
}

/// What RabbitMQ or the running process cannot change by a reload.
fn refusals(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&old.broker, &new.broker);
    if old.store != new.store {
        out.push(format!(
            "{}: [store] applies at start only: restart hookrelay to change it",
            crate::config::MAIN_FILE
        ));
    }
    if a.url != b.url || a.exchange != b.exchange || a.delivery_limit != b.delivery_limit {
        out.push(format!(
            "{}: [broker] url, exchange and delivery_limit apply at start only: restart hookrelay to change them",
            crate::config::MAIN_FILE
        ));
    }
    if (old.api.enabled, &old.api.listen) != (new.api.enabled, &new.api.listen) {
        out.push(format!(
            "{}: [api] enabled and listen apply at start only (the socket is bound once): restart hookrelay to \
             change them (keys and secret_overlap do reload)",
            crate::config::MAIN_FILE
        ));
    }
    if old.telemetry != new.telemetry {
        out.push(format!(
            "{}: [telemetry] applies at start only (the trace exporter is built once): restart hookrelay to change it",
            crate::config::MAIN_FILE
        ));
    }
    if old.broker_kind != new.broker_kind {
        out.push(format!(
            "{}: which broker runs ([broker] present or not) and [embedded] apply at start only: restart hookrelay \
             to change them",
            crate::config::MAIN_FILE
        ));
    }
    for r in &new.routes {
        if let Some(o) = old.route(&r.name)
            && o.ordered != r.ordered
        {
            let place = match &r.origin {
                crate::config::Origin::File { file } => file.clone(),
                crate::config::Origin::Api { subscription } => format!("subscription {subscription}"),
            };
            out.push(format!(
                "{place}: route `{}` changes `ordered` from {} to {}, which the broker cannot apply to queue {} \
                 in place (x-single-active-consumer). Nothing was changed. To switch: remove the route and reload, \
                 let its queue drain, delete the queue, then add the route back — or add it under a new name",
                r.name,
                o.ordered,
                r.ordered,
                r.queue()
            ));
        }
    }
    out
}

/// How many routes' topology goes to the broker at once, at start and on reload. Declaring a
/// route (its queue, wait queues and bindings) or unbinding it is a few round trips on a channel
/// of its own: these overlap instead of adding up (the broker's own work, a quorum queue's log,
/// then bounds the time), and a config of thousands of routes opens no more than 16 at once.
const TOPOLOGY_AT_ONCE: usize = 16;

/// Runs `op` on every item, up to [`TOPOLOGY_AT_ONCE`] at once, and returns the outputs in the
/// items' order. One operation failing cancels none of the others.
async fn at_once<I, F, Fut>(items: I, op: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future,
{
    futures_util::stream::iter(items).map(op).buffered(TOPOLOGY_AT_ONCE).collect().await
}

/// A route's failed declaration as a rejected reload reports it: the route and the queue.
fn declare_error(route: &Route, e: &BrokerError) -> String {
    match e {
        // It names the queue the broker refused: the route's, or a wait queue.
        BrokerError::Mismatch { .. } => format!("route `{}`: {e}", route.name),
        _ => format!("route `{}` (queue {}): {e}", route.name, route.queue()),
    }
}

/// A consuming route in a session.
struct RouteHandle {
    route: Arc<ArcSwap<Route>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    concurrency: usize,
}

/// The routes consuming over one connection.
struct Session {
    router: Arc<Router>,
    broker: Arc<dyn Broker>,
    running: BTreeMap<String, RouteHandle>,
    retiring: JoinSet<()>,
    lost: CancellationToken,
    lost_why: Arc<std::sync::Mutex<String>>,
    indexer: Option<tokio::task::JoinHandle<()>>,
    indexer_stop: CancellationToken,
}

impl Session {
    fn topology<'a>(snap: &Snapshot, route: &'a Route, queue: &'a str) -> RouteTopology<'a> {
        RouteTopology {
            name: &route.name,
            queue,
            patterns: &route.events,
            ordered: route.ordered,
            delivery_limit: snap.broker.delivery_limit,
            tiers: if route.ordered { Vec::new() } else { route.retry.tiers() },
        }
    }

    /// Declares a route's queues and bindings.
    async fn declare(&self, snap: &Snapshot, route: &Route) -> Result<(), BrokerError> {
        let queue = route.queue();
        self.broker.declare_route(&Self::topology(snap, route, &queue)).await
    }

    /// Starts consuming a declared route.
    async fn consume(&mut self, snap: &Snapshot, route: Arc<Route>) -> Result<(), BrokerError> {
        let prefetch =
            if route.ordered { snap.broker.prefetch } else { snap.broker.prefetch.max(route.concurrency as u16) };
        let consumer = self.broker.consume(&route.queue(), prefetch).await?;
        let stop = CancellationToken::new();
        let live = Arc::new(ArcSwap::new(route.clone()));
        let w = Worker {
            router: self.router.clone(),
            route: live.clone(),
            ordered: route.ordered,
            broker: self.broker.clone(),
            stop: stop.clone(),
            meter: metrics::RouteMeter::new(&route.name),
        };
        let (lost, why) = (self.lost.clone(), self.lost_why.clone());
        let span = info_span!("route", route = %route.name);
        let concurrency = route.concurrency;
        let task = tokio::spawn(
            async move {
                if let Err(e) = w.run(consumer, concurrency).await {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = e;
                    lost.cancel();
                }
            }
            .instrument(span),
        );
        let name = live.load().name.clone();
        self.running.insert(name, RouteHandle { route: live, stop, task, concurrency });
        Ok(())
    }

    /// Stops a route after its in-flight deliveries; its worker then closes its consumer, which
    /// returns the messages it had prefetched to the queue.
    fn retire(&mut self, h: RouteHandle) {
        h.stop.cancel();
        self.retiring.spawn(async move {
            let _ = h.task.await;
        });
    }

    /// Declares the queues and bindings of `routes`, [`TOPOLOGY_AT_ONCE`] routes at a time, at
    /// start and on reload: each route with its result, in the order given. Every declaration
    /// runs to its end, so a caller learns every failure and which routes were declared.
    async fn declare_all<'r>(
        &self,
        snap: &Snapshot,
        routes: impl IntoIterator<Item = &'r Arc<Route>>,
    ) -> Vec<(&'r Arc<Route>, Result<(), BrokerError>)> {
        at_once(routes, |route| async move { (route, self.declare(snap, route).await) }).await
    }

    /// Removes bindings, given as (route, patterns), [`TOPOLOGY_AT_ONCE`] routes at a time. A
    /// binding that cannot be removed is logged and stays: its queue keeps receiving those
    /// events, so nothing is lost.
    async fn unbind_all(&self, unbinds: Vec<(String, Vec<String>)>) {
        let unbinds = unbinds.into_iter().filter(|(_, patterns)| !patterns.is_empty());
        let done = at_once(unbinds, |(route, patterns)| async move {
            let result = self.broker.unbind(&crate::config::route_queue(&route), &patterns).await;
            (route, patterns, result)
        })
        .await;
        for (route, patterns, result) in done {
            if let Err(e) = result {
                warn!(route = %route, ?patterns, error = %e, "could not remove a binding");
            }
        }
    }

    /// Applies a reload: topology first (a failure changes nothing), then the swap, then the
    /// bindings the new config no longer has. Declarations and unbindings go to the broker
    /// [`TOPOLOGY_AT_ONCE`] routes at a time, as at start.
    ///
    /// - Before the swap, the queues, wait queues and bindings of every new or changed route are
    ///   declared. If any is refused, the reload is rejected with every error, each naming its
    ///   route and queue; the old config keeps serving what it served (the bindings the other
    ///   declarations added stay, see below).
    /// - After the swap, running routes take their new config and new routes start; then the
    ///   patterns a route dropped, and those of removed routes, are unbound (not before the swap:
    ///   until then the old config still serves them, so no event is lost in between); then
    ///   removed routes stop after their in-flight deliveries.
    async fn apply(&mut self, new: Arc<Snapshot>) -> ReloadOutcome {
        let old = self.router.snapshot();
        // Only routes whose queues or bindings change go to the broker: a reload of many
        // unchanged routes costs no round trips.
        let touched = new.routes.iter().filter(|route| {
            let unchanged = self.running.get(&route.name).is_some_and(|h| h.concurrency == route.concurrency)
                && old
                    .route(&route.name)
                    .is_some_and(|o| o.events == route.events && o.retry.tiers() == route.retry.tiers());
            !unchanged
        });
        let declared = self.declare_all(&new, touched).await;
        let errors: Vec<String> =
            declared.iter().filter_map(|(route, r)| r.as_ref().err().map(|e| declare_error(route, e))).collect();
        if !errors.is_empty() {
            // The bindings the other declarations added stay: the old config's queue of a route
            // may then also receive events of the route's new patterns, delivered under the old
            // config until a reload applies, which loses nothing. Removing them could: replicas
            // share the route queues, and one whose reload failed for a passing reason (a dropped
            // channel) would unbind what a replica that applied the same config relies on.
            return ReloadOutcome::Rejected { errors };
        }
        let outcome = self.router.swap(new.clone());
        let mut unbinds = Vec::new();
        for route in &new.routes {
            if let Some(o) = old.route(&route.name) {
                unbinds.push((
                    route.name.clone(),
                    o.events.iter().filter(|p| !route.events.contains(p)).cloned().collect(),
                ));
            }
            match self.running.get(&route.name) {
                // Same worker; deliveries that start from now use the new config.
                Some(h) if h.concurrency == route.concurrency => h.route.store(route.clone()),
                _ => {
                    if let Some(h) = self.running.remove(&route.name) {
                        self.retire(h);
                    }
                    if let Err(e) = self.consume(&new, route.clone()).await {
                        warn!(route = %route.name, error = %e, "route did not start");
                    }
                }
            }
        }
        let removed: Vec<String> = self.running.keys().filter(|n| new.route(n).is_none()).cloned().collect();
        unbinds.extend(removed.iter().filter_map(|name| Some((name.clone(), old.route(name)?.events.clone()))));
        self.unbind_all(unbinds).await;
        for name in removed {
            if let Some(h) = self.running.remove(&name) {
                self.retire(h);
            }
        }
        outcome
    }

    /// Stops every route within the grace period, then closes the connection, which returns
    /// every unacked message to its queue, in order.
    async fn wind_down(mut self) {
        let grace = self.router.snapshot().delivery.shutdown_grace.0;
        let handles: Vec<RouteHandle> = std::mem::take(&mut self.running).into_values().collect();
        for h in &handles {
            h.stop.cancel();
        }
        let mut tasks: JoinSet<()> = JoinSet::new();
        for h in handles {
            let task = h.task;
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
        let drained = tokio::time::timeout(grace, async {
            loop {
                tokio::select! {
                    next = tasks.join_next() => if next.is_none() { break },
                    next = self.retiring.join_next(), if !self.retiring.is_empty() => { let _ = next; }
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        info!(routes = tasks.len(), "waiting for in-flight deliveries to finish");
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(?grace, "grace period over: unfinished deliveries go back to their queues");
        }
        self.indexer_stop.cancel();
        if let Some(indexer) = self.indexer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), indexer).await;
        }
        self.broker.close().await;
    }
}

struct Worker {
    router: Arc<Router>,
    /// Swapped by reloads; each delivery reads it once when it starts.
    route: Arc<ArcSwap<Route>>,
    ordered: bool,
    broker: Arc<dyn Broker>,
    stop: CancellationToken,
    /// The route's metrics (a reload keeps the route's name, so the handles stay right).
    meter: metrics::RouteMeter,
}

/// What happened to one message.
enum Handled {
    /// Acked (delivered, filtered, dead-lettered or parked for a retry).
    Done,
    /// Left unacked because the route is stopping: the broker gives it back on close.
    Abandoned,
}

impl Worker {
    /// Consumes until stopped or the consumer fails, then closes the consumer once every
    /// delivery in flight has ended, which gives the unacked messages back in order.
    async fn run(self, mut consumer: Box<dyn Consumer>, concurrency: usize) -> Result<(), String> {
        let this = Arc::new(self);
        let limit = if this.ordered { 1 } else { concurrency };
        let slots = Arc::new(Semaphore::new(limit));
        let mut inflight: JoinSet<Result<Handled, BrokerError>> = JoinSet::new();
        let mut result = Ok(());
        loop {
            while let Some(done) = inflight.try_join_next() {
                if let Err(e) = flatten(done) {
                    result = Err(e);
                }
            }
            if result.is_err() {
                break;
            }
            let permit = tokio::select! {
                _ = this.stop.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("never closed"),
            };
            let next = tokio::select! {
                _ = this.stop.cancelled() => break,
                d = consumer.next() => d,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    result = Err(format!("consumer failed: {e}"));
                    break;
                }
                None => {
                    result = Err("consumer closed by the broker".into());
                    break;
                }
            };
            let w = this.clone();
            inflight.spawn(
                async move {
                    let out = w.handle(delivery).await;
                    drop(permit);
                    out
                }
                .in_current_span(),
            );
            if this.ordered {
                // One delivery at a time: wait for it before taking the next message.
                if let Some(done) = inflight.join_next().await {
                    match flatten(done) {
                        Ok(Handled::Done) => {}
                        Ok(Handled::Abandoned) => break,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
            }
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = flatten(done) {
                result = result.and(Err(e));
            }
        }
        consumer.close().await;
        result
    }

    async fn handle(&self, d: Message) -> Result<Handled, BrokerError> {
        let snap = self.router.live.load_full();
        let route = self.route.load_full();
        if let Some(nb) = d.headers.u64(H_NOT_BEFORE) {
            let now = now_ms();
            if nb > now + 50 {
                // Back early from a wait queue (its wait is capped by the tier): wait again.
                // Not counted as consumed: the event has not come back for its attempt yet.
                let attempt = d.headers.u64(H_ATTEMPT).unwrap_or(1) as u32;
                return self.park(&route, &d, attempt, Duration::from_millis(nb - now)).await;
            }
        }
        self.meter.consumed();
        let _busy = self.meter.in_flight();
        let attempt = d.headers.u64(H_ATTEMPT).unwrap_or(1).max(1) as u32;
        // The producer's trace context: the message header (AMQP producers and the ingest API)
        // wins over the event's `traceparent` extension.
        let header_tp = d.headers.str(H_TRACEPARENT).filter(|tp| telemetry::parse_traceparent(tp).is_some());
        // The pipeline runs before the span is made, so that the event's own `traceparent` can
        // still become the span's parent.
        let payload = match pipeline::prepare(&snap, &route, &d.body) {
            Ok(Prepared::Deliver(p)) => p,
            Ok(Prepared::Filtered) => {
                self.meter.filtered();
                return async {
                    debug!("filtered out");
                    ack(&d).await
                }
                .instrument(telemetry::event_span(&route.name, header_tp))
                .await;
            }
            Err(rej) => {
                let span = telemetry::event_span(&route.name, header_tp);
                return self.refuse(&snap, &route, &d, rej, attempt, span, header_tp).await;
            }
        };
        let traceparents = [header_tp, payload.traceparent.as_deref()];
        let span = telemetry::decoded_event_span(&route.name, traceparents, &payload.event_id, &payload.event_type);
        self.deliver(&snap, &route, &d, &payload, attempt, header_tp).instrument(span).await
    }

    /// Dead-letters an event the pipeline refused. The log says which event and why, never its
    /// data: schema violations by path only (their messages quote the data; the dead letter
    /// keeps them).
    #[allow(clippy::too_many_arguments)] // one refused message and what `handle` knows of it
    async fn refuse(
        &self,
        snap: &Snapshot,
        route: &Route,
        d: &Message,
        rej: Rejection,
        attempt: u32,
        span: tracing::Span,
        header_tp: Option<&str>,
    ) -> Result<Handled, BrokerError> {
        // Only on this rare path: the ids, read again from an event that did not pass.
        let ids = (rej.reason != Reason::TooLarge).then(|| EventIds::peek(&d.body)).flatten();
        if let Some(ids) = &ids {
            if header_tp.is_none()
                && let Some(tp) = ids.traceparent.as_deref()
            {
                telemetry::set_parent(&span, tp);
            }
            telemetry::record_event(
                &span,
                ids.id.as_deref().unwrap_or_default(),
                ids.ty.as_deref().unwrap_or_default(),
            );
        }
        async {
            let reason = rej.reason.as_str();
            if rej.reason == Reason::Schema {
                let paths: Vec<&str> =
                    rej.violations.iter().map(|v| if v.path.is_empty() { "/" } else { v.path.as_str() }).collect();
                warn!(revision = %snap.revision, reason, violations = rej.violations.len(), paths = %paths.join(", "), "event refused (its data does not match the schema; the dead letter has the details); dead-lettering");
            } else {
                warn!(revision = %snap.revision, reason, error = %rej.message, "event refused; dead-lettering");
            }
            let details =
                (!rej.violations.is_empty()).then(|| serde_json::to_value(&rej.violations).unwrap_or_default());
            self.dead_letter(route, d, rej.reason, &rej.message, details, None, None, attempt - 1).await
        }
        .instrument(span)
        .await
    }

    /// The attempts of one event, inside its span: one span per attempt, whose context is the
    /// `traceparent` the receiver gets.
    async fn deliver(
        &self,
        snap: &Snapshot,
        route: &Route,
        d: &Message,
        payload: &Payload,
        first_attempt: u32,
        header_tp: Option<&str>,
    ) -> Result<Handled, BrokerError> {
        let client = self.router.client.load_full();
        let sequence = self.router.sequencer.of(payload);
        // With traces off, every attempt sends the producer's traceparent, or one made once for
        // this event, so that all attempts share a trace.
        let incoming: Cow<'_, str> = match header_tp
            .or_else(|| payload.traceparent.as_deref().filter(|tp| telemetry::parse_traceparent(tp).is_some()))
        {
            Some(tp) => Cow::Borrowed(tp),
            None => Cow::Owned(telemetry::new_traceparent()),
        };
        let keep = snap.limits.response_body_bytes;
        let mut attempt = first_attempt;
        loop {
            let send = Send { route, payload, sequence: &sequence, number: attempt, traceparent: &incoming };
            let result = send.send(&client, keep).await;
            let verdict = verdict::decide(&result, &route.retry, attempt, route.ordered, fastrand::f64());
            let (status, error, ms) = (result.status(), result.error(), result.duration().as_millis() as u64);
            let body = result.response().map(|r| r.body.as_str());
            if let Some(log) = &self.router.log {
                let outcome = match verdict {
                    Verdict::Delivered => Outcome::Delivered,
                    Verdict::RetryInPlace(_) | Verdict::Park(_) => Outcome::Retrying,
                    Verdict::DeadLetter(_) => Outcome::Dead,
                };
                log.record(Attempt {
                    route: route.name.clone(),
                    event_id: payload.event_id.clone(),
                    event_type: payload.event_type.clone(),
                    attempt,
                    outcome,
                    status,
                    duration_ms: ms,
                    response_body: body.map(str::to_string),
                    error: (outcome != Outcome::Delivered).then(|| error.clone()),
                    payload: route.log_payload.then(|| payload.body.to_vec()),
                    event: route.log_payload.then(|| d.body.to_vec()),
                    config_version: snap.version,
                    config_revision: snap.revision.clone(),
                    at_ms: now_ms() as i64,
                });
            }
            let Some(failure) = result.failure() else {
                self.meter.delivered(result.duration(), payload.time.and_then(metrics::lag));
                debug!(revision = %snap.revision, attempt, status, ms, "delivered");
                return ack(d).await;
            };
            self.meter.attempt_failed(failure);
            match verdict {
                Verdict::Delivered => return ack(d).await,
                Verdict::Park(delay) | Verdict::RetryInPlace(delay) => {
                    warn!(revision = %snap.revision, attempt, status, reason = failure.as_str(), error = %error, retry_in = ?delay, "delivery failed; will retry");
                    if let Verdict::Park(_) = verdict {
                        let parked = self.park(route, d, attempt + 1, delay).await;
                        if parked.is_ok() {
                            self.meter.retried();
                        }
                        return parked;
                    }
                    // Ordered: retry in place; later events wait behind this one.
                    self.meter.retried();
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(Handled::Abandoned),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
                Verdict::DeadLetter(reason) => {
                    warn!(revision = %snap.revision, attempt, status, reason = reason.as_str(), failure = failure.as_str(), error = %error, "delivery failed; dead-lettering");
                    if let (Reason::Gone, crate::config::Origin::Api { subscription }) = (reason, &route.origin) {
                        let _ = self.router.gone.send(Gone {
                            subscription: subscription.clone(),
                            route: route.name.clone(),
                            event_id: payload.event_id.clone(),
                        });
                    }
                    return self.dead_letter(route, d, reason, &error, None, status, body, attempt).await;
                }
            }
        }
    }

    /// Parks a message for a later attempt (a confirmed publish into the broker's delay), then
    /// acks it.
    async fn park(
        &self,
        route: &Route,
        d: &Message,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<Handled, BrokerError> {
        let mut headers = d.headers.clone();
        headers.set(H_ATTEMPT, next_attempt);
        headers.set(H_NOT_BEFORE, now_ms() + delay.as_millis() as u64);
        headers.remove("x-death");
        let tier = route.retry.tier_for(delay);
        self.broker.publish_delayed(&route.queue(), tier, &d.body, &headers, delay).await?;
        ack(d).await
    }

    #[allow(clippy::too_many_arguments)] // the fields of one dead letter, from two call sites
    async fn dead_letter(
        &self,
        route: &Route,
        d: &Message,
        reason: Reason,
        error: &str,
        details: Option<serde_json::Value>,
        last_status: Option<u16>,
        last_response: Option<&str>,
        attempts: u32,
    ) -> Result<Handled, BrokerError> {
        let dl =
            DeadLetter { route: &route.name, reason, error, details, last_status, last_response, attempts, message: d };
        dead_letters::publish(self.broker.as_ref(), &dl).await?;
        self.meter.dead_lettered(reason);
        ack(d).await
    }
}

/// The ids of an event the pipeline refused, for its span and log line.
#[derive(serde::Deserialize)]
struct EventIds<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    traceparent: Option<Cow<'a, str>>,
}

impl<'a> EventIds<'a> {
    fn peek(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

fn flatten(r: Result<Result<Handled, BrokerError>, tokio::task::JoinError>) -> Result<Handled, String> {
    match r {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("delivery task failed: {e}")),
    }
}

async fn ack(d: &Message) -> Result<Handled, BrokerError> {
    d.ack().await?;
    Ok(Handled::Done)
}
