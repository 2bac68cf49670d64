//! One broker connection's life: declare the topology, start a worker per route, apply reloads
//! (one [`ConfigDiff`] each), and wind down on shutdown or when the connection is lost.

use super::Runtime;
use super::diff::ConfigDiff;
use crate::broker::{Broker, BrokerError, RouteTopology};
use crate::config::{Route, Snapshot, route_queue};
use crate::delivery::worker::{Shared, Worker};
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

/// How many routes' topology goes to the broker at once, at start and on reload. Declaring a
/// route (its queue, wait queues and bindings) or unbinding it is a few round trips on a channel
/// of its own: these overlap instead of adding up (the broker's own work, a quorum queue's log,
/// then bounds the time), and a config of thousands of routes opens no more than 16 at once.
const TOPOLOGY_AT_ONCE: usize = 16;

/// The live session, as the rest of the process reaches it.
pub(super) struct Link {
    /// The broker connection.
    pub(super) broker: Arc<dyn Broker>,
    /// Where reloads go, to be applied by the session.
    pub(super) changes: mpsc::Sender<Change>,
}

/// A reload for the session to apply: the next config and its difference from the live one.
pub(super) struct Change {
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) diff: ConfigDiff,
    /// `Err` with every declaration that failed: nothing was swapped.
    pub(super) reply: oneshot::Sender<Result<(), Vec<String>>>,
}

