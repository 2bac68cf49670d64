//! The metrics of delivery shapes (docs/delivery-shapes.md): per-key lanes in use on ordered
//! routes with an `order_key` ([`LanesMeter`]), and the sizes of batches sent ([`BatchMeter`]).
//! Registered when a route first uses the shape: other routes show none of these series.

use super::handle;
use metrics::{Gauge, Histogram};

/// `hookrelay_order_lanes_in_use{route}`: keys being delivered now on an ordered route with an
/// `order_key` (at most its `concurrency`).
pub const ORDER_LANES: &str = "hookrelay_order_lanes_in_use";
/// `hookrelay_batch_size{route}`: events per batch request sent (each attempt of a batch).
pub const BATCH_SIZE: &str = "hookrelay_batch_size";
/// Bucket bounds of [`BATCH_SIZE`], in events.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Describes the metrics of this module (at install).
pub(super) fn describe() {
    metrics::describe_gauge!(ORDER_LANES, "Keys being delivered now on an ordered route with an order_key.");
    metrics::describe_histogram!(BATCH_SIZE, "Events per batch request sent.");
}

/// One route's lanes gauge; a no-op before [`super::install`].
#[derive(Debug, Default)]
pub struct LanesMeter(Option<Gauge>);

impl LanesMeter {
    /// The gauge of `route_name`.
    pub fn new(route_name: &str) -> Self {
        Self(handle().map(|_| metrics::gauge!(ORDER_LANES, "route" => route_name.to_string())))
    }

    /// `n` lanes are delivering now.
    pub fn in_use(&self, n: usize) {
        if let Some(g) = &self.0 {
            g.set(n as f64);
        }
    }
}

/// One route's batch-size histogram; a no-op before [`super::install`].
#[derive(Debug, Default, Clone)]
pub struct BatchMeter(Option<Histogram>);

impl BatchMeter {
    /// The histogram of `route_name`.
    pub fn new(route_name: &str) -> Self {
        Self(handle().map(|_| metrics::histogram!(BATCH_SIZE, "route" => route_name.to_string())))
    }

    /// A batch of `n` events was sent.
    pub fn sent(&self, n: usize) {
        if let Some(h) = &self.0 {
            h.record(n as f64);
        }
    }
}
