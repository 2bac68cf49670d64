//! The table's rows: every figure the harness can show, declared once, in the order shown, with
//! its unit and what it is compared with; and the targets printed after the table.

use crate::per_key::declare_per_key_rows;
use crate::report::{Bound, Report, Target, Unit, Versus};
use crate::{Bench, BusKind, G_BACKLOG, G_FANOUT, G_MEM, G_PAYLOAD, ceil, ceiling_group, group_of};

impl Bench {
    pub(crate) fn declare_rows(&mut self) {
        let fanout = self.opts.fanout.clone();
        let r = &mut self.report;
        let p = Versus::Nothing;
        let ratio = |key: String| Versus::Ratio(key);
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let (g, b) = (ceiling_group(kind), kind.label());
            let c = |s: &str| ceil(kind, s);
            r.row(g, c("consume.1k"), format!("{b}: bare consumer, ack only"), Unit::PerSec, p.clone());
            if kind == BusKind::RabbitMq {
                r.row(g, "ceiling.post.1k", "bare hyper POST, 32 at once", Unit::PerSec, p.clone());
                let axum = "bare axum handler: parse the event, answer 202 (32 connections)";
                r.row(g, "ceiling.axum.1k", axum, Unit::PerSec, p.clone());
                let publishing = "bare axum handler that also publishes each event, 202 once confirmed (quorum queue)";
                r.row(g, "ceiling.axum_publish.1k", publishing, Unit::PerSec, ratio("ceiling.axum.1k".into()));
            }
            let relay = match kind {
                BusKind::RabbitMq => {
                    format!("{b}: bare relay (consume → POST → ack), 32 at once (a process of its own)")
                }
                BusKind::Embedded => format!("{b}: bare relay (consume → POST → ack), 32 at once"),
            };
            r.row(g, c("relay.1k"), relay, Unit::PerSec, ratio(c("consume.1k")));
            let relay1 = match kind {
                BusKind::RabbitMq => format!("{b}: bare relay, one at a time (a process of its own)"),
                BusKind::Embedded => format!("{b}: bare relay, one at a time"),
            };
            r.row(g, c("relay1.1k"), relay1, Unit::PerSec, ratio(c("consume.1k")));
            if kind == BusKind::RabbitMq {
                let inside = format!("{b}: bare relay, one at a time, inside the harness beside the receiver");
                r.row(g, c("relay1.harness.1k"), inside, Unit::PerSec, ratio(c("relay1.1k")));
            }
            let cpu = match kind {
                BusKind::RabbitMq => format!("{b}: bare relay CPU per event, 32 at once (its own process)"),
                BusKind::Embedded => format!("{b}: bare relay CPU per event (harness less its receiver), 32 at once"),
            };
            r.row(g, c("relay.cpu"), cpu, Unit::Micros, p.clone());
            let cpu1 = match kind {
                BusKind::RabbitMq => format!("{b}: bare relay CPU per event, one at a time (its own process)"),
                BusKind::Embedded => {
                    format!("{b}: bare relay CPU per event (harness less its receiver), one at a time")
                }
            };
            r.row(g, c("relay1.cpu"), cpu1, Unit::Micros, ratio(c("relay.cpu")));
            r.row(g, c("relay.p50"), format!("{b}: bare relay p50 at the latency-run rate"), Unit::Millis, p.clone());
            r.row(g, c("relay.p99"), format!("{b}: bare relay p99 at the latency-run rate"), Unit::Millis, p.clone());
        }
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let (g, b) = (group_of(kind), kind.label());
            let k = |s: &str| format!("{b}.{s}");
            let c = |s: &str| ceil(kind, s);
            r.row(
                g,
                k("unordered.1k.rate"),
                "unordered route, events/s (queue filled before the start)",
                Unit::PerSec,
                ratio(c("consume.1k")),
            );
            let cpu = "router CPU per event, unordered (against the bare relay's)";
            r.row(g, k("unordered.1k.cpu"), cpu, Unit::Micros, ratio(c("relay.cpu")));
            if kind == BusKind::RabbitMq {
                r.row(
                    g,
                    k("unordered.1k.broker_cpu"),
                    "RabbitMQ node CPU per event, unordered",
                    Unit::Micros,
                    p.clone(),
                );
            }
            r.row(g, k("unordered.1k.harness_cpu"), "harness CPU per event (receiver)", Unit::Micros, p.clone());
            r.row(g, k("unordered.1k.rss_peak"), "router peak RSS, unordered run", Unit::MiB, p.clone());
            r.row(g, k("idle.rss"), "router RSS once consuming an empty queue", Unit::MiB, p.clone());
            if kind == BusKind::Embedded {
                // Ingest, broker and delivery in one process at once: no bare equivalent; events
                // cannot enter faster than a bare client POSTs.
                r.row(
                    g,
                    k("ingest.1k.rate"),
                    "producers POST /v1/events while it delivers, events/s",
                    Unit::PerSec,
                    ratio("ceiling.post.1k".into()),
                );
                r.row(g, k("ingest.1k.cpu"), "router CPU per event, ingest API included", Unit::Micros, p.clone());
                r.row(
                    g,
                    k("ingest.1k.harness_cpu"),
                    "harness CPU per event (producers, receiver)",
                    Unit::Micros,
                    p.clone(),
                );
            }
            let alone = "POST /v1/events alone, 32 connections (nothing delivered), events/s";
            r.row(g, k("ingest_alone.1k.rate"), alone, Unit::PerSec, ratio("ceiling.axum.1k".into()));
            if kind == BusKind::RabbitMq {
                let vs = "POST /v1/events alone, against the bare handler that publishes with confirms";
                r.row(
                    g,
                    k("ingest_alone.1k.rate_vs_publish"),
                    vs,
                    Unit::PerSec,
                    ratio("ceiling.axum_publish.1k".into()),
                );
            }
            r.row(g, k("ingest_alone.1k.cpu"), "router CPU per event, POST /v1/events alone", Unit::Micros, p.clone());
            r.row(g, k("ordered.1k.rate"), "ordered route, events/s", Unit::PerSec, ratio(c("relay1.1k")));
            let cpu = "router CPU per event, ordered (against the one-at-a-time relay's)";
            r.row(g, k("ordered.1k.cpu"), cpu, Unit::Micros, ratio(c("relay1.cpu")));
            r.row(
                g,
                k("latency.rate"),
                if kind == BusKind::Embedded {
                    "latency runs: rate (half the lower of drain and POST rates)"
                } else {
                    "latency runs: publish rate (half the unordered rate)"
                },
                Unit::PerSec,
                p.clone(),
            );
            let published = if kind == BusKind::Embedded { "publish (POST /v1/events)" } else { "publish" };
            r.row(
                g,
                k("latency.p50"),
                format!("{published} → receive p50"),
                Unit::Millis,
                Versus::Minus(c("relay.p50")),
            );
            r.row(
                g,
                k("latency.p99"),
                format!("{published} → receive p99"),
                Unit::Millis,
                Versus::Minus(c("relay.p99")),
            );
        }
        declare_per_key_rows(r);
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let b = kind.label();
            let k = |s: &str| format!("{b}.{s}");
            let row = |r: &mut Report, key: &str, label: &str, unit, versus| {
                r.row(G_MEM, k(key), format!("{b}: {label}"), unit, versus)
            };
            // (a) Events in the router: prefetched and unacked, 32 of them being delivered.
            let idle = k("inflight_router.idle");
            row(
                r,
                "inflight_router.idle",
                "(a) router RSS idle, same config (prefetch N, 32 at once)",
                Unit::MiB,
                p.clone(),
            );
            row(r, "inflight_router.unacked", "(a) events in the router, unacked", Unit::Count, p.clone());
            row(
                r,
                "inflight_router.held",
                "(a) of which being delivered (held by the receiver)",
                Unit::Count,
                p.clone(),
            );
            row(r, "inflight_router.rss", "(a) router RSS with them in flight", Unit::MiB, Versus::Minus(idle.clone()));
            row(r, "inflight_router.peak", "(a) router peak RSS (VmHWM)", Unit::MiB, Versus::Minus(idle));
            row(r, "inflight_router.per_event", "(a) (peak − idle) per event in flight", Unit::KiB, p.clone());
            row(r, "inflight_router.huge", "(a) of its RSS, in transparent huge pages", Unit::MiB, p.clone());
            // (b) Deliveries in flight: one open connection each.
            let idle = k("inflight.idle");
            row(r, "inflight.idle", "(b) router RSS idle, same config (prefetch N, N at once)", Unit::MiB, p.clone());
            row(r, "inflight.held", "(b) deliveries in flight (connections held open)", Unit::Count, p.clone());
            row(r, "inflight.rss", "(b) router RSS with them in flight", Unit::MiB, Versus::Minus(idle.clone()));
            row(r, "inflight.peak", "(b) router peak RSS (VmHWM)", Unit::MiB, Versus::Minus(idle));
            row(r, "inflight.per_event", "(b) (peak − idle) per delivery in flight", Unit::KiB, p.clone());
            row(r, "inflight.huge", "(b) of its RSS, in transparent huge pages", Unit::MiB, p.clone());
        }
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let (b, c) = (kind.label(), |s: &str| ceil(kind, s));
            let k = |s: &str| format!("{b}.{s}");
            r.row(G_PAYLOAD, c("consume.64k"), format!("{b}: bare consumer, ack only"), Unit::PerSec, p.clone());
            if kind == BusKind::RabbitMq {
                r.row(G_PAYLOAD, "ceiling.post.64k", "bare hyper POST, 32 at once", Unit::PerSec, p.clone());
            }
            r.row(
                G_PAYLOAD,
                k("unordered.64k.rate"),
                format!("{b}: unordered route"),
                Unit::PerSec,
                ratio(c("consume.64k")),
            );
            r.row(G_PAYLOAD, k("unordered.64k.cpu"), format!("{b}: router CPU per event"), Unit::Micros, p.clone());
            r.row(G_PAYLOAD, k("unordered.64k.rss_peak"), format!("{b}: router peak RSS"), Unit::MiB, p.clone());
        }
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let b = kind.label();
            for &n in &fanout {
                let (k, c) = (format!("{b}.fanout{n}"), ceil(kind, &format!("consume.fanout{n}")));
                let (queues, routes) = if n == 1 { ("queue", "route") } else { ("queues", "routes") };
                r.row(G_FANOUT, c.clone(), format!("{b}: bare consumer, {n} {queues}"), Unit::PerSec, p.clone());
                r.row(G_FANOUT, format!("{k}.rate"), format!("{b}: {n} {routes}"), Unit::PerSec, ratio(c));
                r.row(
                    G_FANOUT,
                    format!("{k}.cpu"),
                    format!("{b}: router CPU per delivery, {n} {routes}"),
                    Unit::Micros,
                    p.clone(),
                );
                r.row(
                    G_FANOUT,
                    format!("{k}.rss_peak"),
                    format!("{b}: router peak RSS, {n} {routes}"),
                    Unit::MiB,
                    p.clone(),
                );
            }
        }
        for kind in [BusKind::RabbitMq, BusKind::Embedded] {
            let b = kind.label();
            let k = |s: &str| format!("{b}.backlog.{s}");
            let row = |r: &mut Report, key: &str, label: &str, unit| {
                r.row(G_BACKLOG, k(key), format!("{b}: {label}"), unit, Versus::Nothing)
            };
            row(r, "events", "events waiting when the router starts", Unit::Count);
            row(r, "fill_rate", "queue fill rate, router stopped", Unit::PerSec);
            row(
                r,
                "queue_mib",
                if kind == BusKind::Embedded { "queue file size" } else { "queue message bytes" },
                Unit::MiB,
            );
            row(r, "start_s", "router start to consuming", Unit::Secs);
            row(r, "rss_start", "router RSS once consuming", Unit::MiB);
            row(r, "rss_steady", "router RSS, median of the window's 2nd half", Unit::MiB);
            row(r, "rss_end", "router RSS at the window's end", Unit::MiB);
            // Beside the same router's peak on a queue of `--events` (the unordered run).
            let peak = format!("{b}: router peak RSS (VmHWM)");
            r.row(G_BACKLOG, k("rss_peak"), peak, Unit::MiB, ratio(format!("{b}.unordered.1k.rss_peak")));
            let rate = format!("{b}: deliveries/s with the backlog");
            r.row(G_BACKLOG, k("rate"), rate, Unit::PerSec, ratio(ceil(kind, "consume.1k")));
            row(r, "cpu", "router CPU per delivery", Unit::Micros);
            row(r, "waiting", "events still waiting at the window's end", Unit::Count);
        }
    }
}