/// A consuming route in a session.
struct RouteHandle {
    route: Arc<ArcSwap<Route>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The routes consuming over one connection.
struct Session {
    shared: Arc<Shared>,
    broker: Arc<dyn Broker>,
    running: BTreeMap<String, RouteHandle>,
    retiring: JoinSet<()>,
    /// Why a worker or the indexer failed: the session ends and the router reconnects.
    lost: mpsc::UnboundedSender<String>,
    indexer: Option<(JoinHandle<()>, CancellationToken)>,
}

impl Runtime {
    /// One connection's life: declare, consume, apply reloads, and wind down on shutdown or
    /// loss (`Err(why)`).
    pub(super) async fn session(&self, broker: Arc<dyn Broker>, shutdown: &CancellationToken) -> Result<(), String> {
        let snap = self.snapshot();
        broker.declare_base().await.map_err(|e| e.to_string())?;
        let (lost, mut lost_rx) = mpsc::unbounded_channel();
        let mut s = Session {
            shared: self.shared.clone(),
            broker,
            running: BTreeMap::new(),
            retiring: JoinSet::new(),
            lost,
            indexer: None,
        };
        if let Some(store) = &self.store {
            let stop = CancellationToken::new();
            let (store, broker, lost, until) = (store.clone(), s.broker.clone(), s.lost.clone(), stop.clone());
            let task = tokio::spawn(async move {
                if let Err(why) = super::indexer::index(broker, store, until).await {
                    let _ = lost.send(why);
                }
            });
            s.indexer = Some((task, stop));
        }
        let mut failed = Vec::new();
        for (route, result) in s.declare_all(&snap, snap.routes.iter()).await {
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
        tokio::spawn(super::depths::poll(self.shared.clone(), s.broker.clone(), depths_stop.clone()));
        let (changes, mut requests) = mpsc::channel::<Change>(1);
        self.link.store(Some(Arc::new(Link { broker: s.broker.clone(), changes })));

        let broker = s.broker.clone();
        let conn_lost = broker.lost();
        tokio::pin!(conn_lost);
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break None,
                Some(why) = lost_rx.recv() => break Some(why),
                why = &mut conn_lost => break Some(why),
                Some(change) = requests.recv() => {
                    let applied = s.apply(change.snapshot, &change.diff).await;
                    let _ = change.reply.send(applied);
                }
                Some(_) = s.retiring.join_next(), if !s.retiring.is_empty() => {}
            }
        };
        depths_stop.cancel();
        self.link.store(None);
        s.wind_down().await;
        match outcome {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }
}

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

impl Session {
    /// Declares a route's queues and bindings.
    async fn declare(&self, snap: &Snapshot, route: &Route) -> Result<(), BrokerError> {
        let queue = route.queue();
        let topology = RouteTopology {
            name: &route.name,
            queue: &queue,
            patterns: &route.events,
            ordered: route.ordered,
            delivery_limit: snap.broker.delivery_limit,
            tiers: if route.ordered { Vec::new() } else { route.retry.tiers() },
        };
        self.broker.declare_route(&topology).await
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

    /// Starts a worker on a declared route.
    async fn consume(&mut self, snap: &Snapshot, route: Arc<Route>) -> Result<(), BrokerError> {
        let prefetch = route.prefetch(snap.broker.prefetch);
        let consumer = self.broker.consume(&route.queue(), prefetch).await?;
        let stop = CancellationToken::new();
        let live = Arc::new(ArcSwap::new(route.clone()));
        let worker = Worker::new(self.shared.clone(), self.broker.clone(), live.clone(), stop.clone());
        let lost = self.lost.clone();
        let task = tokio::spawn(
            async move {
                if let Err(why) = worker.run(consumer).await {
                    let _ = lost.send(why);
                }
            }
            .instrument(info_span!("route", route = %route.name)),
        );
        self.running.insert(route.name.clone(), RouteHandle { route: live, stop, task });
        Ok(())
    }

    /// Stops a route after its in-flight deliveries; its worker then closes its consumer, which
    /// returns the messages it had prefetched to the queue.
    fn retire(&mut self, name: &str) {
        if let Some(h) = self.running.remove(name) {
            h.stop.cancel();
            self.retiring.spawn(async move {
                let _ = h.task.await;
            });
        }
    }

    /// Applies a reload: topology first (a failure changes nothing), then the swap, then the
    /// bindings the new config no longer has. Declarations and unbindings go to the broker
    /// [`TOPOLOGY_AT_ONCE`] routes at a time, as at start.
    ///
    /// - Before the swap, the queues, wait queues and bindings of every route the diff declares,
    ///   and of every route not running (its declaration failed before), are declared. If any is
    ///   refused, the reload is rejected with every error, each naming its route and queue; the
    ///   old config keeps serving what it served (the bindings the other declarations added
    ///   stay, see below).
    /// - After the swap, running routes take their new config, and new routes and those whose
    ///   worker changes start; then the patterns a route dropped, and those of removed routes,
    ///   are unbound (not before the swap: until then the old config still serves them, so no
    ///   event is lost in between); then removed routes stop after their in-flight deliveries.
    async fn apply(&mut self, new: Arc<Snapshot>, diff: &ConfigDiff) -> Result<(), Vec<String>> {
        // Only routes whose queues or bindings change go to the broker: a reload of many
        // unchanged routes costs no round trips.
        let fresh = |name: &str| diff.declares(name) || !self.running.contains_key(name);
        let declared = self.declare_all(&new, new.routes.iter().filter(|r| fresh(&r.name))).await;
        let errors: Vec<String> =
            declared.iter().filter_map(|(route, r)| r.as_ref().err().map(|e| declare_error(route, e))).collect();
        if !errors.is_empty() {
            // The bindings the other declarations added stay: the old config's queue of a route
            // may then also receive events of the route's new patterns, delivered under the old
            // config until a reload applies, which loses nothing. Removing them could: replicas
            // share the route queues, and one whose reload failed for a passing reason (a dropped
            // channel) would unbind what a replica that applied the same config relies on.
            return Err(errors);
        }
        self.shared.swap(new.clone(), diff.new_client);
        for route in &new.routes {
            match self.running.get(&route.name) {
                // Same worker; deliveries that start from now use the new config.
                Some(h) if !diff.restart.contains(&route.name) => h.route.store(route.clone()),
                _ => {
                    self.retire(&route.name);
                    if let Err(e) = self.consume(&new, route.clone()).await {
                        warn!(route = %route.name, error = %e, "route did not start");
                    }
                }
            }
        }
        self.unbind_all(diff).await;
        for name in diff.removed.keys() {
            self.retire(name);
        }
        Ok(())
    }

    /// Removes the bindings the diff drops, [`TOPOLOGY_AT_ONCE`] routes at a time. A binding
    /// that cannot be removed is logged and stays: its queue keeps receiving those events, so
    /// nothing is lost.
    async fn unbind_all(&self, diff: &ConfigDiff) {
        let done = at_once(diff.unbinds(), |(route, patterns)| async move {
            (route, patterns, self.broker.unbind(&route_queue(route), patterns).await)
        })
        .await;
        for (route, patterns, result) in done {
            if let Err(e) = result {
                warn!(route = %route, ?patterns, error = %e, "could not remove a binding");
            }
        }
    }

    /// Stops every route within the grace period, then closes the connection, which returns
    /// every unacked message to its queue, in order.
    async fn wind_down(mut self) {
        let grace = self.shared.snapshot().delivery.shutdown_grace.0;
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
        if let Some((indexer, stop)) = self.indexer.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), indexer).await;
        }
        self.broker.close().await;
    }
}
