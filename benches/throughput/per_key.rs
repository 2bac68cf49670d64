//! The `per_key_order` group: an ordered route with `order_key` against a slow receiver
//! (100 ms per request), the same events once with one key for all (`order_key = "source"`, the
//! same on every bench event: a plain FIFO) and once with 10 keys (`order_key = "subject"`,
//! `k0`..`k9`), 10 keys at once. The ratio of the two rates is what per-key order buys; with a
//! receiver this slow it is bounded by the number of keys (10).

use crate::common::Size;
use crate::process::{self, BusKind, Feed, Scenario};
use crate::report::{Report, Unit, Versus};
use crate::{Bench, PREFETCH};
use std::time::Duration;

/// The group's heading.
pub(crate) const G_PER_KEY: &str =
    "per-key order: ordered route, receiver taking 100 ms per request, 1 key vs 10 keys (10 at once), 1 KiB";
/// How long the receiver takes per request.
const SLOW: Duration = Duration::from_millis(100);
/// Keys at once in the 10-key run.
const KEYS: usize = 10;

fn scenario(order_key: &'static str) -> Scenario {
    Scenario {
        routes: 1,
        ordered: true,
        size: Size::Kib1,
        concurrency: KEYS,
        prefetch: PREFETCH,
        timeout: None,
        order_key: Some(order_key),
    }
}

/// The group's rows: per broker, the two rates, the 10-key one beside the 1-key one (the ratio).
pub(crate) fn declare_per_key_rows(r: &mut Report) {
    for kind in [BusKind::RabbitMq, BusKind::Embedded] {
        let b = kind.label();
        let one = format!("{b}.per_key.1key.rate");
        r.row(G_PER_KEY, one.clone(), format!("{b}: 1 key (a plain FIFO), events/s"), Unit::PerSec, Versus::Nothing);
        let ten = format!("{b}.per_key.10keys.rate");
        r.row(G_PER_KEY, ten, format!("{b}: 10 keys, events/s (× the 1-key rate)"), Unit::PerSec, Versus::Ratio(one));
    }
}

impl Bench {
    /// The group on one broker: `events` events (at least 50) each way.
    pub(crate) async fn per_key_order(&mut self, kind: BusKind) {
        let (b, launch) = (kind.label(), self.opts.launch.clone());
        // At 10 per second for one key: a run of 100 takes 10 s.
        let n = (self.opts.events / 200).clamp(50, 100);
        self.rx.slow(SLOW);
        for (key, label, what) in [("source", "1key", "1 key"), ("subject", "10keys", "10 keys")] {
            match process::throughput(kind, &self.rx, &scenario(key), n, Feed::Prefilled, &launch).await {
                Ok(t) => {
                    self.report.record(format!("{b}.per_key.{label}.rate"), t.rate);
                    self.progress(&format!("{b} per-key order, {what}"), &format!("{:.1}/s", t.rate));
                }
                Err(e) => self.fail(G_PER_KEY, &format!("{b} per-key order, {what}"), &e),
            }
        }
        self.rx.slow(Duration::ZERO);
    }
}