/// The targets printed after the table, for the brokers measured.
pub(crate) fn targets(rabbitmq: bool, embedded: bool) -> Vec<Target> {
    let mut out = Vec::new();
    for (b, name, on) in [("rabbitmq", "RabbitMQ", rabbitmq), ("embedded", "embedded", embedded)] {
        if !on {
            continue;
        }
        let t = |text: &str, key: &str, on_compared, bound, limit| Target {
            name: format!("{name}: {text}"),
            key: format!("{b}.{key}"),
            on_compared,
            bound,
            limit,
        };
        out.push(t("unordered route, share of the bare consumer", "unordered.1k.rate", true, Bound::AtLeast, 0.8));
        out.push(t("router CPU per event (µs), realistic unordered", "unordered.1k.cpu", false, Bound::AtMost, 25.0));
        out.push(t("p99 latency added at half load (ms)", "latency.p99", true, Bound::Below, 5.0));
        if b == "rabbitmq" {
            let text = "peak RSS (MiB), 10,000 events in the router (prefetched, 32 delivering)";
            out.push(t(text, "inflight_router.peak", false, Bound::Below, 64.0));
        }
        let text = "peak RSS (MiB), 10,000 deliveries on 10,000 connections";
        out.push(t(text, "inflight.peak", false, Bound::Below, 64.0));
    }
    out
}
