//! The process around the route workers, with no per-message decision: connecting to the broker
//! (with backoff), one session per connection (`session`: declare the topology, start and
//! retire workers, wind down), reloads ([`reload`], each applying one [`diff::ConfigDiff`]) and
//! plans of reloads ([`plan`], the same difference, applied to nothing), the
//! dead-letter indexer ([`indexer`]) and the queue-depth poller ([`depths`]).
//!
//! What a message becomes is [`crate::delivery`]'s business alone; this module hands it the
//! workers' context ([`Shared`]) and swaps the config in it.
//!
//! Shutdown (SIGTERM/SIGINT): stop taking messages, let in-flight deliveries finish and ack
//! within the grace period, then close the connection, which returns every unacked message to
//! its queue in order.

pub mod depths;
pub mod diff;
pub mod indexer;
pub mod plan;
pub mod reload;
mod session;

pub use reload::{ReloadOutcome, ReloadStatus};

use crate::broker::Broker;
use crate::config::Snapshot;
use crate::delivery::attempt::Sequencer;
use crate::delivery::gate::Gate;
use crate::delivery::http::client::WebhookClient;
use crate::delivery::worker::{Disable, Shared};
use crate::store::Store;
use crate::store::log::AttemptLog;
use arc_swap::ArcSwapOption;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The running router: the workers' shared context (the live config), the link to the current
/// broker session, and the reload status.
pub struct Runtime {
    shared: Arc<Shared>,
    store: Option<Arc<dyn Store>>,
    /// The session now connected, if any: its broker (for the API's publishes) and where its
    /// reloads go.
    link: ArcSwapOption<session::Link>,
    status: Mutex<ReloadStatus>,
    /// One reload (or subscriptions change) at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// A router for an initial, valid config, recording attempts in the log and indexing dead
    /// letters into the store when given.
    pub fn new(snapshot: Snapshot, store: Option<(Arc<dyn Store>, Arc<AttemptLog>)>) -> Arc<Self> {
        let (store, log) = store.map_or((None, None), |(s, l)| (Some(s), Some(l)));
        Arc::new(Self {
            shared: Arc::new(Shared::new(snapshot, log)),
            store,
            link: ArcSwapOption::empty(),
            status: Mutex::new(ReloadStatus::default()),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The config now live.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    /// The broker connection now live, if there is one (for publishing from the API).
    pub fn broker(&self) -> Option<Arc<dyn Broker>> {
        self.link.load().as_ref().map(|l| l.broker.clone())
    }

    /// The webhook client now live (for test sends from the API).
    pub fn client(&self) -> Arc<WebhookClient> {
        self.shared.live().client.clone()
    }

    /// The sequencer of every delivery (for test sends from the API).
    pub fn sequencer(&self) -> &Sequencer {
        self.shared.sequencer()
    }

    /// The delivery log, when the router records attempts.
    pub fn attempt_log(&self) -> Option<&Arc<AttemptLog>> {
        self.shared.attempt_log()
    }

    /// The requests to disable a subscription (its receiver answered `410 Gone`, or its
    /// endpoint failed for its `disable_after`); the first caller takes them.
    pub fn take_disables(&self) -> Option<mpsc::UnboundedReceiver<Disable>> {
        self.shared.disable_reports()
    }

    /// A route's circuit breaker and rate limit, once its worker has started.
    pub fn gate(&self, route: &str) -> Option<Arc<Gate>> {
        self.shared.gates().get(route)
    }

    /// Runs until `shutdown` is cancelled, reconnecting to the broker with backoff.
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
            match crate::broker::connect(s.broker_endpoint(), &name).await {
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
}
