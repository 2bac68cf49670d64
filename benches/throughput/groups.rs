//! The `memory` and `backlog` groups (resident memory with many events in flight, and a router
//! started on a long queue), and the bare relay's latency, the baseline of the `latency` group.

use crate::common::Size;
use crate::process::{self, BusKind};
use crate::rabbit::{self, Vhost};
use crate::receiver::Timeline;
use crate::{
    Bench, CONCURRENCY, G_BACKLOG, G_MEM, PREFETCH, Scenario, ceil, ceiling_group, embedded, mark_progress, scenario,
};
use std::time::Duration;

impl Bench {
    /// The `memory` group on one broker: (a) N events prefetched into the router while the route
    /// delivers 32 at once (RabbitMQ only: the embedded broker's prefetch is `[broker] prefetch`,
    /// which cannot be set without choosing RabbitMQ, so it stays 64 there); (b) N deliveries at
    /// once, each on a connection of its own held open by the receiver.
    pub(crate) async fn memory(&mut self, kind: BusKind) {
        let (n, launch, b) = (self.opts.in_flight, self.opts.launch.clone(), kind.label());
        let base =
            Scenario { prefetch: n as u32, timeout: Some(Duration::from_secs(600)), ..scenario(1, false, Size::Kib1) };
        let readings = [
            ("inflight_router", "(a) in the router", Scenario { concurrency: CONCURRENCY, ..base.clone() }),
            ("inflight", "(b) on open connections", Scenario { concurrency: n, ..base }),
        ];
        for (key, what, s) in readings {
            if key == "inflight_router" && kind == BusKind::Embedded {
                self.report.note(
                    G_MEM,
                    "(a) RabbitMQ only: the embedded broker's prefetch is [broker] prefetch, which cannot be set \
                     without choosing RabbitMQ (it stays 64, at least the route's concurrency)",
                );
                continue;
            }
            let k = |s: &str| format!("{b}.{key}.{s}");
            match process::in_flight(kind, &self.rx, &s, n, &launch).await {
                Ok(m) => {
                    // Per event in flight: unacked events for (a), held deliveries for (b).
                    let count = m.unacked.filter(|_| key == "inflight_router").unwrap_or(m.held);
                    let per = (m.peak_rss_mib - m.idle_rss_mib) * 1024.0 / count.max(1) as f64;
                    self.report.record(k("idle"), m.idle_rss_mib);
                    self.report.record(k("held"), m.held as f64);
                    if let Some(u) = m.unacked {
                        self.report.record(k("unacked"), u as f64);
                    }
                    self.report.record(k("rss"), m.rss_mib);
                    self.report.record(k("peak"), m.peak_rss_mib);
                    self.report.record(k("per_event"), per);
                    self.report.record(k("huge"), m.huge_mib);
                    let unacked = m.unacked.map_or(String::new(), |u| format!(", {u} unacked"));
                    self.progress(
                        &format!("{b} in flight, {what}"),
                        &format!(
                            "{} held{unacked}; RSS idle {:.1} MiB, now {:.1} MiB ({:.1} MiB in huge pages), \
                             peak {:.1} MiB: {per:.1} KiB per event",
                            m.held, m.idle_rss_mib, m.rss_mib, m.huge_mib, m.peak_rss_mib
                        ),
                    );
                }
                Err(e) => {
                    self.rx.hold(false);
                    self.fail(G_MEM, &format!("{b} in flight, {what}"), &e)
                }
            }
        }
    }

    pub(crate) async fn backlog(&mut self, kind: BusKind, events: usize) {
        let b = kind.label();
        self.ensure(kind, "consume.1k").await;
        let window = Duration::from_secs_f64(self.opts.backlog_secs);
        let started = self.started;
        let progress = move |done: usize| {
            mark_progress(started);
            eprintln!("[{:>6.1}s] {b} backlog: {done} events published", started.elapsed().as_secs_f64());
        };
        self.progress(&format!("{b} backlog"), &format!("filling the queue with {events} events"));
        let s = scenario(1, false, Size::Kib1);
        match process::backlog(kind, &self.rx, &s, events, window, &self.opts.launch, progress).await {
            Ok(r) => {
                let k = |s: &str| format!("{b}.backlog.{s}");
                self.report.record(k("events"), events as f64);
                self.report.record(k("fill_rate"), r.fill_rate);
                self.report.record(k("queue_mib"), r.queue_mib);
                self.report.record(k("start_s"), r.start_s);
                self.report.record(k("rss_start"), r.rss_start_mib);
                self.report.record(k("rss_steady"), r.rss_steady_mib);
                self.report.record(k("rss_end"), r.rss_end_mib);
                self.report.record(k("rss_peak"), r.peak_rss_mib);
                self.report.record(k("rate"), r.rate);
                self.report.record(k("cpu"), r.cpu_us);
                self.report.record(k("waiting"), r.waiting as f64);
                self.progress(
                    &format!("{b} backlog"),
                    &format!(
                        "{events} filled at {:.0}/s ({:.0} MiB), consuming after {:.1} s; RSS {:.1} MiB at start, \
                         {:.1} MiB steady, peak {:.1} MiB; {} delivered at {:.0}/s, {} waiting",
                        r.fill_rate,
                        r.queue_mib,
                        r.start_s,
                        r.rss_start_mib,
                        r.rss_steady_mib,
                        r.peak_rss_mib,
                        r.delivered,
                        r.rate,
                        r.waiting
                    ),
                );
            }
            Err(e) => self.fail(G_BACKLOG, &format!("{b} backlog"), &e),
        }
    }

    /// The bare relay's latency on `kind`, events published at `rate`.
    pub(crate) async fn ceiling_relay_latency(&mut self, kind: BusKind, rate: f64, events: usize) {
        let timeline = Timeline::new(events);
        self.rx.reset(Some(timeline.clone()));
        let target = format!("{}/bare", self.rx.addr);
        let done = match kind {
            BusKind::RabbitMq => {
                let vh = Vhost::new();
                rabbit::declare_bare(&vh.url(), 1).await;
                let url = vh.url();
                let t = target.clone();
                let relay = tokio::spawn(async move {
                    rabbit::bare_relay(&url, &t, events, PREFETCH as u16, CONCURRENCY).await;
                });
                rabbit::publish_paced(&vh.url(), "bare", "order.paid", Size::Kib1, events, rate, &timeline).await;
                relay.await.map_err(|e| e.to_string())
            }
            BusKind::Embedded => match tempfile::tempdir() {
                Ok(dir) => {
                    embedded::bare_relay_paced(
                        dir.path(),
                        &target,
                        events,
                        rate,
                        &timeline,
                        PREFETCH as u16,
                        CONCURRENCY,
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            },
        };
        self.rx.reset(None);
        let what = format!("{} bare relay latency", kind.label());
        match done {
            Ok(()) => {
                let l = process::summarize(&timeline, events);
                self.report.record(ceil(kind, "relay.p50"), l.p50_ms);
                self.report.record(ceil(kind, "relay.p99"), l.p99_ms);
                self.progress(&what, &format!("{rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms", l.p50_ms, l.p99_ms));
            }
            Err(e) => self.fail(ceiling_group(kind), &what, &e),
        }
    }
}
