//! The queue-depth poller: the depth of every configured route's queue, read from the broker now
//! and then every [`EVERY`], for [`metrics::queue_depth`] (routes that did not start included: a
//! queue that grows because nobody consumes it is what the metric is for). Never per event; not
//! at all when no metrics recorder is installed.

use crate::broker::Broker;
use crate::delivery::worker::Shared;
use crate::metrics;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often the routes' queue depths are read from the broker.
pub const EVERY: Duration = Duration::from_secs(15);

/// Polls until `stop` is cancelled.
pub async fn poll(shared: Arc<Shared>, broker: Arc<dyn Broker>, stop: CancellationToken) {
    if metrics::handle().is_none() {
        return;
    }
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let routes: Vec<(String, String)> =
            shared.snapshot().routes.iter().map(|r| (r.name.clone(), r.queue())).collect();
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
        let live = shared.snapshot();
        for (name, depth) in depths {
            match depth {
                Ok(n) if live.route(&name).is_some() => metrics::queue_depth(&name, n),
                Ok(_) => {}
                Err(e) => debug!(route = %name, error = %e, "cannot read the queue depth"),
            }
        }
    }
}
