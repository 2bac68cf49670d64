//! Reads the router's own Prometheus text (what `/metrics` serves) for the console's overview:
//! the queue depth and deliveries in flight per route, and delivery lag percentiles estimated
//! from the lag histogram's cumulative buckets (since start), the way Prometheus'
//! `histogram_quantile` does (linear within a bucket).

use std::collections::BTreeMap;

/// What the metrics say about one route.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct RouteLive {
    /// Messages ready in the route's queue.
    pub(super) queue_depth: Option<f64>,
    /// Deliveries in progress.
    pub(super) in_flight: Option<f64>,
    /// Lag (event time to 2xx) at the median, in seconds.
    pub lag_p50: Option<f64>,
    /// Lag at the 95th percentile, in seconds.
    pub lag_p95: Option<f64>,
}

/// Route name → what the metrics say about it.
pub(super) fn per_route(text: &str) -> BTreeMap<String, RouteLive> {
    let mut out: BTreeMap<String, RouteLive> = BTreeMap::new();
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let Some(route) = label(labels, "route") else { continue };
        match name {
            crate::metrics::QUEUE_DEPTH => out.entry(route).or_default().queue_depth = Some(value),
            crate::metrics::IN_FLIGHT => out.entry(route).or_default().in_flight = Some(value),
            n if n == format!("{}_bucket", crate::metrics::DELIVERY_LAG) => {
                let le =
                    label(labels, "le").and_then(|l| if l == "+Inf" { Some(f64::INFINITY) } else { l.parse().ok() });
                if let Some(le) = le {
                    buckets.entry(route).or_default().push((le, value));
                }
            }
            _ => {}
        }
    }
    for (route, mut b) in buckets {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let live = out.entry(route).or_default();
        live.lag_p50 = quantile(&b, 0.5);
        live.lag_p95 = quantile(&b, 0.95);
    }
    out
}

fn label(labels: &str, key: &str) -> Option<String> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &labels[start..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// The `q` quantile of cumulative buckets `(le, count)` sorted by `le`.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 { (rank - prev.1) / in_bucket } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_and_lag_quantiles_per_route() {
        let text = "\
# TYPE hookrelay_queue_depth gauge
hookrelay_queue_depth{route=\"orders\"} 12
hookrelay_deliveries_in_flight{route=\"orders\"} 3
hookrelay_delivery_lag_seconds_bucket{route=\"orders\",le=\"1\"} 50
hookrelay_delivery_lag_seconds_bucket{route=\"orders\",le=\"2\"} 100
hookrelay_delivery_lag_seconds_bucket{route=\"orders\",le=\"+Inf\"} 100
hookrelay_delivery_lag_seconds_count{route=\"orders\"} 100
hookrelay_queue_depth{route=\"a\\\"b\"} 1
";
        let m = per_route(text);
        let o = &m["orders"];
        assert_eq!((o.queue_depth, o.in_flight), (Some(12.0), Some(3.0)));
        assert_eq!(o.lag_p50, Some(1.0));
        assert!((o.lag_p95.unwrap() - 1.9).abs() < 1e-9);
        assert_eq!(m["a\"b"].queue_depth, Some(1.0));
    }
}
